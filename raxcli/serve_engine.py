"""The local engine behind `rax serve`: an OpenAI request → a prepared job → deltas.

`prepare` does everything that can fail because of the request (messages, images,
template, sampling values, context length) and is cheap; `run` does the work and is meant
for one worker thread at a time, each request on a fresh conversation state.
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .chat import ChatTemplateError, render_chat
from .generate import ContextOverflow, GenerationSettings, thinking_open_at_end
from .loader import LoadedModel
from .errors import UserError
from .openai_messages import ImageSource, RequestError, convert_chat, template_extras, thinking_switch
from .openai_reply import Delta, ReplyShaper
from .sampling import recommended_params

MAX_STOP_STRINGS = 16


@dataclass
class Job:
    prompt_ids: list[int]
    settings: GenerationSettings
    images: list[ImageSource] = field(default_factory=list)
    rendered: str = ""
    stops: list[str] = field(default_factory=list)
    tools: list[dict] | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    return_token_ids: bool = False
    prompt_tokens: int = 0          # final after run() for image prompts
    completion_tokens: int = 0      # set by run()
    reasoning_tokens: int = 0
    vision_s: float = 0.0


class LocalEngine:
    def __init__(self, loaded: LoadedModel, name: str, vision=None, max_context: int | None = None,
                 max_tokens: int | None = None, allow_file_urls: bool = True):
        self.loaded = loaded
        self.generator = loaded.generator   # a test may put a scripted generator here
        self.name = name
        self.vision = vision
        self.context = max_context or loaded.model.config.context_length
        self.default_max_tokens = max_tokens
        self.allow_file_urls = allow_file_urls
        self.created = int(time.time())

    # -- preparation (any thread; raises RequestError) ------------------------------------
    def prepare(self, body) -> Job:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        if body.get("n") not in (None, 1):
            raise RequestError("only n = 1 is supported", param="n")
        response_format = body.get("response_format")
        if response_format not in (None, {"type": "text"}):
            raise RequestError("response_format other than text is not supported", param="response_format")
        if _number(body, "frequency_penalty", -2, 2):
            raise RequestError("frequency_penalty is not supported; use presence_penalty",
                               param="frequency_penalty")
        chat = convert_chat(body.get("messages"), body.get("tools"), body.get("tool_choice"),
                            allow_file_urls=self.allow_file_urls)
        if chat.images and self.vision is None:
            raise RequestError("this server has no vision model: start rax serve with --mmproj to send images",
                               param="messages", code="no_vision_model")
        enable_thinking = thinking_switch(body)
        try:
            rendered = render_chat(self.loaded.chat_template, chat.messages, add_generation_prompt=True,
                                   enable_thinking=enable_thinking, tools=chat.tools,
                                   **template_extras(body))
        except ChatTemplateError as exc:
            raise RequestError(f"the chat template refused these messages: {exc}", param="messages") from None
        prompt_ids = self.loaded.tokenizer.encode(rendered)
        self.check_context(len(prompt_ids))
        gen = self.generator
        thinking = enable_thinking if enable_thinking is not None else \
            thinking_open_at_end(prompt_ids, gen.think_id, gen.end_think_id)
        job = Job(prompt_ids=prompt_ids, settings=self._settings(body, thinking, bool(chat.images)),
                  images=chat.images, rendered=rendered, stops=_stops(body.get("stop")), tools=chat.tools,
                  stream=_flag(body, "stream"), return_token_ids=_flag(body, "return_token_ids"),
                  prompt_tokens=len(prompt_ids))
        options = body.get("stream_options") or {}
        job.include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        job.logprobs = _flag(body, "logprobs")
        job.top_logprobs = _number(body, "top_logprobs", 0, 20, integer=True) or 0
        if job.top_logprobs and not job.logprobs:
            raise RequestError("top_logprobs needs logprobs: true", param="top_logprobs")
        # the engine reports a token's own logprob only alongside at least one alternative
        job.settings.top_logprobs = max(job.top_logprobs, 1) if job.logprobs else 0
        return job

    def check_context(self, n_prompt: int) -> None:
        if n_prompt >= self.context:
            raise RequestError(f"the prompt is {n_prompt} tokens; this server's context is {self.context} "
                               "tokens, and the reply needs room too", param="messages",
                               code="context_length_exceeded")

    def _settings(self, body: dict, thinking: bool, media: bool) -> GenerationSettings:
        seed = _number(body, "seed", integer=True)
        if seed is not None and seed < 0:
            if seed != -1:      # -1 is llama.cpp's "random"; other negatives are a mistake
                raise RequestError("seed must be a non-negative integer", param="seed")
            seed = None
        params = recommended_params(thinking, media).with_overrides(
            temperature=_number(body, "temperature", 0, 2),
            top_p=_number(body, "top_p", 0, 1),
            top_k=_number(body, "top_k", -1, None, integer=True),
            min_p=_number(body, "min_p", 0, 1),
            presence_penalty=_number(body, "presence_penalty", -2, 2),
            seed=seed)
        if params.top_k is not None and params.top_k < 0:     # vLLM's "-1 = no limit"
            params = params.with_overrides(top_k=0)
        if params.greedy and body.get("presence_penalty") is None:
            # plain argmax, as `rax run --greedy`: no penalty unless one is asked for
            params = params.with_overrides(presence_penalty=0.0)
        max_tokens = _number(body, "max_completion_tokens", 1, None, integer=True)
        if max_tokens is None:
            max_tokens = _number(body, "max_tokens", 1, None, integer=True)
        if max_tokens is None:
            max_tokens = self.default_max_tokens or self.context
        return GenerationSettings(params=params, max_tokens=max_tokens, max_context=self.context,
                                  think_budget=_number(body, "think_budget", 0, None, integer=True))

    # -- the work (one worker thread at a time) --------------------------------------------
    def run(self, job: Job, should_stop: Callable[[], bool]) -> Iterator[Delta]:
        """Deltas of the reply; the last one carries the finish reason. Raises RequestError
        when the prompt (with its images) does not fit the context."""
        state = self.loaded.model.new_state()
        ids, embeddings, positions = job.prompt_ids, None, None
        if job.images:
            ids, embeddings, positions = self._encode_images(job)
        shaper = ReplyShaper(job.stops, job.tools)
        steps = self.generator.generate(ids, state, job.settings, embeddings=embeddings,
                                        positions=positions, should_stop=should_stop)
        try:
            for step in steps:
                if step.finish_reason is not None:
                    last = shaper.step(step)
                    final = shaper.finish(step.finish_reason)
                    yield _merge(last, final)
                    return
                yield shaper.step(step)
                if shaper.stopped:
                    yield shaper.finish("stop")
                    return
        except ContextOverflow as exc:
            raise RequestError(str(exc), param="messages", code="context_length_exceeded") from None
        finally:
            steps.close()
            job.completion_tokens = shaper.n_tokens
            job.reasoning_tokens = shaper.n_thinking_tokens

    def _encode_images(self, job: Job):
        """The prompt with its pictures through the vision tower, each read by the same
        code as `rax run --image` (a data URL's bytes from a scratch file)."""
        from . import multimodal
        try:
            with tempfile.TemporaryDirectory(prefix="rax-serve-") as folder:
                visuals = []
                for i, source in enumerate(job.images):
                    path = source.file(Path(folder), i)
                    try:
                        visuals.append(multimodal.load_image(path, self.vision))
                    except UserError as exc:
                        raise RequestError(str(exc).replace(str(path), source.where), param=source.where,
                                           code="invalid_image") from None
            segment = multimodal.encode_prompt(self.loaded.tokenizer, self.loaded.model, self.vision,
                                               job.rendered, visuals, 0)
        except UserError as exc:
            raise RequestError(str(exc), param="messages") from None
        self.check_context(len(segment.ids))
        job.prompt_tokens, job.prompt_ids, job.vision_s = len(segment.ids), list(segment.ids), segment.vision_s
        return list(segment.ids), segment.embeddings, segment.positions


def _merge(a: Delta, b: Delta) -> Delta:
    return Delta(content=a.content + b.content, reasoning=a.reasoning + b.reasoning,
                 token_ids=a.token_ids + b.token_ids, logprobs=a.logprobs + b.logprobs,
                 tool_calls=a.tool_calls + b.tool_calls, finish_reason=b.finish_reason)


def _number(body: dict, name: str, low=None, high=None, integer: bool = False):
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise RequestError(f"'{name}' must be {'an integer' if integer else 'a number'}", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        raise RequestError(f"'{name}' must be {bounds}, not {value}", param=name)
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"'{name}' must be true or false", param=name)
    return bool(value)


def _stops(stop) -> list[str]:
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise RequestError("'stop' must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOP_STRINGS:
        raise RequestError(f"at most {MAX_STOP_STRINGS} stop strings", param="stop")
    return [s for s in stops if s]
