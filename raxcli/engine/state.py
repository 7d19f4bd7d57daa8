"""Per-conversation state of the text model: what a prompt leaves behind for the next token.

The caches are NumPy arrays for the CPU engine and CuPy arrays (on the GPU) for the GPU
engine: `TextState.empty(..., xp=cupy)`."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .arrays import library


@dataclass
class DeltaNetCache:
    conv: np.ndarray        # [kernel - 1, conv_dim]: the last inputs of the causal conv
    recurrent: np.ndarray   # [n_v_heads, d_v, d_k]: the delta-rule state S, stored transposed (Sᵀ)
    # tentative tokens (TextState.begin_tentative): the state after each of them, and their
    # conv inputs; `conv` and `recurrent` stay as before them until TextState.commit
    history: np.ndarray | None = None     # [max tentative tokens, n_v_heads, d_v, d_k]
    pending: np.ndarray | None = None     # [tentative tokens, conv_dim]
    tentative: bool = False

    @classmethod
    def empty(cls, config, xp=np) -> "DeltaNetCache":
        return cls(
            conv=xp.zeros((config.ssm_conv_kernel - 1, config.ssm_conv_dim), xp.float32),
            recurrent=xp.zeros((config.ssm_n_v_heads, config.ssm_state_size, config.ssm_state_size), xp.float32),
        )

    def commit(self, n_keep: int) -> None:
        """Keep the first n_keep tentative tokens: their state becomes the state."""
        if n_keep > 0:
            self.recurrent[...] = self.history[n_keep - 1]
            inputs = np.concatenate([self.conv, self.pending[:n_keep]])
            self.conv[...] = inputs[len(inputs) - len(self.conv):]
        self.pending, self.tentative = None, False


@dataclass
class KVCache:
    """Keys and values of one attention layer, grown in steps as the conversation lengthens.
    Stored in float32 or, as llama.cpp stores them by default, float16 (half the memory:
    48 MB instead of 96 at 4k tokens for a 2B model)."""
    n_head_kv: int
    head_dim: int
    length: int = 0
    keys: np.ndarray = field(default=None)     # [n_head_kv, capacity, head_dim]
    values: np.ndarray = field(default=None)
    dtype: type = np.float32
    library: str = "numpy"      # or "cupy": caches on the GPU (a name, so that states deep-copy)

    GROW = 256

    def reserve(self, capacity: int) -> None:
        """Room for `capacity` positions in all (a generation that knows its length reserves
        it once: no copies while the prompt goes in, nor their transient memory)."""
        if self.keys is not None and capacity <= self.keys.shape[1]:
            return
        xp = library(self.library)
        grown_k = xp.zeros((self.n_head_kv, capacity, self.head_dim), self.dtype)
        grown_v = xp.zeros_like(grown_k)
        if self.keys is not None:
            grown_k[:, :self.length] = self.keys[:, :self.length]
            grown_v[:, :self.length] = self.values[:, :self.length]
        self.keys, self.values = grown_k, grown_v

    def append(self, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """k, v: [n_head_kv, T, head_dim]. Returns views of all cached keys and values."""
        T = k.shape[1]
        need = self.length + T
        if self.keys is None or need > self.keys.shape[1]:
            # a quarter more than needed: doubling left up to half of a 4k-token cache unused
            self.reserve(need + max(self.GROW, need // 4))
        self.keys[:, self.length:need] = k
        self.values[:, self.length:need] = v
        self.length = need
        return self.keys[:, :need], self.values[:, :need]

    def kernel_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole keys and values arrays as Numba kernels take them (kernels.kv_at):
        float32, or float16 bits viewed as uint16."""
        if self.dtype == np.float16:
            return self.keys.view(np.uint16), self.values.view(np.uint16)
        return self.keys, self.values

    def truncate(self, length: int) -> None:
        """Forget every position from `length` on (rejected drafted tokens)."""
        self.length = min(self.length, length)


@dataclass
class TextState:
    """Caches for every trunk layer plus where the sequence stands."""
    layers: list                # DeltaNetCache | KVCache per layer
    n_tokens: int = 0           # tokens consumed so far
    next_position: int = 0      # next rotary position (vision tokens advance it differently)

    drafting: object = None     # speculative decoding's own state (speculative.Drafting), if used
    # the counters when begin_tentative was called (None: no tentative tokens)
    _before: tuple[int, int, list] | None = field(default=None, repr=False)

    @classmethod
    def empty(cls, config, kv_dtype: type = np.float32, xp=np) -> "TextState":
        layers = [
            DeltaNetCache.empty(config, xp) if config.is_recurrent[i]
            else KVCache(config.n_head_kv, config.head_dim, dtype=kv_dtype, library=xp.__name__)
            for i in range(config.n_layer)
        ]
        return cls(layers=layers)

    def reserve(self, n_tokens: int) -> None:
        """Make room in the attention caches for n_tokens positions in all."""
        for c in self.layers:
            if isinstance(c, KVCache):
                c.reserve(n_tokens)

    def begin_tentative(self, max_tokens: int) -> None:
        """The next forward (of at most max_tokens text tokens) may be partly undone by
        `commit`: speculative decoding feeds drafted tokens, then keeps those the model agrees
        with. DeltaNet layers then write the state after each token apart (history buffers
        of max_tokens recurrent states, allocated once)."""
        if self._before is not None:
            raise RuntimeError("tentative tokens are pending: commit them first")
        lengths = []
        for c in self.layers:
            if isinstance(c, DeltaNetCache):
                if c.history is None or c.history.shape[0] < max_tokens:
                    c.history = np.empty((max_tokens,) + c.recurrent.shape, np.float32)
                c.tentative = True
            lengths.append(c.length if isinstance(c, KVCache) else 0)
        self._before = (self.n_tokens, self.next_position, lengths)

    def confirm(self, n_fed: int) -> None:
        """Of the tentative tokens, the first n_fed have really been fed: the counters
        (n_tokens, next_position) show those only; the caches still hold all of them."""
        n_tokens, next_position, _ = self._before
        self.n_tokens, self.next_position = n_tokens + n_fed, next_position + n_fed

    def commit(self, n_keep: int) -> None:
        """Keep the first n_keep tokens fed since `begin_tentative`, forget the rest."""
        n_tokens, next_position, lengths = self._before
        if n_keep < 0:
            raise ValueError(f"cannot keep {n_keep} tentative tokens")
        for c, length in zip(self.layers, lengths):
            if isinstance(c, DeltaNetCache):
                c.commit(n_keep)
            else:
                c.truncate(length + n_keep)
        self.n_tokens, self.next_position = n_tokens + n_keep, next_position + n_keep
        self._before = None

    def nbytes(self) -> int:
        total = 0
        for c in self.layers:
            if isinstance(c, DeltaNetCache):
                total += c.conv.nbytes + c.recurrent.nbytes
            elif c.keys is not None:
                total += c.keys.nbytes + c.values.nbytes
        return total
