"""int8-activation products W @ x_t for T tokens at once (decode: T = 1; verifying drafted
tokens: a few), on Q8_0, Q4_0, Q4_K, Q5_K and Q6_K blocks.

    gemv_<t>(raw, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads)
        raw [n_rows, row_bytes] uint8; xq [T, n] int8 with xd [T, n/32] (Q8_0, Q4_0) or
        [T, n/256] (k-quants) its scales (activations.py); xq_lo [T, n] residual codes or
        [T, 0] for none (then xd is the plain scale; for Q8_0 / Q4_0 with residual codes,
        the scale / 254); xsum16, xsum32: exact sums of x over 16 and 32 values; code_sums:
        the activation codes' sum per block (Q8_0's offset, rowdot.SIGNED_OFFSET); out
        [T, n_rows]; threads: numba.get_num_threads(), one part of the rows each.

One `rowdot` (Q8_0, Q4_0: rowdot.py) or `kdot` (k-quants: kdot.py) per row and token, the
scales decoded inside their block loops. The row's bytes stay in L1 for the next token, so
a batch of a few tokens costs about the memory traffic of one.
"""
from __future__ import annotations

from numba import njit, prange

from .rows import DOT, part_rows
from .kdot import kdot_fine_q4_k, kdot_fine_q5_k, kdot_fine_q6_k, kdot_q4_k, kdot_q5_k, kdot_q6_k
from .rowdot import rowdot_fine_q4_0, rowdot_fine_q8_0, rowdot_q4_0, rowdot_q8_0


@njit(**DOT)
def gemv_q8_0(raw, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_blocks = raw.shape[0], raw.shape[1], n_cols // 32
    fine = xq_lo.shape[1] == n_cols
    parts = max(1, min(n_rows, threads))
    for part in prange(parts):
        for r in part_rows(part, parts, n_rows):
            for t in range(n_tok):
                if fine:
                    out[t, r] = rowdot_fine_q8_0(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, code_sums,
                                                 t * n_blocks, n_blocks)
                else:
                    out[t, r] = rowdot_q8_0(raw, r * row_bytes, xq, t * n_cols, xd, code_sums, t * n_blocks,
                                            n_blocks)


@njit(**DOT)
def gemv_q4_0(raw, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_blocks = raw.shape[0], raw.shape[1], n_cols // 32
    fine = xq_lo.shape[1] == n_cols
    parts = max(1, min(n_rows, threads))
    for part in prange(parts):
        for r in part_rows(part, parts, n_rows):
            for t in range(n_tok):
                if fine:
                    out[t, r] = rowdot_fine_q4_0(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, xsum32,
                                                 t * n_blocks, n_blocks)
                else:
                    out[t, r] = rowdot_q4_0(raw, r * row_bytes, xq, t * n_cols, xd, xsum32, t * n_blocks,
                                            n_blocks)


@njit(**DOT)
def gemv_q4_k(raw, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_super = raw.shape[0], raw.shape[1], n_cols // 256
    fine = xq_lo.shape[1] == n_cols
    parts = max(1, min(n_rows, threads))
    for part in prange(parts):
        for r in part_rows(part, parts, n_rows):
            for t in range(n_tok):
                if fine:
                    out[t, r] = kdot_fine_q4_k(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, xsum16, xsum32,
                                               t * n_super, n_super)
                else:
                    out[t, r] = kdot_q4_k(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, xsum16, xsum32,
                                          t * n_super, n_super)


@njit(**DOT)
def gemv_q5_k(raw, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_super = raw.shape[0], raw.shape[1], n_cols // 256
    fine = xq_lo.shape[1] == n_cols
    parts = max(1, min(n_rows, threads))
    for part in prange(parts):
        for r in part_rows(part, parts, n_rows):
            for t in range(n_tok):
                if fine:
                    out[t, r] = kdot_fine_q5_k(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, xsum16, xsum32,
                                               t * n_super, n_super)
                else:
                    out[t, r] = kdot_q5_k(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, xsum16, xsum32,
                                          t * n_super, n_super)


@njit(**DOT)
def gemv_q6_k(raw, xq, xq_lo, xd, xsum16, xsum32, code_sums, out, threads):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_super = raw.shape[0], raw.shape[1], n_cols // 256
    fine = xq_lo.shape[1] == n_cols
    parts = max(1, min(n_rows, threads))
    for part in prange(parts):
        for r in part_rows(part, parts, n_rows):
            for t in range(n_tok):
                if fine:
                    out[t, r] = kdot_fine_q6_k(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, xsum16, xsum32,
                                               t * n_super, n_super)
                else:
                    out[t, r] = kdot_q6_k(raw, r * row_bytes, xq, xq_lo, t * n_cols, xd, xsum16, xsum32,
                                          t * n_super, n_super)
