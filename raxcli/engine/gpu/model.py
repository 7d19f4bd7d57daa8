"""The Qwen3.5 decoder on the GPU: the interface of engine.text.TextModel, the math of
engine/gpu/layers.py and the reference delta rules of engine/deltanet.py.

Host and device meet in two places: token embeddings are looked up on the host (one row of
the memory-mapped table per token, as the CPU engine does, so vision embeddings splice in
unchanged) and uploaded; logits come back as NumPy arrays."""
from __future__ import annotations

import numpy as np

from .. import ops
from ..arrays import to_host
from ..deltanet import RECURRENT_TOKENS, chunked_delta_rule, gates, heads, recurrent_delta_rule
from ..state import DeltaNetCache, KVCache, TextState
from ..text import Decoder
from ..weights import ModelWeights
from . import layers
from ..attention import causal_attention
from ..ops import sigmoid
from .layers import matmul, rms_norm, silu
from .weights import DeviceLayer, DeviceWeights

PREFILL_CHUNK = 512     # tokens per trunk pass on long prompts (bounds the device's transient memory)


class DeviceTextModel(Decoder):
    """xp: cupy (or numpy, which the tests put in its place). weight_dtype: how matrices are
    kept on the device, float32 (the dequantized weights as they are: logits as the CPU
    engine's float path) or float16 (half the memory and the bytes read per token; the
    products' float16 rounding moves logits by up to ~0.2 on the test fixtures). kv_dtype:
    the attention caches (float32: the device has the memory). Hidden states are device
    arrays; `logits` returns NumPy ones."""

    prefill_chunk = PREFILL_CHUNK

    def __init__(self, weights: ModelWeights, xp, weight_dtype=np.float32, kv_dtype=np.float32):
        self.weights = weights
        self.config = weights.config
        self.xp = xp
        self.kv_dtype = kv_dtype
        self.device = DeviceWeights(weights, xp, weight_dtype)

    def new_state(self) -> TextState:
        return TextState.empty(self.config, self.kv_dtype, xp=self.xp)

    def logits(self, hidden) -> np.ndarray:
        """hidden: [n_embd] or [T, n_embd] (device) → logits over the vocabulary (host)."""
        flat = hidden.ndim == 1
        out = matmul(hidden.reshape(-1, hidden.shape[-1]), self.device.output)
        return to_host(out[0] if flat else out)

    def _concatenate(self, parts):
        return self.xp.concatenate(parts)

    def _trunk(self, embeddings, state: TextState, positions: np.ndarray, last_only: bool):
        xp, c = self.xp, self.config
        cos, sin = (xp.asarray(t) for t in ops.rope_cos_sin(positions, c.n_rot, c.rope_theta, c.rope_sections))
        x = xp.asarray(np.ascontiguousarray(embeddings, dtype=np.float32))
        for layer, cache in zip(self.device.layers, state.layers):
            h = rms_norm(x, layer.attn_norm, c.rms_eps)
            if isinstance(cache, DeltaNetCache):
                x = x + self._deltanet(layer, h, cache)
            else:
                x = x + self._attention(layer, h, cache, cos, sin)
            gate, up = xp.split(matmul(rms_norm(x, layer.post_attention_norm, c.rms_eps), layer.ffn_gate_up), 2, axis=1)
            x = x + matmul(silu(gate) * up, layer.ffn_down)
        return rms_norm(x[-1:] if last_only else x, self.device.output_norm, c.rms_eps)

    def _deltanet(self, w: DeviceLayer, x, cache: DeltaNetCache):
        """engine/deltanet.py GatedDeltaNet: projections → causal conv → delta rule → gated norm."""
        xp, c = self.xp, self.config
        T, d, n_k, n_v = x.shape[0], c.ssm_state_size, c.ssm_n_k_heads, c.ssm_n_v_heads
        qkv, z, b_raw, a_raw = xp.split(matmul(x, w.mixer_in), w.mixer_split, axis=1)
        beta, g = gates(b_raw, a_raw, w.ssm_a, w.ssm_dt_bias)
        q, k, v = heads(silu(layers.causal_conv(qkv, w.conv_taps, cache.conv)), n_k, n_v, d)
        state = cache.recurrent.transpose(0, 2, 1)                  # S from its Sᵀ storage, a view
        if T <= RECURRENT_TOKENS:
            o = recurrent_delta_rule(q, k, v, g, beta, state)
        else:
            o = chunked_delta_rule(q, k, v, g, beta, state, inverse=layers.unit_lower_inverse)
        o = rms_norm(o, w.ssm_norm, c.rms_eps) * silu(z.reshape(T, n_v, d))
        return matmul(o.reshape(T, n_v * d), w.mixer_out)

    def _attention(self, w: DeviceLayer, x, cache: KVCache, cos, sin):
        """engine/attention.py GatedAttention: [q | gate] per head, q/k norms, rotary, GQA."""
        xp, c = self.xp, self.config
        T, d, n_head, n_kv = x.shape[0], c.head_dim, c.n_head, c.n_head_kv
        q_and_gate, k, v = xp.split(matmul(x, w.mixer_in), w.mixer_split, axis=1)
        q_and_gate = q_and_gate.reshape(T, n_head, 2 * d)
        q = rms_norm(q_and_gate[:, :, :d], w.attn_q_norm, c.rms_eps)
        k = rms_norm(k.reshape(T, n_kv, d), w.attn_k_norm, c.rms_eps)
        q = layers.rotate_half(q.transpose(1, 0, 2), cos, sin)
        k = layers.rotate_half(k.transpose(1, 0, 2), cos, sin)
        n_past = cache.length
        keys, values = cache.append(k, v.reshape(T, n_kv, d).transpose(1, 0, 2))
        o = causal_attention(q, keys, values, n_past, query_block=256)     # [T, n_head, d]
        o = o * sigmoid(q_and_gate[:, :, d:])
        return matmul(o.reshape(T, n_head * d), w.mixer_out)
