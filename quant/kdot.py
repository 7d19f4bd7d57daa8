"""Whole-row int8 dot products for the k-quants, summed in integers per super-block.

    kdot_<fmt>(raw, o, xq, xq_lo, x_off, xd, xsum16, xsum32, s_off, n_super) -> float32
        the dot product of the row whose bytes start at raw[o] (n_super super-blocks of 256
        values) with one token's activations: codes xq[x_off:], one activation scale per
        super-block xd[s_off:], the exact sums of x over 16 and 32 values xsum16[16 s_off:],
        xsum32[8 s_off:] (flat offsets); kdot_fine_<fmt> adds the residual codes xq_lo[x_off:].

Per run of 32 values: the codes, pmaddubsw with the activations (u8 x s8, adjacent pairs
summed in int16), then vpdpwssd by the run's sub-scale (pairs times int16 scale summed into
int32, AVX-512 VNNI; pmaddwd + add on AVX2): three or four instructions, no float work.
Per super-block: one conversion and one multiply-add by d · xd, and the minimum (Q4_K,
Q5_K) or the -32 offset (Q6_K) through the exact sums of x. That is llama.cpp's q8_K
scheme: the activation scale per 256 values lets the sub-scales act in integers.

Bounds: codes ≤ 63 and |xq| ≤ 127, so a pmaddubsw pair is at most 16002 (no int16
saturation); times a sub-scale ≤ 128, summed over 8 runs per lane: < 2^26.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .irgen import DOT_FLAGS, F32, I8, I16, I32, const_vec, data, declare, hsum, load_vec, ptr, splat, vec
from .simd import _AVX2, _SOURCES, _VNNI

I64 = ir.IntType(64)
FINE = 254


def _c(value):
    return ir.Constant(I64, value)


def _i8(value):
    return ir.Constant(I8, value)


def _pairs_dot(builder, codes, xv):
    """Adjacent pairs code_2i · x_2i + code_2i+1 · x_2i+1: as <16 x i16> from pmaddubsw (AVX2),
    or else as <16 x i32> (first or second of the returned pair)."""
    v32i8, v16i16 = vec(I8, 32), vec(I16, 16)
    if _AVX2:
        maddubs = declare(builder, "llvm.x86.avx2.pmadd.ub.sw", v16i16, [v32i8, v32i8])
        return builder.call(maddubs, [codes, xv]), None
    prod = builder.mul(builder.zext(codes, vec(I32, 32)), builder.sext(xv, vec(I32, 32)))
    pairs = [builder.add(builder.extract_element(prod, ir.Constant(I32, 2 * i)),
                         builder.extract_element(prod, ir.Constant(I32, 2 * i + 1))) for i in range(16)]
    v = ir.Constant(vec(I32, 16), ir.Undefined)
    for i, p in enumerate(pairs):
        v = builder.insert_element(v, p, ir.Constant(I32, i))
    return None, v


def _accumulate(builder, acc, codes, xv, scale16):
    """acc (<8 x i32>) += per-lane sums of code · x · scale over 32 values."""
    v16i16, v8i32 = vec(I16, 16), vec(I32, 8)
    pairs16, pairs32 = _pairs_dot(builder, codes, xv)
    if pairs16 is not None and _VNNI:
        dpwssd = declare(builder, "llvm.x86.avx512.vpdpwssd.256", v8i32, [v8i32, v8i32, v8i32])
        return builder.call(dpwssd, [acc, builder.bitcast(pairs16, v8i32), builder.bitcast(scale16, v8i32)])
    if pairs16 is not None:
        maddwd = declare(builder, "llvm.x86.avx2.pmadd.wd", v8i32, [v16i16, v16i16])
        return builder.add(acc, builder.call(maddwd, [pairs16, scale16]))
    scaled = builder.mul(pairs32, builder.sext(scale16, vec(I32, 16)))
    lanes = [builder.add(builder.extract_element(scaled, ir.Constant(I32, 2 * i)),
                         builder.extract_element(scaled, ir.Constant(I32, 2 * i + 1))) for i in range(8)]
    out = acc
    for i, lane in enumerate(lanes):
        out = builder.insert_element(out, builder.add(builder.extract_element(out, ir.Constant(I32, i)), lane),
                                     ir.Constant(I32, i))
    return out


def _f16(builder, base, off):
    bits = builder.load(ptr(builder, base, off, I16), align=1)
    return builder.fpext(builder.bitcast(bits, ir.HalfType()), F32)


def _k4_scales(builder, base, u):
    """(<8 x i8> sub-scales, <8 x i8> minimums) of a Q4_K / Q5_K super-block at u (kquants._k4_scales)."""
    a, b, c = (builder.load(ptr(builder, base, builder.add(u, _c(4 + 4 * i)), I32), align=1) for i in range(3))

    def k(v):
        return ir.Constant(I32, v)
    sc_lo, m_lo = builder.and_(a, k(0x3F3F3F3F)), builder.and_(b, k(0x3F3F3F3F))
    sc_hi = builder.or_(builder.and_(c, k(0x0F0F0F0F)), builder.shl(builder.and_(builder.lshr(a, k(6)), k(0x03030303)), k(4)))
    m_hi = builder.or_(builder.and_(builder.lshr(c, k(4)), k(0x0F0F0F0F)),
                       builder.shl(builder.and_(builder.lshr(b, k(6)), k(0x03030303)), k(4)))

    def bytes8(lo, hi):
        pair = builder.insert_element(ir.Constant(vec(I32, 2), ir.Undefined), lo, ir.Constant(I32, 0))
        pair = builder.insert_element(pair, hi, ir.Constant(I32, 1))
        return builder.bitcast(pair, vec(I8, 8))
    return bytes8(sc_lo, sc_hi), bytes8(m_lo, m_hi)


# A format: unit bytes, and for run r the source arguments relative to the unit (as rowdot.py).
def _q4_k_runs():
    return [(16 + 32 * (r // 2), 4 * (r % 2), 15, 0, 0, 0, 0) for r in range(8)]


def _q5_k_runs():
    return [(48 + 32 * (r // 2), 4 * (r % 2), 15, 16, r, 1, 4) for r in range(8)]


def _q6_k_runs():
    runs = []
    for h in range(2):
        for k in range(4):
            runs.append((64 * h + 32 * (k & 1), 4 * (k >> 1), 15, 128 + 32 * h, 2 * k, 3, 4))
    return runs


FORMATS = {"q4_k": (144, _q4_k_runs()), "q5_k": (176, _q5_k_runs()), "q6_k": (210, _q6_k_runs())}


def _codes(builder, base, unit, rel):
    lo_off, lo_shift, lo_mask, hi_off, hi_shift, hi_mask, hi_lshift = rel
    args = [builder.add(unit, _c(lo_off)), _i8(lo_shift), _i8(lo_mask),
            builder.add(unit, _c(hi_off)), _i8(hi_shift), _i8(hi_mask), _i8(hi_lshift)]
    return _SOURCES["codes32"][2](builder, base, args, I8)


def _emit_kdot(builder, fmt, raw_p, o0, xq_p, lo_p, x0, xd_p, s16_p, s32_p, s0, count):
    unit_bytes, runs = FORMATS[fmt]
    zero_f = ir.Constant(vec(F32, 8), [0.0] * 8)
    zero_i = ir.Constant(vec(I32, 8), [0] * 8)
    facc = cgutils.alloca_once_value(builder, zero_f)      # the products
    bacc = cgutils.alloca_once_value(builder, zero_f)      # minimums / offsets, through sums of x
    with cgutils.for_range(builder, count) as loop:
        sb = loop.index
        unit = builder.add(o0, builder.mul(sb, _c(unit_bytes)))
        s_at = builder.add(s0, sb)
        x_sb = builder.add(x0, builder.mul(sb, _c(256)))
        if fmt == "q6_k":
            d = _f16(builder, raw_p, builder.add(unit, _c(208)))
            scales8 = load_vec(builder, raw_p, builder.add(unit, _c(192)), I8, 16)
            scales16 = builder.sext(scales8, vec(I16, 16))

            def run_scale(r):     # values 0-15 of run r use sub-block 2r, values 16-31 sub-block 2r + 1
                return builder.shuffle_vector(scales16, scales16, const_vec(I32, [2 * r] * 8 + [2 * r + 1] * 8))
            # offset: -32 · d · sum_s scale_s · (sum of x over sub-block s)
            sums = load_vec(builder, s16_p, builder.mul(s_at, _c(16)), F32, 16)
            offs = builder.fmul(builder.sitofp(scales8, vec(F32, 16)), sums, flags=DOT_FLAGS)
            offs = builder.fadd(builder.shuffle_vector(offs, offs, const_vec(I32, range(8))),
                                builder.shuffle_vector(offs, offs, const_vec(I32, range(8, 16))), flags=DOT_FLAGS)
            bias = builder.fmul(offs, splat(builder, builder.fmul(d, ir.Constant(F32, 32.0)), 8), flags=DOT_FLAGS)
        else:
            d = _f16(builder, raw_p, unit)
            dmin = _f16(builder, raw_p, builder.add(unit, _c(2)))
            sc8, m8 = _k4_scales(builder, raw_p, unit)
            # each sub-scale twice in one int32 (as two int16): one vpermd gives a run's scale vector
            pairs = builder.mul(builder.zext(sc8, vec(I32, 8)), ir.Constant(vec(I32, 8), [0x10001] * 8))

            def run_scale(r):
                return builder.bitcast(builder.shuffle_vector(pairs, pairs, const_vec(I32, [r] * 8)), vec(I16, 16))
            # minimum: dmin · sum_s m_s · (sum of x over run s)
            sums = load_vec(builder, s32_p, builder.mul(s_at, _c(8)), F32, 8)
            mins = builder.fmul(builder.uitofp(m8, vec(F32, 8)), sums, flags=DOT_FLAGS)
            bias = builder.fmul(mins, splat(builder, dmin, 8), flags=DOT_FLAGS)
        builder.store(builder.fadd(builder.load(bacc), bias, flags=DOT_FLAGS), bacc)

        # two integer accumulators per kind, runs alternating: two chains of vpdpwssd's latency
        # (4-5 cycles) rather than one (measured: a few % faster; 512-bit registers, two runs
        # per instruction, measured 5-10% slower: the multiply units, not the instruction
        # count, bound this loop)
        acc_hi, acc_lo = [zero_i, zero_i], [zero_i, zero_i]
        for r, rel in enumerate(runs):
            codes = _codes(builder, raw_p, unit, rel)
            x_at = builder.add(x_sb, _c(32 * r))
            scale16 = run_scale(r)
            acc_hi[r % 2] = _accumulate(builder, acc_hi[r % 2], codes, load_vec(builder, xq_p, x_at, I8, 32), scale16)
            if lo_p is not None:
                acc_lo[r % 2] = _accumulate(builder, acc_lo[r % 2], codes, load_vec(builder, lo_p, x_at, I8, 32),
                                            scale16)
        acc_hi, acc_lo = builder.add(*acc_hi), builder.add(*acc_lo)
        xd = builder.load(ptr(builder, xd_p, s_at, F32))
        dxd = splat(builder, builder.fmul(d, xd), 8)
        total = builder.fmul(builder.sitofp(acc_hi, vec(F32, 8)), dxd, flags=DOT_FLAGS)
        if lo_p is not None:
            fine = builder.fmul(builder.sitofp(acc_lo, vec(F32, 8)), dxd, flags=DOT_FLAGS)
            total = builder.fadd(total, builder.fmul(fine, splat(builder, ir.Constant(F32, 1.0 / FINE), 8),
                                                     flags=DOT_FLAGS), flags=DOT_FLAGS)
        builder.store(builder.fadd(builder.load(facc), total, flags=DOT_FLAGS), facc)
    return builder.fsub(hsum(builder, builder.load(facc)), hsum(builder, builder.load(bacc)))


def _make_kdot(fmt, fine):
    @intrinsic
    def kdot(typingctx, raw, o, xq, xq_lo, x_off, xd, xsum16, xsum32, s_off, n_super):
        sig = types.float32(raw, o, xq, xq_lo, x_off, xd, xsum16, xsum32, s_off, n_super)

        def codegen(context, builder, signature, args):
            a = signature.args
            p = [data(context, builder, a[i], args[i]) for i in (0, 2, 3, 5, 6, 7)]
            i64 = [context.cast(builder, args[i], a[i], types.int64) for i in (1, 4, 8, 9)]
            return _emit_kdot(builder, fmt, p[0], i64[0], p[1], p[2] if fine else None, i64[1], p[3], p[4], p[5],
                              i64[2], i64[3])
        return sig, codegen
    return kdot


kdot_q4_k, kdot_fine_q4_k = _make_kdot("q4_k", False), _make_kdot("q4_k", True)
kdot_q5_k, kdot_fine_q5_k = _make_kdot("q5_k", False), _make_kdot("q5_k", True)
kdot_q6_k, kdot_fine_q6_k = _make_kdot("q6_k", False), _make_kdot("q6_k", True)
