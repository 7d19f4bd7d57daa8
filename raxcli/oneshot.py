"""`rax run`: one prompt in, one answer out — streamed text, or one JSON object."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .chat import ChatTemplateError, render_chat
from .errors import UserError
from .generate import Completion, ContextOverflow, GenerationSettings
from .loader import find_model, load_model, set_threads
from .sampling import SamplingParams, recommended_params
from .tool_schemas import load_tools
from .warmup import warm_up


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
    max_tokens: int | None = None      # None: the default fitted to this machine
    max_context: int | None = None
    top_logprobs: int = 0
    json: bool = False
    threads: int | None = None
    device: str = "cpu"
    tools: str | None = None           # --tools FILE: function schemas for the template
    ram_gb: float | None = None        # --ram-gb: RAM to fit the limits to, instead of detecting it
    boxes_out: str | None = None   # PNG of the first image with the answer's boxes drawn
    server: str | None = None      # answer through this OpenAI-compatible server instead
    api_key: str | None = None


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
    if req.boxes_out is not None:
        if not req.images:
            raise UserError("--boxes-out draws on the first --image; give an --image")
        from .grounding import check_boxes_out
        check_boxes_out(req.boxes_out)


def run(req: Request, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr, stdin: TextIO | None = None) -> dict:
    if req.server:
        from .remote_run import run_remote
        return run_remote(req, stdout, stderr, stdin)
    check_request(req)
    text = read_prompt(req.prompt, sys.stdin if stdin is None else stdin)
    tools = load_tools(req.tools) if req.tools else None
    path = find_model(req.model)
    mmproj = mmproj_for(req, path)
    set_threads(req.threads)
    loaded = load_model(path, req.device)
    warm_up(loaded.model, stderr)        # compile (first run) or load the kernels, with a notice
    tok = loaded.tokenizer
    segment = None

    if req.raw:
        rendered = text
    else:
        messages = ([{"role": "system", "content": req.system}] if req.system else [])
        messages.append({"role": "user", "content": user_content(req, text)})
        try:
            rendered = render_chat(loaded.chat_template, messages, add_generation_prompt=True,
                                   enable_thinking=req.thinking, tools=tools)
        except ChatTemplateError as exc:
            raise UserError(f"{path}: chat template: {exc}") from None
    if mmproj is not None:
        from . import multimodal
        vision = multimodal.load_vision(mmproj, loaded.model.config, req.device)
        media = [multimodal.load_image(p, vision) for p in req.images]
        media += [multimodal.load_video(req.video, vision)] if req.video else []
        with working(req, stdout, stderr, f"encoding {len(media)} picture(s) and video(s)"):
            segment = multimodal.encode_prompt(tok, loaded.model, vision, rendered, media, 0)
        prompt_ids = segment.ids
    else:
        prompt_ids = tok.encode(rendered)
    if not prompt_ids:
        raise UserError("the prompt is empty")

    gen = loaded.generator
    from .generate import thinking_open_at_end
    thinking = thinking_open_at_end(prompt_ids, gen.think_id, gen.end_think_id)
    settings = GenerationSettings(
        params=sampling_for(req, thinking=req.thinking and (thinking or not req.raw), media=segment is not None),
        top_logprobs=req.top_logprobs, **fitted_limits(req, loaded.model.config.context_length, stderr))

    completion = Completion(prompt_token_ids=list(prompt_ids))
    state = loaded.model.new_state()
    try:
        steps = gen.generate(prompt_ids, state, settings,
                             embeddings=segment.embeddings if segment else None,
                             positions=segment.positions if segment else None)
        if not req.json and interactive(stdout, stderr):
            from .render import spinner_until_first
            steps = spinner_until_first(steps, f"reading the prompt ({len(prompt_ids)} tokens)")
        print_steps(steps, req, completion, stdout, stderr)
    except ContextOverflow as exc:
        raise UserError(str(exc)) from None
    boxes = boxes_named(req, completion.text, stderr)
    if not req.json:
        stdout.write("\n")
        return {}

    return json_result(str(path), completion, req, boxes, tools, load_s=loaded.load_s,
                       vision_s=segment.vision_s if segment else 0.0)


def json_result(model: str, completion: Completion, req: Request, boxes: list, tools,
                load_s: float = 0.0, vision_s: float = 0.0) -> dict:
    """The one `--json` object of ../shared/CONTRACT.md (peak_rss_mb is added by the CLI)."""
    result = {
        "model": model,
        "prompt_token_ids": completion.prompt_token_ids,
        "token_ids": completion.token_ids,
        "text": completion.text,
        "thinking": completion.thinking,
        "finish_reason": completion.finish_reason,
    }
    if req.top_logprobs:
        result["logprobs"] = [lp.as_dict() for lp in completion.logprobs]
    result["boxes"] = boxes
    if tools is not None:
        from .tools import parse_tool_calls
        result["tool_calls"] = [{"name": c.name, "arguments": c.arguments}
                                for c in parse_tool_calls(completion.text, tools)[1]]
    s = completion.stats
    result["stats"] = {
        "prompt_tokens": s.get("prompt_tokens", len(completion.prompt_token_ids)),
        "generated_tokens": s.get("generated_tokens", len(completion.token_ids)),
        "load_s": round(load_s, 3),
        "vision_s": round(vision_s, 3),
        "prefill_tok_s": round(s.get("prefill_tok_s", 0.0), 2),
        "decode_tok_s": round(s.get("decode_tok_s", 0.0), 2),
    }
    return result


def mmproj_for(req: Request, model_path: Path) -> Path | None:
    """The vision GGUF when pictures or videos are given (--mmproj, or the one beside the model)."""
    if not (req.images or req.video):
        return None
    from .multimodal import find_mmproj
    mmproj = find_mmproj(model_path, req.mmproj)
    if mmproj is None:
        raise UserError("images and videos need the model's vision part: pass --mmproj FILE "
                        "(the mmproj-*.gguf published with the model)")
    return mmproj


def user_content(req: Request, text: str):
    """The user turn: pictures, then the video, then the words (as Qwen's examples order them)."""
    if not (req.images or req.video):
        return text
    parts = [{"type": "image", "image": str(p)} for p in req.images]
    if req.video:
        parts.append({"type": "video", "video": str(req.video)})
    return parts + [{"type": "text", "text": text}]


def print_steps(steps, req: Request, completion: Completion, stdout: TextIO, stderr: TextIO) -> None:
    """Gather the steps; unless --json, stream the answer to stdout (and the thinking to
    stderr with --show-think) as it comes."""
    answer_started = False
    for step in steps:
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


def boxes_named(req: Request, answer: str, stderr: TextIO) -> list[dict]:
    """Boxes the answer names, in pixels of the first image (with several images still the
    first: a reply does not say which image a box is on); drawn on it when --boxes-out asks.
    The thinking is not searched."""
    if not req.images or not (req.json or req.boxes_out):
        return []
    from .grounding import boxes_for_answer, save_annotated
    boxes = boxes_for_answer(answer, req.images[0])
    if req.boxes_out is not None:
        save_annotated(req.images[0], boxes, req.boxes_out)
        if not req.json:
            stderr.write(f"rax: {len(boxes)} box{'es' if len(boxes) != 1 else ''} drawn on {req.boxes_out}\n")
    return boxes


def fitted_limits(req: Request, model_context: int, stderr: TextIO) -> dict:
    """max_tokens, think_budget and max_context for this machine: the defaults of its RAM
    tier, explicit values above the tier's caps clamped with a warning on stderr."""
    from . import system
    limits = system.limits_for(system.detect(req.ram_gb))
    context_cap = min(limits.context, model_context)
    fitted = {
        "max_tokens": system.fit(req.max_tokens, limits.max_tokens, limits.max_tokens_cap, "answers", "--max-tokens"),
        "think_budget": system.fit(req.think_budget, limits.think_budget, limits.think_cap, "thinking",
                                   "--think-budget"),
        "max_context": system.fit(req.max_context, context_cap, context_cap, "the context", "--max-context"),
    }
    for value in fitted.values():
        if value.warning:
            stderr.write(f"rax: warning: {value.warning}\n")
    limits = {name: value.value for name, value in fitted.items()}
    if req.raw and req.think_budget is None:
        # --raw hands the model exactly the given tokens: no thinking cut it did not ask for
        limits["think_budget"] = None
    return limits


def interactive(stdout: TextIO, stderr: TextIO) -> bool:
    """Spinners only for a person watching: both streams on a terminal, and no NO_COLOR."""
    import os
    return stdout.isatty() and stderr.isatty() and not os.environ.get("NO_COLOR")


def working(req: Request, stdout: TextIO, stderr: TextIO, what: str):
    """A spinner on stderr for a person watching; nothing in pipelines or with --json."""
    from contextlib import nullcontext
    if req.json or not interactive(stdout, stderr):
        return nullcontext()
    from rich.console import Console
    from .render import busy
    return busy(Console(stderr=True), what)
