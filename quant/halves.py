"""Scalar loads and float16 / bfloat16 steps: block scales, F16 and BF16 rows.

Same conventions as `simd.py`: flat offsets, no bounds checks.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .irgen import DOT_FLAGS, F32, I16, I32, acc_add, data, fold8, load_vec, ptr, splat, vec


@intrinsic
def load_u32(typingctx, raw, off):
    """The little-endian uint32 at raw[off:off+4], unaligned."""
    sig = types.uint32(raw, off)

    def codegen(context, builder, signature, args):
        return builder.load(ptr(builder, data(context, builder, signature.args[0], args[0]), args[1], I32), align=1)
    return sig, codegen


@intrinsic
def load_f16(typingctx, raw, off):
    """float32 of the IEEE half stored little-endian at raw[off:off+2] (a block's scale)."""
    sig = types.float32(raw, off)

    def codegen(context, builder, signature, args):
        bits = builder.load(ptr(builder, data(context, builder, signature.args[0], args[0]), args[1], I16), align=1)
        return builder.fpext(builder.bitcast(bits, ir.HalfType()), F32)
    return sig, codegen


@intrinsic
def half_at(typingctx, halves, index):
    """float32 of halves.flat[index], a C-contiguous uint16 array holding IEEE half bits (a
    float16 NumPy array viewed as uint16: Numba has no float16). In a loop over index, LLVM
    turns it into vector conversions (vcvtph2ps)."""
    sig = types.float32(halves, index)

    def codegen(context, builder, signature, args):
        base = data(context, builder, signature.args[0], args[0])
        bits = builder.load(ptr(builder, base, args[1], I16), align=2)
        return builder.fpext(builder.bitcast(bits, ir.HalfType()), F32)
    return sig, codegen


@intrinsic
def load_f16x8(typingctx, raw, off, stride, out, out_off):
    """out[out_off + i] = the half at raw[off + stride * i], for i < 8 (scales of 8 blocks).

    One vector conversion for eight blocks. A scalar `fpext half` per block compiles on x86 to
    vpinsrw into whatever register is free, often the row's accumulator: a false dependency
    that chained the blocks of a row (measured: Q4_0 at 60% speed).
    """
    sig = types.void(raw, off, stride, out, out_off)

    def codegen(context, builder, signature, args):
        a = signature.args
        base = data(context, builder, a[0], args[0])
        halves = ir.Constant(vec(I16, 8), [0] * 8)
        for i in range(8):
            at = builder.add(args[1], builder.mul(args[2], ir.Constant(args[2].type, i)))
            bits = builder.load(ptr(builder, base, at, I16), align=1)
            halves = builder.insert_element(halves, bits, ir.Constant(I32, i))
        values = builder.fpext(builder.bitcast(halves, vec(ir.HalfType(), 8)), vec(F32, 8))
        out_base = data(context, builder, a[3], args[3])
        builder.store(values, ptr(builder, out_base, args[4], vec(F32, 8)), align=4)
        return context.get_dummy_value()
    return sig, codegen


def _halves(builder, base, off, kind):
    """<32 x float> of 32 halves or bfloats stored at raw[off : off + 64]."""
    h = load_vec(builder, base, off, I16, 32)
    if kind == "f16":
        return builder.fpext(builder.bitcast(h, vec(ir.HalfType(), 32)), vec(F32, 32))
    wide = builder.shl(builder.zext(h, vec(I32, 32)), splat(builder, ir.Constant(I32, 16), 32))
    return builder.bitcast(wide, vec(F32, 32))     # bfloat16: the top half of a float32


def _make_fma_halves(kind):
    @intrinsic
    def fma(typingctx, acc, raw, off, x, x_off):
        sig = types.void(acc, raw, off, x, x_off)

        def codegen(context, builder, signature, args):
            a = signature.args
            h = _halves(builder, data(context, builder, a[1], args[1]), args[2], kind)
            xv = load_vec(builder, data(context, builder, a[3], args[3]), args[4], F32, 32)
            prod = builder.fmul(h, xv, flags=DOT_FLAGS)
            acc_add(builder, data(context, builder, a[0], args[0]), fold8(builder, prod), ir.Constant(F32, 1.0))
            return context.get_dummy_value()
        return sig, codegen
    return fma


def _make_unpack_halves(kind):
    @intrinsic
    def unpack(typingctx, raw, off, out, out_off):
        sig = types.void(raw, off, out, out_off)

        def codegen(context, builder, signature, args):
            a = signature.args
            h = _halves(builder, data(context, builder, a[0], args[0]), args[1], kind)
            out_base = data(context, builder, a[2], args[2])
            builder.store(h, ptr(builder, out_base, args[3], vec(F32, 32)), align=4)
            return context.get_dummy_value()
        return sig, codegen
    return unpack


fma_f16_32, fma_bf16_32 = _make_fma_halves("f16"), _make_fma_halves("bf16")
unpack_f16_32, unpack_bf16_32 = _make_unpack_halves("f16"), _make_unpack_halves("bf16")


@intrinsic
def load_bf16(typingctx, raw, off):
    """float32 of the bfloat16 stored little-endian at raw[off:off+2]."""
    sig = types.float32(raw, off)

    def codegen(context, builder, signature, args):
        bits = builder.load(ptr(builder, data(context, builder, signature.args[0], args[0]), args[1], I16), align=1)
        return builder.bitcast(builder.shl(builder.zext(bits, I32), ir.Constant(I32, 16)), F32)
    return sig, codegen
