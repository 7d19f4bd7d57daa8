"""rax against llama.cpp on the same GGUF files and threads, runs alternating, ratios printed.

    python benchmarks/compare_llamacpp.py                        # the files make_random_gguf.py wrote
    python benchmarks/compare_llamacpp.py --models /work/bench-models/qwen35-2b-random-Q8_0.gguf \\
        --threads 2 --repetitions 3 --llama-bench /work/llama-build/build/bin/llama-bench

For each file, `rax bench --json` and `llama-bench -o json` (-p 128 -n 32, one repetition
each) take turns, `--repetitions` times, so a change in machine load hits both alike; the
medians are compared. The machine's memory bandwidth is measured once (a streaming read of
2 GiB by the same number of threads), which bounds decoding: every weight byte is read once
per token, so tok/s ≤ bandwidth / bytes per token (the trunk's and the output matrix's
bytes; the MTP block is not read). The ceiling is a streaming read of anonymous memory; the
weights come from the file's page cache, which streamed ~12% slower here when it held the
file in 4 KiB pages (as writing leaves it) and about as fast in 2 MB folios (as a read from
disk leaves it: quant/page_cache.py; make_random_gguf.py drops the files it writes).

Two threads are all this machine has: the load average is printed beside every run, and a
figure taken while something else runs is wrong, not noisy. `--wait-quiet` waits for an
idle machine before each run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS = [Path("/work/bench-models") / f"qwen35-2b-random-{t}.gguf" for t in ("Q8_0", "Q4_K_M")]
DEFAULT_LLAMA_BENCH = Path("/work/llama-build/build/bin/llama-bench")


def cpu_busy(window: float = 2.0) -> float:
    """Fraction of all CPU time spent busy over `window` seconds (from /proc/stat)."""
    def snap():
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]
    total0, idle0 = snap()
    time.sleep(window)
    total1, idle1 = snap()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_quiet(limit: float, timeout: float) -> float:
    deadline = time.time() + timeout
    while True:
        busy = cpu_busy()
        if busy <= limit or time.time() > deadline:
            return busy


def memory_bandwidth(threads: int, gib: float = 2.0) -> float:
    """GB/s of a streaming read of `gib` GiB by `threads` threads: an XOR over 64-bit words,
    which compiles to vector loads and one vector xor each (nothing but the reads can be the
    bound); the best of five passes. NumPy's float sum measured ~20% lower here."""
    import numba
    numba.set_num_threads(threads)
    words = np.ones(int(gib * (1 << 30)) // 8, np.uint64)
    xor_read(words, threads)
    best = min(timed(lambda: xor_read(words, threads)) for _ in range(5))
    return words.nbytes / best / 1e9


def _xor_read_kernel():
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def xor_read(words, parts):
        out = np.zeros(parts, np.uint64)
        for p in prange(parts):
            chunk = words[p * (words.size // parts):(p + 1) * (words.size // parts)]
            acc = np.uint64(0)
            for i in range(chunk.size):       # a contiguous slice: the loop vectorises
                acc ^= chunk[i]
            out[p] = acc
        return out
    return xor_read


def xor_read(words, parts):
    global _XOR_READ
    if "_XOR_READ" not in globals():
        _XOR_READ = _xor_read_kernel()
    return _XOR_READ(words, parts)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bytes_per_token(path: Path) -> int:
    """Bytes a decode step reads: every tensor but the MTP block's, the output matrix once."""
    sys.path.insert(0, str(ROOT))
    from raxcli.engine.gguf_file import GGUFFile
    f = GGUFFile(path)
    n_all = int(f.metadata["qwen35.block_count"])
    n_nextn = int(f.metadata.get("qwen35.nextn_predict_layers", 0))
    mtp = tuple(f"blk.{i}." for i in range(n_all - n_nextn, n_all))
    return sum(t.n_bytes for name, t in f.tensors.items() if not name.startswith(mtp))


def run_rax(path: Path, threads: int, p: int, n: int) -> dict:
    cmd = [sys.executable, "-m", "raxcli", "bench", "--model", str(path), "--threads", str(threads),
           "--prompt-tokens", str(p), "--gen-tokens", str(n), "--json"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_llama(llama_bench: Path, path: Path, threads: int, p: int, n: int) -> dict:
    cmd = [str(llama_bench), "-m", str(path), "-t", str(threads), "-p", str(p), "-n", str(n),
           "-r", "1", "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = json.loads(out)
    result = {}
    for row in rows:
        key = "prefill_tok_s" if row["n_prompt"] else "decode_tok_s"
        result[key] = float(row["avg_ts"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", type=Path, default=DEFAULT_MODELS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("-p", "--prompt-tokens", type=int, default=128)
    ap.add_argument("-n", "--gen-tokens", type=int, default=32)
    ap.add_argument("--llama-bench", type=Path, default=DEFAULT_LLAMA_BENCH)
    ap.add_argument("--wait-quiet", type=float, default=None, metavar="FRACTION",
                    help="before each run wait (up to 10 min) until at most this fraction of the CPU is busy")
    ap.add_argument("--json", type=Path, default=None, help="also write every run to this file")
    ap.add_argument("--bandwidth-only", action="store_true", help="print the streaming-read GB/s and stop")
    args = ap.parse_args()
    if args.bandwidth_only:
        print(f"{memory_bandwidth(args.threads):.2f}")
        return

    busy = wait_quiet(args.wait_quiet, 600) if args.wait_quiet is not None else cpu_busy()
    # in a process of its own: Linux carries the peak RSS over fork and exec, and the 2 GiB
    # probe would show as the benchmarked processes' peak RSS
    probe = subprocess.run([sys.executable, __file__, "--bandwidth-only", "--threads", str(args.threads)],
                           capture_output=True, text=True, check=True)
    bandwidth = float(probe.stdout.split()[-1])
    print(f"memory bandwidth, {args.threads} threads: {bandwidth:.1f} GB/s (cpu busy {busy:.0%} before)")
    report = {"bandwidth_gb_s": bandwidth, "threads": args.threads, "models": {}}
    for path in args.models:
        per_token = bytes_per_token(path)
        runs = {"rax": [], "llama.cpp": []}
        for rep in range(args.repetitions):
            for name in ("rax", "llama.cpp"):
                busy = wait_quiet(args.wait_quiet, 600) if args.wait_quiet is not None else cpu_busy(1.0)
                load = os.getloadavg()[0]
                r = (run_rax(path, args.threads, args.prompt_tokens, args.gen_tokens) if name == "rax" else
                     run_llama(args.llama_bench, path, args.threads, args.prompt_tokens, args.gen_tokens))
                r.update(busy_before=round(busy, 3), load_before=round(load, 2))
                runs[name].append(r)
                print(f"  {path.name} {name:9s} run {rep + 1}: prefill {r['prefill_tok_s']:7.2f} tok/s, "
                      f"decode {r['decode_tok_s']:6.2f} tok/s  (cpu busy {busy:.0%}, load {load:.2f})", flush=True)
        med = {name: {k: statistics.median(r[k] for r in rs) for k in ("prefill_tok_s", "decode_tok_s")}
               for name, rs in runs.items()}
        ceiling = bandwidth * 1e9 / per_token
        print(f"{path.name}: {per_token / 1e9:.2f} GB per token, decode ceiling {ceiling:.1f} tok/s")
        for name in ("rax", "llama.cpp"):
            m = med[name]
            print(f"  {name:9s} prefill {m['prefill_tok_s']:7.2f} tok/s  decode {m['decode_tok_s']:6.2f} tok/s "
                  f"({m['decode_tok_s'] / ceiling:.0%} of the ceiling)")
        ratio_p = med["rax"]["prefill_tok_s"] / med["llama.cpp"]["prefill_tok_s"]
        ratio_d = med["rax"]["decode_tok_s"] / med["llama.cpp"]["decode_tok_s"]
        print(f"  rax / llama.cpp: prefill {ratio_p:.2f}x, decode {ratio_d:.2f}x")
        report["models"][str(path)] = {"bytes_per_token": per_token, "decode_ceiling_tok_s": ceiling,
                                       "runs": runs, "median": med,
                                       "ratio": {"prefill": ratio_p, "decode": ratio_d}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
