"""float32 → Q4_K and Q6_K super-blocks (256 values), as ggml's reference quantizers do it.

These are quantize_row_q4_K_ref and quantize_row_q6_K_ref of ggml-quants.c, the code
llama-quantize runs for a tensor when no importance matrix is given. Both search for each
sub-block's scale (`make_qkx2_quants`: scale and min of 32 values weighted by |x| + rms;
`make_qx_quants`: a symmetric scale of 16 values weighted by x²), then quantize the
sub-block scales themselves to 6 or 8 bits against a float16 super-block scale, and
requantize the values with the scales as stored. Layouts are in `kquants.py`.

Every operation is float32 in C's order, without fused multiply-adds, so the bytes equal
ggml's. `nearest_int` is ggml's round-to-nearest-even of a float.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .quantize import QUANT, ROWS_PER_TASK, n_tasks, store_f16

_F0 = np.float32(0.0)
_F1 = np.float32(1.0)
GROUP_MAX_EPS = np.float32(1e-15)
QK_K = 256


@njit(inline="always")
def nearest_int(v):
    return np.int32(np.rint(v))


# -- Q4_K ----------------------------------------------------------------------------------------
@njit(inline="always")
def make_qkx2_quants(x, o, weights, L, lo, laux, nmax, rmin, rdelta, nstep):
    """Scale and (negated) min of the 32 values x[o:o+32] with codes 0..nmax written to
    L[lo:lo+32]: the least weighted squared error over nstep + 1 trial scales.
    Returns (scale, -min)."""
    n = 32
    vmin = x[o]
    vmax = x[o]
    sum_w = weights[0]
    sum_x = sum_w * x[o]
    for i in range(1, n):
        v = x[o + i]
        if v < vmin:
            vmin = v
        if v > vmax:
            vmax = v
        w = weights[i]
        sum_w += w
        sum_x += w * v
    if vmin > _F0:
        vmin = _F0
    if vmax == vmin:
        for i in range(n):
            L[lo + i] = 0
        return _F0, -vmin
    fmax = np.float32(nmax)
    iscale = fmax / (vmax - vmin)
    scale = _F1 / iscale
    best_error = _F0
    for i in range(n):
        q = min(nmax, max(0, nearest_int(iscale * (x[o + i] - vmin))))
        L[lo + i] = q
        diff = scale * np.float32(q) + vmin - x[o + i]
        best_error += weights[i] * (diff * diff)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * np.float32(step) + fmax) / (vmax - vmin)
        sum_l = _F0
        sum_l2 = _F0
        sum_xl = _F0
        for i in range(n):
            q = min(nmax, max(0, nearest_int(iscale * (x[o + i] - vmin))))
            laux[i] = q
            w = weights[i]
            fq = np.float32(q)
            sum_l += w * fq
            sum_l2 += w * fq * fq
            sum_xl += w * fq * x[o + i]
        D = sum_w * sum_l2 - sum_l * sum_l
        if D > _F0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            if this_min > _F0:
                this_min = _F0
                this_scale = sum_xl / sum_l2
            cur_error = _F0
            for i in range(n):
                diff = this_scale * np.float32(laux[i]) + this_min - x[o + i]
                cur_error += weights[i] * (diff * diff)
            if cur_error < best_error:
                for i in range(n):
                    L[lo + i] = laux[i]
                best_error = cur_error
                scale = this_scale
                vmin = this_min
    return scale, -vmin


@njit(inline="always")
def _q4_k_scale_min(out, r, o, j):
    """The 6-bit scale and min of sub-block j from the 12 packed bytes at out[r, o:o+12]."""
    if j < 4:
        return np.int32(out[r, o + j] & 63), np.int32(out[r, o + j + 4] & 63)
    sc = (np.int32(out[r, o + j + 4]) & 0xF) | ((np.int32(out[r, o + j - 4]) >> 6) << 4)
    m = (np.int32(out[r, o + j + 4]) >> 4) | ((np.int32(out[r, o + j]) >> 6) << 4)
    return sc, m


@njit(**QUANT)
def quantize_q4_k(x, out):
    """Q4_K super-block (144 bytes): d, dmin (f16) | 12 bytes of 6-bit scales and mins | 128
    bytes of 4-bit codes; value = d * sc * code - dmin * m per 32-value sub-block."""
    n_rows, n_cols = x.shape
    for task in prange(n_tasks(n_rows)):
        L = np.empty(QK_K, np.int32)
        laux = np.empty(32, np.int32)
        weights = np.empty(32, np.float32)
        scales = np.empty(8, np.float32)
        mins = np.empty(8, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n_rows, (task + 1) * ROWS_PER_TASK)):
            for b in range(n_cols // QK_K):
                xo = QK_K * b
                o = 144 * b
                max_scale = _F0
                max_min = _F0
                for j in range(8):
                    sum_x2 = _F0
                    for i in range(32):
                        v = x[r, xo + 32 * j + i]
                        sum_x2 += v * v
                    av_x = np.sqrt(sum_x2 / np.float32(32.0))
                    for i in range(32):
                        weights[i] = av_x + abs(x[r, xo + 32 * j + i])
                    scale, the_min = make_qkx2_quants(x[r], xo + 32 * j, weights, L, 32 * j, laux,
                                                      15, np.float32(-1.0), np.float32(0.1), 20)
                    scales[j] = scale
                    mins[j] = the_min
                    if scale > max_scale:
                        max_scale = scale
                    if the_min > max_min:
                        max_min = the_min
                inv_scale = np.float32(63.0) / max_scale if max_scale > _F0 else _F0
                inv_min = np.float32(63.0) / max_min if max_min > _F0 else _F0
                for k in range(12):
                    out[r, o + 4 + k] = 0
                for j in range(8):
                    ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
                    lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
                    if j < 4:
                        out[r, o + 4 + j] = np.uint8(ls)
                        out[r, o + 4 + j + 4] = np.uint8(lm)
                    else:
                        out[r, o + 4 + j + 4] = np.uint8((ls & 0xF) | ((lm & 0xF) << 4))
                        out[r, o + 4 + j - 4] |= np.uint8((ls >> 4) << 6)
                        out[r, o + 4 + j] |= np.uint8((lm >> 4) << 6)
                d = store_f16(out, r, o, max_scale / np.float32(63.0))
                dmin = store_f16(out, r, o + 2, max_min / np.float32(63.0))
                for j in range(8):
                    sc, m = _q4_k_scale_min(out, r, o + 4, j)
                    dj = d * np.float32(sc)
                    if dj == _F0:
                        continue                      # keeps the codes make_qkx2_quants chose
                    dm = dmin * np.float32(m)
                    for i in range(32):
                        L[32 * j + i] = min(15, max(0, nearest_int((x[r, xo + 32 * j + i] + dm) / dj)))
                for g in range(4):
                    for i in range(32):
                        out[r, o + 16 + 32 * g + i] = np.uint8(L[64 * g + i] | (L[64 * g + 32 + i] << 4))


# -- Q6_K ----------------------------------------------------------------------------------------
@njit(inline="always")
def make_qx_quants_x2(x, o, L, lo, nmax):
    """Signed scale of the 16 values x[o:o+16], codes + nmax written to L[lo:lo+16]: the best of
    19 trial scales by x²-weighted least squares (ggml's make_qx_quants, rmse_type 1)."""
    n = 16
    amax = _F0
    vmax = _F0
    for i in range(n):
        ax = abs(x[o + i])
        if ax > amax:
            amax = ax
            vmax = x[o + i]
    if amax < GROUP_MAX_EPS:
        for i in range(n):
            L[lo + i] = 0
        return _F0
    fmax = np.float32(nmax)
    iscale = -fmax / vmax
    sumlx = _F0
    suml2 = _F0
    for i in range(n):
        v = x[o + i]
        q = max(-nmax, min(nmax - 1, nearest_int(iscale * v)))
        L[lo + i] = q + nmax
        w = v * v
        fq = np.float32(q)
        sumlx += w * v * fq
        suml2 += w * fq * fq
    scale = sumlx / suml2 if suml2 != _F0 else _F0
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(fmax + np.float32(0.1) * np.float32(step)) / vmax
        sumlx = _F0
        suml2 = _F0
        for i in range(n):
            v = x[o + i]
            q = max(-nmax, min(nmax - 1, nearest_int(iscale * v)))
            w = v * v
            fq = np.float32(q)
            sumlx += w * v * fq
            suml2 += w * fq * fq
        if suml2 > _F0 and sumlx * sumlx > best * suml2:
            for i in range(n):
                L[lo + i] = nmax + max(-nmax, min(nmax - 1, nearest_int(iscale * x[o + i])))
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@njit(**QUANT)
def quantize_q6_k(x, out):
    """Q6_K super-block (210 bytes): ql[128] low nibbles | qh[64] high 2 bits | 16 int8 scales |
    d (f16); value = d * scale * (code - 32) per 16-value sub-block."""
    n_rows, n_cols = x.shape
    for task in prange(n_tasks(n_rows)):
        L = np.empty(QK_K, np.int32)
        scales = np.empty(16, np.float32)
        for r in range(task * ROWS_PER_TASK, min(n_rows, (task + 1) * ROWS_PER_TASK)):
            for b in range(n_cols // QK_K):
                xo = QK_K * b
                o = 210 * b
                max_scale = _F0
                max_abs_scale = _F0
                for ib in range(16):
                    scale = make_qx_quants_x2(x[r], xo + 16 * ib, L, 16 * ib, 32)
                    scales[ib] = scale
                    if abs(scale) > max_abs_scale:
                        max_abs_scale = abs(scale)
                        max_scale = scale
                if max_abs_scale < GROUP_MAX_EPS:
                    for k in range(210):
                        out[r, o + k] = 0
                    continue
                iscale = np.float32(-128.0) / max_scale
                d = store_f16(out, r, o + 208, _F1 / iscale)
                for ib in range(16):
                    out[r, o + 192 + ib] = np.uint8(min(127, nearest_int(iscale * scales[ib])) & 0xFF)
                for j in range(16):
                    dj = d * np.float32(np.int8(out[r, o + 192 + j]))
                    if dj == _F0:
                        continue
                    for i in range(16):
                        L[16 * j + i] = max(-32, min(31, nearest_int(x[r, xo + 16 * j + i] / dj))) + 32
                for h in range(2):
                    for i in range(32):
                        a = L[128 * h + i]
                        b2 = L[128 * h + 32 + i]
                        c = L[128 * h + 64 + i]
                        e = L[128 * h + 96 + i]
                        out[r, o + 64 * h + i] = np.uint8((a & 0xF) | ((c & 0xF) << 4))
                        out[r, o + 64 * h + 32 + i] = np.uint8((b2 & 0xF) | ((e & 0xF) << 4))
                        out[r, o + 128 + 32 * h + i] = np.uint8((a >> 4) | ((b2 >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6))
