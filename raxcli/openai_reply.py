"""Engine steps → what an OpenAI client reads: content, `reasoning_content`, tool calls.

`ReplyShaper` turns the engine's `Step` stream into `Delta`s, applying what the protocol
asks on top of plain generation: stop strings (the text never shows the stop string, so
text that could be the start of one is held back until it is known not to be), tool calls
(answer text from `<tool_call>` on is held and parsed at the end), and the template's
framing newlines around the thinking. The same deltas feed streaming chunks and whole
responses, so both carry the same text.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from .generate import Step, TokenLogprob
from .tools import TOOL_CALL_OPEN, ToolCall, parse_tool_calls


@dataclass
class Delta:
    content: str = ""
    reasoning: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None

    def is_empty(self) -> bool:
        return not (self.content or self.reasoning or self.token_ids or self.logprobs
                    or self.tool_calls or self.finish_reason)


def held_prefix_length(text: str, markers: list[str]) -> int:
    """Length of the longest end of `text` that could begin one of `markers`."""
    longest = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), longest, -1):
            if text.endswith(marker[:n]):
                longest = n
                break
    return longest


class StopMatcher:
    """Cuts a text stream at the first stop string; what is let through never contains one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """(text safe to show, whether a stop string was reached)."""
        buffer = self.held + text
        if not self.stops:
            return buffer, False
        found = [buffer.find(s) for s in self.stops if s in buffer]
        if found:
            self.held = ""
            return buffer[:min(found)], True
        keep = held_prefix_length(buffer, self.stops)
        self.held = buffer[len(buffer) - keep:]
        return buffer[:len(buffer) - keep], False

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


class _Channel:
    """One of the two texts (thinking, answer): leading newlines dropped, and for the
    thinking the trailing ones too (the template frames it as "<think>\\n…\\n</think>\\n\\n")."""

    def __init__(self, stops: list[str], trim_end: bool):
        self.matcher = StopMatcher(stops)
        self.trim_end = trim_end
        self.started = False
        self.newlines = ""

    def feed(self, text: str) -> tuple[str, bool]:
        text, stopped = self.matcher.feed(text)
        return self._trim(text), stopped

    def end(self) -> str:
        text = self._trim(self.matcher.flush())
        self.newlines = ""
        return text

    def _trim(self, text: str) -> str:
        if not self.started:
            text = text.lstrip("\n")
            self.started = bool(text)
        if self.trim_end and text:
            text = self.newlines + text
            body = text.rstrip("\n")
            self.newlines = text[len(body):]
            text = body
        return text


class ReplyShaper:
    def __init__(self, stops: list[str] | None = None, tools: list[dict] | None = None):
        stops = stops or []
        self.thinking = _Channel(stops, trim_end=True)
        self.answer = _Channel(stops, trim_end=False)
        self.tools = tools
        self.tool_marker_held = ""      # answer text that may be the start of "<tool_call>"
        self.tool_text: str | None = None
        self.was_thinking = False
        self.stopped = False            # a stop string was reached: generation should end
        self.n_tokens = 0
        self.n_thinking_tokens = 0

    def step(self, step: Step) -> Delta:
        delta = Delta()
        if step.token_id is not None:
            delta.token_ids.append(step.token_id)
            self.n_tokens += 1
            self.n_thinking_tokens += bool(step.thinking)
        if step.logprob is not None:
            delta.logprobs.append(step.logprob)
        if self.stopped:
            return delta
        if self.was_thinking and not step.thinking:
            delta.reasoning += self.thinking.end()
        self.was_thinking = step.thinking
        if step.thinking:
            text, self.stopped = self.thinking.feed(step.text)
            delta.reasoning += text
        else:
            text, self.stopped = self.answer.feed(step.text)
            delta.content += self._answer_text(text)
        return delta

    def finish(self, reason: str) -> Delta:
        """The last delta: held text let out, tool calls parsed, the finish reason."""
        delta = Delta()
        if not self.stopped:
            delta.reasoning += self.thinking.end()
            delta.content += self._answer_text(self.answer.end())
        delta.content += self.tool_marker_held
        self.tool_marker_held = ""
        if self.tool_text is not None:
            rest, calls = parse_tool_calls(self.tool_text, self.tools)
            delta.tool_calls = calls
            delta.content += rest      # all of it when no call could be read
            self.tool_text = None
        if delta.tool_calls:
            delta.finish_reason = "tool_calls"
        else:
            delta.finish_reason = "stop" if self.stopped else reason
        return delta

    def _answer_text(self, text: str) -> str:
        """Answer text to show now; from `<tool_call>` on (when tools were offered) it is held."""
        if not self.tools:
            return text
        if self.tool_text is not None:
            self.tool_text += text
            return ""
        text = self.tool_marker_held + text
        start = text.find(TOOL_CALL_OPEN)
        if start >= 0:
            self.tool_marker_held = ""
            self.tool_text = text[start:]
            return text[:start].rstrip("\n")
        keep = held_prefix_length(text, [TOOL_CALL_OPEN])
        keep += len(text[:len(text) - keep]) - len(text[:len(text) - keep].rstrip("\n"))  # the newlines before a call
        self.tool_marker_held = text[len(text) - keep:]
        return text[:len(text) - keep]


# -- response bodies (the job is a serve_engine.Job: prompt ids, flags, token counts) ------------

def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def logprob_entries(delta: Delta, top_k: int, token_bytes) -> list[dict]:
    return [{"token": lp.token, "logprob": lp.logprob, "bytes": list(token_bytes(lp.id)),
             "top_logprobs": [{"token": t["token"], "logprob": t["logprob"], "bytes": list(token_bytes(t["id"]))}
                              for t in lp.top[:top_k]]}
            for lp in delta.logprobs]


def tool_calls_body(delta: Delta, streamed: bool) -> list[dict]:
    calls = []
    for i, call in enumerate(delta.tool_calls):
        body = {"id": new_id("call_"), "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()}}
        calls.append({"index": i, **body} if streamed else body)
    return calls


def usage_body(job) -> dict:
    return {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens,
            "total_tokens": job.prompt_tokens + job.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": job.reasoning_tokens}}


def chunk_choice(job, delta: Delta, token_bytes) -> dict | None:
    """One streamed choice for `delta`, or None when it has nothing this client asked for."""
    body = {}
    if delta.content:
        body["content"] = delta.content
    if delta.reasoning:
        body["reasoning_content"] = delta.reasoning
    if delta.tool_calls:
        body["tool_calls"] = tool_calls_body(delta, streamed=True)
    wanted = body or delta.finish_reason or (job.logprobs and delta.logprobs) or \
        (job.return_token_ids and delta.token_ids)
    if not wanted or delta.finish_reason == "interrupted":
        return None
    choice = {"index": 0, "delta": body,
              "logprobs": {"content": logprob_entries(delta, job.top_logprobs, token_bytes)} if job.logprobs else None,
              "finish_reason": delta.finish_reason}
    if job.return_token_ids:
        choice["token_ids"] = delta.token_ids
    return choice


def completion_body(job, deltas: list[Delta], model: str, token_bytes) -> dict:
    """A whole (non-streamed) chat.completion from all of a reply's deltas."""
    whole = Delta()
    for d in deltas:
        whole.content += d.content
        whole.reasoning += d.reasoning
        whole.token_ids += d.token_ids
        whole.logprobs += d.logprobs
        whole.tool_calls += d.tool_calls
        whole.finish_reason = d.finish_reason or whole.finish_reason
    message = {"role": "assistant", "content": whole.content if whole.content or not whole.tool_calls else None}
    if whole.reasoning:
        message["reasoning_content"] = whole.reasoning
    if whole.tool_calls:
        message["tool_calls"] = tool_calls_body(whole, streamed=False)
    choice = {"index": 0, "message": message,
              "logprobs": {"content": logprob_entries(whole, job.top_logprobs, token_bytes)} if job.logprobs else None,
              "finish_reason": whole.finish_reason}
    body = {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice], "usage": usage_body(job)}
    if job.return_token_ids:
        choice["token_ids"] = whole.token_ids
        body["prompt_token_ids"] = job.prompt_ids
    return body
