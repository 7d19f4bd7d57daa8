"""Speed of quant.kernels.matvec (decode) on Qwen3.5-2B-shaped weights, and Numba compile time.

    python benchmarks/bench_kernels.py                  # matvec: float and int8 paths
    python benchmarks/bench_kernels.py --compile        # cold-cache compile vs cached import
    python benchmarks/bench_kernels.py --types Q4_K --shapes 6144x2048 --threads 1

Weights are random blocks (random codes, float16 scales of weight size; F16 values drawn as
bits, so no NaN, inf or subnormal slows anything); speed does not depend on the values.
GB/s counts the weight bytes one call reads. Two threads are all the machine has: the
script prints the load average, and a figure taken while anything else runs is wrong.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {"6144x2048": (6144, 2048),      # ffn_gate / ffn_up: n_rows x n_cols
          "2048x6144": (2048, 6144),      # ffn_down
          "248320x2048": (248320, 2048)}  # token_embd used as the tied output
TYPES = ["Q8_0", "Q4_0", "Q4_K", "Q6_K", "F16"]
# byte offsets of the float16 scales inside one block
F16_FIELDS = {"Q8_0": (0,), "Q4_0": (0,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
              "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q2_K": (80, 82), "Q3_K": (108,)}


def random_weights(type_name: str, n_rows: int, n_cols: int, rng) -> np.ndarray:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    if type_name == "F16":                 # sign | exponent 10..20 | mantissa: normal halves near 1
        bits = rng.integers(0, 1 << 10, (n_rows, n_cols), dtype=np.uint16)
        bits |= (rng.integers(10, 21, (n_rows, n_cols), dtype=np.uint16) << 10)
        bits |= (rng.integers(0, 2, (n_rows, n_cols), dtype=np.uint16) << 15)
        return bits.view(np.uint8)
    raw = rng.integers(0, 256, (n_rows, n_cols // block, size), dtype=np.uint8)
    for off in F16_FIELDS[type_name]:
        scale = (rng.random(raw.shape[:2], dtype=np.float32) * 2e-2 + 1e-3).astype(np.float16)
        raw[:, :, off:off + 2] = scale.view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(n_rows, -1)


def time_calls(fn, seconds: float, min_calls: int = 5) -> np.ndarray:
    fn()                                   # compile / warm caches
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_calls:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.array(times)


def bench_matvec(types, shapes, threads: int, seconds: float) -> None:
    import numba
    from gguf import GGMLQuantizationType
    from quant import kernels

    numba.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"threads {threads}, load average {os.getloadavg()[0]:.2f} (before)")
    print(f"{'type':5s} {'shape':>12s} {'path':5s} {'MB':>7s} {'ms min':>8s} {'ms med':>8s} {'GB/s':>6s}")
    for shape in shapes:
        n_rows, n_cols = SHAPES[shape]
        x = rng.standard_normal(n_cols, dtype=np.float32)
        out = np.empty(n_rows, np.float32)
        for name in types:
            qtype = GGMLQuantizationType[name]
            raw = random_weights(name, n_rows, n_cols, rng)
            paths = [("float", False)] + ([("int8", True)] if kernels.has_int8_kernel(qtype) else [])
            for label, int8 in paths:
                t = time_calls(lambda: kernels.matvec(raw, qtype, n_cols, x, out=out, int8_activations=int8), seconds)
                print(f"{name:5s} {shape:>12s} {label:5s} {raw.nbytes / 1e6:7.1f} {t.min() * 1e3:8.3f} "
                      f"{np.median(t) * 1e3:8.3f} {raw.nbytes / t.min() / 1e9:6.1f}", flush=True)
            del raw
    print(f"load average {os.getloadavg()[0]:.2f} (after)")


_WARM_ALL = """
import time, numpy as np
t0 = time.perf_counter()
from quant import formats, kernels
t1 = time.perf_counter()
from gguf import GGML_QUANT_SIZES
for qtype in sorted(formats.SUPPORTED, key=int):
    n = 256 if GGML_QUANT_SIZES[qtype][0] > 1 else 64
    raw = np.zeros((4, formats.row_nbytes(qtype, n)), np.uint8)
    x = np.ones(n, np.float32)
    kernels.dequantize(raw, qtype, n)
    kernels.matvec(raw, qtype, n, x)
    kernels.matvec(raw, qtype, n, x, int8_activations=True)
t2 = time.perf_counter()
print(f"{t1 - t0:.2f} {t2 - t1:.2f}")
"""


def bench_compile() -> None:
    """Import + first call of every kernel, in fresh processes, with an empty then a warm cache."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(repo))
        for label in ("cold cache", "cached"):
            start = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", _WARM_ALL], env=env, capture_output=True, text=True,
                                    check=True)
            total = time.perf_counter() - start
            imp, calls = result.stdout.split()
            print(f"{label:10s}: process {total:6.2f} s, import quant.kernels {float(imp):5.2f} s, "
                  f"first call of every kernel {float(calls):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--types", nargs="+", default=TYPES)
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=1.5, help="timing per case")
    parser.add_argument("--compile", action="store_true", help="measure Numba compile time instead")
    args = parser.parse_args()
    if args.compile:
        bench_compile()
    else:
        bench_matvec(args.types, args.shapes, args.threads, args.seconds)


if __name__ == "__main__":
    main()
