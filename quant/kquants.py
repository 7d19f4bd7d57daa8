"""Kernels for the k-quants: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (super-blocks of 256 values).

Layouts (bytes at offset; d, dmin float16), value i of a super-block:
    Q2_K  84: scales[16] @0 | qs[64] @16 | d @80 | dmin @82
          i = 128h + 32k + l: code = (qs[32h+l] >> 2k) & 3; sub-block s = i // 16,
          value = d * (scales[s] & 15) * code - dmin * (scales[s] >> 4)
    Q3_K 110: hmask[32] @0 | qs[64] @32 | scales[12] @96 | d @108
          i as Q2_K: code = (qs[32h+l] >> 2k) & 3 | ((hmask[l] >> (4h+k)) & 1) << 2,
          value = d * sc6(s) * (code - 4), sc6 a signed 6-bit scale (`_q3_k_scale`)
    Q4_K 144: d @0 | dmin @2 | scales[12] @4 | qs[128] @16
          i = 64j + 32t + l: code = (qs[32j+l] >> 4t) & 15, sub-block s = 2j + t,
          value = d * sc(s) * code - dmin * m(s), 6-bit sc, m packed (`_k4_scales`)
    Q5_K 176: d @0 | dmin @2 | scales[12] @4 | qh[32] @16 | qs[128] @48
          as Q4_K with bit s of qh[l] as bit 4 of the code
    Q6_K 210: ql[128] @0 | qh[64] @128 | scales[16] int8 @192 | d @208
          i = 128h + 32k + l: code = (ql[64h + 32(k&1) + l] >> 4(k>>1)) & 15
                                   | ((qh[32h+l] >> 2k) & 3) << 4,
          value = d * scales[i // 16] * (code - 32)

Kernels as in `legacy.py`: dequant_<t>(raw, row_ids, out), matvec_<t>(raw, x, xsum, out)
(the int8-activation products are in `gemv.py`); here xsum holds sums of x over runs of 16 values
(Q2_K, Q3_K, Q6_K) or 32 (Q4_K, Q5_K) — `kernels.py` passes the right one. Runs alternate
between the `even` and `odd` accumulators to keep two add chains in flight.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .rows import DOT, EXACT, block_halves, n_tasks, task_rows
from .halves import load_f16, load_u32
from .simd import (dot_codes16, dot_int8_16, dot_packed8, fma2_codes32, fma_codes16, fma_codes32, unpack_codes16,
                   unpack_codes32)

_F0 = np.float32(0.0)


# -- packed scales ------------------------------------------------------------------------------
@njit(inline="always")
def _byte(flat, i):
    return np.int64(flat[i])


@njit(inline="always")
def _k4_scales(flat, o):
    """The 6-bit scales and mins of a Q4_K/Q5_K super-block (12 bytes at flat[o]), one per byte
    of four words: (scales 0-3, scales 4-7, mins 0-3, mins 4-7).

    Bytes 0-3 hold scale s and bytes 4-7 min s in their low 6 bits for s < 4; for s >= 4,
    byte s + 4 holds the low 4 bits of both, and the top 2 bits of bytes s - 4 and s their high 2.
    """
    a, b, c = np.int64(load_u32(flat, o)), np.int64(load_u32(flat, o + 4)), np.int64(load_u32(flat, o + 8))
    scales_lo, mins_lo = a & 0x3F3F3F3F, b & 0x3F3F3F3F
    scales_hi = (c & 0x0F0F0F0F) | (((a >> 6) & 0x03030303) << 4)
    mins_hi = ((c >> 4) & 0x0F0F0F0F) | (((b >> 6) & 0x03030303) << 4)
    return scales_lo, scales_hi, mins_lo, mins_hi


@njit(inline="always")
def _nth(lo, hi, s):
    """Byte s of the 8 bytes (bytes of lo, then of hi)."""
    return ((lo if s < 4 else hi) >> (8 * (s % 4))) & 0xFF


@njit(inline="always")
def _q3_k_scale(flat, o, s):
    """Signed 6-bit scale of sub-block s of Q3_K; the 12 scale bytes start at flat[o]."""
    low = (_byte(flat, o + s) & 15) if s < 8 else (_byte(flat, o + s - 8) >> 4)
    high = (_byte(flat, o + 8 + s % 4) >> (2 * (s // 4))) & 3
    return (low | (high << 4)) - 32


@njit(inline="always")
def _int8_at(flat, i):
    """A byte read as int8 (Q6_K's scales)."""
    return np.int32(np.int8(flat[i]))


# -- dequantization -----------------------------------------------------------------------------
@njit(**EXACT)
def dequant_q2_k(raw, row_ids, out):
    n_super, row_bytes = out.shape[1] // 256, raw.shape[1]
    flat = raw.reshape(-1)
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for _ in range(n_super):
            d, dmin = load_f16(flat, o + 80), load_f16(flat, o + 82)
            for h in range(2):
                for k in range(4):
                    for t in range(2):
                        s = 8 * h + 2 * k + t
                        dl = d * np.float32(_byte(flat, o + s) & 15)
                        ml = dmin * np.float32(_byte(flat, o + s) >> 4)
                        unpack_codes16(flat, (o + 16 + 32 * h + 16 * t, 2 * k, 3, o, 0, 0, 0), 0, dl, ml,
                                       out, y + 16 * s)
            o += 84
            y += 256


@njit(**EXACT)
def dequant_q3_k(raw, row_ids, out):
    n_super, row_bytes = out.shape[1] // 256, raw.shape[1]
    flat = raw.reshape(-1)
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for _ in range(n_super):
            d = load_f16(flat, o + 108)
            for h in range(2):
                for k in range(4):
                    for t in range(2):
                        s = 8 * h + 2 * k + t
                        dl = d * np.float32(_q3_k_scale(flat, o + 96, s))
                        unpack_codes16(flat, (o + 32 + 32 * h + 16 * t, 2 * k, 3, o + 16 * t, 4 * h + k, 1, 2), 4,
                                       dl, _F0, out, y + 16 * s)
            o += 110
            y += 256


@njit(**EXACT)
def dequant_q4_k(raw, row_ids, out):
    n_super, row_bytes = out.shape[1] // 256, raw.shape[1]
    flat = raw.reshape(-1)
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for _ in range(n_super):
            d, dmin = load_f16(flat, o), load_f16(flat, o + 2)
            sc_lo, sc_hi, m_lo, m_hi = _k4_scales(flat, o + 4)
            for s in range(8):
                sc, m = _nth(sc_lo, sc_hi, s), _nth(m_lo, m_hi, s)
                j, t = s // 2, s % 2
                unpack_codes32(flat, (o + 16 + 32 * j, 4 * t, 15, o, 0, 0, 0), 0,
                               d * np.float32(sc), dmin * np.float32(m), out, y + 32 * s)
            o += 144
            y += 256


@njit(**EXACT)
def dequant_q5_k(raw, row_ids, out):
    n_super, row_bytes = out.shape[1] // 256, raw.shape[1]
    flat = raw.reshape(-1)
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for _ in range(n_super):
            d, dmin = load_f16(flat, o), load_f16(flat, o + 2)
            sc_lo, sc_hi, m_lo, m_hi = _k4_scales(flat, o + 4)
            for s in range(8):
                sc, m = _nth(sc_lo, sc_hi, s), _nth(m_lo, m_hi, s)
                j, t = s // 2, s % 2
                unpack_codes32(flat, (o + 48 + 32 * j, 4 * t, 15, o + 16, s, 1, 4), 0,
                               d * np.float32(sc), dmin * np.float32(m), out, y + 32 * s)
            o += 176
            y += 256


@njit(**EXACT)
def dequant_q6_k(raw, row_ids, out):
    n_super, row_bytes = out.shape[1] // 256, raw.shape[1]
    flat = raw.reshape(-1)
    for i in prange(row_ids.size):
        o, y = row_ids[i] * row_bytes, i * out.shape[1]
        for _ in range(n_super):
            d = load_f16(flat, o + 208)
            for h in range(2):
                for k in range(4):
                    for t in range(2):
                        s = 8 * h + 2 * k + t
                        dl = d * np.float32(_int8_at(flat, o + 192 + s))
                        unpack_codes16(flat, (o + 64 * h + 32 * (k & 1) + 16 * t, 4 * (k >> 1), 15,
                                             o + 128 + 32 * h + 16 * t, 2 * k, 3, 4), 32,
                                       dl, _F0, out, y + 16 * s)
            o += 210
            y += 256


# -- float dot products ------------------------------------------------------------------------
@njit(**DOT)
def matvec_q2_k(raw, x, xsum, out):
    row_bytes, n_super = raw.shape[1], x.size // 256
    flat = raw.reshape(-1)
    for task in prange(n_tasks(raw.shape[0])):
        acc, ds = np.empty(16, np.float32), np.empty(n_super, np.float32)
        dmins = np.empty(n_super, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            acc[:] = 0.0
            o, mins = r * row_bytes, _F0
            block_halves(flat, o + 80, 84, n_super, ds)
            block_halves(flat, o + 82, 84, n_super, dmins)
            for sb in range(n_super):
                d, dmin = ds[sb], dmins[sb]
                mins += dmin * dot_codes16(flat, (o, 4, 15, o, 0, 0, 0), xsum, 16 * sb)
                for h in range(2):
                    for k in range(4):
                        q, s = o + 16 + 32 * h, 8 * h + 2 * k      # sub-blocks s, s + 1
                        xo, sc0, sc1 = 256 * sb + 16 * s, _byte(flat, o + s), _byte(flat, o + s + 1)
                        fma_codes16(even, flat, (q, 2 * k, 3, q, 0, 0, 0), x, xo, d * np.float32(sc0 & 15))
                        fma_codes16(odd, flat, (q + 16, 2 * k, 3, q, 0, 0, 0), x, xo + 16, d * np.float32(sc1 & 15))
                o += 84
            out[r] = acc.sum() - mins


@njit(**DOT)
def matvec_q3_k(raw, x, xsum, out):
    row_bytes, n_super = raw.shape[1], x.size // 256
    flat = raw.reshape(-1)
    for task in prange(n_tasks(raw.shape[0])):
        acc, ds = np.empty(16, np.float32), np.empty(n_super, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            acc[:] = 0.0
            o, bias = r * row_bytes, _F0
            block_halves(flat, o + 108, 110, n_super, ds)
            for sb in range(n_super):
                d = ds[sb]
                for h in range(2):
                    for k in range(4):
                        q, s = o + 32 + 32 * h, 8 * h + 2 * k
                        xo = 256 * sb + 16 * s
                        dl0 = d * np.float32(_q3_k_scale(flat, o + 96, s))
                        dl1 = d * np.float32(_q3_k_scale(flat, o + 96, s + 1))
                        fma_codes16(even, flat, (q, 2 * k, 3, o, 4 * h + k, 1, 2), x, xo, dl0)
                        fma_codes16(odd, flat, (q + 16, 2 * k, 3, o + 16, 4 * h + k, 1, 2), x, xo + 16, dl1)
                        bias += dl0 * xsum[16 * sb + s] + dl1 * xsum[16 * sb + s + 1]
                o += 110
            out[r] = acc.sum() - np.float32(4.0) * bias


@njit(**DOT)
def matvec_q4_k(raw, x, xsum, out):
    row_bytes, n_super = raw.shape[1], x.size // 256
    flat = raw.reshape(-1)
    for task in prange(n_tasks(raw.shape[0])):
        acc, ds = np.empty(16, np.float32), np.empty(n_super, np.float32)
        dmins = np.empty(n_super, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            acc[:] = 0.0
            o, mins = r * row_bytes, _F0
            block_halves(flat, o, 144, n_super, ds)
            block_halves(flat, o + 2, 144, n_super, dmins)
            for sb in range(n_super):
                d, dmin = ds[sb], dmins[sb]
                sc_lo, sc_hi, m_lo, m_hi = _k4_scales(flat, o + 4)
                mins += dmin * dot_packed8(m_lo, m_hi, xsum, 8 * sb)
                for j in range(4):
                    sc0, sc1 = _nth(sc_lo, sc_hi, 2 * j), _nth(sc_lo, sc_hi, 2 * j + 1)
                    q, xo = o + 16 + 32 * j, 256 * sb + 64 * j
                    fma_codes32(even, flat, (q, 0, 15, q, 0, 0, 0), x, xo, d * np.float32(sc0))
                    fma_codes32(odd, flat, (q, 4, 15, q, 0, 0, 0), x, xo + 32, d * np.float32(sc1))
                o += 144
            out[r] = acc.sum() - mins


@njit(**DOT)
def matvec_q5_k(raw, x, xsum, out):
    row_bytes, n_super = raw.shape[1], x.size // 256
    flat = raw.reshape(-1)
    for task in prange(n_tasks(raw.shape[0])):
        acc, ds = np.empty(16, np.float32), np.empty(n_super, np.float32)
        dmins = np.empty(n_super, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            acc[:] = 0.0
            o, mins = r * row_bytes, _F0
            block_halves(flat, o, 176, n_super, ds)
            block_halves(flat, o + 2, 176, n_super, dmins)
            for sb in range(n_super):
                d, dmin = ds[sb], dmins[sb]
                sc_lo, sc_hi, m_lo, m_hi = _k4_scales(flat, o + 4)
                mins += dmin * dot_packed8(m_lo, m_hi, xsum, 8 * sb)
                for j in range(4):
                    sc0, sc1 = _nth(sc_lo, sc_hi, 2 * j), _nth(sc_lo, sc_hi, 2 * j + 1)
                    q, xo = o + 48 + 32 * j, 256 * sb + 64 * j
                    fma_codes32(even, flat, (q, 0, 15, o + 16, 2 * j, 1, 4), x, xo, d * np.float32(sc0))
                    fma_codes32(odd, flat, (q, 4, 15, o + 16, 2 * j + 1, 1, 4), x, xo + 32, d * np.float32(sc1))
                o += 176
            out[r] = acc.sum() - mins


@njit(**DOT)
def matvec_q6_k(raw, x, xsum, out):
    row_bytes, n_super = raw.shape[1], x.size // 256
    flat = raw.reshape(-1)
    for task in prange(n_tasks(raw.shape[0])):
        acc, ds = np.empty(16, np.float32), np.empty(n_super, np.float32)
        even, odd = acc[:8], acc[8:]
        for r in task_rows(task, raw.shape[0]):
            acc[:] = 0.0
            o, bias = r * row_bytes, _F0
            block_halves(flat, o + 208, 210, n_super, ds)
            for sb in range(n_super):
                d = ds[sb]
                bias += d * dot_int8_16(flat, (o + 192,), xsum, 16 * sb)
                for h in range(2):
                    for k in range(4):
                        lo, hi, s = o + 64 * h + 32 * (k & 1), o + 128 + 32 * h, 8 * h + 2 * k
                        xo = 256 * sb + 16 * s
                        dl0 = d * np.float32(_int8_at(flat, o + 192 + s))
                        dl1 = d * np.float32(_int8_at(flat, o + 193 + s))
                        fma2_codes32(even if k % 2 == 0 else odd, flat, (lo, 4 * (k >> 1), 15, hi, 2 * k, 3, 4),
                                     x, xo, dl0, dl1)
                o += 210
            out[r] = acc.sum() - np.float32(32.0) * bias
