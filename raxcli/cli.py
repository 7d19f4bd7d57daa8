"""The `rax` command line: argument parsing and exit codes only; the work lives elsewhere."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Chat with Qwen3.5-family vision-language models from GGUF files, on the CPU.")


# Options several commands share word for word (typer reads each definition per command)
MODEL_OPTION = typer.Option(None, "--model", "-m", help="Text GGUF (default: $RAX_MODEL, then ./models).")
SYSTEM_OPTION = typer.Option(None, help="System message.")
GREEDY_OPTION = typer.Option(False, "--greedy", help="Argmax decoding (temperature 0).")
TEMPERATURE_OPTION = typer.Option(None, min=0.0)
TOP_K_OPTION = typer.Option(None, min=0)
TOP_P_OPTION = typer.Option(None, min=0.0, max=1.0)
MIN_P_OPTION = typer.Option(None, min=0.0, max=1.0)
PRESENCE_PENALTY_OPTION = typer.Option(None)
SEED_OPTION = typer.Option(None)
MAX_TOKENS_OPTION = typer.Option(None, min=1, help="Answer limit, thinking included (default: fitted to RAM).")
MAX_CONTEXT_OPTION = typer.Option(None, min=16, help="Context window in tokens (default: fitted to RAM).")
THREADS_OPTION = typer.Option(None, min=1)
DEVICE_OPTION = typer.Option("cpu", help="cpu, or gpu: the CuPy engine on an NVIDIA GPU (extra 'gpu').")
RAM_GB_OPTION = typer.Option(None, "--ram-gb", min=0.1, help="Fit the limits to this much RAM.")
API_KEY_OPTION = typer.Option(None, envvar="RAX_API_KEY", help="API key for --server.")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"rax: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def run(
    model: Optional[str] = MODEL_OPTION,
    mmproj: Optional[str] = typer.Option(None, help="Vision GGUF (mmproj)."),
    image: Optional[List[str]] = typer.Option(None, "--image", help="Image file (repeatable)."),
    video: Optional[str] = typer.Option(None, help="Video file or folder of frames."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="Prompt text (default: standard input)."),
    system: Optional[str] = SYSTEM_OPTION,
    raw: bool = typer.Option(False, "--raw", help="Send the prompt as-is, without the chat template."),
    no_think: bool = typer.Option(False, "--no-think", help="Ask the model to answer without thinking."),
    think_budget: Optional[int] = typer.Option(None, help="End thinking gracefully after N tokens."),
    show_think: bool = typer.Option(False, "--show-think", help="Print the thinking to standard error."),
    greedy: bool = GREEDY_OPTION,
    temperature: Optional[float] = TEMPERATURE_OPTION,
    top_k: Optional[int] = TOP_K_OPTION,
    top_p: Optional[float] = TOP_P_OPTION,
    min_p: Optional[float] = MIN_P_OPTION,
    presence_penalty: Optional[float] = PRESENCE_PENALTY_OPTION,
    seed: Optional[int] = SEED_OPTION,
    max_tokens: Optional[int] = MAX_TOKENS_OPTION,
    max_context: Optional[int] = MAX_CONTEXT_OPTION,
    tools: Optional[str] = typer.Option(None, "--tools", metavar="FILE.json",
                                        help="Function schemas for the model; its calls come back in --json."),
    ram_gb: Optional[float] = RAM_GB_OPTION,
    top_logprobs: int = typer.Option(0, min=0, max=20, help="Report the K most likely tokens at each step."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (see the README)."),
    threads: Optional[int] = THREADS_OPTION,
    device: str = DEVICE_OPTION,
    boxes_out: Optional[str] = typer.Option(None, "--boxes-out", metavar="FILE.png",
                                            help="Write the first image with the answer's boxes drawn."),
    server: Optional[str] = typer.Option(None, "--server", metavar="URL",
                                         help="Answer through an OpenAI-compatible server (rax serve, vLLM, "
                                              "llama-server); --model then names the server's model."),
    api_key: Optional[str] = API_KEY_OPTION,
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
            top_logprobs=top_logprobs, json=json_out, threads=threads, device=device, tools=tools, ram_gb=ram_gb,
            boxes_out=boxes_out, server=server, api_key=api_key)
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
def chat(
    model: Optional[str] = MODEL_OPTION,
    mmproj: Optional[str] = typer.Option(None, help="Vision GGUF (default: the mmproj beside the model)."),
    system: Optional[str] = SYSTEM_OPTION,
    no_think: bool = typer.Option(False, "--no-think", help="Answer without thinking (/think on turns it back on)."),
    think_budget: Optional[int] = typer.Option(None, min=1, help="End thinking after N tokens (default: fitted to RAM)."),
    show_think: bool = typer.Option(False, "--show-think", help="Keep the thinking on screen instead of folding it."),
    greedy: bool = GREEDY_OPTION,
    temperature: Optional[float] = TEMPERATURE_OPTION,
    top_k: Optional[int] = TOP_K_OPTION,
    top_p: Optional[float] = TOP_P_OPTION,
    min_p: Optional[float] = MIN_P_OPTION,
    presence_penalty: Optional[float] = PRESENCE_PENALTY_OPTION,
    seed: Optional[int] = SEED_OPTION,
    max_tokens: Optional[int] = MAX_TOKENS_OPTION,
    max_context: Optional[int] = MAX_CONTEXT_OPTION,
    threads: Optional[int] = THREADS_OPTION,
    device: str = DEVICE_OPTION,
    ram_gb: Optional[float] = RAM_GB_OPTION,
    chat_dir: Optional[str] = typer.Option(None, help="Where chats are kept (default: ~/.local/share/rax/chats)."),
    server: Optional[str] = typer.Option(None, "--server", metavar="URL",
                                         help="Chat through an OpenAI-compatible server (rax serve, vLLM, "
                                              "llama-server); --model then names the server's model."),
    api_key: Optional[str] = API_KEY_OPTION,
) -> None:
    """Talk with a model in the terminal: streamed answers, thinking apart, pictures, /commands."""
    from .repl import ChatArgs, start
    sampling = {k: v for k, v in dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                      presence_penalty=presence_penalty, seed=seed).items() if v is not None}
    try:
        code = start(ChatArgs(model=model, mmproj=mmproj, system=system, thinking=not no_think,
                              think_budget=think_budget, show_think=show_think, max_tokens=max_tokens,
                              max_context=max_context, threads=threads, device=device, ram_gb=ram_gb, greedy=greedy,
                              sampling=sampling, chat_dir=chat_dir, server=server, api_key=api_key))
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        raise typer.Exit(130)
    raise typer.Exit(code)


@app.command()
def pull(
    spec: str = typer.Argument(..., metavar="REPO[:QUANT]", help="e.g. unsloth/Qwen3.5-2B-GGUF:Q4_K_M"),
    folder: Optional[str] = typer.Option(None, "--dir", help="Where to put the files (default: ~/.cache/rax/models/OWNER--NAME)."),
    no_mmproj: bool = typer.Option(False, "--no-mmproj", help="Skip the vision tower."),
) -> None:
    """Download a GGUF and its mmproj from the Hugging Face hub (resumes an interrupted pull)."""
    from .pull import pull as pull_files
    try:
        paths = pull_files(spec, folder, with_mmproj=not no_mmproj)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("\nrax: interrupted; the same command continues the download", err=True)
        raise typer.Exit(130)
    typer.echo(f"ready: rax chat --model {paths[0]}")


@app.command()
def bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Text GGUF."),
    threads: Optional[int] = THREADS_OPTION,
    prompt_tokens: int = typer.Option(128, min=1),
    gen_tokens: int = typer.Option(32, min=0),
    device: str = DEVICE_OPTION,
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Measure prefill and decode speed on random tokens."""
    from .bench import run_bench
    try:
        result = run_bench(model, threads, prompt_tokens, gen_tokens, device=device)
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
def quantize(
    src: str = typer.Argument(..., help="Hugging Face checkpoint folder, or a GGUF to requantize."),
    out: str = typer.Argument(..., metavar="OUT.gguf", help="Text GGUF to write."),
    type_name: str = typer.Option(..., "--type", "-t", help="f32, f16, bf16, q8_0, q4_0 or q4_k_m."),
    mmproj: Optional[str] = typer.Option(None, help="Also write the vision tower here (mmproj GGUF)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Convert a Qwen3.5 checkpoint to GGUF (llama.cpp's layout), or requantize a GGUF."""
    from .quantize_cmd import quantize as run_quantize
    try:
        written = run_quantize(src, out, type_name, mmproj, stderr=sys.stderr, show_progress=not quiet)
    except UserError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("\nrax: interrupted; no output file was left behind", err=True)
        raise typer.Exit(130)
    for w in written:
        types = ", ".join(f"{k}x{v}" for k, v in sorted(w["tensor_types"].items()))
        typer.echo(f"{w['path']}: {w['bytes'] / 2**20:,.1f} MiB ({types}) in {w['seconds']:.1f} s")


@app.command()
def info(path: str = typer.Argument(..., help="A GGUF file."),
         json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
         ram_gb: Optional[float] = typer.Option(None, "--ram-gb", min=0.1, help="Show the limits for this much RAM.")) -> None:
    """Show what a GGUF holds: architecture, size, tensor types, layer pattern, and this machine's limits."""
    from .info import describe
    try:
        result = describe(path, ram_gb)
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
        elif key == "parameters":
            value = f"{value:,} ({value / 1e9:.2f} B)" if value >= 1e8 else f"{value:,}"
        elif key == "limits":
            value = (f"{value['tier']}: answer {value['max_tokens']} · think {value['think_budget']} · context "
                     f"{value['context']} tokens (caps {value['max_tokens_cap']} / {value['think_cap']})")
        typer.echo(f"{key:>15}  {value}")


@app.command()
def serve(
    model: Optional[str] = MODEL_OPTION,
    mmproj: Optional[str] = typer.Option(None, help="Vision GGUF (mmproj): lets clients send images."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback unless told otherwise)."),
    port: int = typer.Option(8080, min=0, max=65535, help="Port; 0 picks a free one (printed at start)."),
    api_key: Optional[str] = typer.Option(None, envvar="RAX_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' (or set $RAX_API_KEY)."),
    queue: int = typer.Option(8, min=0, help="Requests that may wait while one generates; more get 429."),
    max_context: Optional[int] = typer.Option(None, min=16, help="Context window in tokens (default: the model's)."),
    max_tokens: Optional[int] = typer.Option(None, min=1,
                                             help="Reply limit for requests that set none (default: the context)."),
    name: Optional[str] = typer.Option(None, help="Model id clients see (default: the file name)."),
    allow_file_urls: Optional[bool] = typer.Option(None, "--allow-file-urls/--no-file-urls",
                                                   help="Read file:// image URLs (default: only on loopback)."),
    threads: Optional[int] = THREADS_OPTION,
    device: str = DEVICE_OPTION,
    log_level: str = typer.Option("info", help="uvicorn log level: warning hides the request lines."),
) -> None:
    """OpenAI-compatible HTTP server: /v1/chat/completions, /v1/models, /health."""
    try:
        from .serve import run_server
    except ImportError as exc:
        fail(f"rax serve needs the 'serve' extra ({exc.name} is missing): pip install 'rax[serve]'")
    try:
        run_server(model=model, mmproj=mmproj, host=host, port=port, api_key=api_key, queue_size=queue,
                   max_context=max_context, max_tokens=max_tokens, name=name, allow_file_urls=allow_file_urls,
                   threads=threads, device=device, log_level=log_level)
    except UserError as exc:
        fail(str(exc), exc.exit_code)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
