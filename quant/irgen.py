"""Compile-time helpers that emit LLVM IR for the intrinsics of `simd.py` and `halves.py`.

Nothing here runs at kernel run time: these functions build vector instructions while Numba
compiles a kernel.
"""
from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils

I1, I8, I16, I32, F32 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()
# Dot steps may fuse and reorder their float sums (a dot product's order is arbitrary anyway);
# the unpack steps carry no flags, so dequantization stays exact.
DOT_FLAGS = ("contract", "reassoc", "nsz")


def vec(elt, n):
    return ir.VectorType(elt, n)


def const_vec(elt, values):
    values = list(values)
    return ir.Constant(vec(elt, len(values)), values)


def data(context, builder, aryty, ary):
    return context.make_array(aryty)(context, builder, value=ary).data


def ptr(builder, base, off, elt_type):
    return builder.bitcast(builder.gep(base, [off], inbounds=True), elt_type.as_pointer())


def load_vec(builder, base, off, elt, n):
    return builder.load(ptr(builder, base, off, vec(elt, n)), align=1)


def splat(builder, value, n):
    undef = ir.Constant(vec(value.type, n), ir.Undefined)
    one = builder.insert_element(undef, value, ir.Constant(I32, 0))
    return builder.shuffle_vector(one, undef, const_vec(I32, [0] * n))


def splat_int(builder, value, elt, n):
    """A runtime integer argument (any width) broadcast as <n x elt>."""
    if value.type.width > elt.width:
        value = builder.trunc(value, elt)
    elif value.type.width < elt.width:
        value = builder.zext(value, elt)
    return splat(builder, value, n)


def concat(builder, a, b):
    return builder.shuffle_vector(a, b, const_vec(I32, range(2 * a.type.count)))


def fold8(builder, v):
    """Sum the 8-lane parts of a float or int vector into one 8-lane vector."""
    parts = [builder.shuffle_vector(v, v, const_vec(I32, range(i, i + 8))) for i in range(0, v.type.count, 8)]
    is_float = isinstance(v.type.element, ir.FloatType)
    while len(parts) > 1:
        pairs = [(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
        parts = [builder.fadd(a, b, flags=DOT_FLAGS) if is_float else builder.add(a, b) for a, b in pairs]
    return parts[0]


def acc_add(builder, acc_ptr, lanes8, scale):
    """acc[0:8] += scale * lanes8."""
    ptr = builder.bitcast(acc_ptr, vec(F32, 8).as_pointer())
    scaled = builder.fmul(lanes8, splat(builder, scale, 8), flags=DOT_FLAGS)
    total = builder.fadd(builder.load(ptr, align=4), scaled, flags=DOT_FLAGS)
    builder.store(total, ptr, align=4)


def hsum(builder, v):
    """Sum of all lanes of a float vector."""
    v = fold8(builder, v)
    for n in (4, 2, 1):
        lo = builder.shuffle_vector(v, v, const_vec(I32, range(n)))
        hi = builder.shuffle_vector(v, v, const_vec(I32, range(n, 2 * n)))
        v = builder.fadd(lo, hi, flags=DOT_FLAGS)
    return builder.extract_element(v, ir.Constant(I32, 0))


def declare(builder, name, ret, params):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, params), name)
