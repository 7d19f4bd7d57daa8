"""One chat with a model: the conversation, and the model state that has read it.

The state (KV cache and DeltaNet recurrence) is kept across turns and each turn feeds only
what is new. Re-rendering the whole chat through the template would not do: Qwen3.5's
template drops the reasoning of earlier assistant turns, so the re-rendered text is not an
extension of what the model has read. Instead a turn is the template's markup for the new
user message alone plus the generation prompt, and the previous answer is closed by
appending `<|im_end|>\\n` to exactly the tokens the model generated. Only when the history
itself changes (a loaded chat, a new system message) is it rendered whole and read again.

No terminal code here: the REPL draws what `ask` yields.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from .chat import ChatTemplateError, render_chat
from .conversation import Conversation, Message
from .errors import UserError
from .generate import Completion, GenerationSettings, Step
from .sampling import SamplingParams, recommended_params

# Prompts are read in chunks of this many tokens so that progress can be shown and Ctrl-C
# honoured between them; the last TAIL tokens go through the generator itself, which must
# see the generation prompt's <think> markup to know whether the model starts thinking.
PREFILL_CHUNK = 128
TAIL = 16


class ContextFull(UserError):
    """The conversation has no room left for the next turn."""


class PromptInterrupted(Exception):
    """Ctrl-C while the prompt was being read: the turn is dropped, the history kept."""


@dataclass
class ChatOptions:
    thinking: bool = True
    think_budget: int | None = None
    max_tokens: int = 512
    max_context: int = 4096
    sampling: dict = field(default_factory=dict)    # overrides of the recommended values
    greedy: bool = False


@dataclass
class Prompt:
    ids: list[int]
    embeddings: np.ndarray | None = None     # [T, n_embd] when media were spliced in
    positions: np.ndarray | None = None      # [3, T] with media
    vision_s: float = 0.0


ProgressCallback = Callable[[int, int], None]


class ChatSession:
    def __init__(self, loaded, options: ChatOptions, vision=None, mmproj=None):
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.generator = loaded.generator
        self.options = options
        self.vision = vision
        self.mmproj = mmproj
        self.conversation = Conversation(model=str(loaded.path))
        self.state = self.model.new_state()
        self.stream: list[int] = []     # every id the state has read, in order
        self.carry: list[int] = []      # ids owed to the state before the next turn
        self.stale = True               # the state must be rebuilt from the conversation
        self.closing_ids = self.tokenizer.encode("<|im_end|>\n")
        self.last_stats: dict = {}

    # -- history changes --------------------------------------------------------
    def clear(self) -> None:
        self.conversation.messages.clear()
        self._forget_state()

    def set_system(self, text: str | None) -> None:
        self.conversation.system = text or None
        self._forget_state()

    def replace_conversation(self, conversation: Conversation) -> None:
        conversation.model = str(self.loaded.path)
        self.conversation = conversation
        self._forget_state()

    def _forget_state(self) -> None:
        self.stale = True
        self.carry = []

    @property
    def context_used(self) -> int:
        return 0 if self.stale else self.state.n_tokens + len(self.carry)

    # -- building a turn ----------------------------------------------------------
    def render_turn(self, user: Message) -> tuple[str, list[tuple[str, str]]]:
        """(text to feed, media in it) for the next turn: the whole chat when the state is
        stale, else the new user message with the template's own markup."""
        template = self.loaded.chat_template
        if self.stale:
            messages = self.conversation.template_messages([user])
            media = self.conversation.media()
        else:
            messages = [user.template_message()]
            media = []
        media = media + [("image", p) for p in user.images] + [("video", p) for p in user.videos]
        try:
            text = render_chat(template, messages, add_generation_prompt=True, enable_thinking=self.options.thinking)
        except ChatTemplateError as exc:
            raise UserError(f"chat template: {exc}") from None
        return text, media

    def build_prompt(self, user: Message) -> Prompt:
        text, media = self.render_turn(user)
        carry = [] if self.stale else self.carry
        if not media:
            return Prompt(carry + self.tokenizer.encode(text))
        if self.vision is None:
            raise UserError("this model has no vision tower: put its mmproj GGUF beside it or pass --mmproj")
        start = (0 if self.stale else self.state.next_position) + len(carry)
        from . import multimodal
        visuals = [multimodal.load_image(path, self.vision) if kind == "image" else
                   multimodal.load_video(path, self.vision) for kind, path in media]
        segment = multimodal.encode_prompt(self.tokenizer, self.model, self.vision, text, visuals, start)
        vision_s = segment.vision_s
        ids = list(segment.ids)
        embeddings, positions = segment.embeddings, segment.positions
        if carry:
            carry_positions = np.broadcast_to(np.arange(start - len(carry), start), (3, len(carry)))
            embeddings = np.concatenate([self.model.embed(carry), embeddings])
            positions = np.concatenate([carry_positions, positions], axis=1)
        return Prompt(carry + ids, embeddings, positions, vision_s)

    def settings(self, media: bool) -> GenerationSettings:
        o = self.options
        params: SamplingParams = recommended_params(o.thinking, media).with_overrides(**o.sampling)
        if o.greedy:   # plain argmax, as `rax run --greedy`: no penalty unless one is asked for
            params = params.with_overrides(temperature=0.0, presence_penalty=o.sampling.get("presence_penalty", 0.0))
        return GenerationSettings(params=params, max_tokens=o.max_tokens,
                                  think_budget=o.think_budget if o.thinking else None,
                                  max_context=o.max_context)

    # -- a turn ---------------------------------------------------------------------
    def ask(self, user: Message, should_stop: Callable[[], bool] = lambda: False,
            on_prefill: ProgressCallback | None = None, prompt: Prompt | None = None) -> Iterator[Step]:
        """Feed the user's message and stream the answer. The last Step carries the figures
        (time to first token, prompt and answer tokens, speeds). The exchange is recorded
        when the stream ends, interrupted or not."""
        t_start = time.perf_counter()
        prompt = prompt or self.build_prompt(user)
        base = 0 if self.stale else self.state.n_tokens
        limit = self.options.max_context
        if base + len(prompt.ids) >= limit:
            raise ContextFull(
                f"the conversation is full: {base} tokens read, {len(prompt.ids)} more for this turn, "
                f"context {limit}. /clear starts over (/save first to keep it)")
        if self.stale:
            self.state = self.model.new_state()
            self.stream = []
        # until the exchange is recorded the state is ahead of the conversation: should
        # this turn end any other way, the next one rebuilds from the conversation
        self.stale = True
        state = self.state
        settings = self.settings(media=bool(prompt.embeddings is not None or self.conversation.media()))

        t_prefill = time.perf_counter()
        split = max(0, len(prompt.ids) - TAIL)
        for start in range(0, split, PREFILL_CHUNK):
            stop = min(split, start + PREFILL_CHUNK)
            if should_stop():
                raise PromptInterrupted()
            self.model.forward(self._embeddings(prompt, start, stop), state, _slice(prompt.positions, start, stop),
                               last_only=True)
            if on_prefill:
                on_prefill(stop, len(prompt.ids))
        body_s = time.perf_counter() - t_prefill

        completion = Completion(prompt_token_ids=list(prompt.ids))
        first_token_at = None
        tail = prompt.ids[split:]
        embeddings = None if prompt.embeddings is None else prompt.embeddings[split:]
        for step in self.generator.generate(tail, state, settings, embeddings=embeddings,
                                            positions=_slice(prompt.positions, split, len(prompt.ids)),
                                            should_stop=should_stop):
            if first_token_at is None and step.token_id is not None:
                first_token_at = time.perf_counter()
                if on_prefill:
                    on_prefill(len(prompt.ids), len(prompt.ids))
            completion.add(step)
            if step.finish_reason is not None:
                step.stats = self._record(user, prompt, completion, base, step.stats or {},
                                          t_start, body_s, first_token_at)
            yield step

    def _embeddings(self, prompt: Prompt, start: int, stop: int) -> np.ndarray:
        if prompt.embeddings is None:
            return self.model.embed(prompt.ids[start:stop])
        return prompt.embeddings[start:stop]

    def _record(self, user: Message, prompt: Prompt, completion: Completion, base: int, gen_stats: dict,
                t_start: float, body_s: float, first_token_at: float | None) -> dict:
        fed = self.state.n_tokens - base
        full = prompt.ids + completion.token_ids
        self.stream += full[:fed]
        # the generator does not feed a token that ends the answer by length; it is owed
        self.carry = full[fed:] + self.closing_ids
        self.stale = False
        self.conversation.messages += [user, Message("assistant", completion.text, thinking=completion.thinking,
                                                     finish_reason=completion.finish_reason)]
        prefill_s = body_s + gen_stats.get("prefill_s", 0.0)
        stats = {
            "prompt_tokens": len(prompt.ids),
            "generated_tokens": len(completion.token_ids),
            "thinking": bool(completion.thinking),
            "ttft_s": (first_token_at - t_start) if first_token_at else None,
            "vision_s": prompt.vision_s,
            "prefill_tok_s": len(prompt.ids) / prefill_s if prefill_s > 0 else 0.0,
            "decode_tok_s": gen_stats.get("decode_tok_s", 0.0),
            "finish_reason": completion.finish_reason,
            "context_used": self.context_used,
            "context": self.options.max_context,
        }
        self.last_stats = stats
        return stats

    def warm_up(self) -> None:
        """Run the kernels once on a scratch state: the first run compiles them (Numba
        caches the result, so later starts are quick), and that should happen now, under a
        visible spinner, rather than silently inside the first answer."""
        from .engine.deltanet import RECURRENT_TOKENS
        scratch = self.model.new_state()
        ids = self.tokenizer.encode("Hi")[:1] * (RECURRENT_TOKENS + 1)    # long enough for the chunked path
        self.model.forward(self.model.embed(ids), scratch)
        self.model.decode(ids[0], scratch)


def _slice(positions: np.ndarray | None, start: int, stop: int) -> np.ndarray | None:
    return None if positions is None else positions[:, start:stop]
