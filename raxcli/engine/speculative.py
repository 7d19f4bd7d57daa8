"""Self-speculative decoding: the MTP head drafts tokens, the trunk verifies them in one batch.

A CPU decode step is bound by reading the weights once; k + 1 tokens fed through the trunk
together read them once too (quant/gemv.py keeps each row in L1 for every token). So:

    1. the caller feeds token x (chosen from the last logits);
    2. the MTP head drafts d_1 … d_k from the trunk's last hidden state and x (mtp.py);
    3. the trunk runs [x, d_1 … d_k] as one tentative batch (TextState.begin_tentative) and
       returns the logits after x; the logits after each d_i wait;
    4. while the caller's next token equals the next draft, its logits are already there;
       at the first difference (or the end) the state keeps the confirmed tokens
       (TextState.commit rolls back the DeltaNet states and the KV caches) and goes to 1.

`decode(token)` always returns the trunk's logits after exactly the tokens fed, so any
sampler sees what it would without speculation and greedy output is unchanged. When few
drafts are accepted (sampling at high temperature, random weights) speculation pauses:
drafting costs an MTP block plus a vocabulary projection per drafted token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mtp import MTPHead
from .state import KVCache, TextState

PAUSE_TOKENS = 64       # plain decoding for this long when drafts do not pay
JUDGE_CYCLES = 8        # cycles of evidence before judging the acceptance


@dataclass
class Drafting:
    """What speculation keeps per conversation (TextState.drafting)."""
    cache: KVCache                      # the MTP block's keys and values, one per position
    last_hidden: np.ndarray             # trunk hidden state of the last committed token
    mtp_length: int = 0                 # cache entries made from committed (hidden, token) pairs
    batch: list | None = None           # tokens of the pending verification, fed tentatively
    logits: np.ndarray | None = None    # [len(batch), vocab]: trunk logits after each of them
    hidden: np.ndarray | None = None    # [len(batch), n_embd]
    used: int = 0                       # how many of them the caller has fed
    cycles: int = 0
    accepted: int = 0                   # drafted tokens the caller went on to feed
    plain_left: int = 0                 # tokens to decode without drafting (paused)


class SpeculativeModel:
    """A TextModel that drafts with its MTP head; same interface as TextModel.

    n_draft: tokens drafted per step. min_accepted: drafted tokens per step that must be
    accepted on average for drafting to go on (below it a step costs more than it saves).
    """

    def __init__(self, model, n_draft: int = 2, min_accepted: float = 0.5):
        if model.weights.mtp is None:
            raise ValueError("this model file has no MTP block (nextn_predict_layers is 0)")
        self.model, self.n_draft, self.min_accepted = model, n_draft, min_accepted
        self.head = MTPHead(model.weights.mtp, model.config)
        self.config, self.weights = model.config, model.weights

    # -- the TextModel interface ----------------------------------------------------------------
    def plain(self):
        return self.model

    def new_state(self) -> TextState:
        return self.model.new_state()

    def embed(self, token_ids) -> np.ndarray:
        return self.model.embed(token_ids)

    def logits(self, hidden: np.ndarray) -> np.ndarray:
        return self.model.logits(hidden)

    def forward(self, embeddings: np.ndarray, state: TextState, positions: np.ndarray | None = None,
                last_only: bool = False) -> np.ndarray:
        """As TextModel.forward; the MTP cache follows (pairs of each hidden with the next input,
        so every hidden state is computed, last_only or not)."""
        d = self._drafting(state)
        self._settle(state, d)
        embeddings = np.asarray(embeddings, np.float32)
        pos = positions if positions is not None else np.arange(state.next_position,
                                                                state.next_position + len(embeddings))
        hidden = self.model.forward(embeddings, state, positions)
        self._follow(d, hidden, embeddings, pos)
        return hidden[-1:] if last_only else hidden

    def prefill(self, token_ids, state: TextState, all_logits: bool = False) -> np.ndarray:
        hidden = self.forward(self.embed(token_ids), state)
        return self.logits(hidden if all_logits else hidden[-1])

    def decode(self, token_id: int, state: TextState) -> np.ndarray:
        """The trunk's logits after feeding token_id (drafting and verifying behind the scenes)."""
        d = self._drafting(state)
        if d.batch is not None:
            if d.used < len(d.batch) and token_id == d.batch[d.used]:
                d.used += 1                                     # a draft the caller agrees with
                state.confirm(d.used)
                return d.logits[d.used - 1]
            self._settle(state, d)
        if d.plain_left > 0 or self.n_draft == 0:
            d.plain_left -= 1
            return self.logits(self.forward(self.embed([token_id]), state)[0])
        batch = [int(token_id)] + self._draft(state, d, int(token_id))
        state.begin_tentative(len(batch))
        hidden = self.model.forward(self.embed(batch), state)
        state.confirm(1)                                        # the caller has fed `token_id` only
        d.batch, d.hidden, d.logits, d.used = batch, hidden, self.logits(hidden), 1
        return d.logits[0]

    # -- drafting ---------------------------------------------------------------------------------
    def _drafting(self, state: TextState) -> Drafting:
        if state.drafting is None:
            state.drafting = Drafting(self.head.new_cache(), np.zeros(self.config.n_embd, np.float32))
        return state.drafting

    def _draft(self, state: TextState, d: Drafting, token: int) -> list[int]:
        """n_draft tokens from the MTP head, chained on its own hidden state as llama.cpp does.
        The first pair (last trunk hidden, token) is final; later entries are dropped."""
        p = state.next_position                          # the position `token` will take
        h, drafts = d.last_hidden[None], []
        nxt = token
        for i in range(self.n_draft):
            h = self.head.hidden(h, self.embed([nxt]), np.array([p + i]), d.cache)
            nxt = int(np.argmax(self.head.logits(h[0])))
            drafts.append(nxt)
        d.mtp_length += 1
        d.cache.truncate(d.mtp_length)
        return drafts

    def _settle(self, state: TextState, d: Drafting) -> None:
        """Keep the tokens of the pending batch the caller fed; roll back the rest."""
        if d.batch is None:
            return
        n = d.used
        p0 = state.next_position - n                     # position of batch[0]
        state.commit(n)
        if n > 1:          # the MTP cache already holds (last hidden, batch[0]); add the others
            self.head.hidden(d.hidden[:n - 1], self.embed(d.batch[1:n]), np.arange(p0 + 1, p0 + n), d.cache)
            d.mtp_length += n - 1
        d.last_hidden = d.hidden[n - 1].copy()
        d.cycles += 1
        d.accepted += n - 1
        if d.cycles >= JUDGE_CYCLES:
            if d.accepted < self.min_accepted * d.cycles:
                d.plain_left = PAUSE_TOKENS
            d.cycles = d.accepted = 0
        d.batch = d.logits = d.hidden = None

    def _follow(self, d: Drafting, hidden: np.ndarray, embeddings: np.ndarray, positions: np.ndarray) -> None:
        """MTP cache entries for plainly fed tokens: (previous hidden, this token) pairs."""
        previous = np.concatenate([d.last_hidden[None], hidden[:-1]])
        self.head.hidden(previous, embeddings, positions, d.cache)
        d.mtp_length += len(hidden)
        d.last_hidden = hidden[-1].copy()
