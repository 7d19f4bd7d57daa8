"""The `rax` command line: argument parsing and exit codes only; the work lives elsewhere."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Chat with Qwen3.5-family vision-language models from GGUF files, on the CPU.")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"rax: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def run(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Text GGUF (default: $RAX_MODEL, then ./models)."),
    mmproj: Optional[str] = typer.Option(None, help="Vision GGUF (mmproj)."),
    image: Optional[List[str]] = typer.Option(None, "--image", help="Image file (repeatable)."),
    video: Optional[str] = typer.Option(None, help="Video file or folder of frames."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Prompt text (default: standard input)."),
    system: Optional[str] = typer.Option(None, help="System message."),
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as-is, without the chat template."),
    no_think: bool = typer.Option(False, "--no-think", help="Ask the model to answer without thinking."),
    think_budget: Optional[int] = typer.Option(None, help="End thinking gracefully after N tokens."),
    show_think: bool = typer.Option(False, "--show-think", help="Print the thinking to standard error."),
    greedy: bool = typer.Option(False, "--greedy", help="Argmax decoding (temperature 0)."),
    temperature: Optional[float] = typer.Option(None, min=0.0),
    top_k: Optional[int] = typer.Option(None, min=0),
    top_p: Optional[float] = typer.Option(None, min=0.0, max=1.0),
    min_p: Optional[float] = typer.Option(None, min=0.0, max=1.0),
    presence_penalty: Optional[float] = typer.Option(None),
    seed: Optional[int] = typer.Option(None),
    max_tokens: int = typer.Option(512, min=1),
    max_context: Optional[int] = typer.Option(None, min=16, help="Context window in tokens (default: the model's)."),
    top_logprobs: int = typer.Option(0, min=0, max=20, help="Report the K most likely tokens at each step."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (see the README)."),
    threads: Optional[int] = typer.Option(None, min=1),
    device: str = typer.Option("cpu", help="cpu or gpu."),
) -> None:
    """One-shot generation for scripts and pipelines."""
    from . import oneshot
    from .bench import peak_rss_mb
    try:
        request = oneshot.Request(
            model=model, mmproj=mmproj, images=image or [], video=video, prompt=prompt, system=system,
            raw=raw, thinking=not no_think, think_budget=think_budget, show_think=show_think,
            greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
            presence_penalty=presence_penalty, seed=seed, max_tokens=max_tokens, max_context=max_context,
            top_logprobs=top_logprobs, json=json_out, threads=threads, device=device)
        result = oneshot.run(request, stdout=sys.stdout, stderr=sys.stderr)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("", err=True)
        raise typer.Exit(130)
    if json_out:
        result["stats"]["peak_rss_mb"] = round(peak_rss_mb(), 1)
        sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")


@app.command()
def bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Text GGUF."),
    threads: Optional[int] = typer.Option(None, min=1),
    prompt_tokens: int = typer.Option(128, min=1),
    gen_tokens: int = typer.Option(32, min=0),
    device: str = typer.Option("cpu", help="cpu or gpu."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Measure prefill and decode speed on random tokens."""
    from .bench import run_bench
    if device != "cpu":
        fail("--device gpu: this build of rax runs on the CPU only; use --device cpu")
    try:
        result = run_bench(model, threads, prompt_tokens, gen_tokens)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    if json_out:
        typer.echo(json.dumps(result))
    else:
        typer.echo(f"{result['model']}  threads {result['threads']}")
        typer.echo(f"  load      {result['load_s']:.2f} s")
        typer.echo(f"  prefill   {result['prefill_tok_s']:.1f} tok/s ({prompt_tokens} tokens)")
        typer.echo(f"  decode    {result['decode_tok_s']:.2f} tok/s ({gen_tokens} tokens)")
        typer.echo(f"  peak RSS  {result['peak_rss_mb']:.0f} MB")


@app.command()
def info(path: str = typer.Argument(..., help="A GGUF file."),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """Show what a GGUF holds: architecture, size, tensor types, layer pattern."""
    from .info import describe
    try:
        result = describe(path)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    if json_out:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        if key == "tensor_types":
            value = ", ".join(f"{k} {v:.1%}" for k, v in value.items())
        elif key == "layer_pattern":
            value = f"{value}  (D = gated DeltaNet, A = gated attention)"
        typer.echo(f"{key:>15}  {value}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
