"""Y = X @ Wᵀ for many tokens (prefill) in int16, on Q8_0, Q4_0, Q4_K, Q5_K and Q6_K blocks.

The float alternative, dequantizing tiles of W to float32 for BLAS (kernels.matmul), writes
and reads 4 bytes per weight and then runs at the float multiply-add rate; here each row is
decoded once to int16 codes (tile16.decode16_*) and multiplied with int16 activations eight
tokens at a time (tile16.tile16): twice the multiply-adds per instruction of float32 on this
CPU, with about the precision of float16 activations (14 bits per run of 32 values).

    Int16Tokens.quantize(X)      X [T, n] float32 → the grouped int16 form
    gemm16(raw, fmt, x16, xd, xsum32, n_tokens, out, threads)
        out [T, n_rows] = X @ Wᵀ for W of type FORMATS[fmt], tiles of 8 rows shared among
        `threads` parts
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rows import DOT, part_rows
from .tile16 import (ROWS, TOKENS, X16_MAX, decode16_q4_0, decode16_q4_k, decode16_q5_k, decode16_q6_k, decode16_q8_0,
                     tile16)


@njit(cache=True, parallel=True)
def quantize_groups(x, x16, xd, xsum32):
    """x [T, n] → x16 [G, n/2, 8, 2] int16 (tokens past T zero), xd [G, n/32, 8] the scale of
    each run of 32 values and token, xsum32 [T, n/32] the exact sums of x over each run."""
    n_tok, n = x.shape
    for g in prange(x16.shape[0]):
        for t in range(TOKENS):
            tok = g * TOKENS + t
            for run in range(n // 32):
                if tok >= n_tok:
                    xd[g, run, t] = 0.0
                    for j in range(16 * run, 16 * run + 16):
                        x16[g, j, t, 0] = 0
                        x16[g, j, t, 1] = 0
                    continue
                amax = np.float32(0.0)
                total = np.float32(0.0)
                for j in range(32 * run, 32 * run + 32):
                    v = x[tok, j]
                    amax = max(amax, abs(v))
                    total += v
                d = amax / np.float32(X16_MAX)
                inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
                for j in range(16 * run, 16 * run + 16):
                    x16[g, j, t, 0] = np.int16(np.rint(x[tok, 2 * j] * inv))
                    x16[g, j, t, 1] = np.int16(np.rint(x[tok, 2 * j + 1] * inv))
                xd[g, run, t] = d
                xsum32[tok, run] = total


class Int16Tokens:
    """Activations X [T, n] in the grouped int16 form of tile16 (n a multiple of 32)."""

    __slots__ = ("n_tokens", "n", "x16", "xd", "xsum32")

    def __init__(self, n_tokens: int, n: int):
        groups = -(-n_tokens // TOKENS)
        self.n_tokens, self.n = n_tokens, n
        self.x16 = np.empty((groups, n // 2, TOKENS, 2), np.int16)
        self.xd = np.empty((groups, n // 32, TOKENS), np.float32)
        self.xsum32 = np.empty((n_tokens, n // 32), np.float32)

    @classmethod
    def quantize(cls, x: np.ndarray) -> "Int16Tokens":
        acts = cls(x.shape[0], x.shape[1])
        quantize_groups(x, acts.x16, acts.xd, acts.xsum32)
        return acts


# the formats gemm16 decodes: code → (bytes per unit, values per unit, has a bias per run)
FORMATS = {"Q8_0": 0, "Q4_0": 1, "Q4_K": 2, "Q5_K": 3, "Q6_K": 4}


@njit(inline="always")
def _decode(fmt, raw, o, n_units, w16, w_off, a, b, ab_off):
    if fmt == 0:
        decode16_q8_0(raw, o, n_units, w16, w_off, a, b, ab_off)
    elif fmt == 1:
        decode16_q4_0(raw, o, n_units, w16, w_off, a, b, ab_off)
    elif fmt == 2:
        decode16_q4_k(raw, o, n_units, w16, w_off, a, b, ab_off)
    elif fmt == 3:
        decode16_q5_k(raw, o, n_units, w16, w_off, a, b, ab_off)
    else:
        decode16_q6_k(raw, o, n_units, w16, w_off, a, b, ab_off)


@njit(**DOT)
def gemm16(raw, fmt, x16, xd, xsum32, n_tokens, out, threads):
    """out [n_tokens, n_rows] = X @ Wᵀ; fmt: FORMATS[type name]; x16, xd, xsum32: Int16Tokens."""
    n_rows, row_bytes = raw.shape[0], raw.shape[1]
    n = x16.shape[1] * 2
    n_runs = n // 32
    n_units = n // 32 if fmt <= 1 else n // 256
    has_bias = fmt == 2 or fmt == 3            # Q4_K / Q5_K: the minimum, through sums of x
    n_tiles = (n_rows + ROWS - 1) // ROWS
    parts = max(1, min(n_tiles, threads))
    for part in prange(parts):
        w16 = np.zeros((ROWS, n), np.int16)
        a = np.zeros((ROWS, n_runs), np.float32)
        b = np.zeros((ROWS, n_runs), np.float32)
        tile = np.empty((ROWS, TOKENS), np.float32)
        for tile_i in part_rows(part, parts, n_tiles):
            r0 = tile_i * ROWS
            rows = min(ROWS, n_rows - r0)
            for r in range(rows):
                _decode(fmt, raw, (r0 + r) * row_bytes, n_units, w16, r * n, a, b, r * n_runs)
            for r in range(rows, ROWS):     # a short last tile: rows of zeros
                w16[r, :] = 0
                a[r, :] = 0.0
            for g in range(x16.shape[0]):
                tile16(w16, n, a, n_runs, x16, g * n * TOKENS, xd, g * n_runs * TOKENS, n_runs, tile)
                for t in range(min(TOKENS, n_tokens - g * TOKENS)):
                    tok = g * TOKENS + t
                    for r in range(rows):
                        y = tile[r, t]
                        if has_bias:
                            for run in range(n_runs):
                                y += b[r, run] * xsum32[tok, run]
                        out[tok, r0 + r] = y
