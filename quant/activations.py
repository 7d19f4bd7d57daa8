"""Activations quantized to int8 once, for every int8 kernel that reads them.

x ≈ xd[t, b] · xq[t, 32b : 32b + 32]: int8 codes in [-127, 127] with one float32 scale per
32 values (llama.cpp's q8_0 activations, with the scale kept in float32; llama.cpp's q8_K
uses one scale per 256 for the k-quants). The kernels also need exact float sums of x over
runs of 16 and 32 values: a block's bias or minimum multiplies those sums (see legacy.py).

Decoding one token quantizes the same normed hidden state once for all the matrices that
read it (q/k/v/gate, ffn gate/up): `Int8Activations.quantize(x, into=...)` reuses buffers.
"""
from __future__ import annotations

import numpy as np
from numba import njit

BLOCK = 32
FINE = 254          # residual codes count in 1/254ths of a step (rowdot.FINE)


@njit(cache=True)
def quantize_rows(x, xq, xq_lo, xd, sum16, sum32):
    """x [T, n] float32 → xq [T, n] int8, xd [T, n/32], sum16 [T, n/16], sum32 [T, n/32],
    and when xq_lo has n columns (not 0) the residual codes xq_lo [T, n].

    Rounds half to even, as np.rint (and llama.cpp's nearest_int on x86) do."""
    n_tok, n = x.shape
    fine = xq_lo.shape[1] == n
    for t in range(n_tok):          # serial: a few tokens of a few thousand values
        for b in range(n // BLOCK):
            base = b * BLOCK
            amax = np.float32(0.0)
            lo = np.float32(0.0)
            hi = np.float32(0.0)
            for j in range(16):
                v = x[t, base + j]
                lo += v
                amax = max(amax, abs(v))
            for j in range(16, BLOCK):
                v = x[t, base + j]
                hi += v
                amax = max(amax, abs(v))
            d = amax / np.float32(127.0)
            inv = np.float32(1.0) / d if d > 0 else np.float32(0.0)
            for j in range(BLOCK):
                scaled = x[t, base + j] * inv
                code = np.rint(scaled)
                xq[t, base + j] = np.int8(code)
                if fine:
                    xq_lo[t, base + j] = np.int8(np.rint((scaled - code) * np.float32(FINE)))
            xd[t, b] = d
            sum16[t, 2 * b] = lo
            sum16[t, 2 * b + 1] = hi
            sum32[t, b] = lo + hi


class Int8Activations:
    """The int8 form of x [T, n] (n a multiple of 32) and the sums the kernels need."""

    __slots__ = ("n_tokens", "n", "fine", "xq", "xq_lo", "xd", "xd_fine", "sum16", "sum32")

    def __init__(self, n_tokens: int, n: int, fine: bool = False):
        if n % BLOCK:
            raise ValueError(f"int8 activations need a multiple of {BLOCK} values, not {n}")
        self.n_tokens, self.n, self.fine = n_tokens, n, fine
        self.xq = np.empty((n_tokens, n), np.int8)
        self.xq_lo = np.empty((n_tokens, n if fine else 0), np.int8)
        self.xd = np.empty((n_tokens, n // BLOCK), np.float32)
        self.xd_fine = np.empty_like(self.xd)
        self.sum16 = np.empty((n_tokens, n // 16), np.float32)
        self.sum32 = np.empty((n_tokens, n // BLOCK), np.float32)

    @classmethod
    def quantize(cls, x: np.ndarray, into: "Int8Activations | None" = None,
                 fine: bool = False) -> "Int8Activations":
        """x: float32 [T, n] (C-contiguous). `into` is reused when its shape and kind fit."""
        n_tok, n = x.shape
        fits = into is not None and (into.n_tokens, into.n, into.fine) == (n_tok, n, fine)
        acts = into if fits else cls(n_tok, n, fine)
        quantize_rows(x, acts.xq, acts.xq_lo, acts.xd, acts.sum16, acts.sum32)
        if fine:
            np.multiply(acts.xd, np.float32(1.0 / FINE), out=acts.xd_fine)
        return acts

    def scales(self) -> np.ndarray:
        """The activation scale per 32 values that multiplies the integer dot products."""
        return self.xd_fine if self.fine else self.xd

    def sums(self, group: int) -> np.ndarray:
        return self.sum16 if group == 16 else self.sum32
