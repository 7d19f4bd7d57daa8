"""Activations quantized to int8 once, for every int8 kernel that reads them.

x ≈ xd[t, b] · xq[t, B·b : B·b + B]: int8 codes in [-127, 127] with one float32 scale per
block of B values. B = 32 for the 32-value weight formats (llama.cpp's q8_0 activations,
scale kept in float32) and B = 256 for the k-quants (llama.cpp's q8_K): one activation scale
per super-block lets the k-quant kernels sum a whole super-block in integers (kdot.py).
The kernels also need exact float sums of x over runs of 16 and 32 values: a block's bias
or minimum multiplies those sums.

`fine=True` adds a second int8 code per value for the rounding residual:
x ≈ xd · (xq + xq_lo / 254), about 15 bits of precision instead of 8, for two integer dot
products per block instead of one. That keeps greedy decoding of the reference fixtures
identical to float32 activations, which plain int8 (like llama.cpp's) does not.

Decoding one token quantizes the same normed hidden state once for all the matrices that
read it (q/k/v/gate, ffn gate/up): the engine's `Activation` keeps the forms it made.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .simd import float_of_bits

FINE = 254          # residual codes count in 1/254ths of a step (rowdot.FINE)
BLOCKS = (32, 256)
_ROUNDER = np.float32(1.5 * 2 ** 23)


@njit(inline="always")
def _round_half_even(v):
    """np.rint for |v| < 2**22 (codes ≤ 127 here): adding 1.5·2²³ leaves no fraction bits, so
    the FPU's round-to-nearest-even does the rounding; unlike a libm call it vectorises.
    The callers compile without fast-math, which would fold the two operations away."""
    return (v + _ROUNDER) - _ROUNDER


@njit(cache=True)
def quantize_rows(x, block, xq, xq_lo, xd, sum16, sum32, code_sums):
    """x [T, n] float32 → xq [T, n] int8 and xd [T, n/block]; sum16 [T, n/16] and sum32
    [T, n/32] the exact sums of x; when xq_lo has n columns (not 0) the residual codes too;
    code_sums [T, n/block]: each block's sum of codes (of 254 · xq + xq_lo when fine).

    Rounds half to even, as np.rint (and llama.cpp's nearest_int on x86) do."""
    # each block size as a constant: with the size a run-time value the loops took 3x as long
    if block == 256:
        _quantize_rows(x, 256, xq, xq_lo, xd, sum16, sum32, code_sums)
    else:
        _quantize_rows(x, 32, xq, xq_lo, xd, sum16, sum32, code_sums)


@njit(inline="always")
def _quantize_rows(x, block, xq, xq_lo, xd, sum16, sum32, code_sums):
    n_tok, n = x.shape
    fine = xq_lo.shape[1] == n
    for t in range(n_tok):          # serial: a few tokens of a few thousand values
        row, bits = x[t], x[t].view(np.int32)
        for s in range(n // 16):
            acc = np.float32(0.0)
            for j in range(16 * s, 16 * s + 16):
                acc += row[j]
            sum16[t, s] = acc
        for s in range(n // 32):
            sum32[t, s] = sum16[t, 2 * s] + sum16[t, 2 * s + 1]
        for b in range(n // block):
            base = b * block
            top = np.int32(0)       # |x| as bits: integers order non-negative floats alike, and vectorise
            for j in range(base, base + block):
                top = max(top, bits[j] & np.int32(0x7FFFFFFF))
            d = float_of_bits(top) / np.float32(127.0)
            inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
            if fine:
                xd[t, b], code_sums[t, b] = d, _codes_fine(row, inv, xq[t], xq_lo[t], base, base + block)
            else:
                xd[t, b], code_sums[t, b] = d, _codes(row, inv, xq[t], base, base + block)


@njit(inline="always")
def _codes(row, inv, xq, start, stop):
    codes = np.int32(0)
    for j in range(start, stop):
        code = np.int32(_round_half_even(row[j] * inv))
        xq[j] = np.int8(code)
        codes += code
    return np.float32(codes)


@njit(inline="always")
def _codes_fine(row, inv, xq, xq_lo, start, stop):
    codes = np.int32(0)
    for j in range(start, stop):
        scaled = row[j] * inv
        code = _round_half_even(scaled)
        low = np.int32(_round_half_even((scaled - code) * np.float32(FINE)))
        xq[j] = np.int8(code)
        xq_lo[j] = np.int8(low)
        codes += np.int32(FINE) * np.int32(code) + low
    return np.float32(codes)


class Int8Activations:
    """The int8 form of x [T, n] (n a multiple of the block) and the sums the kernels need."""

    __slots__ = ("n_tokens", "n", "block", "fine", "xq", "xq_lo", "xd", "xd_fine", "sum16", "sum32", "code_sums")

    def __init__(self, n_tokens: int, n: int, fine: bool = False, block: int = 32):
        if block not in BLOCKS or n % block:
            raise ValueError(f"int8 activations come in blocks of {BLOCKS}; {n} values do not fit {block}")
        self.n_tokens, self.n, self.block, self.fine = n_tokens, n, block, fine
        self.xq = np.empty((n_tokens, n), np.int8)
        self.xq_lo = np.empty((n_tokens, n if fine else 0), np.int8)
        self.xd = np.empty((n_tokens, n // block), np.float32)
        self.xd_fine = np.empty_like(self.xd)
        self.sum16 = np.empty((n_tokens, n // 16), np.float32)
        self.sum32 = np.empty((n_tokens, n // 32), np.float32)
        self.code_sums = np.empty((n_tokens, n // block), np.float32)

    @classmethod
    def quantize(cls, x: np.ndarray, fine: bool = False, block: int = 32) -> "Int8Activations":
        """x: float32 [T, n] (C-contiguous)."""
        return cls(x.shape[0], x.shape[1], fine, block).requantize(x)

    def requantize(self, x: np.ndarray) -> "Int8Activations":
        """Quantize new values x [T, n] (this form's shape) into these same arrays: a decode
        step re-makes its activations without allocating."""
        if x.shape != self.xq.shape:
            raise ValueError(f"these activations hold {self.xq.shape} values, not {x.shape}")
        quantize_rows(x, self.block, self.xq, self.xq_lo, self.xd, self.sum16, self.sum32, self.code_sums)
        if self.fine:
            np.multiply(self.xd, np.float32(1.0 / FINE), out=self.xd_fine)
        return self

    def scales(self) -> np.ndarray:
        """The activation scale per block that multiplies the integer dot products."""
        return self.xd_fine if self.fine else self.xd

    def sums(self, group: int) -> np.ndarray:
        return self.sum16 if group == 16 else self.sum32
