"""Time the vision tower on pictures: rax's encode, and llama-mtmd-cli's on the same mmproj.

    python benchmarks/make_random_mmproj.py /tmp/mmproj-2b.gguf
    python benchmarks/bench_vision.py --mmproj /tmp/mmproj-2b.gguf --threads 2 \
        --size 448x448 --size 1024x768 [--reps 3] \
        [--mtmd /path/llama-mtmd-cli --text-model text-2b.gguf]

Pictures are drawn (smooth gradients and edges); each size is encoded `reps` times after one
untimed warm-up (Numba compiles, pages fault in) and the best and median are printed with
the machine's load average: on a shared 2-core machine a busy neighbour doubles the time.
llama-mtmd-cli reports its own "mtmd batch encoding done in N ms" (the image encoder only).
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def picture(width: int, height: int, path: Path) -> None:
    from PIL import Image
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([255 * x / width, 128 + 100 * np.sin(x / 9 + y / 13), 255 * (1 - y / height)], -1)
    rgb[((x - width / 2) ** 2 + (y - height / 2) ** 2) < (min(width, height) / 4) ** 2] = (230, 40, 60)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)


def time_rax(mmproj: Path, pictures: list[Path], threads: int, reps: int) -> None:
    from raxcli.engine.mmproj import VisionWeights
    from raxcli.loader import set_threads
    from raxcli.multimodal import load_image, load_vision
    set_threads(threads)

    class TextWidth:            # the tower alone: any text model of the projection width
        n_embd = VisionWeights(mmproj).config.projection_dim
    vision = load_vision(mmproj, TextWidth())
    for path in pictures:
        visual = load_image(path, vision)
        vision.encode(visual)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = vision.encode(visual)
            times.append(time.perf_counter() - t0)
        print(f"rax   {path.stem:>10}  grid {visual.grid_thw}  tokens {len(out):5d}  "
              f"best {min(times):6.2f} s  median {statistics.median(times):6.2f} s  load {os.getloadavg()[0]:.2f}",
              flush=True)


def time_mtmd(binary: Path, text_model: Path, mmproj: Path, pictures: list[Path], threads: int, reps: int) -> None:
    for path in pictures:
        times = []
        for _ in range(reps):
            res = subprocess.run([str(binary), "-m", str(text_model), "--mmproj", str(mmproj), "--image", str(path),
                                  "-p", "Describe.", "-n", "1", "-t", str(threads), "--no-warmup"],
                                 capture_output=True, text=True, timeout=3600)
            found = re.search(r"mtmd batch encoding done in (\d+) ms", res.stdout + res.stderr)
            if not found:
                raise SystemExit(f"llama-mtmd-cli printed no encode time:\n{res.stderr[-2000:]}")
            times.append(int(found.group(1)) / 1000)
        tokens = re.search(r"with (\d+) new tokens", res.stdout + res.stderr)
        print(f"mtmd  {path.stem:>10}  tokens {tokens.group(1) if tokens else '?':>5}  "
              f"best {min(times):6.2f} s  median {statistics.median(times):6.2f} s  load {os.getloadavg()[0]:.2f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mmproj", type=Path, required=True)
    ap.add_argument("--size", action="append", default=[], help="WIDTHxHEIGHT (repeatable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mtmd", type=Path, help="llama-mtmd-cli binary")
    ap.add_argument("--text-model", type=Path, help="a text GGUF of the mmproj's width (for llama-mtmd-cli)")
    args = ap.parse_args()
    sizes = args.size or ["448x448", "1024x768"]
    with tempfile.TemporaryDirectory() as tmp:
        pictures = []
        for size in sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            pictures.append(Path(tmp) / f"{w}x{h}.png")
            picture(w, h, pictures[-1])
        time_rax(args.mmproj, pictures, args.threads, args.reps)
        if args.mtmd:
            if not args.text_model:
                raise SystemExit("--mtmd needs --text-model")
            time_mtmd(args.mtmd, args.text_model, args.mmproj, pictures, args.threads, args.reps)


if __name__ == "__main__":
    main()
