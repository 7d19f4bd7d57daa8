"""`rax bench`: prefill and decode speed, load time and peak memory on random token ids.

Decoding is measured plainly, one token per step, as llama-bench measures it: speculative
decoding with the file's MTP block (what `rax run` and `rax chat` use) pays only as far as
a real model accepts its drafts, and random weights accept none (benchmarks/bench_speculative.py
measures what it costs and what it pays).
"""
from __future__ import annotations

import resource
import time

import numpy as np

from .loader import find_model, load_model, set_threads
from .warmup import warm_up


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_bench(model: str | None, threads: int | None, prompt_tokens: int, gen_tokens: int,
              warmup: bool = True, seed: int = 0, device: str = "cpu") -> dict:
    threads = set_threads(threads)
    loaded = load_model(find_model(model), device)
    m = loaded.model.plain()
    rng = np.random.default_rng(seed)
    vocab = min(m.config.n_vocab, loaded.tokenizer.vocab_size)
    prompt = rng.integers(0, vocab, prompt_tokens).tolist()

    if warmup:   # compile (or load from the cache) and touch every kernel once, off the clock
        warm_up(m)

    state = m.new_state()
    state.reserve(prompt_tokens + gen_tokens)
    t0 = time.perf_counter()
    logits = m.prefill(prompt, state)
    prefill_s = time.perf_counter() - t0

    token = int(np.argmax(logits))
    t0 = time.perf_counter()
    for _ in range(gen_tokens):
        token = int(np.argmax(m.decode(token, state)))
    decode_s = time.perf_counter() - t0
    return {
        "prefill_tok_s": round(prompt_tokens / prefill_s, 2),
        "decode_tok_s": round(gen_tokens / decode_s, 2) if gen_tokens else 0.0,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "load_s": round(loaded.load_s, 3),
        "threads": threads,
        "device": device,
        "prompt_tokens": prompt_tokens,
        "gen_tokens": gen_tokens,
        "model": str(loaded.path),
    }
