"""Plain threads that each run BLAS and Numba on one core, for work that splits into
independent pieces (the vision tower's weight products and attention heads).

OpenBLAS's and Numba's own thread teams meet at a barrier on every call and keep spinning
after it; the vision tower alternates some 200 mid-sized products with per-head attention
and elementwise passes, and the handovers cost more than the pieces. Measured at 784
patches on 2 cores: a 784×1024×3072 product 25.0 ms on two workers against 24.8 ms through
two-threaded BLAS, attention 18 ms against 40-47 ms, and run back to back the
two-threaded pair took 19 ms more than its parts, the workers none.

Each worker sets Numba to one thread for itself (`numba.set_num_threads` is per thread),
and `run_parts` holds OpenBLAS (process-wide) at one thread while the workers run.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Iterable

import numba
import numpy as np

from quant import kernels

from ..blas_threads import blas_threads


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """Kept for the process: idle threads cost nothing, starting them costs ~0.1 ms a call."""
    return ThreadPoolExecutor(workers, thread_name_prefix="rax-worker", initializer=numba.set_num_threads,
                              initargs=(1,))


def run_parts(work: Callable, parts: Iterable, workers: int) -> None:
    """work(part) for every part, on `workers` threads (inline for one), with BLAS on one
    thread; the first error is raised here once every part has ended."""
    parts = list(parts)
    with blas_threads(1):
        if workers <= 1 or len(parts) <= 1:
            for part in parts:
                work(part)
        else:
            list(_pool(workers).map(work, parts))


def _shares(n: int, workers: int) -> list[tuple[int, int]]:
    """[a, b) ranges dealing n rows to at most `workers` parts, as evenly as can be."""
    bounds = np.linspace(0, n, max(1, min(workers, n)) + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def product(matrix, x: np.ndarray, workers: int) -> np.ndarray:
    """x @ Wᵀ for an `engine.weights.Matrix` W [n_out, n_in] and float32 x [T, n_in]: each
    worker dequantizes and multiplies its own share of W's rows into its columns of the
    result."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], matrix.n_out), np.float32)

    def share(rows: tuple[int, int]) -> None:
        a, b = rows
        kernels.matmul(matrix.raw[a:b], matrix.ggml_type, matrix.n_in, x, out[:, a:b])
    run_parts(share, _shares(matrix.n_out, workers), workers)
    return out


def dense_product(x: np.ndarray, w: np.ndarray, workers: int) -> np.ndarray:
    """x @ w for float32 arrays, each worker taking its share of x's rows."""
    out = np.empty((x.shape[0], w.shape[1]), np.float32)

    def share(rows: tuple[int, int]) -> None:
        a, b = rows
        np.matmul(x[a:b], w, out=out[a:b])
    run_parts(share, _shares(x.shape[0], workers), workers)
    return out
