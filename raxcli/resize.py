"""Antialiased bicubic resize of 8-bit RGB images, bit-exact with torchvision on uint8.

transformers resizes with torchvision (`resize(..., BICUBIC, antialias=True)` on uint8
tensors), which runs PyTorch's separable uint8 kernel: per axis, Keys' cubic (a = −0.5)
stretched by the scale when shrinking, the taps normalised to sum 1, then turned into
int16 fixed-point weights with a precision chosen from the largest weight of the axis;
the horizontal pass runs first and rounds to uint8, then the vertical one. Pillow's
BICUBIC is the same filter with other rounding (22-bit int32 weights, and it applies the
passes in another order), so it differs by up to a few levels where edges overshoot.
This module reproduces the PyTorch arithmetic exactly; `test_media` checks it against
stored torchvision outputs.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

CUBIC_A = -0.5


def cubic(x: float) -> float:
    x = abs(x)
    if x < 1.0:
        return ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((CUBIC_A * x - 5.0 * CUBIC_A) * x + 8.0 * CUBIC_A) * x - 4.0 * CUBIC_A
    return 0.0


def axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Taps of one axis: first source index [out], tap count [out], int16 weights
    [out, k_max] and the fixed-point precision (bits)."""
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    k_max = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    first = np.zeros(out_size, np.int64)
    count = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, k_max), np.float64)
    w_max = 0.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        x0 = max(int(center - support + 0.5), 0)           # int() truncates, as C++ does
        n = min(int(center + support + 0.5), in_size) - x0
        n = min(max(n, 0), k_max)
        w = [cubic((j + x0 - center + 0.5) * invscale) for j in range(n)]
        total = sum(w)
        if total != 0.0:
            w = [v / total for v in w]
            w_max = max(w_max, max(w))
        first[i], count[i] = x0, n
        weights[i, :n] = w
    precision = 0
    while precision < 22 and int(0.5 + w_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weights * (1 << precision)
    fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int32)
    return first, count, fixed, precision


@nb.njit(cache=True, parallel=True)
def _resample_rows(src, first, count, weights, precision):
    """src: uint8 [H, W_in, C] → [H, W_out, C] along axis 1."""
    H, _, C = src.shape
    W = first.shape[0]
    out = np.empty((H, W, C), np.uint8)
    half = np.int32(1) << (precision - 1)
    for y in nb.prange(H):
        for x in range(W):
            x0 = first[x]
            for c in range(C):
                acc = half
                for j in range(count[x]):
                    acc += np.int32(src[y, x0 + j, c]) * weights[x, j]
                v = acc >> precision
                out[y, x, c] = 0 if v < 0 else (255 if v > 255 else v)
    return out


@nb.njit(cache=True, parallel=True)
def _resample_columns(src, first, count, weights, precision):
    """src: uint8 [H_in, W, C] → [H_out, W, C] along axis 0."""
    _, W, C = src.shape
    H = first.shape[0]
    out = np.empty((H, W, C), np.uint8)
    half = np.int32(1) << (precision - 1)
    for y in nb.prange(H):
        y0 = first[y]
        for x in range(W):
            for c in range(C):
                acc = half
                for j in range(count[y]):
                    acc += np.int32(src[y0 + j, x, c]) * weights[y, j]
                v = acc >> precision
                out[y, x, c] = 0 if v < 0 else (255 if v > 255 else v)
    return out


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, C] → uint8 [height, width, C], as torchvision's antialiased bicubic."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if image.shape[1] != width:
        image = _resample_rows(image, *axis_weights(image.shape[1], width))
    if image.shape[0] != height:
        image = _resample_columns(image, *axis_weights(image.shape[0], height))
    return image
