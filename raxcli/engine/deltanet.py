"""Gated DeltaNet token mixer of Qwen3.5 (the "linear attention" layers).

Per v-head, with a state S of shape [d_k, d_v] (Yang et al., "Gated Delta Networks"):

    S ← S · exp(g_t)                 decay, g_t = ssm_a · softplus(alpha_t + dt_bias) ≤ 0
    u_t = β_t (v_t − Sᵀ k_t)         delta rule: write only what S does not predict yet
    S ← S + k_t u_tᵀ
    o_t = Sᵀ q_t

q and k are L2-normalised per head and q is scaled by 1/√d_k. Heads follow the order
llama.cpp stores: when there are more v-heads than k-heads they are *tiled*, so v-head
j reads k-head j mod n_k (transformers groups them instead: j // (n_v / n_k)).

`recurrent_delta_rule` is the step-by-step form (decoding runs it fused with the conv and
the gated norm: `kernels.deltanet_recurrent`); `chunked_delta_rule` computes the same
outputs for a whole prompt with matrix products over chunks of 64 tokens (the reference's
`torch_chunk_gated_delta_rule`).
"""
from __future__ import annotations

import numpy as np

from . import kernels, ops
from .arrays import array_module
from .state import DeltaNetCache
from .weights import Activation, Projections

CHUNK = 64
RECURRENT_TOKENS = 16       # up to this many tokens: the fused recurrent kernel, else chunks
_NO_HISTORY = np.empty((0, 1, 1, 1), np.float32)


def l2_normalize(x, eps: float = 1e-6):
    xp = array_module(x)
    return x / xp.sqrt(xp.sum(x * x, axis=-1, keepdims=True) + eps)


def softplus(x):
    # torch's softplus switches to the identity above 20; match it
    xp = array_module(x)
    return xp.where(x > 20.0, x, xp.log1p(xp.exp(xp.minimum(x, 20.0))))


def gates(b_raw, a_raw, ssm_a, dt_bias):
    """β = σ(b) (how much each token writes) and the decay g = ssm_a · softplus(a + dt_bias) ≤ 0,
    both [T, n_v], from the β and α projections. NumPy or CuPy arrays."""
    return ops.sigmoid(b_raw), ssm_a * softplus(a_raw + dt_bias)


def heads(qkv, n_k: int, n_v: int, d: int):
    """The conv's activated output [T, conv_dim] → q (L2-normed, times 1/√d) and k (L2-normed)
    [T, n_v, d], tiled to the v-heads (v-head j reads k-head j mod n_k), and v [T, n_v, d].
    NumPy or CuPy arrays."""
    xp = array_module(qkv)
    T, key_dim = qkv.shape[0], n_k * d
    q = l2_normalize(qkv[:, :key_dim].reshape(T, n_k, d)) * (d ** -0.5)
    k = l2_normalize(qkv[:, key_dim:2 * key_dim].reshape(T, n_k, d))
    v = qkv[:, 2 * key_dim:].reshape(T, n_v, d)
    if n_v != n_k:
        q, k = xp.tile(q, (1, n_v // n_k, 1)), xp.tile(k, (1, n_v // n_k, 1))
    return q, k, v


def recurrent_delta_rule(q, k, v, g, beta, state):
    """Step-by-step reference. q, k: [T, H, d_k]; v: [T, H, d_v]; g, beta: [T, H];
    state: [H, d_k, d_v] updated in place. Returns o: [T, H, d_v]. NumPy or CuPy arrays
    (the GPU engine decodes with it)."""
    xp = array_module(q)
    T = q.shape[0]
    out = xp.empty_like(v)
    for t in range(T):
        state *= xp.exp(g[t])[:, None, None]
        kv_mem = xp.einsum("hk,hkv->hv", k[t], state)
        u = (v[t] - kv_mem) * beta[t][:, None]
        state += k[t][:, :, None] * u[:, None, :]
        out[t] = xp.einsum("hk,hkv->hv", q[t], state)
    return out


def chunked_delta_rule(q, k, v, g, beta, state, chunk: int = CHUNK, inverse=ops.unit_lower_inverse):
    """Same contract as `recurrent_delta_rule`, computed chunk-wise with matrix products.

    Inside a chunk the T sequential updates collapse to a unit lower-triangular system
    (the UT transform); across chunks a short loop carries the state. Arrays are laid out
    [chunk index, head, position in chunk, ...] and kept contiguous: NumPy hands contiguous
    stacks of matrices to BLAS, strided ones to a slow loop (measured 250x slower here).
    NumPy or CuPy arrays; `inverse` computes (I + a)⁻¹ of strictly lower-triangular
    stacks of the same kind (the CPU's is a Numba kernel)."""
    xp = array_module(q)
    T, H, dk = q.shape
    dv = v.shape[-1]
    pad = (-T) % chunk
    n_chunks = (T + pad) // chunk

    def chunks_first(x):  # [T, H, ...] -> [n_chunks, H, chunk, ...], zero-padded, contiguous
        if pad:
            x = xp.concatenate([x, xp.zeros((pad,) + x.shape[1:], x.dtype)])
        x = x.reshape((n_chunks, chunk) + x.shape[1:])
        return xp.ascontiguousarray(xp.swapaxes(x, 1, 2))

    def transposed(x):
        return xp.ascontiguousarray(xp.swapaxes(x, -1, -2))

    q, k, v, g, beta = (chunks_first(a) for a in (q, k, v, g, beta))
    k_beta = k * beta[..., None]
    v_beta = v * beta[..., None]
    del v           # (the dels keep a long prompt's transient memory down)

    cum_g = xp.cumsum(g, axis=-1)                                   # [C, H, L]
    causal = xp.tril(xp.ones((chunk, chunk), dtype=bool))
    # decay[i, j] = exp(cum_g_i - cum_g_j) for j <= i, zero above the diagonal
    decay = xp.exp(xp.where(causal, cum_g[..., :, None] - cum_g[..., None, :], -xp.inf))

    strictly_lower = xp.tril(xp.ones((chunk, chunk), dtype=bool), -1)
    k_t = transposed(k)                                             # [C, H, d_k, L]
    a = xp.where(strictly_lower, (k_beta @ k_t) * decay, 0.0).astype(xp.float32)
    # (I + A)^-1 by forward substitution, all heads and chunks at once
    inv = inverse(xp.ascontiguousarray(a))
    u = inv @ v_beta                                                # new values
    w = inv @ (k_beta * xp.exp(cum_g)[..., None])                   # decayed keys reading the old state
    del a, inv, k_beta, v_beta

    attn = xp.where(causal, (q @ k_t) * decay, 0.0).astype(xp.float32)
    q_decayed = q * xp.exp(cum_g)[..., None]
    k_to_end_t = transposed(k * xp.exp(cum_g[..., -1:] - cum_g)[..., None])     # [C, H, d_k, L]
    del q, k, k_t, decay
    chunk_decay = xp.exp(cum_g[..., -1])                            # [C, H]

    out = xp.empty((n_chunks, H, chunk, dv), dtype=xp.float32)
    for c in range(n_chunks):
        v_new = u[c] - w[c] @ state
        out[c] = q_decayed[c] @ state + attn[c] @ v_new
        state *= chunk_decay[c, :, None, None]
        state += k_to_end_t[c] @ v_new
    out = xp.swapaxes(out, 1, 2).reshape(n_chunks * chunk, H, dv)[:T]
    return xp.ascontiguousarray(out)


class GatedDeltaNet:
    """One DeltaNet token mixer: projections → causal conv → delta rule → gated norm → out."""

    def __init__(self, weights, config):
        self.w = weights
        self.n_k = config.ssm_n_k_heads
        self.n_v = config.ssm_n_v_heads
        self.d = config.ssm_state_size
        self.eps = config.rms_eps
        self.conv_taps = np.ascontiguousarray(weights.ssm_conv1d.T)     # [kernel, conv_dim] for the fused kernel
        # the four projections of the input, one pass of the kernel when decoding
        self.inputs = Projections(weights.attn_qkv, weights.attn_gate, weights.ssm_beta, weights.ssm_alpha)
        self._one_token = (np.zeros((1, self.n_v * self.d), np.float32), np.zeros((1, config.n_embd), np.float32))

    def __call__(self, x: Activation, cache: DeltaNetCache) -> np.ndarray:
        """x: [T, n_embd] (already normed) → [T, n_embd]; cache updated in place. One token's
        output is an array this mixer keeps (overwritten by its next call)."""
        w, T, d = self.w, x.x.shape[0], self.d
        qkv, z, b_raw, a_raw = self.inputs(x)                       # [T, conv_dim], [T, n_v·d], [T, n_v] ×2
        if T <= RECURRENT_TOKENS or cache.tentative:                # decode, drafted tokens
            o, out = self._one_token if T == 1 else (None, None)
            return w.ssm_out(self._recurrent(qkv, z, b_raw, a_raw, cache, o), out=out)
        beta, g = gates(b_raw, a_raw, w.ssm_a, w.ssm_dt_bias)
        qkv = ops.causal_conv1d(qkv, w.ssm_conv1d, cache.conv)
        q, k, v = heads(ops.silu(qkv, out=qkv), self.n_k, self.n_v, d)
        o = chunked_delta_rule(q, k, v, g, beta, cache.recurrent.transpose(0, 2, 1))   # S from its Sᵀ storage
        o = ops.rms_norm(o, w.ssm_norm, self.eps) * ops.silu(z.reshape(T, self.n_v, d))
        return w.ssm_out(o.reshape(T, self.n_v * d))

    def _recurrent(self, qkv, z, b_raw, a_raw, cache: DeltaNetCache, out: np.ndarray | None = None) -> np.ndarray:
        """The same steps as above with the recurrent rule, token by token, in one fused
        kernel (engine/kernels.py), into `out` [T, n_v·d] when given. Tentative tokens leave
        their states in cache.history."""
        w, T = self.w, qkv.shape[0]
        history = _NO_HISTORY
        if cache.tentative:
            if cache.pending is not None or cache.history.shape[0] < T:
                raise RuntimeError("one forward of at most the reserved tokens per tentative step")
            history, cache.pending = cache.history, qkv.copy()     # qkv may be a buffer reused next call
        if out is None:
            out = np.empty((T, self.n_v * self.d), np.float32)
        kernels.deltanet_recurrent(qkv, z, b_raw, a_raw, self.conv_taps, cache.conv, w.ssm_a, w.ssm_dt_bias,
                                   w.ssm_norm, self.eps, self.n_k, cache.recurrent, history, out)
        return out
