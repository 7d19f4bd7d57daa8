"""Numba kernels for the engine's per-token work between matrix products.

The model's math reads in `deltanet.py`, `attention.py`, `ops.py` (NumPy); the kernels here
compute the same steps fused, for the decode path and short batches (drafted tokens), where
NumPy's temporaries and per-call overhead cost more than the arithmetic. Each one names its
NumPy twin; tests/test_engine_kernels.py holds them to it.
"""
from __future__ import annotations

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

from quant.halves import half_at
from quant.simd import float_of_bits


@nb.njit(inline="always", fastmath=True)
def fast_exp(x):
    """e**x in float32 to ~1 ulp (Cephes' expf: x = n·ln2 + r, a degree-6 polynomial in r,
    times 2**n built in the exponent bits). Unlike libm's expf it vectorises inside loops:
    a softmax row of 784 values in vector registers, 6x the scalar call. x is clamped to
    [-87.3, 88.3], where 2**n stays a normal float: exp(-87.3) stands for anything smaller,
    exp(88.3) ≈ 2.2e38 for anything larger (finite: under fast-math 1 / (1 + e**x) is a
    reciprocal estimate and a Newton step, which turns an infinity into NaN)."""
    x = min(max(x, np.float32(-87.3)), np.float32(88.3))
    n = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
    r = x - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    return p * float_of_bits((np.int32(n) + np.int32(127)) << np.int32(23))


@nb.njit(inline="always", fastmath=True)
def silu(v):
    """v · σ(v) with `fast_exp` (libm's expf does not vectorise). Callers compile with
    error_model="numpy": Numba's default checks every float division for zero, which alone
    kept such loops scalar (SiLU over 6144 values: 18 µs, vectorised 2 µs)."""
    return v / (np.float32(1.0) + fast_exp(-v))


@nb.njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"}, error_model="numpy")
def deltanet_recurrent(qkv, z, b_raw, a_raw, conv_w, conv_state, ssm_a, dt_bias, norm_w, eps,
                       n_k, states, history, out):
    """The gated DeltaNet token mixer after its projections, token by token, fused per v-head
    (deltanet.GatedDeltaNet with recurrent_delta_rule; DESIGN.md has the equations):

        causal conv (kernel K) → SiLU → q, k L2-normalised, q / √d → β = σ(b), g = a·softplus(α + dt)
        S ← S·e^g;  u = β(v − Sᵀk);  S ← S + k uᵀ;  o = Sᵀq;  out = rms(o)·norm_w·SiLU(z)

    qkv [T, conv_dim] (before the conv), z [T, n_v·d], b_raw / a_raw [T, n_v], conv_w
    [K, conv_dim] (the conv kernel transposed: taps as rows), conv_state [K-1, conv_dim]
    (updated), states [n_v, d_v, d_k] (Sᵀ per v-head, as DeltaNetCache keeps it; updated
    unless history is given), history [T', n_v, d_v, d_k]: when T' >= T, the state after
    token t goes to history[t] and `states` is left as it was (drafted tokens, some of which
    may be rolled back). out [T, n_v·d].
    """
    T, conv_dim = qkv.shape
    K = conv_w.shape[0]
    n_v, d = states.shape[0], states.shape[1]
    key_dim = n_k * d
    keep = history.shape[0] >= T
    scale = np.float32(1.0) / np.sqrt(np.float32(d))
    # the causal conv and its SiLU, every channel and token, in blocks of channels
    mixed = np.empty((T, conv_dim), np.float32)
    for block in nb.prange(conv_dim // d):
        c0 = block * d
        for t in range(T):
            row = mixed[t, c0:c0 + d]
            row[:] = 0.0
            for j in range(K):
                src = t - (K - 1) + j                    # which input this tap reads: state or batch
                x = conv_state[K - 1 + src, c0:c0 + d] if src < 0 else qkv[src, c0:c0 + d]
                w = conv_w[j, c0:c0 + d]
                for i in range(d):
                    row[i] += w[i] * x[i]
            for i in range(d):
                row[i] = silu(row[i])
    for h in nb.prange(n_v):
        kh = h % n_k                      # tiled v-heads: v-head h reads k-head h mod n_k
        q = np.empty(d, np.float32)
        k = np.empty(d, np.float32)
        o = np.empty(d, np.float32)
        s_in = states[h]
        for t in range(T):
            q[:] = mixed[t, kh * d:(kh + 1) * d]
            k[:] = mixed[t, key_dim + kh * d:key_dim + (kh + 1) * d]
            v = mixed[t, 2 * key_dim + h * d:2 * key_dim + (h + 1) * d]
            qn = np.float32(0.0)
            kn = np.float32(0.0)
            for i in range(d):
                qn += q[i] * q[i]
                kn += k[i] * k[i]
            qs = scale / np.sqrt(qn + np.float32(1e-6))
            ks = np.float32(1.0) / np.sqrt(kn + np.float32(1e-6))
            for i in range(d):
                q[i] *= qs
                k[i] *= ks
            beta = np.float32(1.0) / (np.float32(1.0) + np.exp(-b_raw[t, h]))
            pre = a_raw[t, h] + dt_bias[h]
            softplus = pre if pre > 20.0 else np.log1p(np.exp(pre))
            decay = np.float32(np.exp(ssm_a[h] * softplus))
            s_out = history[t, h] if keep else states[h]
            # S is stored transposed (row j: the d_k weights feeding value dimension j), so one
            # pass over its rows does the whole step, each row staying in registers:
            # (Sᵀk)_j = row_j·k;  u_j = β(v_j − e^g (Sᵀk)_j);  row_j ← e^g row_j + u_j k;  o_j = row_j·q
            for j in range(d):
                o[j] = _delta_row(s_in[j], s_out[j], k, q, v[j], decay, beta, keep)
            s_in = s_out
            # gated RMSNorm: rms(o) · norm_w · SiLU(z)
            ss = np.float32(0.0)
            for j in range(d):
                ss += o[j] * o[j]
            inv = np.float32(1.0) / np.sqrt(ss / np.float32(d) + np.float32(eps))
            for j in range(d):
                out[t, h * d + j] = o[j] * inv * norm_w[j] * silu(z[t, h * d + j])
    # the conv state: the last K-1 inputs (left alone for drafted tokens: see DeltaNetCache)
    if not keep:
        _shift_conv_state(qkv, conv_state)


@nb.njit(inline="always", fastmath={"reassoc", "contract", "nsz", "arcp"})
def _delta_row(row_in, row_out, k, q, v_j, decay, beta, apart):
    """One row of Sᵀ through a delta-rule step; returns o_j. In place (apart False) and out of
    place are separate loops: in one loop LLVM could not rule out overlap and went scalar."""
    d = row_in.size
    pred = np.float32(0.0)
    for i in range(d):
        pred += row_in[i] * k[i]
    u = (v_j - decay * pred) * beta
    acc = np.float32(0.0)
    if apart:
        for i in range(d):
            new = row_in[i] * decay + u * k[i]
            row_out[i] = new
            acc += new * q[i]
    else:
        for i in range(d):
            new = row_in[i] * decay + u * k[i]
            row_in[i] = new
            acc += new * q[i]
    return acc


@nb.njit(cache=True)
def _shift_conv_state(qkv, conv_state):
    T, keep = qkv.shape[0], conv_state.shape[0]
    if T >= keep:
        conv_state[:, :] = qkv[T - keep:]
    else:
        conv_state[:keep - T] = conv_state[T:].copy()
        conv_state[keep - T:] = qkv


def kv_at(cache, kv, s, i):
    """cache[kv, s, i] as float32, for a float32 KV cache or a float16 one viewed as uint16."""
    raise NotImplementedError("used inside Numba kernels only")


@overload(kv_at, inline="always")
def _kv_at(cache, kv, s, i):
    if isinstance(cache, types.Array) and cache.dtype == types.uint16:
        def from_halves(cache, kv, s, i):
            return half_at(cache, (kv * cache.shape[1] + s) * cache.shape[2] + i)
        return from_halves
    return lambda cache, kv, s, i: cache[kv, s, i]


@nb.njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def fused_causal_attention(q, keys, values, n_past, out):
    """Causal attention of T new tokens (attention.causal_attention, fused): q [n_head, T, d];
    keys / values [n_kv, ≥ n_past + T, d], float32 or float16 bits as uint16 (positions
    past n_past + T are not read); query t sees keys up to n_past + t; query head h reads
    kv head h // (n_head / n_kv). out [T, n_head, d].

    One task per (kv head, token): each key and value row is read once for the query heads
    that share it."""
    n_head, T, d = q.shape
    n_kv = keys.shape[0]
    group = n_head // n_kv
    scale = np.float32(1.0) / np.sqrt(np.float32(d))
    for task in nb.prange(n_kv * T):
        kv, t = task // T, task % T
        visible = n_past + t + 1
        scores = np.empty((group, visible), np.float32)
        for s in range(visible):
            for g in range(group):
                acc = np.float32(0.0)
                for i in range(d):
                    acc += q[kv * group + g, t, i] * kv_at(keys, kv, s, i)
                scores[g, s] = acc * scale
        for g in range(group):
            top = scores[g, 0]
            for s in range(1, visible):
                top = max(top, scores[g, s])
            total = np.float32(0.0)
            for s in range(visible):
                e = np.exp(scores[g, s] - top)
                scores[g, s] = e
                total += e
            for s in range(visible):
                scores[g, s] /= total
        o = np.zeros((group, d), np.float32)
        for s in range(visible):
            for g in range(group):
                p = scores[g, s]
                for i in range(d):
                    o[g, i] += p * kv_at(values, kv, s, i)
        for g in range(group):
            for i in range(d):
                out[t, kv * group + g, i] = o[g, i]
