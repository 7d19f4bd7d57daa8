"""Whole-row int8 dot products for the 32-value formats (Q8_0, Q4_0), each one loop written
in LLVM IR (the decode hot path; the k-quants have theirs in kdot.py).

    rowdot_<fmt>(raw, o, xq, x_off, xd, sums, s_off, n_blocks) -> float32
    rowdot_fine_<fmt>(raw, o, xq, xq_lo, x_off, xd, sums, s_off, n_blocks) -> float32
        the dot product of the row whose bytes start at raw[o] (n_blocks blocks of 32 values)
        with one token's activation codes xq[x_off:] (and residual codes xq_lo[x_off:]),
        whose scale per block is xd[s_off:] (for fine codes: the scale / 254); `sums[s_off:]`
        per block: Q8_0 the activation codes' sum (254 · xq + xq_lo when fine), Q4_0 the exact
        sum of x. Flat element offsets, no bounds checks.

Per block: the codes (Q8_0 bytes as code + 128 under AVX-512 VNNI, one xor; Q4_0 nibbles),
vpdpbusd with the activation codes (pmaddubsw + pmaddwd on AVX2), the block's float16 scale
converted and multiplied by the activation scale, one multiply-add into one of four vector
accumulators. What the codes leave out enters per block as a scalar: Q8_0's + 128 offset
(128 · codes' sum · scale, subtracted), Q4_0's - 8 (8 · d · sum of x, subtracted).

Why IR loops and not Numba loops calling one vector step per block (as the float kernels of
legacy.py do): there the accumulators live in a Numba array that every step stores to, index
wrap-around checks and a hoisted horizontal sum sit in the block loop, and the int8 kernels
written that way ran at about 20 instructions per block. And why the scales are read inside
the loop rather than decoded for a row first: that first pass gathered every block's header
ahead of the stream, a page at a time, and rows longer than a page (ffn_down, 6.5 KB) streamed
at 20 GB/s instead of 28. (A software prefetch a few pages ahead helped while that pass was
there, and cost 4% after.)
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .irgen import DOT_FLAGS, F32, I8, I16, I32, data, hsum, load_vec, ptr, splat, vec
from .simd import _SOURCES, _VNNI, int_dot32

I64 = ir.IntType(64)
N_ACC = 4               # blocks per loop iteration, one accumulator each
FINE = 254              # residual codes: x ≈ xd · (xq + xq_lo / FINE)
SIGNED_OFFSET = 128 if _VNNI else 0     # how much too high Q8_0's codes enter the products

BLOCK_BYTES = {"q8_0": 34, "q4_0": 18}


def _c(value):
    return ir.Constant(I64, value)


def _emit_rowdot(builder, fmt, raw_p, o0, xq_p, lo_p, x0, xd_p, sums_p, s0, count):
    zero = ir.Constant(vec(F32, 8), [0.0] * 8)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(N_ACC)]
    extra = cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0))     # the scalar terms
    size = BLOCK_BYTES[fmt]

    def emit_block(b, acc):
        unit = builder.add(o0, builder.mul(b, _c(size)))
        if fmt == "q8_0":
            codes = load_vec(builder, raw_p, builder.add(unit, _c(2)), I8, 32)
            signed = not _VNNI
            if _VNNI:
                codes = builder.xor(codes, ir.Constant(vec(I8, 32), [-128] * 32))
        else:
            codes = _SOURCES["nibbles32"][2](builder, raw_p, [builder.add(unit, _c(2))], I8)
            signed = False
        x_at = builder.add(x0, builder.mul(b, _c(32)))
        part = int_dot32(builder, codes, load_vec(builder, xq_p, x_at, I8, 32), signed)
        if lo_p is not None:
            low = int_dot32(builder, codes, load_vec(builder, lo_p, x_at, I8, 32), signed)
            part = builder.add(builder.mul(part, ir.Constant(vec(I32, 8), [FINE] * 8)), low)
        s_at = builder.add(s0, b)
        d = builder.fpext(builder.bitcast(builder.load(ptr(builder, raw_p, unit, I16), align=1), ir.HalfType()), F32)
        scale = builder.fmul(d, builder.load(ptr(builder, xd_p, s_at, F32)), flags=DOT_FLAGS)
        prod = builder.fmul(builder.sitofp(part, vec(F32, 8)), splat(builder, scale, 8), flags=DOT_FLAGS)
        builder.store(builder.fadd(builder.load(acc), prod, flags=DOT_FLAGS), acc)
        if fmt == "q8_0" and not SIGNED_OFFSET:
            return
        # Q8_0: 128 · scale · codes' sum; Q4_0: 8 · d · sum of x
        factor, weight = (scale, SIGNED_OFFSET) if fmt == "q8_0" else (d, 8)
        term = builder.fmul(factor, builder.load(ptr(builder, sums_p, s_at, F32)), flags=DOT_FLAGS)
        term = builder.fmul(term, ir.Constant(F32, float(weight)), flags=DOT_FLAGS)
        builder.store(builder.fadd(builder.load(extra), term, flags=DOT_FLAGS), extra)

    n_groups = builder.sdiv(count, _c(N_ACC))
    with cgutils.for_range(builder, n_groups) as loop:
        first = builder.mul(loop.index, _c(N_ACC))
        for u in range(N_ACC):
            emit_block(builder.add(first, _c(u)), accs[u])
    done = builder.mul(n_groups, _c(N_ACC))
    with cgutils.for_range(builder, builder.sub(count, done)) as loop:
        emit_block(builder.add(done, loop.index), accs[0])
    total = builder.load(accs[0])
    for acc in accs[1:]:
        total = builder.fadd(total, builder.load(acc), flags=DOT_FLAGS)
    return builder.fsub(hsum(builder, total), builder.load(extra))


def _codegen(fmt, fine):
    def codegen(context, builder, signature, args):
        a, args = list(signature.args), list(args)
        lo_p = None
        if fine:            # (raw, o, xq, xq_lo, x_off, xd, sums, s_off, n_blocks)
            lo_p = data(context, builder, a[3], args[3])
            del a[3], args[3]
        i64 = [context.cast(builder, args[i], a[i], types.int64) for i in (1, 3, 6, 7)]
        return _emit_rowdot(builder, fmt, data(context, builder, a[0], args[0]), i64[0],
                            data(context, builder, a[2], args[2]), lo_p, i64[1],
                            data(context, builder, a[4], args[4]), data(context, builder, a[5], args[5]),
                            i64[2], i64[3])
    return codegen


def _make_rowdot(fmt):
    @intrinsic
    def rowdot(typingctx, raw, o, xq, x_off, xd, sums, s_off, n_blocks):
        return types.float32(raw, o, xq, x_off, xd, sums, s_off, n_blocks), _codegen(fmt, False)
    return rowdot


def _make_rowdot_fine(fmt):
    @intrinsic
    def rowdot_fine(typingctx, raw, o, xq, xq_lo, x_off, xd, sums, s_off, n_blocks):
        return types.float32(raw, o, xq, xq_lo, x_off, xd, sums, s_off, n_blocks), _codegen(fmt, True)
    return rowdot_fine


rowdot_q8_0, rowdot_fine_q8_0 = _make_rowdot("q8_0"), _make_rowdot_fine("q8_0")
rowdot_q4_0, rowdot_fine_q4_0 = _make_rowdot("q4_0"), _make_rowdot_fine("q4_0")
