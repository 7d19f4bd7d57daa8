"""Whole-row int8 dot products for the 32-value formats (Q8_0, Q4_0), each one loop written
in LLVM IR (the decode hot path; the k-quants have theirs in kdot.py).

    rowdot_<fmt>(raw, o, xq, x_off, dx, dx_off, n_units) -> float32
        sum over the n_units blocks of the row whose bytes start at raw[o], of
        dx[b] * sum_j code_j * xq[x_off + 32 b + j]

`dx` holds one float per block: the block scale times the activation scale, computed by the
caller (`gemv.py`). Codes are the raw codes of each format (Q8_0: signed; Q4_0: the unsigned
nibbles, whose -8 is the caller's business, through sums of x).

Why IR loops and not Numba loops calling one vector step per block (as the float kernels of
legacy.py do): there the accumulators live in a Numba array that every step stores to, index
wrap-around checks and a hoisted horizontal sum sit in the block loop, and the int8 kernels
written that way ran at about 20 instructions per block. Here four accumulators stay in registers, one group of runs per
iteration, and the only work per run is: load codes, vpdpbusd (or pmaddubsw + pmaddwd),
convert, multiply-add by a broadcast scale.

Same conventions as `simd.py`: flat element offsets, no bounds checks.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .irgen import DOT_FLAGS, F32, I8, I32, concat, data, hsum, load_vec, ptr, splat, vec
from .simd import _SOURCES, _int_dot32

I64 = ir.IntType(64)
N_ACC = 4


def _c(value):
    return ir.Constant(I64, value)


# Each format: bytes per unit, runs of 32 per unit, and for run i of a unit the source name and
# its arguments as (offset from the unit's start, shift, mask, ...) with offsets relative to the
# unit; `scales_per_run` is 2 for Q6_K (a scale per 16 values).
def _q8_0_runs():
    return [("int8_32", True, (2,))]


def _q4_0_runs():
    return [("nibbles32", False, (2,))]


# name -> (unit bytes, runs, scales per run)
FORMATS = {
    "q8_0": (34, _q8_0_runs(), 1),
    "q4_0": (18, _q4_0_runs(), 1),
}


def _run_args(builder, unit_off, args):
    """Source arguments with unit-relative offsets made absolute (offsets sit where the source
    expects them: codes sources at positions 0 and 3, the others at 0 / 0 and 1)."""
    values = []
    offset_positions = {0, 3} if len(args) == 7 else set(range(len(args)))
    for i, a in enumerate(args):
        if i in offset_positions:
            values.append(builder.add(unit_off, _c(a)))
        else:
            values.append(ir.Constant(I8, a))
    return values


# Residual ("fine") activations: x ≈ xd · (xq + xq_lo / FINE), about 15 bits instead of 8.
FINE = 254


def _emit_rowdot(builder, fmt, raw_p, o0, xq_p, lo_p, x0, dx_p, d0, count):
    """The loop over a row's units; lo_p is the residual codes' pointer, or None."""
    unit_bytes, runs, scales_per_run = FORMATS[fmt]
    n_runs = len(runs)
    group = max(1, N_ACC // n_runs)          # units per loop iteration (Q8_0 / Q4_0: four blocks)
    zero = ir.Constant(vec(F32, 8), [0.0] * 8)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(N_ACC)]

    def emit_unit(unit, slot0):
        """All runs of unit number `unit` (an i64), accumulators from slot0 on."""
        unit_off = builder.add(o0, builder.mul(unit, _c(unit_bytes)))
        run0 = builder.mul(unit, _c(n_runs))
        for i, (source, signed, rel) in enumerate(runs):
            gen = _SOURCES[source][2]
            codes = gen(builder, raw_p, _run_args(builder, unit_off, rel), I8)
            run = builder.add(run0, _c(i))
            x_at = builder.add(x0, builder.mul(run, _c(32)))
            part = _int_dot32(builder, codes, load_vec(builder, xq_p, x_at, I8, 32), None, None, signed)
            if lo_p is not None:
                low = _int_dot32(builder, codes, load_vec(builder, lo_p, x_at, I8, 32), None, None, signed)
                part = builder.add(builder.mul(part, ir.Constant(vec(I32, 8), [FINE] * 8)), low)
            part = builder.sitofp(part, vec(F32, 8))
            s_at = builder.add(d0, builder.mul(run, _c(scales_per_run)))
            if scales_per_run == 1:
                scale = splat(builder, builder.load(ptr(builder, dx_p, s_at, F32)), 8)
            else:       # lanes 0-3 hold values 0-15, lanes 4-7 values 16-31
                lo = builder.load(ptr(builder, dx_p, s_at, F32))
                hi = builder.load(ptr(builder, dx_p, builder.add(s_at, _c(1)), F32))
                scale = concat(builder, splat(builder, lo, 4), splat(builder, hi, 4))
            slot = accs[(slot0 + i) % N_ACC]
            prod = builder.fmul(part, scale, flags=DOT_FLAGS)
            builder.store(builder.fadd(builder.load(slot), prod, flags=DOT_FLAGS), slot)

    n_groups = builder.sdiv(count, _c(group))
    with cgutils.for_range(builder, n_groups) as loop:
        for u in range(group):
            emit_unit(builder.add(builder.mul(loop.index, _c(group)), _c(u)), u * n_runs)
    if group > 1:
        done = builder.mul(n_groups, _c(group))
        with cgutils.for_range(builder, builder.sub(count, done)) as loop:
            emit_unit(builder.add(done, loop.index), 0)
    total = builder.load(accs[0])
    for slot in accs[1:]:
        total = builder.fadd(total, builder.load(slot), flags=DOT_FLAGS)
    return hsum(builder, total)


def _make_rowdot(fmt):
    @intrinsic
    def rowdot(typingctx, raw, o, xq, x_off, dx, dx_off, n_units):
        sig = types.float32(raw, o, xq, x_off, dx, dx_off, n_units)

        def codegen(context, builder, signature, args):
            a = signature.args
            i64 = [context.cast(builder, args[i], a[i], types.int64) for i in (1, 3, 5, 6)]
            return _emit_rowdot(builder, fmt, data(context, builder, a[0], args[0]), i64[0],
                                data(context, builder, a[2], args[2]), None, i64[1],
                                data(context, builder, a[4], args[4]), i64[2], i64[3])
        return sig, codegen
    return rowdot


def _make_rowdot_fine(fmt):
    """rowdot_fine_<fmt>(raw, o, xq, xq_lo, x_off, dx, dx_off, n_units): activations
    xd · (xq + xq_lo / FINE); the caller's dx carries the 1 / FINE."""
    @intrinsic
    def rowdot_fine(typingctx, raw, o, xq, xq_lo, x_off, dx, dx_off, n_units):
        sig = types.float32(raw, o, xq, xq_lo, x_off, dx, dx_off, n_units)

        def codegen(context, builder, signature, args):
            a = signature.args
            i64 = [context.cast(builder, args[i], a[i], types.int64) for i in (1, 4, 6, 7)]
            return _emit_rowdot(builder, fmt, data(context, builder, a[0], args[0]), i64[0],
                                data(context, builder, a[2], args[2]), data(context, builder, a[3], args[3]),
                                i64[1], data(context, builder, a[5], args[5]), i64[2], i64[3])
        return sig, codegen
    return rowdot_fine


rowdot_q8_0, rowdot_fine_q8_0 = _make_rowdot("q8_0"), _make_rowdot_fine("q8_0")
rowdot_q4_0, rowdot_fine_q4_0 = _make_rowdot("q4_0"), _make_rowdot_fine("q4_0")
