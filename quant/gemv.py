"""int8-activation products W @ x_t for T tokens at once (decode: T = 1; verifying drafted
tokens: a few), on Q8_0, Q4_0, Q4_K, Q5_K and Q6_K blocks.

    gemv_<t>(raw, xq, xq_lo, xd, xsum, out)
        raw [n_rows, row_bytes] uint8; xq [T, n] int8 and xd [T, n/32] (activations.py);
        xq_lo [T, n] residual codes, or [T, 0] for none (then xd is the plain scale, else
        the scale / 254); xsum [T, n/16] (Q6_K) or [T, n/32] (the rest): exact sums of x;
        out [T, n_rows].

Per row the block scales (and sub-scales, minimums) are decoded once into float arrays;
then per token: the run scales times the activation scales (one vector loop), one
`rowdot` over the row's bytes (which stay in L1 for the next token), and the bias or
minimum terms as a dot product of per-run constants with the sums of x. So a batch of a
few tokens costs about the memory traffic of one.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rows import DOT, block_halves, n_tasks, sum_products, task_rows
from .rowdot import (k4_scales, q6_scales, rowdot_fine_q4_0, rowdot_fine_q4_k, rowdot_fine_q5_k, rowdot_fine_q6_k,
                     rowdot_fine_q8_0, rowdot_q4_0, rowdot_q4_k, rowdot_q5_k, rowdot_q6_k, rowdot_q8_0)


@njit(inline="always")
def _scaled(run_scale, xd_t, dx):
    """dx[b] = run_scale[b] · xd_t[b]: a run's scale times its activation scale."""
    for b in range(dx.size):
        dx[b] = run_scale[b] * xd_t[b]


@njit(inline="always")
def _scaled_halves(half_scale, xd_t, dx):
    """dx[2b + i] = half_scale[2b + i] · xd_t[b]: Q6_K has a scale per 16 values."""
    for b in range(xd_t.size):
        v = xd_t[b]
        dx[2 * b] = half_scale[2 * b] * v
        dx[2 * b + 1] = half_scale[2 * b + 1] * v


@njit(**DOT)
def gemv_q8_0(raw, xq, xq_lo, xd, xsum, out):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_blocks = raw.shape[0], raw.shape[1], n_cols // 32
    fine = xq_lo.shape[1] == n_cols
    for task in prange(n_tasks(n_rows)):
        d, dx = np.empty(n_blocks, np.float32), np.empty(n_blocks, np.float32)
        for r in task_rows(task, n_rows):
            o = r * row_bytes
            block_halves(raw, o, 34, n_blocks, d)
            for t in range(n_tok):
                _scaled(d, xd[t], dx)
                if fine:
                    out[t, r] = rowdot_fine_q8_0(raw, o, xq, xq_lo, t * n_cols, dx, 0, n_blocks)
                else:
                    out[t, r] = rowdot_q8_0(raw, o, xq, t * n_cols, dx, 0, n_blocks)


@njit(**DOT)
def gemv_q4_0(raw, xq, xq_lo, xd, xsum, out):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_blocks = raw.shape[0], raw.shape[1], n_cols // 32
    fine = xq_lo.shape[1] == n_cols
    for task in prange(n_tasks(n_rows)):
        d, dx = np.empty(n_blocks, np.float32), np.empty(n_blocks, np.float32)
        for r in task_rows(task, n_rows):
            o = r * row_bytes
            block_halves(raw, o, 18, n_blocks, d)
            for t in range(n_tok):
                _scaled(d, xd[t], dx)
                if fine:
                    dot = rowdot_fine_q4_0(raw, o, xq, xq_lo, t * n_cols, dx, 0, n_blocks)
                else:
                    dot = rowdot_q4_0(raw, o, xq, t * n_cols, dx, 0, n_blocks)
                out[t, r] = dot - np.float32(8.0) * sum_products(d, xsum[t])      # codes are value + 8


@njit(inline="always")
def _k4_row_scales(raw, o, unit_bytes, n_super, ds, dmins, dsc, dmin_m):
    """Q4_K / Q5_K: dsc[8 sb + s] = d · sc(s), dmin_m[8 sb + s] = dmin · m(s) for every sub-block."""
    block_halves(raw, o, unit_bytes, n_super, ds)
    block_halves(raw, o + 2, unit_bytes, n_super, dmins)
    for sb in range(n_super):
        k4_scales(raw, o + unit_bytes * sb, ds[sb], dmins[sb], dsc, dmin_m, 8 * sb)


@njit(**DOT)
def gemv_q4_k(raw, xq, xq_lo, xd, xsum, out):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_runs = raw.shape[0], raw.shape[1], n_cols // 32
    fine = xq_lo.shape[1] == n_cols
    for task in prange(n_tasks(n_rows)):
        dsc, dmin_m, dx = np.empty(n_runs, np.float32), np.empty(n_runs, np.float32), np.empty(n_runs, np.float32)
        ds, dmins = np.empty(n_runs // 8, np.float32), np.empty(n_runs // 8, np.float32)
        for r in task_rows(task, n_rows):
            o = r * row_bytes
            _k4_row_scales(raw, o, 144, n_runs // 8, ds, dmins, dsc, dmin_m)
            for t in range(n_tok):
                _scaled(dsc, xd[t], dx)
                if fine:
                    dot = rowdot_fine_q4_k(raw, o, xq, xq_lo, t * n_cols, dx, 0, n_runs // 8)
                else:
                    dot = rowdot_q4_k(raw, o, xq, t * n_cols, dx, 0, n_runs // 8)
                out[t, r] = dot - sum_products(dmin_m, xsum[t])


@njit(**DOT)
def gemv_q5_k(raw, xq, xq_lo, xd, xsum, out):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_runs = raw.shape[0], raw.shape[1], n_cols // 32
    fine = xq_lo.shape[1] == n_cols
    for task in prange(n_tasks(n_rows)):
        dsc, dmin_m, dx = np.empty(n_runs, np.float32), np.empty(n_runs, np.float32), np.empty(n_runs, np.float32)
        ds, dmins = np.empty(n_runs // 8, np.float32), np.empty(n_runs // 8, np.float32)
        for r in task_rows(task, n_rows):
            o = r * row_bytes
            _k4_row_scales(raw, o, 176, n_runs // 8, ds, dmins, dsc, dmin_m)
            for t in range(n_tok):
                _scaled(dsc, xd[t], dx)
                if fine:
                    dot = rowdot_fine_q5_k(raw, o, xq, xq_lo, t * n_cols, dx, 0, n_runs // 8)
                else:
                    dot = rowdot_q5_k(raw, o, xq, t * n_cols, dx, 0, n_runs // 8)
                out[t, r] = dot - sum_products(dmin_m, xsum[t])


@njit(**DOT)
def gemv_q6_k(raw, xq, xq_lo, xd, xsum, out):
    n_tok, n_cols = xq.shape
    n_rows, row_bytes, n_sub = raw.shape[0], raw.shape[1], n_cols // 16
    n_super = n_cols // 256
    fine = xq_lo.shape[1] == n_cols
    for task in prange(n_tasks(n_rows)):
        dsc, dx, ds = np.empty(n_sub, np.float32), np.empty(n_sub, np.float32), np.empty(n_super, np.float32)
        for r in task_rows(task, n_rows):
            o = r * row_bytes
            block_halves(raw, o + 208, 210, n_super, ds)
            for sb in range(n_super):          # d · int8 scale of each 16 values
                q6_scales(raw, o + 210 * sb, ds[sb], dsc, 16 * sb)
            for t in range(n_tok):
                _scaled_halves(dsc, xd[t], dx)
                if fine:
                    dot = rowdot_fine_q6_k(raw, o, xq, xq_lo, t * n_cols, dx, 0, n_super)
                else:
                    dot = rowdot_q6_k(raw, o, xq, t * n_cols, dx, 0, n_super)
                out[t, r] = dot - np.float32(32.0) * sum_products(dsc, xsum[t])     # codes are value + 32
