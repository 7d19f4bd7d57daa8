"""`rax run`: one prompt in, one answer out — streamed text, or one JSON object."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TextIO

from .chat import ChatTemplateError, render_chat
from .errors import UserError
from .generate import Completion, ContextOverflow, GenerationSettings
from .loader import find_model, load_model, set_threads
from .sampling import SamplingParams, recommended_params


@dataclass
class Request:
    model: str | None = None
    mmproj: str | None = None
    images: list[str] = field(default_factory=list)
    video: str | None = None
    prompt: str | None = None
    system: str | None = None
    raw: bool = False
    thinking: bool = True
    think_budget: int | None = None
    show_think: bool = False
    greedy: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    max_tokens: int = 512
    max_context: int | None = None
    top_logprobs: int = 0
    json: bool = False
    threads: int | None = None
    device: str = "cpu"


def read_prompt(prompt: str | None, stdin: TextIO) -> str:
    """--prompt, standard input, or both (stdin then follows the prompt as a document)."""
    piped = None if stdin is None or stdin.isatty() else stdin.read()
    if prompt is None and not piped:
        raise UserError("no prompt: give --prompt TEXT or pipe the prompt on standard input")
    if prompt is None:
        return piped
    if piped:
        return f"{prompt}\n\n{piped}"
    return prompt


def sampling_for(req: Request, thinking: bool, media: bool) -> SamplingParams:
    params = recommended_params(thinking, media).with_overrides(
        temperature=req.temperature, top_k=req.top_k, top_p=req.top_p, min_p=req.min_p,
        presence_penalty=req.presence_penalty, seed=req.seed)
    if req.greedy:
        # plain argmax, as transformers' greedy search: no penalty unless one is asked for
        params = params.with_overrides(temperature=0.0, presence_penalty=req.presence_penalty or 0.0)
    return params


def check_request(req: Request) -> None:
    if req.device not in ("cpu", "gpu"):
        raise UserError(f"--device must be cpu or gpu, not {req.device!r}")
    if req.device == "gpu":
        raise UserError("--device gpu: this build of rax runs on the CPU only; use --device cpu")
    if req.images or req.video:
        raise UserError("images and videos need the vision tower, which this build of rax does not run yet")


def run(req: Request, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr, stdin: TextIO | None = None) -> dict:
    check_request(req)
    text = read_prompt(req.prompt, sys.stdin if stdin is None else stdin)
    path = find_model(req.model)
    set_threads(req.threads)
    loaded = load_model(path)
    tok = loaded.tokenizer

    if req.raw:
        prompt_ids = tok.encode(text)
    else:
        messages = ([{"role": "system", "content": req.system}] if req.system else [])
        messages.append({"role": "user", "content": text})
        try:
            rendered = render_chat(loaded.chat_template, messages, add_generation_prompt=True,
                                   enable_thinking=req.thinking)
        except ChatTemplateError as exc:
            raise UserError(f"{path}: chat template: {exc}") from None
        prompt_ids = tok.encode(rendered)
    if not prompt_ids:
        raise UserError("the prompt is empty")

    gen = loaded.generator
    from .generate import thinking_open_at_end
    thinking = thinking_open_at_end(prompt_ids, gen.think_id, gen.end_think_id)
    settings = GenerationSettings(
        params=sampling_for(req, thinking=req.thinking and (thinking or not req.raw), media=False),
        max_tokens=req.max_tokens, think_budget=req.think_budget,
        top_logprobs=req.top_logprobs, max_context=req.max_context)

    completion = Completion(prompt_token_ids=list(prompt_ids))
    state = loaded.model.new_state()
    answer_started = False
    try:
        for step in gen.generate(prompt_ids, state, settings):
            completion.add(step)
            if req.json or not step.text:
                continue
            if step.thinking:
                if req.show_think:
                    stderr.write(step.text)
                    stderr.flush()
            else:
                out = step.text
                if not answer_started:
                    out = out.lstrip("\n")
                    answer_started = bool(out)
                stdout.write(out)
                stdout.flush()
    except ContextOverflow as exc:
        raise UserError(str(exc)) from None
    if not req.json:
        stdout.write("\n")
        return {}

    result = {
        "model": str(path),
        "prompt_token_ids": completion.prompt_token_ids,
        "token_ids": completion.token_ids,
        "text": completion.text,
        "thinking": completion.thinking,
        "finish_reason": completion.finish_reason,
    }
    if req.top_logprobs:
        result["logprobs"] = [lp.as_dict() for lp in completion.logprobs]
    result["boxes"] = []
    s = completion.stats
    result["stats"] = {
        "prompt_tokens": s.get("prompt_tokens", len(prompt_ids)),
        "generated_tokens": s.get("generated_tokens", len(completion.token_ids)),
        "load_s": round(loaded.load_s, 3),
        "vision_s": 0.0,
        "prefill_tok_s": round(s.get("prefill_tok_s", 0.0), 2),
        "decode_tok_s": round(s.get("decode_tok_s", 0.0), 2),
    }
    return result
