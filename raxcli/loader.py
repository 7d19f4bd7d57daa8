"""Opening a model file: weights, tokenizer and chat template, with the time it took."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blas_threads import set_blas_threads
from .engine.speculative import SpeculativeModel
from .engine.text import TextModel
from .engine.weights import ModelFileError, ModelWeights
from .errors import UserError
from .generate import Generator
from .tokenizer import Tokenizer

MODEL_HELP = (
    "no model found. Download a Qwen3.5 GGUF and its mmproj with:\n"
    "  rax pull unsloth/Qwen3.5-2B-GGUF:Q4_K_M\n"
    "(into ~/.cache/rax/models, where rax looks; or with the hub's own tool:\n"
    "  hf download unsloth/Qwen3.5-2B-GGUF --include '*Q4_K_M*' 'mmproj-F16*' --local-dir models)\n"
    "or pass --model FILE.gguf, set RAX_MODEL, or put the file in ./models."
)


# how decode steps feed the quantized matrices (TextModel): int8 codes plus an int8 residual,
# about twice as fast as float32 and as exact for greedy decoding (see engine/text.py)
DECODE_ACTIVATIONS = "fine"
# the attention layers' keys and values, in float16 as llama.cpp keeps them: half the memory
# of float32 (48 MB at 4k tokens, 2B), logits within tests/test_decode_precision.py's bound
KV_CACHE_DTYPE = np.float16
# drafted tokens per step of self-speculative decoding with the file's MTP block
# (engine/speculative.py). Off unless RAX_MTP_DRAFTS is set: on a 2-core machine decoding is
# compute-bound, and verifying k drafts costs 0.8 x (k + 1) plain steps, so it never pays
# there (benchmarks/bench_speculative.py); where decoding is bandwidth-bound it does.
MTP_DRAFTS = int(os.environ.get("RAX_MTP_DRAFTS", "0"))
DEVICES = ("cpu", "gpu")
# how `--device gpu` keeps the matrices on the device (engine/gpu): float32, the dequantized
# weights as they are (logits within 1e-4 of transformers on the test fixtures, like the CPU
# engine's float path), or with RAX_GPU_WEIGHTS=float16 half the memory and the bytes read
# per token (the products' float16 rounding moves the fixtures' logits by up to ~0.2)
GPU_WEIGHT_DTYPE = np.dtype(os.environ.get("RAX_GPU_WEIGHTS", "float32")).type
# metadata the tokenizer has taken over: dropped from the GGUF's metadata after loading
VOCABULARY_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges")


def model_search_dirs() -> list[Path]:
    return [Path.cwd() / "models", Path.home() / ".cache" / "rax" / "models"]


def find_model(explicit: str | None) -> Path:
    """--model, else $RAX_MODEL, else the first text GGUF in ./models or ~/.cache/rax/models."""
    if explicit:
        return Path(explicit)
    if os.environ.get("RAX_MODEL"):
        return Path(os.environ["RAX_MODEL"])
    for folder in model_search_dirs():
        if folder.is_dir():
            # `rax pull` puts each repository in a folder of its own, beside its mmproj
            candidates = sorted(p for pattern in ("*.gguf", "*/*.gguf") for p in folder.glob(pattern)
                                if not p.name.lower().startswith("mmproj"))
            if candidates:
                return candidates[0]
    raise UserError(MODEL_HELP)


def set_threads(threads: int | None) -> int:
    import numba
    n = threads or default_threads()
    n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    set_blas_threads(n)
    return n


def default_threads() -> int:
    try:
        import psutil
        physical = psutil.cpu_count(logical=False)
    except Exception:  # psutil may not know on exotic systems
        physical = None
    from .system import usable_cpus
    usable = usable_cpus()      # affinity mask and cgroup CPU quota
    return max(1, min(physical or usable, usable))


@dataclass
class LoadedModel:
    path: Path
    weights: ModelWeights
    model: TextModel
    tokenizer: Tokenizer
    chat_template: str | None
    generator: Generator
    load_s: float


def load_model(path: str | Path, device: str = "cpu") -> LoadedModel:
    """device "gpu": the GPU engine (engine/gpu), with CuPy; UserError if it cannot run here."""
    t0 = time.perf_counter()
    path = Path(path)
    if device not in DEVICES:
        raise UserError(f"--device must be {' or '.join(DEVICES)}, not {device!r}")
    xp = _gpu_arrays() if device == "gpu" else None      # before reading the file: fail fast
    try:
        weights = ModelWeights(path)
        tokenizer = Tokenizer.from_gguf_metadata(weights.file.metadata)
        weights.file.forget(*VOCABULARY_ARRAYS)
    except ModelFileError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:   # tokenizer metadata rax cannot use
        raise UserError(f"{path}: {exc}") from None
    if xp is not None:
        model = _device_model(weights, xp)
    else:
        model = TextModel(weights, activations=DECODE_ACTIVATIONS, kv_dtype=KV_CACHE_DTYPE)
    if weights.mtp is not None and MTP_DRAFTS > 0 and xp is None:      # the file carries an MTP block: draft with it
        model = SpeculativeModel(model, n_draft=MTP_DRAFTS)
    template = weights.file.metadata.get("tokenizer.chat_template")
    return LoadedModel(path, weights, model, tokenizer, template, Generator(model, tokenizer),
                       time.perf_counter() - t0)


def _gpu_arrays():
    from .engine.gpu.runtime import DeviceUnavailable, cuda_arrays
    try:
        return cuda_arrays()
    except DeviceUnavailable as exc:
        raise UserError(str(exc)) from None


def _device_model(weights: ModelWeights, xp):
    from .engine.gpu.model import DeviceTextModel
    from .engine.gpu.runtime import DeviceUnavailable
    try:
        return DeviceTextModel(weights, xp, weight_dtype=GPU_WEIGHT_DTYPE)
    except DeviceUnavailable as exc:
        raise UserError(str(exc)) from None
