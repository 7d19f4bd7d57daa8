"""The Qwen3.5 text decoder: embed → trunk of DeltaNet / attention blocks → norm → logits."""
from __future__ import annotations

import numpy as np

from . import ops
from .attention import GatedAttention
from .deltanet import GatedDeltaNet
from .state import TextState
from .weights import Activation, LayerWeights, ModelWeights, Projections


PREFILL_CHUNK = 128     # tokens per trunk pass on long prompts (a multiple of the delta rule's chunk)


class DecoderBlock:
    """Pre-norm residual block: token mixer (DeltaNet or gated attention), then SwiGLU MLP.

    The MLP's gate and up go through the kernel in one pass (`Projections`). A one-token step
    (decoding) writes into arrays the block keeps: its two normed inputs and the MLP's output."""

    def __init__(self, weights: LayerWeights, config, recurrent: bool):
        self.w = weights
        self.eps = config.rms_eps
        self.recurrent = recurrent
        self.mixer = GatedDeltaNet(weights, config) if recurrent else GatedAttention(weights, config)
        self.ffn_in = Projections(weights.ffn_gate, weights.ffn_up)
        one_token = np.zeros((1, config.n_embd), np.float32)
        self._mixer_input, self._ffn_input = Activation(one_token), Activation(one_token.copy())
        self._ffn_output = one_token.copy()

    def __call__(self, x: np.ndarray, cache, cos, sin) -> np.ndarray:
        """x [T, n_embd]: the residual stream, updated in place (the caller's own array)."""
        w, one = self.w, x.shape[0] == 1
        h = self._normed(x, w.attn_norm, self._mixer_input if one else None)
        x += self.mixer(h, cache) if self.recurrent else self.mixer(h, cache, cos, sin)
        gate, up = self.ffn_in(self._normed(x, w.post_attention_norm, self._ffn_input if one else None))
        x += w.ffn_down(ops.swiglu(gate, up, out=gate), out=self._ffn_output if one else None)   # SwiGLU in place
        return x

    def _normed(self, x: np.ndarray, weight: np.ndarray, kept: Activation | None) -> Activation:
        if kept is None:
            return Activation(ops.rms_norm(x, weight, self.eps))
        ops.rms_norm(x, weight, self.eps, out=kept.x)
        return kept.refill()


class Decoder:
    """What the generation loop calls on a text model, shared by the CPU engine (TextModel)
    and the GPU one (engine/gpu/model.py): a subclass gives `_trunk` (T new tokens through
    the blocks), `logits`, `new_state`, and `prefill_chunk`."""

    prefill_chunk = PREFILL_CHUNK

    def plain(self):
        """The model without speculative decoding (this one; SpeculativeModel answers its trunk)."""
        return self

    def embed(self, token_ids) -> np.ndarray:
        return self.weights.token_embd.rows(token_ids)

    def forward(self, embeddings, state: TextState, positions: np.ndarray | None = None, last_only: bool = False):
        """Run T new tokens through the trunk; returns the final-normed hidden states [T, n_embd]
        (with last_only, the last token's only, [1, n_embd]: a long prompt then keeps no
        [T, n_embd] output, which is 32 MB at 4k tokens).

        positions: [3, T] rotary positions (temporal, height, width); text tokens default to
        consecutive positions from `state.next_position` on all three streams. With explicit
        positions (vision tokens), text resumes after the largest one, as get_rope_index does.
        Long inputs go through in pieces of `prefill_chunk` tokens (the same result: every
        cache carries over), which bounds the activations' memory on long prompts."""
        T, chunk = embeddings.shape[0], self.prefill_chunk
        if T > chunk:
            parts = [self.forward(embeddings[a:a + chunk], state,
                                  None if positions is None else positions[:, a:a + chunk], last_only)
                     for a in range(0, T, chunk)]
            return parts[-1] if last_only else self._concatenate(parts)
        if positions is None:
            positions = np.broadcast_to(np.arange(state.next_position, state.next_position + T), (3, T))
            state.next_position += T
        else:
            state.next_position = max(state.next_position, int(np.max(positions)) + 1)
        hidden = self._trunk(embeddings, state, positions, last_only)
        state.n_tokens += T
        return hidden

    def prefill(self, token_ids, state: TextState, all_logits: bool = False) -> np.ndarray:
        """Feed a prompt; returns the logits of its last token (or of every token). Token ids
        are embedded a piece at a time, as the trunk takes them."""
        if all_logits:
            return self.logits(self.forward(self.embed(token_ids), state))
        hidden = None
        for a in range(0, len(token_ids), self.prefill_chunk):
            hidden = self.forward(self.embed(token_ids[a:a + self.prefill_chunk]), state, last_only=True)
        return self.logits(hidden[-1])

    def decode(self, token_id: int, state: TextState) -> np.ndarray:
        return self.logits(self.forward(self.embed([token_id]), state)[0])

    def _concatenate(self, parts):
        return np.concatenate(parts)


class TextModel(Decoder):
    """activations: how decode steps feed the quantized matrices (`ModelWeights.set_activations`):
    "float" (default) equals transformers on the dequantized weights; "fine" (int8 plus a
    residual int8 code) keeps greedy tokens of the reference fixtures; "int8" is llama.cpp's
    choice, fastest, its logits move by what llama.cpp's move. kv_dtype: the attention
    layers' cache, float32 (default) or float16 (half the memory; llama.cpp's default).

    One step at a time: a one-token step writes into arrays the blocks keep, so two threads
    must not run one model at once (rax serve runs one generation at a time)."""

    def __init__(self, weights: ModelWeights, activations: str = "float", kv_dtype: type = np.float32):
        self.weights = weights
        self.kv_dtype = kv_dtype
        weights.set_activations(activations)
        self.config = c = weights.config
        self.blocks = [DecoderBlock(weights.layers[i], c, c.is_recurrent[i]) for i in range(c.n_layer)]

    def new_state(self) -> TextState:
        return TextState.empty(self.config, self.kv_dtype)

    def _trunk(self, embeddings: np.ndarray, state: TextState, positions: np.ndarray, last_only: bool) -> np.ndarray:
        c = self.config
        cos, sin = ops.rope_cos_sin(positions, c.n_rot, c.rope_theta, c.rope_sections)
        x = np.array(embeddings, dtype=np.float32)      # the residual stream, which the blocks update in place
        for block, cache in zip(self.blocks, state.layers):
            x = block(x, cache, cos, sin)
        return ops.rms_norm(x[-1:] if last_only else x, self.weights.output_norm, c.rms_eps)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        """hidden: [n_embd] or [T, n_embd] → logits over the vocabulary."""
        return self.weights.output(hidden)
