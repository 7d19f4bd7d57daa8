"""A chat backend on any OpenAI-compatible server (vLLM, SGLang, llama-server, rax serve).

`RemoteBackend.generate` yields the same `Step` records as the local `Generator`, so the
REPL and `rax run` print, gather and time a remote answer exactly as a local one. Images
travel as data URLs. Thinking arrives apart as `reasoning_content` (or `reasoning`) from
servers that split it, or inline in the content as `<think>…</think>` from servers that
do not; `ThinkSplitter` separates the inline form.
"""
from __future__ import annotations

import base64
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlparse

from .errors import UserError
from .generate import Step, TokenLogprob
from .openai_reply import held_prefix_length

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class RemoteSettings:
    """What the user asked for; None leaves the server's own default in place."""
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    top_logprobs: int = 0
    think_budget: int | None = None
    thinking: bool | None = None        # False asks for no thinking (chat_template_kwargs)
    token_ids: bool = False             # ask for the ids too (vLLM's and rax's return_token_ids)
    tools: list[dict] | None = None     # function schemas offered to the model


def api_base(url: str) -> str:
    """`http://host:8080` and `http://host:8080/v1` both mean the server's /v1 API."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UserError(f"--server {url}: give an http(s) URL such as http://127.0.0.1:8080")
    path = parsed.path.rstrip("/")
    return parsed._replace(path=path if path else "/v1").geturl()


def image_data_url(image) -> str:
    """A path (or PIL image) → a data URL; PNG and JPEG files go as they are, others as PNG."""
    from PIL import Image
    if isinstance(image, Image.Image):
        picture, raw, where = image, None, "image"
    else:
        where = str(image)
        try:
            raw = Path(image).read_bytes()
        except OSError as exc:
            raise UserError(f"{where}: cannot read the image: {exc.strerror or exc}") from None
        picture = decode_image(raw, where)
    if raw is None or picture.format not in ("PNG", "JPEG"):
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="PNG")
        raw, kind = buffer.getvalue(), "png"
    else:
        kind = picture.format.lower()
    return f"data:image/{kind};base64,{base64.b64encode(raw).decode('ascii')}"


def decode_image(raw: bytes, where: str):
    from PIL import Image, UnidentifiedImageError
    try:
        picture = Image.open(io.BytesIO(raw))
        picture.load()
    except UnidentifiedImageError:
        raise UserError(f"{where}: cannot decode the image: not a picture format Pillow reads") from None
    except Exception as exc:  # truncated or corrupt data: Pillow raises many types
        raise UserError(f"{where}: cannot decode the image: {exc}") from None
    return picture


def openai_messages(messages: list[dict]) -> list[dict]:
    """Template-style messages (content parts {"type": "image", "image": path}) → OpenAI's."""
    converted = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image" or "image" in part:
                    parts.append({"type": "image_url", "image_url": {"url": image_data_url(part["image"])}})
                elif part.get("type") == "video" or "video" in part:
                    raise UserError("videos cannot be sent to a server (OpenAI's API has no video part)")
                else:
                    parts.append({"type": "text", "text": part.get("text", "")})
            content = parts
        converted.append({**message, "content": content})
    return converted


def _field(record, name: str):
    """A field of a response record, whether the client library declares it or keeps it as an extra."""
    value = getattr(record, name, None)
    if value is None:
        value = (getattr(record, "model_extra", None) or {}).get(name)
    return value


def _gather_tool_calls(calls: dict[int, dict], delta) -> None:
    """Streamed tool calls come in pieces: the name once, the JSON arguments in fragments."""
    for piece in getattr(delta, "tool_calls", None) or []:
        call = calls.setdefault(piece.index or 0, {"name": "", "arguments": ""})
        if piece.function is not None:
            call["name"] += piece.function.name or ""
            call["arguments"] += piece.function.arguments or ""


def tool_calls_text(calls) -> str:
    """Tool calls in Qwen's own format (what the chat template shows the model)."""
    blocks = []
    for call in calls:
        try:
            arguments = json.loads(call["arguments"] or "{}")
        except json.JSONDecodeError:
            arguments = {"arguments": call["arguments"]}
        lines = [f"<tool_call>\n<function={call['name']}>"]
        for name, value in (arguments.items() if isinstance(arguments, dict) else []):
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines.append(f"<parameter={name}>\n{shown}\n</parameter>")
        lines.append("</function>\n</tool_call>")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


class ThinkSplitter:
    """Separates thinking written inline in the content. When the prompt itself opened the
    <think> block (Qwen's thinking template) only the closing tag appears, so text is held
    until a tag decides; a reply that ends with no tag was all answer."""

    def __init__(self, expect_thinking: bool):
        self.mode = "undecided" if expect_thinking else "opening"
        self.held = ""

    def feed(self, text: str) -> list[tuple[str, bool]]:
        self.held += text
        out: list[tuple[str, bool]] = []
        while self.held:
            if self.mode == "answer":
                out.append((self.held, False))
                self.held = ""
            elif self.mode in ("opening", "undecided"):
                start = self.held.lstrip()
                if start.startswith(THINK_OPEN):
                    self.mode, self.held = "thinking", start[len(THINK_OPEN):]
                elif self.mode == "opening" and not THINK_OPEN.startswith(start):
                    self.mode = "answer"
                elif self.mode == "undecided" and THINK_CLOSE in self.held:
                    self.mode = "thinking"
                else:
                    break
            else:   # thinking
                end = self.held.find(THINK_CLOSE)
                if end >= 0:
                    out.append((self.held[:end], True))
                    self.mode, self.held = "answer", self.held[end + len(THINK_CLOSE):]
                    continue
                keep = held_prefix_length(self.held, [THINK_CLOSE])
                out.append((self.held[:len(self.held) - keep], True))
                self.held = self.held[len(self.held) - keep:]
                break
        return [(t, thinking) for t, thinking in out if t]

    def flush(self) -> list[tuple[str, bool]]:
        held, self.held = self.held, ""
        return [(held, self.mode == "thinking")] if held else []


def _transport_errors() -> tuple:
    """The HTTP library's own errors, for openai clients built on httpx (none otherwise)."""
    try:
        import httpx
    except ImportError:
        return ()
    return (httpx.HTTPError,)


class RemoteBackend:
    def __init__(self, url: str, api_key: str | None = None, model: str | None = None,
                 timeout: float = 600.0, max_retries: int = 2):
        try:
            import openai
        except ImportError:
            raise UserError("--server needs the openai client library: pip install openai") from None
        self.openai = openai
        self.url = api_base(url)
        key = api_key or os.environ.get("RAX_API_KEY") or os.environ.get("OPENAI_API_KEY") or "none"
        self.client = openai.OpenAI(base_url=self.url, api_key=key, timeout=timeout, max_retries=max_retries)
        self._model = model
        self.listed: list[str] = []       # the model ids the server listed, once asked
        self.prompt_token_ids: list[int] | None = None     # from the last reply, when the server told
        self.ended_early = False    # the last stream closed with no finish reason (a server shutting down)

    @property
    def model(self) -> str:
        if self._model is None:
            self.model_card()
        return self._model

    def model_card(self) -> dict:
        """The server's /v1/models entry for the model (its first one unless --model named
        another): the id, and whatever else the server tells — `context_length` (rax serve),
        `max_model_len` (vLLM, SGLang), `vision`. {"id": name} when the server does not list
        the named model (llama-server answers to any name)."""
        models = self._call(lambda: self.client.models.list())
        cards = [m.model_dump() if hasattr(m, "model_dump") else dict(m) for m in models.data]
        if self._model is None:
            if not cards:
                raise UserError(f"{self.url}: the server lists no models; name one with --model")
            self._model = cards[0]["id"]
        self.listed = [c.get("id") for c in cards]
        return next((c for c in cards if c.get("id") == self._model), {"id": self._model})

    def generate(self, messages: list[dict], settings: RemoteSettings,
                 should_stop: Callable[[], bool] = lambda: False, prepared: bool = False) -> Iterator[Step]:
        """Stream one reply as Steps; the last carries the finish reason and the figures.
        `messages` are template-style (images by path) unless `prepared` (already OpenAI's)."""
        request = self._request(messages if prepared else openai_messages(messages), settings)
        try:
            stream = self._call(lambda: self.client.chat.completions.create(**request))
        except UserError as exc:
            if not settings.token_ids or "return_token_ids" not in str(exc):
                raise
            request["extra_body"].pop("return_token_ids")   # a server that refuses the extension
            stream = self._call(lambda: self.client.chat.completions.create(**request))
        yield from self._steps(stream, settings, should_stop)

    def _request(self, messages: list[dict], s: RemoteSettings) -> dict:
        extra = {k: v for k, v in (("top_k", s.top_k), ("min_p", s.min_p), ("think_budget", s.think_budget))
                 if v is not None}
        if s.thinking is False:
            extra["chat_template_kwargs"] = {"enable_thinking": False}
        if s.token_ids:
            extra["return_token_ids"] = True
        request = {"model": self.model, "messages": messages, "stream": True,
                   "stream_options": {"include_usage": True}, "extra_body": extra}
        if s.tools:
            request["tools"] = s.tools
        for name in ("temperature", "top_p", "presence_penalty", "seed", "max_tokens"):
            if getattr(s, name) is not None:
                request[name] = getattr(s, name)
        if s.top_logprobs:
            request["logprobs"], request["top_logprobs"] = True, s.top_logprobs
        return request

    def _steps(self, stream, settings: RemoteSettings, should_stop) -> Iterator[Step]:
        splitter = ThinkSplitter(expect_thinking=settings.thinking is not False)
        finish, usage, answered = "length", None, False
        # the channel of a token that came without text (held by the server) is the last one
        # seen; before any text, thinking when the template may have opened it
        thinking = settings.thinking is not False
        t_start = time.perf_counter()
        t_first = t_last = None
        n_tokens = 0
        calls: dict[int, dict] = {}
        self.prompt_token_ids = None
        finished = False
        try:
            for chunk in self._iterate(stream):
                if should_stop():
                    finish = "interrupted"
                    break
                if _field(chunk, "prompt_token_ids") is not None:
                    self.prompt_token_ids = [int(i) for i in _field(chunk, "prompt_token_ids")]
                usage = chunk.usage or usage
                for choice in chunk.choices[:1]:
                    _gather_tool_calls(calls, choice.delta)
                    pieces = self._pieces(choice.delta, splitter)
                    records = self._token_records(choice)
                    answered = answered or any(text and not thinking for text, thinking in pieces)
                    for i in range(max(len(pieces), len(records))):
                        text, thinking = pieces[i] if i < len(pieces) else ("", thinking)
                        token_id, logprob = records[i] if i < len(records) else (None, None)
                        yield Step(token_id, text, thinking, logprob)
                    if records or pieces:
                        t_last = time.perf_counter()
                        t_first = t_first or t_last
                        n_tokens += max(len(records), 1)
                    if choice.finish_reason:
                        finished = True
                        finish = "length" if choice.finish_reason == "length" else "stop"
        finally:
            stream.close()
        self.ended_early = not finished and finish != "interrupted"
        tail = splitter.flush()
        if calls:   # shown as the model writes them, so that front ends read them like local ones
            answered = answered or any(text and not thinking for text, thinking in tail)
            tail.append((("\n\n" if answered else "") + tool_calls_text(calls.values()), False))
        for text, thinking in tail[:-1]:
            yield Step(None, text, thinking)
        text, thinking = tail[-1] if tail else ("", thinking)
        # a stream stopped early has no usage; the prompt ids the server sent first still count it
        known_prompt = len(self.prompt_token_ids or [])
        yield Step(None, text, thinking, None, finish,
                   self._stats(usage, n_tokens, t_start, t_first, t_last, known_prompt))

    def _pieces(self, delta, splitter: ThinkSplitter) -> list[tuple[str, bool]]:
        reasoning = _field(delta, "reasoning_content") or _field(delta, "reasoning")
        pieces = []
        if reasoning:
            if splitter.mode in ("opening", "undecided"):
                splitter.mode = "answer"    # this server splits the thinking out itself
            pieces.append((reasoning, True))
        if delta.content:
            pieces += splitter.feed(delta.content)
        return pieces

    @staticmethod
    def _token_records(choice) -> list[tuple[int | None, TokenLogprob | None]]:
        ids = _field(choice, "token_ids") or []
        entries = (choice.logprobs.content or []) if choice.logprobs else []
        records = []
        for i in range(max(len(ids), len(entries))):
            token_id = int(ids[i]) if i < len(ids) else None
            logprob = None
            if i < len(entries):
                e = entries[i]
                top = [{"id": -1, "token": t.token, "logprob": t.logprob} for t in (e.top_logprobs or [])]
                logprob = TokenLogprob(token_id if token_id is not None else -1, e.token, e.logprob, top)
            records.append((token_id, logprob))
        return records

    @staticmethod
    def _stats(usage, n_tokens: int, t_start: float, t_first, t_last, known_prompt: int = 0) -> dict:
        prompt_tokens = usage.prompt_tokens if usage else known_prompt
        generated = usage.completion_tokens if usage else n_tokens
        wait = (t_first - t_start) if t_first else 0.0
        decode = (t_last - t_first) if t_first and t_last else 0.0
        return {"prompt_tokens": prompt_tokens, "generated_tokens": generated, "prefill_s": wait,
                "prefill_tok_s": prompt_tokens / wait if wait > 0 else 0.0,
                "decode_tok_s": (generated - 1) / decode if generated > 1 and decode > 0 else 0.0}

    def _iterate(self, stream):
        try:
            yield from stream
        except self.openai.APIConnectionError as exc:
            raise UserError(self._broken(exc.__cause__ or exc)) from None
        except self.openai.APIError as exc:
            raise UserError(self._describe(exc)) from None
        except _transport_errors() as exc:   # client versions that do not wrap errors met mid-stream
            raise UserError(self._broken(exc)) from None

    def _broken(self, cause) -> str:
        return f"{self.url}: the connection broke during the answer ({cause or type(cause).__name__})"

    def _call(self, make):
        try:
            return make()
        except self.openai.APIError as exc:
            raise UserError(self._describe(exc)) from None

    def _describe(self, exc) -> str:
        openai = self.openai
        if isinstance(exc, openai.APIConnectionError):
            return f"cannot reach {self.url}: {exc.__cause__ or exc}"
        if isinstance(exc, openai.AuthenticationError):
            return f"{self.url}: the server refused the API key (give --api-key or set $RAX_API_KEY)"
        status = getattr(exc, "status_code", None)
        body = getattr(exc, "body", None)
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = body["error"].get("message")
        return f"{self.url}: " + (f"{status}: " if status else "") + (message or str(exc))
