"""Vector steps of the block kernels, written as LLVM IR through Numba intrinsics.

Why not plain Numba loops: a loop over the 32 values of a block has a constant trip count,
so LLVM unrolls it fully and then vectorises the *block* loop instead, gathering bytes one
at a time (measured 1-3 GB/s). Each step here handles one run of 16 or 32 values with
explicit vector loads, so the kernels in `legacy.py` and `kquants.py` stay ordinary Numba
loops over blocks that call these steps.

A run's values come from one of these *sources* (j = 0 .. n-1, raw = the weight bytes):

    codes16/32  (lo_off, lo_shift, lo_mask, hi_off, hi_shift, hi_mask, hi_lshift)
                code_j = ((raw[lo_off+j] >> lo_shift) & lo_mask)
                       | (((raw[hi_off+j] >> hi_shift) & hi_mask) << hi_lshift)
                (every k-quant; hi_mask = 0 means no high part)
    nibbles32   (off)          code_j = raw[off+j] & 15, code_16+j = raw[off+j] >> 4   (Q4_0, Q4_1)
    q5_32       (qs_off, qh_off)  the nibbles plus bit j of the 32-bit mask at qh_off,
                as bit 4 (Q5_0, Q5_1)
    int8_16/32  (off)          int8(raw[off+j])                        (Q8_0; Q6_K's scales)

and each source has these steps, `src` being the tuple of the source's arguments above (the
int8 dot products, `int_dot32` over a source's codes, are emitted by rowdot.py's row loops):

    fma_<src>(acc, raw, src, x, x_off, scale)       acc += scale * sum_j code_j * x[x_off+j]
    fma2_<src>(acc, raw, src, x, x_off, scale_lo, scale_hi)   the same, scale_lo for j < 16
    unpack_<src>(raw, src, bias, scale, offset, out, out_off)
                              out[out_off+j] = scale * float(code_j - bias) - offset
    dot_<src>(raw, src, x, x_off) -> sum_j code_j * x[x_off+j]      (scales times sums of x)

A format's bias (-8, -32, ...) and minimum enter a dot product through sums of x kept by the
caller, so the vector step is the same for every format. `acc` is a float32[8] accumulator
the caller keeps per row; only the sum of its lanes means anything. Offsets are flat element
offsets into C-contiguous arrays. There are no bounds checks: `kernels.py` checks every
shape before a kernel runs.

Numba's cache (cache=True) watches only the file of each cached kernel: after editing this
file, `irgen.py`, `halves.py` or `rows.py`, delete quant/__pycache__/*.nbi and *.nbc.
"""
from __future__ import annotations

import llvmlite.binding as llvm_binding
from llvmlite import ir
from numba import types
from numba.core import config
from numba.extending import intrinsic

from .irgen import (DOT_FLAGS, F32, I1, I8, I16, I32, acc_add, concat, const_vec, data, declare, fold8, hsum,
                    load_vec, ptr, splat, splat_int, vec)


def _use_avx2() -> bool:
    """x86 AVX2 integer dot instructions, only when Numba compiles for this very CPU."""
    if config.CPU_NAME not in (None, "host"):
        return False      # a portable cache (NUMBA_CPU_NAME=generic) must not use them
    return bool(llvm_binding.get_host_cpu_features().get("avx2", False))


def _use_vnni() -> bool:
    """AVX-512 VNNI (vpdpbusd on 256-bit registers), under the same rule as `_use_avx2`."""
    if config.CPU_NAME not in (None, "host"):
        return False
    features = llvm_binding.get_host_cpu_features()
    return bool(features.get("avx512vnni", False) and features.get("avx512vl", False))


_AVX2 = _use_avx2()
_VNNI = _AVX2 and _use_vnni()


# -- sources -------------------------------------------------------------------------------------
# Each source builds its values as <n x i8> bytes, or as <n x i32> lanes widened 8 bytes at a
# time before shifting and masking. The integer dot steps take bytes; the float steps take what
# measured faster: lanes for nibbles (Q4_0: 25% faster), bytes for codes with a high part
# (Q6_K: 45% faster; Q4_K: the same).
def _off(builder, off, delta):
    return builder.add(off, ir.Constant(off.type, delta)) if delta else off


def _field(builder, base, off, shift, mask, elt, n):
    """(raw[off+j] >> shift) & mask for n bytes, computed in lanes of type elt."""
    v = load_vec(builder, base, off, I8, n)
    if elt is not I8:
        v = builder.zext(v, vec(elt, n))
    v = builder.lshr(v, splat_int(builder, shift, elt, n))
    return builder.and_(v, splat_int(builder, mask, elt, n))


def _join(builder, parts):
    while len(parts) > 1:
        parts = [concat(builder, parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
    return parts[0]


def _src_codes(n):
    def gen(builder, base, args, elt):
        lo_off, lo_shift, lo_mask, hi_off, hi_shift, hi_mask, hi_lshift = args
        step = n if elt is I8 else 8
        parts = []
        for c in range(0, n, step):
            lo = _field(builder, base, _off(builder, lo_off, c), lo_shift, lo_mask, elt, step)
            hi = _field(builder, base, _off(builder, hi_off, c), hi_shift, hi_mask, elt, step)
            parts.append(builder.or_(lo, builder.shl(hi, splat_int(builder, hi_lshift, elt, step))))
        return _join(builder, parts)
    return 7, n, gen


def _nibbles(builder, base, off, elt):
    """raw[off+j] & 15 for j < 16, then raw[off+j-16] >> 4."""
    step = 16 if elt is I8 else 8
    four, fifteen = ir.Constant(I8, 4), ir.Constant(I8, 15)
    lo, hi = [], []
    for c in range(0, 16, step):
        lo.append(_field(builder, base, _off(builder, off, c), ir.Constant(I8, 0), fifteen, elt, step))
        hi.append(_field(builder, base, _off(builder, off, c), four, fifteen, elt, step))
    return _join(builder, [_join(builder, lo), _join(builder, hi)])


def _gen_nibbles32(builder, base, args, elt):
    return _nibbles(builder, base, args[0], elt)


def _gen_q5_32(builder, base, args, elt):
    qs_off, qh_off = args
    qh = builder.load(ptr(builder, base, qh_off, I32), align=1)
    bits = builder.lshr(splat(builder, qh, 32), const_vec(I32, range(32)))
    bits = builder.and_(bits, splat(builder, ir.Constant(I32, 1), 32))
    if elt is I8:
        bits = builder.trunc(bits, vec(I8, 32))
    high = builder.shl(bits, splat_int(builder, ir.Constant(I8, 4), elt, 32))
    return builder.or_(_nibbles(builder, base, qs_off, elt), high)


def _src_int8(n):
    def gen(builder, base, args, elt):
        q = load_vec(builder, base, args[0], I8, n)
        return q if elt is I8 else builder.sext(q, vec(elt, n))
    return 1, n, gen


_SOURCES = {
    "codes16": _src_codes(16),
    "codes32": _src_codes(32),
    "nibbles32": (1, 32, _gen_nibbles32),
    "q5_32": (2, 32, _gen_q5_32),
    "int8_16": _src_int8(16),
    "int8_32": _src_int8(32),
}
_SIGNED = {"int8_16", "int8_32"}
_FLOAT_STEP_LANES = {"codes16": I8, "codes32": I8}       # the rest: I32


def _float_codes(builder, gen, base, values, source):
    """<n x float> of a source's values, built the way float steps run fastest."""
    codes = gen(builder, base, values, _FLOAT_STEP_LANES.get(source, I32))
    n = codes.type.count
    if codes.type.element.width == 8 and source not in _SIGNED:
        return builder.uitofp(codes, vec(F32, n))
    return builder.sitofp(codes, vec(F32, n))


# -- step factories ----------------------------------------------------------------------------
def _source_values(builder, src_type, src_value, source, n_args):
    """The source's arguments, passed by the kernel as one tuple."""
    if not isinstance(src_type, types.BaseTuple) or len(src_type) != n_args:
        raise TypeError(f"{source} takes a tuple of {n_args} offsets/shifts/masks, got {src_type}")
    return [builder.extract_value(src_value, i) for i in range(n_args)]


def _make_fma(source):
    n_args, n, gen = _SOURCES[source]

    @intrinsic
    def fma(typingctx, acc, raw, src, x, x_off, scale):
        sig = types.void(acc, raw, src, x, x_off, scale)

        def codegen(context, builder, signature, args):
            a = signature.args
            values = _float_codes(builder, gen, data(context, builder, a[1], args[1]),
                                  _source_values(builder, a[2], args[2], source, n_args), source)
            xv = load_vec(builder, data(context, builder, a[3], args[3]), args[4], F32, n)
            prod = builder.fmul(values, xv, flags=DOT_FLAGS)
            acc_add(builder, data(context, builder, a[0], args[0]), fold8(builder, prod), args[5])
            return context.get_dummy_value()
        return sig, codegen
    return fma


def _make_fma_halves_scaled(source):
    """fma with one scale for values 0-15 and another for 16-31 (Q6_K's 16-value sub-blocks)."""
    n_args, n, gen = _SOURCES[source]
    assert n == 32

    @intrinsic
    def fma2(typingctx, acc, raw, src, x, x_off, scale_lo, scale_hi):
        sig = types.void(acc, raw, src, x, x_off, scale_lo, scale_hi)

        def codegen(context, builder, signature, args):
            a = signature.args
            values = _float_codes(builder, gen, data(context, builder, a[1], args[1]),
                                  _source_values(builder, a[2], args[2], source, n_args), source)
            xv = load_vec(builder, data(context, builder, a[3], args[3]), args[4], F32, n)
            prod = builder.fmul(values, xv, flags=DOT_FLAGS)
            lo = fold8(builder, builder.shuffle_vector(prod, prod, const_vec(I32, range(16))))
            hi = fold8(builder, builder.shuffle_vector(prod, prod, const_vec(I32, range(16, 32))))
            lanes = builder.fadd(builder.fmul(lo, splat(builder, args[5], 8), flags=DOT_FLAGS),
                                 builder.fmul(hi, splat(builder, args[6], 8), flags=DOT_FLAGS), flags=DOT_FLAGS)
            acc_add(builder, data(context, builder, a[0], args[0]), lanes, ir.Constant(F32, 1.0))
            return context.get_dummy_value()
        return sig, codegen
    return fma2


def _make_unpack(source):
    n_args, n, gen = _SOURCES[source]

    @intrinsic
    def unpack(typingctx, raw, src, bias, scale, offset, out, out_off):
        sig = types.void(raw, src, bias, scale, offset, out, out_off)

        def codegen(context, builder, signature, args):
            a = signature.args
            wide = gen(builder, data(context, builder, a[0], args[0]),
                       _source_values(builder, a[1], args[1], source, n_args), I32)
            values = builder.sitofp(builder.sub(wide, splat_int(builder, args[2], I32, n)), vec(F32, n))
            # gguf-py's float32 operations exactly: one multiply, one subtract, never fused
            y = builder.fsub(builder.fmul(splat(builder, args[3], n), values), splat(builder, args[4], n))
            out_base = data(context, builder, a[5], args[5])
            builder.store(y, ptr(builder, out_base, args[6], vec(F32, n)), align=4)
            return context.get_dummy_value()
        return sig, codegen
    return unpack


def _make_dot(source):
    n_args, n, gen = _SOURCES[source]

    @intrinsic
    def dot(typingctx, raw, src, x, x_off):
        sig = types.float32(raw, src, x, x_off)

        def codegen(context, builder, signature, args):
            a = signature.args
            codes = gen(builder, data(context, builder, a[0], args[0]),
                        _source_values(builder, a[1], args[1], source, n_args), I32)
            xv = load_vec(builder, data(context, builder, a[2], args[2]), args[3], F32, n)
            return hsum(builder, builder.fmul(builder.sitofp(codes, vec(F32, n)), xv, flags=DOT_FLAGS))
        return sig, codegen
    return dot


@intrinsic
def dot_packed8(typingctx, lo_word, hi_word, x, x_off):
    """sum over 8 values of byte_j * x[x_off + j], bytes 0-3 of lo_word then of hi_word."""
    sig = types.float32(lo_word, hi_word, x, x_off)

    def codegen(context, builder, signature, args):
        words = ir.Constant(vec(I32, 2), ir.Undefined)
        for i in range(2):
            words = builder.insert_element(words, builder.trunc(args[i], I32) if args[i].type.width > 32
                                           else args[i], ir.Constant(I32, i))
        codes = builder.zext(builder.bitcast(words, vec(I8, 8)), vec(I32, 8))
        xv = load_vec(builder, data(context, builder, signature.args[2], args[2]), args[3], F32, 8)
        return hsum(builder, builder.fmul(builder.sitofp(codes, vec(F32, 8)), xv, flags=DOT_FLAGS))
    return sig, codegen


def int_dot32(builder, codes, xq, signed):
    """<8 x i32> partial sums of code_j * xq_j over 32 values (lane i: values 4i..4i+3).

    With AVX-512 VNNI this is one vpdpbusd (u8 x s8, four products summed in int32); on AVX2
    llama.cpp's pmaddubsw (u8 x s8, adjacent pairs summed in int16) and pmaddwd by ones.
    Unsigned codes are at most 63 and |xq| at most 127, so the int16 pairs never saturate;
    signed codes go in as |code| with xq given the code's sign.
    """
    v32i8, v16i16, v8i32 = vec(I8, 32), vec(I16, 16), vec(I32, 8)
    if (_AVX2 or _VNNI) and signed:
        sign = declare(builder, "llvm.x86.avx2.psign.b", v32i8, [v32i8, v32i8])
        absolute = declare(builder, "llvm.abs.v32i8", v32i8, [v32i8, I1])
        xq = builder.call(sign, [xq, codes])
        codes = builder.call(absolute, [codes, ir.Constant(I1, 0)])
    if _VNNI:
        dpbusd = declare(builder, "llvm.x86.avx512.vpdpbusd.256", v8i32, [v8i32, v8i32, v8i32])
        return builder.call(dpbusd, [ir.Constant(v8i32, [0] * 8), builder.bitcast(codes, v8i32),
                                     builder.bitcast(xq, v8i32)])
    if _AVX2:
        maddubs = declare(builder, "llvm.x86.avx2.pmadd.ub.sw", v16i16, [v32i8, v32i8])
        maddwd = declare(builder, "llvm.x86.avx2.pmadd.wd", v8i32, [v16i16, v16i16])
        return builder.call(maddwd, [builder.call(maddubs, [codes, xq]), ir.Constant(v16i16, [1] * 16)])
    ext = builder.sext if signed else builder.zext
    return fold8(builder, builder.mul(ext(codes, vec(I32, 32)), builder.sext(xq, vec(I32, 32))))


fma_codes16, fma_codes32 = _make_fma("codes16"), _make_fma("codes32")
fma_nibbles32, fma_q5_32, fma_int8_32 = _make_fma("nibbles32"), _make_fma("q5_32"), _make_fma("int8_32")
fma2_codes32 = _make_fma_halves_scaled("codes32")
unpack_codes16, unpack_codes32 = _make_unpack("codes16"), _make_unpack("codes32")
unpack_nibbles32, unpack_q5_32 = _make_unpack("nibbles32"), _make_unpack("q5_32")
unpack_int8_32 = _make_unpack("int8_32")
dot_codes16, dot_int8_16 = _make_dot("codes16"), _make_dot("int8_16")


@intrinsic
def float_of_bits(typingctx, bits):
    """The float32 whose IEEE bits are the int32 `bits` (a bit cast, no conversion)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], F32)
    return sig, codegen
