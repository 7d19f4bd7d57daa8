"""Kernels for the 32-value block formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.

Block layouts (bytes; d, m are float16; value j of the block, j = 0..31):
    Q8_0  34: d | qs[32] int8                 value = d * qs[j]
    Q4_0  18: d | qs[16]                      value = d * (nib_j - 8)
    Q4_1  20: d | m | qs[16]                  value = d * nib_j + m
    Q5_0  22: d | qh[4] | qs[16]              value = d * ((nib_j | bit_j(qh) << 4) - 16)
    Q5_1  24: d | m | qh[4] | qs[16]          value = d * (nib_j | bit_j(qh) << 4) + m
where nib_j is the low nibble of qs[j] for j < 16 and the high nibble of qs[j - 16] after.

Kernels, all over the (n_rows, row_nbytes) uint8 array `raw`:
    dequant_<t>(raw, row_ids, out)         out[i] = row row_ids[i], exactly as gguf-py
    matvec_<t>(raw, x, xsum, out)          out = W @ x; xsum[b] = sum of x over block b
A block's bias or minimum enters a dot product as (its value) * xsum[b], which is why the
kernels take the sums of x; the vector steps see only the unsigned codes.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rows import DOT, EXACT, block_halves, n_tasks, sum_products, task_rows
from .halves import load_f16
from .simd import fma_int8_32, fma_nibbles32, fma_q5_32, unpack_int8_32, unpack_nibbles32, unpack_q5_32

_F0 = np.float32(0.0)


# -- dequantization -----------------------------------------------------------------------------
@njit(**EXACT)
def dequant_q8_0(raw, row_ids, out):
    n_blocks, row_bytes = out.shape[1] // 32, raw.shape[1]
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for b in range(n_blocks):
            unpack_int8_32(raw, (o + 2,), 0, load_f16(raw, o), _F0, out, y + 32 * b)
            o += 34


@njit(**EXACT)
def dequant_q4_0(raw, row_ids, out):
    n_blocks, row_bytes = out.shape[1] // 32, raw.shape[1]
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for b in range(n_blocks):
            unpack_nibbles32(raw, (o + 2,), 8, load_f16(raw, o), _F0, out, y + 32 * b)
            o += 18


@njit(**EXACT)
def dequant_q4_1(raw, row_ids, out):
    n_blocks, row_bytes = out.shape[1] // 32, raw.shape[1]
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for b in range(n_blocks):
            unpack_nibbles32(raw, (o + 4,), 0, load_f16(raw, o), -load_f16(raw, o + 2), out, y + 32 * b)
            o += 20


@njit(**EXACT)
def dequant_q5_0(raw, row_ids, out):
    n_blocks, row_bytes = out.shape[1] // 32, raw.shape[1]
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for b in range(n_blocks):
            unpack_q5_32(raw, (o + 6, o + 2), 16, load_f16(raw, o), _F0, out, y + 32 * b)
            o += 22


@njit(**EXACT)
def dequant_q5_1(raw, row_ids, out):
    n_blocks, row_bytes = out.shape[1] // 32, raw.shape[1]
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for b in range(n_blocks):
            unpack_q5_32(raw, (o + 8, o + 4), 0, load_f16(raw, o), -load_f16(raw, o + 2), out, y + 32 * b)
            o += 24


# -- dot products ---------------------------------------------------------------------------------
# Per row: the blocks' float16 scales (and minimums) are converted eight at a time into a
# scratch array, their bias/minimum terms summed against xsum in one vector loop, then the
# blocks alternate between two accumulators: with one, every block waits on the previous
# block's add (measured: half the speed).
@njit(**DOT)
def matvec_q8_0(raw, x, xsum, out):
    row_bytes, n_blocks = raw.shape[1], x.size // 32
    for task in prange(n_tasks(raw.shape[0])):
        acc, d = np.empty(16, np.float32), np.empty(n_blocks, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            o = r * row_bytes
            block_halves(raw, o, 34, n_blocks, d)
            acc[:] = 0.0
            for b in range(0, n_blocks, 2):
                fma_int8_32(even, raw, (o + 34 * b + 2,), x, 32 * b, d[b])
                if b + 1 < n_blocks:
                    fma_int8_32(odd, raw, (o + 34 * b + 36,), x, 32 * b + 32, d[b + 1])
            out[r] = acc.sum()


@njit(**DOT)
def matvec_q4_0(raw, x, xsum, out):
    row_bytes, n_blocks = raw.shape[1], x.size // 32
    for task in prange(n_tasks(raw.shape[0])):
        acc, d = np.empty(16, np.float32), np.empty(n_blocks, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            o = r * row_bytes
            block_halves(raw, o, 18, n_blocks, d)
            acc[:] = 0.0
            for b in range(0, n_blocks, 2):
                fma_nibbles32(even, raw, (o + 18 * b + 2,), x, 32 * b, d[b])
                if b + 1 < n_blocks:
                    fma_nibbles32(odd, raw, (o + 18 * b + 20,), x, 32 * b + 32, d[b + 1])
            out[r] = acc.sum() - np.float32(8.0) * sum_products(d, xsum)


@njit(**DOT)
def matvec_q4_1(raw, x, xsum, out):
    row_bytes, n_blocks = raw.shape[1], x.size // 32
    for task in prange(n_tasks(raw.shape[0])):
        acc, d, m = np.empty(16, np.float32), np.empty(n_blocks, np.float32), np.empty(n_blocks, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            o = r * row_bytes
            block_halves(raw, o, 20, n_blocks, d)
            block_halves(raw, o + 2, 20, n_blocks, m)
            acc[:] = 0.0
            for b in range(0, n_blocks, 2):
                fma_nibbles32(even, raw, (o + 20 * b + 4,), x, 32 * b, d[b])
                if b + 1 < n_blocks:
                    fma_nibbles32(odd, raw, (o + 20 * b + 24,), x, 32 * b + 32, d[b + 1])
            out[r] = acc.sum() + sum_products(m, xsum)


@njit(**DOT)
def matvec_q5_0(raw, x, xsum, out):
    row_bytes, n_blocks = raw.shape[1], x.size // 32
    for task in prange(n_tasks(raw.shape[0])):
        acc, d = np.empty(16, np.float32), np.empty(n_blocks, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            o = r * row_bytes
            block_halves(raw, o, 22, n_blocks, d)
            acc[:] = 0.0
            for b in range(0, n_blocks, 2):
                fma_q5_32(even, raw, (o + 22 * b + 6, o + 22 * b + 2), x, 32 * b, d[b])
                if b + 1 < n_blocks:
                    fma_q5_32(odd, raw, (o + 22 * b + 28, o + 22 * b + 24), x, 32 * b + 32, d[b + 1])
            out[r] = acc.sum() - np.float32(16.0) * sum_products(d, xsum)


@njit(**DOT)
def matvec_q5_1(raw, x, xsum, out):
    row_bytes, n_blocks = raw.shape[1], x.size // 32
    for task in prange(n_tasks(raw.shape[0])):
        acc, d, m = np.empty(16, np.float32), np.empty(n_blocks, np.float32), np.empty(n_blocks, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            o = r * row_bytes
            block_halves(raw, o, 24, n_blocks, d)
            block_halves(raw, o + 2, 24, n_blocks, m)
            acc[:] = 0.0
            for b in range(0, n_blocks, 2):
                fma_q5_32(even, raw, (o + 24 * b + 8, o + 24 * b + 4), x, 32 * b, d[b])
                if b + 1 < n_blocks:
                    fma_q5_32(odd, raw, (o + 24 * b + 32, o + 24 * b + 28), x, 32 * b + 32, d[b + 1])
            out[r] = acc.sum() + sum_products(m, xsum)
