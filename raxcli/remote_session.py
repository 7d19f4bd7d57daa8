"""`rax chat --server URL`: a chat whose answers come from an OpenAI-compatible server.

`RemoteChatSession` offers what the REPL uses of a local `ChatSession` (the conversation,
options, `build_prompt`, `ask` yielding Steps whose last one carries the figures), so the
REPL draws a remote answer exactly as a local one. The server keeps no state between
requests: each turn sends the whole conversation, pictures as data URLs.
"""
from __future__ import annotations

import time
from typing import Callable, Iterator

from .conversation import Conversation, Message
from .generate import Completion, Step
from .remote import RemoteBackend, RemoteSettings, openai_messages
from .session import ChatOptions


def server_context(card: dict) -> int | None:
    """The context window a server reports for its model, when it reports one."""
    for key in ("context_length", "max_model_len"):
        value = card.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


class RemoteChatSession:
    remote = True

    def __init__(self, backend: RemoteBackend, options: ChatOptions, card: dict | None = None):
        self.backend = backend
        self.options = options
        self.card = card or {"id": backend.model}
        self.conversation = Conversation(model=f"{backend.model} at {backend.url}")
        if self.card.get("vision") is False:     # rax serve says so; most servers do not tell
            self.vision, self.mmproj = None, None
        else:                                    # pictures go to the server; it says if it cannot see
            self.vision = backend.url
            self.mmproj = f"sent to {backend.url} as data URLs"
        self.last_stats: dict = {}
        self._context_used = 0

    # -- history changes ----------------------------------------------------------------
    def clear(self) -> None:
        self.conversation.messages.clear()
        self._context_used = 0

    def set_system(self, text: str | None) -> None:
        self.conversation.system = text or None

    def replace_conversation(self, conversation: Conversation) -> None:
        conversation.model = self.conversation.model
        self.conversation = conversation
        self._context_used = 0      # unknown until the server counts the next turn

    @property
    def context_used(self) -> int:
        return self._context_used

    def warm_up(self) -> None:
        """Nothing to compile; asking for the model name checks the server answers."""
        self.backend.model

    # -- a turn -------------------------------------------------------------------------
    def build_prompt(self, user: Message) -> list[dict]:
        """The whole chat in OpenAI's shape, pictures read and encoded now (errors early)."""
        messages = self.conversation.template_messages([user])
        for message in messages:
            message.pop("reasoning_content", None)   # past reasoning is not replayed
        return openai_messages(messages)

    def settings(self) -> RemoteSettings:
        o = self.options
        sampling = {k: o.sampling.get(k) for k in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "seed")}
        if o.greedy:
            sampling["temperature"] = 0.0
        # token ids make the thinking count exact where the server sends them (rax serve, vLLM)
        return RemoteSettings(**sampling, max_tokens=o.max_tokens, thinking=None if o.thinking else False,
                              think_budget=o.think_budget if o.thinking else None, token_ids=True)

    def ask(self, user: Message, should_stop: Callable[[], bool] = lambda: False,
            on_prefill=None, prompt: list[dict] | None = None) -> Iterator[Step]:
        t_start = time.perf_counter()
        messages = prompt if prompt is not None else self.build_prompt(user)
        completion = Completion(prompt_token_ids=[])
        first_token_at = None
        for step in self.backend.generate(messages, self.settings(), should_stop=should_stop, prepared=True):
            if first_token_at is None and step.text:
                first_token_at = time.perf_counter()
            completion.add(step)
            if step.finish_reason is not None:
                step.stats = self._record(user, completion, step.stats or {}, t_start, first_token_at)
            yield step

    def _record(self, user: Message, completion: Completion, figures: dict, t_start: float,
                first_token_at: float | None) -> dict:
        # a stream the server closed without a finish reason was cut short, not ended by length
        cut = self.backend.ended_early
        self.conversation.messages += [user, Message("assistant", completion.text, thinking=completion.thinking,
                                                     finish_reason="interrupted" if cut else completion.finish_reason)]
        self._context_used = figures.get("prompt_tokens", 0) + figures.get("generated_tokens", 0)
        stats = {
            "prompt_tokens": figures.get("prompt_tokens", 0),
            "generated_tokens": figures.get("generated_tokens", 0),
            "thinking": bool(completion.thinking),
            "ttft_s": (first_token_at - t_start) if first_token_at else None,
            "vision_s": 0.0,
            "prefill_tok_s": figures.get("prefill_tok_s", 0.0),
            "decode_tok_s": figures.get("decode_tok_s", 0.0),
            "finish_reason": "cut" if cut else completion.finish_reason,
            "context_used": self._context_used,
            "context": self.options.max_context,
        }
        self.last_stats = stats
        return stats
