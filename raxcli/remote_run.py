"""`rax run --server URL`: the same prompt, output and JSON as `rax run`, answered by an
OpenAI-compatible server instead of the local engine."""
from __future__ import annotations

import sys
from typing import TextIO

from .errors import UserError
from .generate import Completion
from .oneshot import Request, boxes_named, interactive, json_result, print_steps, read_prompt
from .remote import RemoteBackend, RemoteSettings
from .tool_schemas import load_tools


def remote_settings(req: Request) -> RemoteSettings:
    """Only what the user set travels; the server's defaults (for rax serve: the same model-card
    table `rax run` uses) fill the rest. --greedy is temperature 0."""
    return RemoteSettings(
        temperature=0.0 if req.greedy else req.temperature, top_p=req.top_p, top_k=req.top_k,
        min_p=req.min_p, presence_penalty=req.presence_penalty, seed=req.seed, max_tokens=req.max_tokens,
        top_logprobs=req.top_logprobs, think_budget=req.think_budget,
        thinking=None if req.thinking else False, token_ids=req.json)


def user_content(text: str, images: list[str]):
    if not images:
        return text
    return [{"type": "image", "image": path} for path in images] + [{"type": "text", "text": text}]


def run_remote(req: Request, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr,
               stdin: TextIO | None = None) -> dict:
    if req.raw:
        raise UserError("--raw needs the local engine: a chat server applies its own chat template")
    if req.video:
        raise UserError("--video cannot be sent to a server: OpenAI's chat API has no video part")
    if req.boxes_out is not None:
        if not req.images:
            raise UserError("--boxes-out draws on the first --image; give an --image")
        from .grounding import check_boxes_out
        check_boxes_out(req.boxes_out)
    text = read_prompt(req.prompt, sys.stdin if stdin is None else stdin)
    tools = load_tools(req.tools) if req.tools else None
    backend = RemoteBackend(req.server, api_key=req.api_key, model=req.model)
    messages = ([{"role": "system", "content": req.system}] if req.system else [])
    messages.append({"role": "user", "content": user_content(text, req.images)})

    settings = remote_settings(req)
    settings.tools = tools
    completion = Completion(prompt_token_ids=[])
    steps = backend.generate(messages, settings)
    if not req.json and interactive(stdout, stderr):
        from .render import spinner_until_first
        steps = spinner_until_first(steps, f"waiting for {backend.url}")
    print_steps(steps, req, completion, stdout, stderr)
    completion.prompt_token_ids = backend.prompt_token_ids or []
    boxes = boxes_named(req, completion.text, stderr)
    if not req.json:
        stdout.write("\n")
        return {}
    return json_result(backend.model, completion, req, boxes, tools)
