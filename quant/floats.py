"""Kernels for float16 and bfloat16 rows (float32 rows go straight to NumPy/BLAS).

Rows of any length: runs of 32 values take the vector steps, the rest one value at a time.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rows import DOT, EXACT, n_tasks, task_rows
from .halves import fma_bf16_32, fma_f16_32, load_bf16, load_f16, unpack_bf16_32, unpack_f16_32


@njit(**EXACT)
def dequant_f16(raw, row_ids, out):
    n_cols, row_bytes = out.shape[1], raw.shape[1]
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * n_cols
        for j in range(0, n_cols - 31, 32):
            unpack_f16_32(raw, o + 2 * j, out, y + j)
        for j in range(n_cols - n_cols % 32, n_cols):
            out[i, j] = load_f16(raw, o + 2 * j)


@njit(**EXACT)
def dequant_bf16(raw, row_ids, out):
    n_cols, row_bytes = out.shape[1], raw.shape[1]
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * n_cols
        for j in range(0, n_cols - 31, 32):
            unpack_bf16_32(raw, o + 2 * j, out, y + j)
        for j in range(n_cols - n_cols % 32, n_cols):
            out[i, j] = load_bf16(raw, o + 2 * j)


@njit(**DOT)
def matvec_f16(raw, x, xsum, out):
    n_rows, row_bytes, n_cols = raw.shape[0], raw.shape[1], x.size
    for task in prange(n_tasks(n_rows)):
        acc = np.empty(8, np.float32)
        for r in task_rows(task, n_rows):
            acc[:] = 0.0
            o = r * row_bytes
            for j in range(0, n_cols - 31, 32):
                fma_f16_32(acc, raw, o + 2 * j, x, j)
            tail = np.float32(0.0)
            for j in range(n_cols - n_cols % 32, n_cols):
                tail += load_f16(raw, o + 2 * j) * x[j]
            out[r] = acc.sum() + tail


@njit(**DOT)
def matvec_bf16(raw, x, xsum, out):
    n_rows, row_bytes, n_cols = raw.shape[0], raw.shape[1], x.size
    for task in prange(n_tasks(n_rows)):
        acc = np.empty(8, np.float32)
        for r in task_rows(task, n_rows):
            acc[:] = 0.0
            o = r * row_bytes
            for j in range(0, n_cols - 31, 32):
                fma_bf16_32(acc, raw, o + 2 * j, x, j)
            tail = np.float32(0.0)
            for j in range(n_cols - n_cols % 32, n_cols):
                tail += load_bf16(raw, o + 2 * j) * x[j]
            out[r] = acc.sum() + tail
