"""Numba kernels for the engine's per-token work between matrix products.

The model's math reads in `deltanet.py`, `attention.py`, `ops.py` (NumPy); the kernels here
compute the same steps fused, for the decode path and short batches (drafted tokens), where
NumPy's temporaries and per-call overhead cost more than the arithmetic. Each one names its
NumPy twin; tests/test_engine_kernels.py holds them to it.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(inline="always")
def _silu(v):
    return v / (np.float32(1.0) + np.exp(-v))


@nb.njit(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def deltanet_recurrent(qkv, z, b_raw, a_raw, conv_w, conv_state, ssm_a, dt_bias, norm_w, eps,
                       n_k, states, history, out):
    """The gated DeltaNet token mixer after its projections, token by token, fused per v-head
    (deltanet.GatedDeltaNet with recurrent_delta_rule; DESIGN.md has the equations):

        causal conv (kernel K) → SiLU → q, k L2-normalised, q / √d → β = σ(b), g = a·softplus(α + dt)
        S ← S·e^g;  u = β(v − Sᵀk);  S ← S + k uᵀ;  o = Sᵀq;  out = rms(o)·norm_w·SiLU(z)

    qkv [T, conv_dim] (before the conv), z [T, n_v·d], b_raw / a_raw [T, n_v], conv_w
    [conv_dim, K], conv_state [K-1, conv_dim] (updated), states [n_v, d, d] (the recurrent
    state S per v-head, updated unless history is given), history [T', n_v, d, d]: when
    T' >= T, the state after token t goes to history[t] and `states` is left as it was (drafted
    tokens, some of which may be rolled back). out [T, n_v·d].
    """
    T, conv_dim = qkv.shape
    K = conv_w.shape[1]
    n_v, d = states.shape[0], states.shape[1]
    key_dim = n_k * d
    keep = history.shape[0] >= T
    scale = np.float32(1.0) / np.sqrt(np.float32(d))
    for h in nb.prange(n_v):
        kh = h % n_k                      # tiled v-heads: v-head h reads k-head h mod n_k
        chans = (kh * d, key_dim + kh * d, 2 * key_dim + h * d)
        q = np.empty(d, np.float32)
        k = np.empty(d, np.float32)
        v = np.empty(d, np.float32)
        kv = np.empty(d, np.float32)
        o = np.empty(d, np.float32)
        s_in = states[h]
        for t in range(T):
            # causal conv over the inputs before token t (conv_state, then this batch's rows)
            for part in range(3):
                c0 = chans[part]
                dst = q if part == 0 else (k if part == 1 else v)
                for i in range(d):
                    c = c0 + i
                    acc = np.float32(0.0)
                    for j in range(K):
                        src = t - (K - 1) + j     # row of the input this tap reads
                        x = conv_state[K - 1 + src, c] if src < 0 else qkv[src, c]
                        acc += conv_w[c, j] * x
                    dst[i] = _silu(acc)
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
            decay = np.exp(ssm_a[h] * softplus)
            s_out = history[t, h] if keep else states[h]
            # pass 1: what S (decayed) predicts for k
            for j in range(d):
                kv[j] = 0.0
            for i in range(d):
                ki = k[i]
                for j in range(d):
                    kv[j] += s_in[i, j] * ki
            for j in range(d):
                kv[j] = (v[j] - kv[j] * decay) * beta        # u, the delta-rule write
                o[j] = 0.0
            # pass 2: S ← S·decay + k uᵀ, and o = Sᵀq
            for i in range(d):
                ki, qi = k[i], q[i]
                for j in range(d):
                    s = s_in[i, j] * decay + ki * kv[j]
                    s_out[i, j] = s
                    o[j] += s * qi
            s_in = s_out
            # gated RMSNorm: rms(o) · norm_w · SiLU(z)
            ss = np.float32(0.0)
            for j in range(d):
                ss += o[j] * o[j]
            inv = np.float32(1.0) / np.sqrt(ss / np.float32(d) + np.float32(eps))
            for j in range(d):
                out[t, h * d + j] = o[j] * inv * norm_w[j] * _silu(z[t, h * d + j])
    # the conv state: the last K-1 inputs (left alone for drafted tokens: see DeltaNetCache)
    if not keep:
        _shift_conv_state(qkv, conv_state)


@nb.njit(cache=True)
def _shift_conv_state(qkv, conv_state):
    T, keep = qkv.shape[0], conv_state.shape[0]
    if T >= keep:
        conv_state[:, :] = qkv[T - keep:]
    else:
        conv_state[:keep - T] = conv_state[T:].copy()
        conv_state[keep - T:] = qkv
