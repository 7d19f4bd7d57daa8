"""Per-conversation state of the text model: what a prompt leaves behind for the next token."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class DeltaNetCache:
    conv: np.ndarray        # [kernel - 1, conv_dim]: the last inputs of the causal conv
    recurrent: np.ndarray   # [n_v_heads, d_k, d_v]: the delta-rule state S

    @classmethod
    def empty(cls, config) -> "DeltaNetCache":
        return cls(
            conv=np.zeros((config.ssm_conv_kernel - 1, config.ssm_conv_dim), np.float32),
            recurrent=np.zeros((config.ssm_n_v_heads, config.ssm_state_size, config.ssm_state_size), np.float32),
        )


@dataclass
class KVCache:
    """Keys and values of one attention layer, grown in steps as the conversation lengthens."""
    n_head_kv: int
    head_dim: int
    length: int = 0
    keys: np.ndarray = field(default=None)     # [n_head_kv, capacity, head_dim]
    values: np.ndarray = field(default=None)

    GROW = 256

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """k, v: [n_head_kv, T, head_dim]. Returns views of all cached keys and values."""
        T = k.shape[1]
        need = self.length + T
        if self.keys is None or need > self.keys.shape[1]:
            capacity = max(need + self.GROW, 2 * (0 if self.keys is None else self.keys.shape[1]))
            grown_k = np.zeros((self.n_head_kv, capacity, self.head_dim), np.float32)
            grown_v = np.zeros_like(grown_k)
            if self.keys is not None:
                grown_k[:, :self.length] = self.keys[:, :self.length]
                grown_v[:, :self.length] = self.values[:, :self.length]
            self.keys, self.values = grown_k, grown_v
        self.keys[:, self.length:need] = k
        self.values[:, self.length:need] = v
        self.length = need
        return self.keys[:, :need], self.values[:, :need]


@dataclass
class TextState:
    """Caches for every trunk layer plus where the sequence stands."""
    layers: list                # DeltaNetCache | KVCache per layer
    n_tokens: int = 0           # tokens consumed so far
    next_position: int = 0      # next rotary position (vision tokens advance it differently)

    @classmethod
    def empty(cls, config) -> "TextState":
        layers = [
            DeltaNetCache.empty(config) if config.is_recurrent[i] else KVCache(config.n_head_kv, config.head_dim)
            for i in range(config.n_layer)
        ]
        return cls(layers=layers)

    def nbytes(self) -> int:
        total = 0
        for c in self.layers:
            if isinstance(c, DeltaNetCache):
                total += c.conv.nbytes + c.recurrent.nbytes
            elif c.keys is not None:
                total += c.keys.nbytes + c.values.nbytes
        return total
