"""Gated full attention of Qwen3.5 (every `full_attention_interval`-th layer).

`attn_q` produces, per head, a query and an output gate side by side ([q | gate], as
llama.cpp stores it); queries and keys get a per-head RMSNorm, then interleaved
multimodal rotary on their first n_rot dims; grouped-query attention over the KV cache;
the result is multiplied by sigmoid(gate) before `attn_output`.
"""
from __future__ import annotations

import numpy as np

from . import kernels, ops
from .state import KVCache
from .weights import Activation, Projections

QUERY_BLOCK = 64   # query rows per block: bounds the score matrix (and its temporaries) on long prompts


def causal_attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, n_past: int) -> np.ndarray:
    """q: [n_head, T, d]; keys/values: [n_kv, n_past + T, d]. Query t sees keys ≤ n_past + t.
    Returns [T, n_head, d].

    The readable NumPy form, which the engine's fused kernel (kernels.fused_causal_attention)
    is tested against; the engine runs the kernel for any T: it reads a float16 cache as it
    is and keeps no [T, n_past + T] score matrices (with a 4k-token prompt these and their
    temporaries were the largest transient memory; the kernel is as fast)."""
    n_head, T, d = q.shape
    n_kv, S, _ = keys.shape
    keys, values = keys.astype(np.float32, copy=False), values.astype(np.float32, copy=False)   # a float16 cache
    group = n_head // n_kv                                       # query head h reads kv head h // group
    q = q.reshape(n_kv, group, T, d)
    scale = np.float32(d ** -0.5)
    out = np.empty((n_kv, group, T, d), np.float32)
    for start in range(0, T, QUERY_BLOCK):
        stop = min(T, start + QUERY_BLOCK)
        rows = np.arange(start, stop)
        qb = q[:, :, start:stop]                                 # [n_kv, group, B, d]
        scores = np.einsum("kgtd,ksd->kgts", qb, keys, optimize=True) * scale
        visible = np.arange(S)[None, :] <= (n_past + rows)[:, None]
        scores = np.where(visible, scores, -np.inf)
        probs = ops.softmax(scores.astype(np.float32))
        out[:, :, start:stop] = np.einsum("kgts,ksd->kgtd", probs, values, optimize=True)
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
