"""Quantized tensors: ggml block formats (`formats`) and Numba kernels on them (`kernels`).

Importing `quant` sets two process-wide defaults (each unless already set):

GOMP_SPINCOUNT=10000, read by the OpenMP runtime behind Numba's parallel kernels when it
starts. By default idle OpenMP workers spin for ~0.3 s worth of iterations after each kernel
and starve OpenBLAS (measured on 2 cores: prefill tiles 10x slower); OMP_WAIT_POLICY=passive
instead costs ~0.1 ms of wake-up per call, which small decode matvecs feel. 10000 spins keeps
both fast.

NUMBA_CACHE_DIR: a folder per version of the sources (also when Numba was imported first). Numba keys a
cached kernel on its own file's time stamp only, so a kernel whose inlined helper lives in
another file (kernels.fast_exp, simd's steps) kept its old machine code after that file
changed (seen: a stale SiLU returned NaN). The folder's name is a hash of the source files
of quant and raxcli (names, sizes, time stamps), so any change to them starts a fresh cache
(~20 s of compiling once); folders unused for a week go.
"""
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("GOMP_SPINCOUNT", "10000")

_STALE_SECONDS = 7 * 24 * 3600


def _sources_fingerprint(root: Path = Path(__file__).resolve().parent.parent) -> str:
    """A hash of the name, size and time stamp of every Python file of the packages that hold
    Numba kernels (quant, raxcli, under `root`): any edit, pull or upgrade changes it."""
    digest = hashlib.sha256()
    for package in ("quant", "raxcli"):
        for path in sorted((root / package).rglob("*.py")):
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _numba_cache_dir() -> str | None:
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rax" / "numba"
        folder = base / _sources_fingerprint()
        folder.mkdir(parents=True, exist_ok=True)
        os.utime(folder)                               # in use: not stale
        now = time.time()
        for other in base.iterdir():
            if other != folder and other.is_dir() and now - other.stat().st_mtime > _STALE_SECONDS:
                shutil.rmtree(other, ignore_errors=True)
        return str(folder)
    except OSError:
        return None                                    # Numba's own default: __pycache__ beside the sources


if "NUMBA_CACHE_DIR" not in os.environ:
    _folder = _numba_cache_dir()
    if _folder is not None:
        os.environ["NUMBA_CACHE_DIR"] = _folder
        if "numba" in sys.modules:
            # imported before us (a script that imports numba first): Numba has read its
            # config already, but looks CACHE_DIR up as each kernel is defined, after this
            sys.modules["numba"].config.CACHE_DIR = _folder
