"""The prefill product's building blocks, in LLVM IR: weights decoded to int16 codes, and an
8-row x 8-token tile of int16 dot products (AVX-512 VNNI vpdpwssd).

Every supported format decodes, run of 32 values by run, to `value = a · code + bias`, with
int16 codes (the k-quants' integer sub-scales folded in: |code| ≤ 4096), one float `a` per
run and a bias that multiplies the run's sum of x (only Q4_K / Q5_K have one: their
minimum). Activations are int16 too, |x16| ≤ X16_MAX per run of 32 with one float scale per
run and token, laid out TOKENS tokens side by side: x16[group, i, token, 2] holds values
2i, 2i + 1 of the group's tokens, one vector. Then one vpdpwssd with a weight pair broadcast
from memory does 2 · TOKENS multiply-adds, and a tile of 8 rows reuses each loaded vector
8 times.

    decode16_<fmt>(raw, o, n_units, w16, w_off, a, b, ab_off)
        the row at raw[o] (n_units blocks / super-blocks) → w16[w_off : w_off + n], one a and
        one b per run at a[ab_off:], b[ab_off:]
    tile16(w16, w_stride, a, ab_stride, x16, x_off, xd, xd_off, n_runs, out)
        out[r, t] = sum over runs of a[r, run] · xd[run, t] · sum_j w16[r, j] · x16[.., t, j]
        for the 8 rows of w16 (row r at r · w_stride) and the group of TOKENS tokens at
        x16[x_off:] (xd[xd_off:] its scales, [n_runs, TOKENS]); out: float32 [8, TOKENS]

Bounds: a run's sum is at most 32 · 4096 · X16_MAX < 2^31, summed in two int32 halves.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .irgen import DOT_FLAGS, F32, I8, I16, I32, const_vec, data, declare, load_vec, ptr, splat, vec
from .kdot import _codes, _f16, _k4_scales, _q4_k_runs, _q5_k_runs, _q6_k_runs
from .simd import _SOURCES, _VNNI

I64 = ir.IntType(64)
X16_MAX = 16000         # activation codes: 32 · 4096 · 16000 < 2^31
ROWS = 8                # rows of a tile
# tokens of a group, one int32 lane each: 16 fill a 512-bit register; Zen 4 runs it as two
# 256-bit halves, but with half the instructions and weight loads per product (measured 1.3x
# over groups of 8)
TOKENS = 16


def _c(v):
    return ir.Constant(I64, v)


def _store(builder, value, base, off):
    builder.store(value, ptr(builder, base, off, value.type), align=2)


# -- decoding -------------------------------------------------------------------------------------
def _emit_decode(builder, fmt, raw_p, o0, count, w_p, w0, a_p, b_p, ab0):
    with cgutils.for_range(builder, count) as loop:
        if fmt in ("q8_0", "q4_0"):
            _decode_block(builder, fmt, raw_p, o0, loop.index, w_p, w0, a_p, b_p, ab0)
        else:
            _decode_super_block(builder, fmt, raw_p, o0, loop.index, w_p, w0, a_p, b_p, ab0)


def _decode_block(builder, fmt, raw_p, o0, u, w_p, w0, a_p, b_p, ab0):
    v32i16 = vec(I16, 32)
    unit = builder.add(o0, builder.mul(u, _c(34 if fmt == "q8_0" else 18)))
    if fmt == "q8_0":
        codes = builder.sext(load_vec(builder, raw_p, builder.add(unit, _c(2)), I8, 32), v32i16)
    else:       # nibble - 8
        nib = _SOURCES["nibbles32"][2](builder, raw_p, [builder.add(unit, _c(2))], I8)
        codes = builder.sub(builder.zext(nib, v32i16), ir.Constant(v32i16, [8] * 32))
    _store(builder, codes, w_p, builder.add(w0, builder.mul(u, _c(32))))
    run = builder.add(ab0, u)
    builder.store(_f16(builder, raw_p, unit), ptr(builder, a_p, run, F32))
    builder.store(ir.Constant(F32, 0.0), ptr(builder, b_p, run, F32))


def _decode_super_block(builder, fmt, raw_p, o0, u, w_p, w0, a_p, b_p, ab0):
    v32i16 = vec(I16, 32)
    size, runs = {"q4_k": (144, _q4_k_runs()), "q5_k": (176, _q5_k_runs()), "q6_k": (210, _q6_k_runs())}[fmt]
    unit = builder.add(o0, builder.mul(u, _c(size)))
    if fmt == "q6_k":
        d = _f16(builder, raw_p, builder.add(unit, _c(208)))
        scales16 = builder.sext(load_vec(builder, raw_p, builder.add(unit, _c(192)), I8, 16), vec(I16, 16))
        minimums = None
    else:
        d = _f16(builder, raw_p, unit)
        dmin = _f16(builder, raw_p, builder.add(unit, _c(2)))
        sc8, m8 = _k4_scales(builder, raw_p, unit)
        scales16 = builder.zext(sc8, vec(I16, 8))
        minimums = builder.fmul(builder.uitofp(m8, vec(F32, 8)),
                                splat(builder, builder.fsub(ir.Constant(F32, 0.0), dmin), 8))
    for r, rel in enumerate(runs):
        codes = builder.zext(_codes(builder, raw_p, unit, rel), v32i16)
        if fmt == "q6_k":     # (code - 32) · the scale of its 16 values
            codes = builder.sub(codes, ir.Constant(v32i16, [32] * 32))
            mask = [2 * r] * 16 + [2 * r + 1] * 16
        else:
            mask = [r] * 32
        codes = builder.mul(codes, builder.shuffle_vector(scales16, scales16, const_vec(I32, mask)))
        _store(builder, codes, w_p, builder.add(w0, builder.add(builder.mul(u, _c(256)), _c(32 * r))))
        run = builder.add(ab0, builder.add(builder.mul(u, _c(8)), _c(r)))
        builder.store(d, ptr(builder, a_p, run, F32))
        bias = ir.Constant(F32, 0.0) if minimums is None else builder.extract_element(minimums, ir.Constant(I32, r))
        builder.store(bias, ptr(builder, b_p, run, F32))


def _make_decode(fmt):
    @intrinsic
    def decode16(typingctx, raw, o, n_units, w16, w_off, a, b, ab_off):
        sig = types.void(raw, o, n_units, w16, w_off, a, b, ab_off)

        def codegen(context, builder, signature, args):
            s = signature.args
            i64 = [context.cast(builder, args[i], s[i], types.int64) for i in (1, 2, 4, 7)]
            _emit_decode(builder, fmt, data(context, builder, s[0], args[0]), i64[0], i64[1],
                         data(context, builder, s[3], args[3]), i64[2], data(context, builder, s[5], args[5]),
                         data(context, builder, s[6], args[6]), i64[3])
            return context.get_dummy_value()
        return sig, codegen
    return decode16


decode16_q8_0, decode16_q4_0 = _make_decode("q8_0"), _make_decode("q4_0")
decode16_q4_k, decode16_q5_k, decode16_q6_k = _make_decode("q4_k"), _make_decode("q5_k"), _make_decode("q6_k")


# -- the tile ---------------------------------------------------------------------------------------
def _dpwssd(builder, acc, x, w):
    """acc + pairwise int16 products of x and w summed per int32 lane (vpdpwssd)."""
    n = acc.type.count
    vi32 = vec(I32, n)
    if _VNNI:
        f = declare(builder, f"llvm.x86.avx512.vpdpwssd.{32 * n}", vi32, [vi32, vi32, vi32])
        return builder.call(f, [acc, x, w])
    vi16 = vec(I16, 2 * n)
    prod = builder.mul(builder.sext(builder.bitcast(x, vi16), vec(I32, 2 * n)),
                       builder.sext(builder.bitcast(w, vi16), vec(I32, 2 * n)))
    even = builder.shuffle_vector(prod, prod, const_vec(I32, range(0, 2 * n, 2)))
    odd = builder.shuffle_vector(prod, prod, const_vec(I32, range(1, 2 * n, 2)))
    return builder.add(acc, builder.add(even, odd))


@intrinsic
def tile16(typingctx, w16, w_stride, a, ab_stride, x16, x_off, xd, xd_off, n_runs, out):
    sig = types.void(w16, w_stride, a, ab_stride, x16, x_off, xd, xd_off, n_runs, out)

    def codegen(context, builder, signature, args):
        s = signature.args
        w_p, a_p = data(context, builder, s[0], args[0]), data(context, builder, s[2], args[2])
        x_p, xd_p = data(context, builder, s[4], args[4]), data(context, builder, s[6], args[6])
        out_p = data(context, builder, s[9], args[9])
        w_stride, ab_stride, x0, xd0, count = (context.cast(builder, args[i], s[i], types.int64)
                                              for i in (1, 3, 5, 7, 8))
        vi32, vf = vec(I32, TOKENS), vec(F32, TOKENS)
        facc = [cgutils.alloca_once_value(builder, ir.Constant(vf, [0.0] * TOKENS)) for _ in range(ROWS)]
        with cgutils.for_range(builder, count) as loop:
            run = loop.index
            acc = [[ir.Constant(vi32, [0] * TOKENS)] * 2 for _ in range(ROWS)]
            for p in range(16):
                # values 32 run + 2p, + 1 of the group's tokens: one int32 lane (two int16) per token
                pair = builder.add(builder.mul(run, _c(16)), _c(p))
                xv = builder.load(ptr(builder, x_p, builder.add(x0, builder.mul(pair, _c(2 * TOKENS))), vi32),
                                  align=2)
                for r in range(ROWS):
                    w_at = builder.add(builder.mul(_c(r), w_stride), builder.mul(pair, _c(2)))
                    w = builder.load(ptr(builder, w_p, w_at, I32), align=2)
                    acc[r][p % 2] = _dpwssd(builder, acc[r][p % 2], xv, splat(builder, w, TOKENS))
            scale = builder.load(ptr(builder, xd_p, builder.add(xd0, builder.mul(run, _c(TOKENS))), vf), align=4)
            for r in range(ROWS):
                a = builder.load(ptr(builder, a_p, builder.add(builder.mul(_c(r), ab_stride), run), F32))
                total = builder.sitofp(builder.add(acc[r][0], acc[r][1]), vf)
                step = builder.fmul(total, builder.fmul(scale, splat(builder, a, TOKENS), flags=DOT_FLAGS),
                                    flags=DOT_FLAGS)
                builder.store(builder.fadd(builder.load(facc[r]), step, flags=DOT_FLAGS), facc[r])
        for r in range(ROWS):
            builder.store(builder.load(facc[r]), ptr(builder, out_p, _c(r * TOKENS), vf), align=4)
        return context.get_dummy_value()
    return sig, codegen
