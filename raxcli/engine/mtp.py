"""The multi-token-prediction (MTP) head of Qwen3.5, as llama.cpp runs it for drafting.

From the trunk's final-normed hidden state h_t and the embedding of the token that
follows, x_{t+1}, the head predicts x_{t+2}:

    z = eh_proj([rms(embed(x_{t+1})) · enorm | rms(h_t) · hnorm])
    z = gated-attention decoder block(z)          (its own KV cache)
    h' = rms(z) · shared_head_norm                (chains to the next draft in place of h)
    logits = output(h')

Transformers drops the `mtp.*` weights on load, so llama.cpp's `graph_mtp` (src/models/qwen35.cpp)
is the reference for this wiring. Rotary positions: llama.cpp gives the pair the position
of x_{t+1}, DeepSeek-V3's MTP that of h_t; attention sees only differences of positions,
so the two agree as long as one convention is kept (speculative.py uses llama.cpp's).
"""
from __future__ import annotations

import numpy as np

from . import ops
from .state import KVCache
from .text import DecoderBlock


class MTPHead:
    def __init__(self, weights, config):
        self.w = weights
        self.config = config
        self.block = DecoderBlock(weights.block, config, recurrent=False)

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_head_kv, self.config.head_dim)

    def hidden(self, hidden: np.ndarray, embedded: np.ndarray, positions: np.ndarray, cache: KVCache) -> np.ndarray:
        """hidden [T, n_embd] (trunk output at t), embedded [T, n_embd] (embeddings of the tokens
        t+1), positions [T] or [3, T] → h' [T, n_embd]; the cache gains T entries."""
        w, eps = self.w, self.config.rms_eps
        embedded = ops.rms_norm(embedded, w.enorm, eps)
        z = w.eh_proj(np.concatenate([embedded, ops.rms_norm(hidden, w.hnorm, eps)], axis=-1))
        positions = np.asarray(positions)
        pos3 = positions if positions.ndim == 2 else np.broadcast_to(positions, (3, len(positions)))
        cos, sin = ops.rope_cos_sin(pos3, self.config.n_rot, self.config.rope_theta, self.config.rope_sections)
        z = self.block(z, cache, cos, sin)
        return ops.rms_norm(z, w.head_norm, eps)

    def logits(self, head_hidden: np.ndarray) -> np.ndarray:
        return self.w.head(head_hidden)

    def __call__(self, hidden: np.ndarray, next_ids, positions: np.ndarray, cache: KVCache) -> np.ndarray:
        """hidden [T, n_embd] (trunk output at positions t), next_ids [T] (tokens t+1),
        positions [T] → draft logits [T, n_vocab] for tokens t+2."""
        return self.logits(self.hidden(hidden, self.w.embed.rows(next_ids), positions, cache))
