"""Shared by the `rax quantize` tests: fixture paths, checkpoints to convert, and a GGUF reader
independent of rax's own (gguf-py's GGUFReader) to compare files entry by entry."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
TINY_HF = FIXTURES / "hf" / "tiny-vk2"
GGUF = FIXTURES / "gguf"
CONVERT = FIXTURES / "convert"
LLAMA_BIN = Path(os.environ.get("RAX_LLAMA_BIN", "/work/llama-build/build/bin"))
LLAMA_QUANTIZE = LLAMA_BIN / "llama-quantize"

sys.path.insert(0, str(ROOT / "benchmarks"))
import make_random_checkpoint  # noqa: E402  (benchmarks/ is not a package)


def tiny_checkpoint(tmp: Path, with_processor: bool = True) -> Path:
    """tests/fixtures/hf/tiny-vk2 under the same folder name (general.name comes from it),
    plus the preprocessor_config.json the mmproj fixtures were made with."""
    folder = tmp / "tiny-vk2"
    folder.mkdir(parents=True, exist_ok=True)
    for f in TINY_HF.iterdir():
        (folder / f.name).symlink_to(f)
    if with_processor:
        (folder / "preprocessor_config.json").symlink_to(CONVERT / "preprocessor_config.json")
    return folder


def random_checkpoint(tmp: Path, name: str, shape: str = "k256", dist: str = "normal", seed: int = 0,
                      shard_bytes: int = 2 << 30, tied: bool = True) -> Path:
    return make_random_checkpoint.make_checkpoint(tmp / name, shape, dist, seed, tied, shard_bytes)


def read_gguf(path: Path) -> tuple[dict, dict]:
    """({key: (value types, value)}, {tensor: (type name, ggml shape, bytes)}) by gguf-py."""
    from gguf import GGUFReader
    r = GGUFReader(path)
    kv = {f.name: (tuple(t.name for t in f.types), f.contents()) for f in r.fields.values()
          if not f.name.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), t.data.tobytes()) for t in r.tensors}
    return kv, tensors


def differences(a: Path, b: Path, ignore_keys: tuple[str, ...] = ()) -> list[str]:
    """What differs between two GGUF files, key by key and tensor by tensor (empty: same)."""
    kv_a, t_a = read_gguf(a)
    kv_b, t_b = read_gguf(b)
    out = [f"key {k}: {str(kv_a.get(k))[:80]} != {str(kv_b.get(k))[:80]}"
           for k in sorted(set(kv_a) | set(kv_b)) if k not in ignore_keys and kv_a.get(k) != kv_b.get(k)]
    for name in sorted(set(t_a) | set(t_b)):
        x, y = t_a.get(name), t_b.get(name)
        if x is None or y is None or x[:2] != y[:2]:
            out.append(f"tensor {name}: {x and x[:2]} != {y and y[:2]}")
        elif x[2] != y[2]:
            n = int((np.frombuffer(x[2], np.uint8) != np.frombuffer(y[2], np.uint8)).sum())
            out.append(f"tensor {name}: {n} bytes differ")
    return out


def dequantized(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF as float32 (gguf-py's dequantization)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    return {t.name: np.asarray(dequantize(t.data, t.tensor_type), np.float32) for t in GGUFReader(path).tensors}
