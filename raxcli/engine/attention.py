"""Gated full attention of Qwen3.5 (every `full_attention_interval`-th layer).

`attn_q` produces, per head, a query and an output gate side by side ([q | gate], as
llama.cpp stores it); queries and keys get a per-head RMSNorm, then interleaved
multimodal rotary on their first n_rot dims; grouped-query attention over the KV cache;
the result is multiplied by sigmoid(gate) before `attn_output`.
"""
from __future__ import annotations

import numpy as np

from . import kernels, ops
from .arrays import array_module
from .state import KVCache
from .weights import Activation, Projections

QUERY_BLOCK = 64   # query rows per block: bounds the score matrix (and its temporaries) on long prompts


def causal_attention(q, keys, values, n_past: int, query_block: int = QUERY_BLOCK):
    """q: [n_head, T, d]; keys/values: [n_kv, n_past + T, d]. Query t sees keys ≤ n_past + t.
    Returns [T, n_head, d].

    The readable form, for NumPy or CuPy arrays: the GPU engine's attention, and what the CPU
    engine's fused kernel (kernels.fused_causal_attention) is tested against; the CPU engine
    runs the kernel for any T: it reads a float16 cache as it is and keeps no [T, n_past + T]
    score matrices (with a 4k-token prompt these and their temporaries were the largest
    transient memory; the kernel is as fast)."""
    xp = array_module(q)
    n_head, T, d = q.shape
    n_kv, S, _ = keys.shape
    group = n_head // n_kv                                       # query head h reads kv head h // group
    keys_t = keys.astype(xp.float32, copy=False).transpose(0, 2, 1)[:, None]      # [n_kv, 1, d, S]; a float16 cache
    values = values.astype(xp.float32, copy=False)[:, None]                       # [n_kv, 1, S, d]
    q = q.reshape(n_kv, group, T, d)
    scale = xp.float32(d ** -0.5)
    out = xp.empty((n_kv, group, T, d), xp.float32)
    for start in range(0, T, query_block):
        stop = min(T, start + query_block)
        scores = (q[:, :, start:stop] @ keys_t) * scale          # [n_kv, group, B, S]
        visible = xp.arange(S)[None, :] <= (n_past + xp.arange(start, stop))[:, None]
        probs = ops.softmax(xp.where(visible, scores, -xp.inf))
        out[:, :, start:stop] = probs @ values
    return out.reshape(n_head, T, d).transpose(1, 0, 2)


class GatedAttention:
    def __init__(self, weights, config):
        self.w = weights
        self.n_head = config.n_head
        self.n_kv = config.n_head_kv
        self.d = config.head_dim
        self.eps = config.rms_eps
        self.inputs = Projections(weights.attn_q, weights.attn_k, weights.attn_v)     # one pass when decoding
        # one token's queries, keys, attention output and projected output, kept
        self._one_token = tuple(np.zeros(shape, np.float32) for shape in (
            (1, self.n_head, self.d), (1, self.n_kv, self.d), (1, self.n_head, self.d), (1, config.n_embd)))

    def __call__(self, x: Activation, cache: KVCache, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """x: [T, n_embd] (already normed); cos/sin: rotary tables for these T positions. One
        token's output is an array this mixer keeps (overwritten by its next call)."""
        w, T, d = self.w, x.x.shape[0], self.d
        q_out, k_out, o, out = self._one_token if T == 1 else (None, None, None, None)
        q_and_gate, k, v = self.inputs(x)
        q_and_gate = q_and_gate.reshape(T, self.n_head, 2 * d)
        q = ops.rms_norm(q_and_gate[:, :, :d], w.attn_q_norm, self.eps, out=q_out)
        gate = q_and_gate[:, :, d:]                                 # [T, n_head, d], read in place
        k = ops.rms_norm(k.reshape(T, self.n_kv, d), w.attn_k_norm, self.eps, out=k_out)
        v = v.reshape(T, self.n_kv, d)

        q = ops.apply_rope(np.ascontiguousarray(q.transpose(1, 0, 2)), cos, sin)
        k = ops.apply_rope(np.ascontiguousarray(k.transpose(1, 0, 2)), cos, sin)
        n_past = cache.length
        cache.append(k, v.transpose(1, 0, 2))

        if o is None:
            o = np.empty((T, self.n_head, d), np.float32)
        # the whole cache arrays (C-contiguous; positions past n_past + T unread): a view of
        # the first positions has unknown strides to Numba, and the loops went scalar (25x)
        kernels.fused_causal_attention(q, *cache.kernel_arrays(), n_past, o)
        return w.attn_output(ops.times_sigmoid_(o.reshape(T, self.n_head * d), gate), out=out)
