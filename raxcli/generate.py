"""The generation loop: prompt ids in, a stream of `Step` records out.

One small record per step carries everything a front end needs (text delta, whether it
is thinking, logprobs); the last one also carries the finish reason and the figures.
The same stream feeds `rax run`, `--json` and the REPL.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .sampling import Sampler, SamplingParams, log_softmax, top_k_ids

# Said when the thinking budget runs out, so the model closes its reasoning in its own
# words rather than being cut mid-thought (the sentence Qwen uses for budgeted thinking).
THINK_BUDGET_CLOSE = (
    "\n\nConsidering the limited time by the user, I have to give the solution "
    "based on the thinking directly now.\n</think>\n\n"
)


class ContextOverflow(ValueError):
    """The prompt does not fit in the context window."""


@dataclass
class TokenLogprob:
    id: int
    token: str
    logprob: float
    top: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"id": self.id, "token": self.token, "logprob": self.logprob, "top": self.top}


@dataclass
class Step:
    token_id: int | None          # None on the final record when nothing was generated
    text: str                     # decoded text this step completed (may be "")
    thinking: bool                # the text belongs to the reasoning, not the answer
    logprob: TokenLogprob | None = None
    finish_reason: str | None = None   # "stop" | "length" | "interrupted" on the last step
    stats: dict | None = None


@dataclass
class GenerationSettings:
    params: SamplingParams
    max_tokens: int = 512
    think_budget: int | None = None
    top_logprobs: int = 0
    max_context: int | None = None


def thinking_open_at_end(prompt_ids, think_id: int | None, end_think_id: int | None) -> bool:
    """Does the prompt leave the model inside a <think> block (as the thinking template does)?"""
    if think_id is None:
        return False
    last_open = last_close = -1
    for i, t in enumerate(prompt_ids):
        if t == think_id:
            last_open = i
        elif t == end_think_id:
            last_close = i
    return last_open > last_close


class Generator:
    """Runs prompts through a `TextModel` with a tokenizer; keeps no conversation state itself."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        ids = tokenizer.id_of
        self.think_id = ids("<think>")
        self.end_think_id = ids("</think>")
        self.stop_ids = {i for i in (ids("<|im_end|>"), ids("<|endoftext|>"), tokenizer.eos_id) if i is not None}

    def _logprob(self, logits: np.ndarray, token: int, k: int) -> TokenLogprob:
        lp = log_softmax(logits)
        top = [{"id": int(i), "token": self.tokenizer.token_text(int(i)), "logprob": float(lp[i])}
               for i in top_k_ids(lp, k)]
        return TokenLogprob(int(token), self.tokenizer.token_text(int(token)), float(lp[token]), top)

    def generate(self, prompt_ids: list[int], state, settings: GenerationSettings,
                 embeddings: np.ndarray | None = None, positions: np.ndarray | None = None,
                 should_stop=lambda: False) -> Iterator[Step]:
        """Prefill `prompt_ids` (or the given `embeddings`) on top of `state`, then decode."""
        model, tok = self.model, self.tokenizer
        limit = settings.max_context or model.config.context_length
        if state.n_tokens + len(prompt_ids) >= limit:
            raise ContextOverflow(
                f"the prompt is {len(prompt_ids)} tokens; with {state.n_tokens} already in the "
                f"conversation it does not fit the context of {limit} tokens")
        max_new = min(settings.max_tokens, limit - state.n_tokens - len(prompt_ids))
        state.reserve(state.n_tokens + len(prompt_ids) + max_new)
        sampler = Sampler(settings.params)
        thinking = thinking_open_at_end(prompt_ids, self.think_id, self.end_think_id)
        thought_tokens = 0
        decoder = tok.stream_decoder()
        generated: list[int] = []
        forced: list[int] = []          # tokens we insert (closing a thinking budget)

        t0 = time.perf_counter()
        if embeddings is None and positions is None:
            logits = model.prefill(prompt_ids, state)
        else:
            if embeddings is None:
                embeddings = model.embed(prompt_ids)
            logits = model.logits(model.forward(embeddings, state, positions, last_only=True)[-1])
        t_prefill = time.perf_counter() - t0
        t_decode0 = time.perf_counter()
        finish = "length"

        while len(generated) < max_new:
            if should_stop():
                finish = "interrupted"
                break
            if forced:
                token = forced.pop(0)
            else:
                token = sampler(logits, np.asarray(generated, dtype=np.int64))
            lp = self._logprob(logits, token, settings.top_logprobs) if settings.top_logprobs else None
            if token in self.stop_ids:
                finish = "stop"
                break
            generated.append(token)
            if token == self.end_think_id and thinking:
                thinking = False
                text = decoder.flush()
                yield Step(token, text, True, lp)
            elif token == self.think_id and not thinking:
                thinking = True
                yield Step(token, decoder.flush(), False, lp)
            else:
                yield Step(token, decoder.feed(token), thinking, lp)
                if thinking:
                    thought_tokens += 1
                    budget = settings.think_budget
                    if budget is not None and thought_tokens >= budget and not forced and not decoder.pending:
                        forced = tok.encode(THINK_BUDGET_CLOSE)
            if len(generated) >= max_new:
                break
            logits = model.decode(token, state)

        tail = decoder.flush()
        t_decode = time.perf_counter() - t_decode0
        n_gen = len(generated)
        stats = {
            "prompt_tokens": len(prompt_ids),
            "generated_tokens": n_gen,
            "prefill_s": t_prefill,
            "prefill_tok_s": len(prompt_ids) / t_prefill if t_prefill > 0 else 0.0,
            "decode_tok_s": (n_gen - 1) / t_decode if n_gen > 1 and t_decode > 0 else 0.0,
        }
        yield Step(None, tail, thinking, None, finish, stats)


@dataclass
class Completion:
    """A whole generation gathered from its steps (for `rax run` and tests)."""
    prompt_token_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    thinking: str = ""
    finish_reason: str = "length"
    logprobs: list[TokenLogprob] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def add(self, step: Step) -> None:
        if step.token_id is not None:
            self.token_ids.append(step.token_id)
        if step.thinking:
            self.thinking += step.text
        else:
            self.text += step.text
        if step.logprob is not None:
            self.logprobs.append(step.logprob)
        if step.finish_reason is not None:
            self.finish_reason = step.finish_reason
            self.stats = step.stats or {}
            # the template writes "<think>\n…\n</think>\n\n": keep the words, not the framing
            self.thinking = self.thinking.strip("\n")
            self.text = self.text.lstrip("\n")
