"""What self-speculative decoding costs and pays on a Qwen3.5 GGUF with an MTP block.

    python benchmarks/bench_speculative.py --model /work/bench-models/qwen35-2b-random-Q8_0.gguf

Random weights say nothing about how many drafts a real model accepts, so this measures the
costs and computes the speed-up for a range of acceptance rates:

    step        one ordinary decode step (trunk + output projection, 1 token)
    verify(n)   one tentative trunk step over n = k + 1 tokens (the fed token and k drafts),
                with the output projection for all n, plus the commit that rolls back
    draft       one MTP draft (MTP block + output projection, 1 token)
    follow(n)   the MTP block over n committed pairs (keeps its cache; once per cycle)

With per-draft acceptance a (independent), a cycle yields E = (1 - a^(k+1)) / (1 - a) tokens
and costs verify(k+1) + k·draft + follow; the speed-up over plain decoding is
E · step / cycle. Two threads are all the machine has: the script prints the load average.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def best_of(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--activations", default="fine", choices=["float", "int8", "fine"])
    ap.add_argument("--max-draft", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from raxcli.engine.mtp import MTPHead
    from raxcli.engine.text import TextModel
    from raxcli.engine.weights import ModelWeights
    from raxcli.loader import set_threads

    set_threads(args.threads)
    model = TextModel(ModelWeights(args.model), activations=args.activations)
    head = MTPHead(model.weights.mtp, model.config)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 200_000, 64).tolist()
    state = model.new_state()
    hidden = model.forward(model.embed(prompt), state)
    cache = head.new_cache()
    head.hidden(hidden[:-1], model.embed(prompt[1:]), np.arange(1, 64), cache)
    last = hidden[-1:]
    print(f"{args.model}: threads {args.threads}, activations {args.activations}, "
          f"load average {os.getloadavg()[0]:.2f} (before)")

    def step():
        model.decode(7, state)
        for c in state.layers:                   # keep the context length fixed
            if hasattr(c, "truncate"):
                c.truncate(c.length - 1)
        state.n_tokens -= 1
        state.next_position -= 1

    def verify(n):
        def run():
            state.begin_tentative(n)
            model.logits(model.forward(model.embed([7] * n), state))
            state.commit(0)
        return run

    def draft():
        h = head.hidden(last, model.embed([7]), np.array([64]), cache)
        int(np.argmax(head.logits(h[0])))
        cache.truncate(cache.length - 1)

    def follow(n):
        def run():
            head.hidden(np.repeat(last, n, 0), model.embed([7] * n), np.arange(64, 64 + n), cache)
            cache.truncate(cache.length - n)
        return run

    t_step = best_of(step, args.repeats)
    t_draft = best_of(draft, args.repeats)
    print(f"step {t_step * 1e3:.1f} ms ({1 / t_step:.2f} tok/s); draft {t_draft * 1e3:.1f} ms "
          f"({t_draft / t_step:.2f} steps)")
    print(f"{'k':>2s} {'verify(k+1)':>12s} {'k+1 single steps':>17s} {'ratio':>6s} {'follow':>7s} | "
          f"speed-up at acceptance a = 0.5 0.6 0.7 0.8 0.9")
    for k in range(1, args.max_draft + 1):
        t_verify = best_of(verify(k + 1), args.repeats)
        t_follow = best_of(follow(k), args.repeats)
        cycle = t_verify + k * t_draft + t_follow
        gains = []
        for a in (0.5, 0.6, 0.7, 0.8, 0.9):
            expected = (1 - a ** (k + 1)) / (1 - a)
            gains.append(f"{expected * t_step / cycle:4.2f}")
        print(f"{k:2d} {t_verify * 1e3:9.1f} ms {(k + 1) * t_step * 1e3:14.1f} ms {t_verify / ((k + 1) * t_step):6.2f} "
              f"{t_follow * 1e3:5.1f}ms | {' '.join(gains)}")
    print(f"load average {os.getloadavg()[0]:.2f} (after)")


if __name__ == "__main__":
    main()
