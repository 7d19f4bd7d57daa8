"""The thread count of the OpenBLAS that NumPy loaded, so that --threads bounds BLAS too.

NumPy has no API for it (threadpoolctl does it this way): find the loaded OpenBLAS in the
process's memory map and call its get/set_num_threads, whatever prefix or suffix the build
gave the symbols (NumPy's wheels: scipy_openblas_set_num_threads64_). No OpenBLAS, no change.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from functools import lru_cache

_PREFIXES = ("scipy_openblas", "openblas")
_SUFFIXES = ("64_", "_64_", "")


@lru_cache(maxsize=1)
def _openblas():
    """(get_num_threads, set_num_threads) of the loaded OpenBLAS, or None."""
    import numpy  # noqa: F401  (loads OpenBLAS)
    try:
        paths = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in _SUFFIXES:
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    return get, set_
    return None


def set_blas_threads(n: int) -> bool:
    """Returns whether an OpenBLAS was found and told."""
    functions = _openblas()
    if functions is None:
        return False
    functions[1](ctypes.c_int(int(n)))
    return True


def blas_thread_count() -> int | None:
    """OpenBLAS's thread count now, or None without an OpenBLAS."""
    functions = _openblas()
    return None if functions is None else int(functions[0]())


@contextmanager
def blas_threads(n: int):
    """OpenBLAS runs on n threads inside the block, on as many as before after it."""
    before = blas_thread_count()
    set_blas_threads(n)
    try:
        yield
    finally:
        if before is not None:
            set_blas_threads(before)
