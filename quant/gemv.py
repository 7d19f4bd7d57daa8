"""int8-activation products W @ x_t for T tokens at once (decode: T = 1; verifying drafted
tokens: a few), on Q8_0, Q4_0, Q4_K, Q5_K and Q6_K blocks, for one matrix or for several
that read the same input (DeltaNet's four input projections, attention's q, k, v, the MLP's
gate and up) in one parallel pass.

    gemv_<t>(base, starts, rows, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads)
        base: uint8 bytes holding every matrix (a file's memory map, or one matrix's bytes);
        matrix m has rows[m] rows of the type's row bytes for n columns, from byte starts[m]
        of base on. Their outputs lie side by side in out [T, sum(rows)].
        xq [T, n] int8 with xd [T, n/32] (Q8_0, Q4_0) or [T, n/256] (k-quants) its scales
        (activations.py); xq_lo [T, n] residual codes or [T, 0] for none (then xd is the
        plain scale; for Q8_0 / Q4_0 with residual codes, the scale / 254); xsum16, xsum32:
        exact sums of x over 16 and 32 values; code_sums: the activation codes' sum per block
        (Q8_0's offset, rowdot.SIGNED_OFFSET); threads: rows.thread_count(), one equal share
        of all the rows each.

One `rowdot` (Q8_0, Q4_0: rowdot.py) or `kdot` (k-quants: kdot.py) per row and token, the
scales decoded inside their block loops. The row's bytes stay in L1 for the next token, so
a batch of a few tokens costs about the memory traffic of one. One pass for several matrices
saves a parallel region and a dispatch per matrix, and the small ones (DeltaNet's β and α:
16 rows) no longer leave a thread idle.
"""
from __future__ import annotations

from numba import njit, prange

from .rows import DOT, part_rows
from .kdot import kdot_fine_q4_k, kdot_fine_q5_k, kdot_fine_q6_k, kdot_q4_k, kdot_q5_k, kdot_q6_k
from .rowdot import rowdot_fine_q4_0, rowdot_fine_q8_0, rowdot_q4_0, rowdot_q8_0


@njit(inline="always")
def layout(xq, xq_lo, rows, threads, block, block_bytes):
    """(tokens, columns, blocks per row, row bytes, whether residual codes come, all rows,
    thread shares) for blocks of `block` values in `block_bytes` bytes."""
    n_tok, n_cols = xq.shape
    n_units = n_cols // block
    total = 0
    for m in range(rows.size):
        total += rows[m]
    fine, parts = xq_lo.shape[1] == n_cols, max(1, min(total, threads))
    return n_tok, n_cols, n_units, n_units * block_bytes, fine, total, parts


@njit(inline="always")
def matrix_run(first, m, column, stop, starts, rows, row_bytes):
    """From output column `first` (a row of matrix m or a later one; matrix m's rows are the
    output columns from `column` on): (its matrix, that matrix's first column, where this
    run of rows of one matrix ends — at `stop` at the latest —, the byte offset of row `first`)."""
    while first >= column + rows[m]:
        column += rows[m]
        m += 1
    return m, column, min(stop, column + rows[m]), starts[m] + (first - column) * row_bytes


@njit(**DOT)
def gemv_q8_0(base, starts, rows, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols, n_units, row_bytes, fine, total, parts = layout(xq, xq_lo, rows, threads, 32, 34)
    for part in prange(parts):
        share = part_rows(part, parts, total)
        first, m, column = share.start, 0, 0
        while first < share.stop:
            m, column, stop, o = matrix_run(first, m, column, share.stop, starts, rows, row_bytes)
            for c in range(first, stop):
                for t in range(n_tok):
                    x0, s0 = t * n_cols, t * n_units
                    if fine:
                        out[t, c] = rowdot_fine_q8_0(base, o, xq, xq_lo, x0, xd, code_sums, s0, n_units)
                    else:
                        out[t, c] = rowdot_q8_0(base, o, xq, x0, xd, code_sums, s0, n_units)
                o += row_bytes
            first = stop


@njit(**DOT)
def gemv_q4_0(base, starts, rows, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols, n_units, row_bytes, fine, total, parts = layout(xq, xq_lo, rows, threads, 32, 18)
    for part in prange(parts):
        share = part_rows(part, parts, total)
        first, m, column = share.start, 0, 0
        while first < share.stop:
            m, column, stop, o = matrix_run(first, m, column, share.stop, starts, rows, row_bytes)
            for c in range(first, stop):
                for t in range(n_tok):
                    x0, s0 = t * n_cols, t * n_units
                    if fine:
                        out[t, c] = rowdot_fine_q4_0(base, o, xq, xq_lo, x0, xd, xsum32, s0, n_units)
                    else:
                        out[t, c] = rowdot_q4_0(base, o, xq, x0, xd, xsum32, s0, n_units)
                o += row_bytes
            first = stop


@njit(**DOT)
def gemv_q4_k(base, starts, rows, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols, n_units, row_bytes, fine, total, parts = layout(xq, xq_lo, rows, threads, 256, 144)
    for part in prange(parts):
        share = part_rows(part, parts, total)
        first, m, column = share.start, 0, 0
        while first < share.stop:
            m, column, stop, o = matrix_run(first, m, column, share.stop, starts, rows, row_bytes)
            for c in range(first, stop):
                for t in range(n_tok):
                    x0, s0 = t * n_cols, t * n_units
                    if fine:
                        out[t, c] = kdot_fine_q4_k(base, o, xq, xq_lo, x0, xd, xsum16, xsum32, s0, n_units)
                    else:
                        out[t, c] = kdot_q4_k(base, o, xq, xq_lo, x0, xd, xsum16, xsum32, s0, n_units)
                o += row_bytes
            first = stop


@njit(**DOT)
def gemv_q5_k(base, starts, rows, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols, n_units, row_bytes, fine, total, parts = layout(xq, xq_lo, rows, threads, 256, 176)
    for part in prange(parts):
        share = part_rows(part, parts, total)
        first, m, column = share.start, 0, 0
        while first < share.stop:
            m, column, stop, o = matrix_run(first, m, column, share.stop, starts, rows, row_bytes)
            for c in range(first, stop):
                for t in range(n_tok):
                    x0, s0 = t * n_cols, t * n_units
                    if fine:
                        out[t, c] = kdot_fine_q5_k(base, o, xq, xq_lo, x0, xd, xsum16, xsum32, s0, n_units)
                    else:
                        out[t, c] = kdot_q5_k(base, o, xq, xq_lo, x0, xd, xsum16, xsum32, s0, n_units)
                o += row_bytes
            first = stop


@njit(**DOT)
def gemv_q6_k(base, starts, rows, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols, n_units, row_bytes, fine, total, parts = layout(xq, xq_lo, rows, threads, 256, 210)
    for part in prange(parts):
        share = part_rows(part, parts, total)
        first, m, column = share.start, 0, 0
        while first < share.stop:
            m, column, stop, o = matrix_run(first, m, column, share.stop, starts, rows, row_bytes)
            for c in range(first, stop):
                for t in range(n_tok):
                    x0, s0 = t * n_cols, t * n_units
                    if fine:
                        out[t, c] = kdot_fine_q6_k(base, o, xq, xq_lo, x0, xd, xsum16, xsum32, s0, n_units)
                    else:
                        out[t, c] = kdot_q6_k(base, o, xq, xq_lo, x0, xd, xsum16, xsum32, s0, n_units)
                o += row_bytes
            first = stop
