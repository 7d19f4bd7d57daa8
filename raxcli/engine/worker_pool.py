"""Plain threads that each run BLAS and Numba on one core, for work that splits into
independent pieces (the vision tower's weight products and attention heads).

OpenBLAS's and Numba's own thread teams meet at a barrier on every call and keep spinning
after it; the vision tower alternates some 200 mid-sized products with per-head attention
and elementwise passes, and the handovers cost more than the pieces. Measured at 784
patches on 2 cores: a 784×1024×3072 product 25.0 ms on two workers against 24.8 ms through
two-threaded BLAS, attention 18 ms against 40-47 ms, and run back to back the
two-threaded pair took 19 ms more than its parts, the workers none.

Each worker sets Numba to one thread for itself (`numba.set_num_threads` is per thread);
the caller runs BLAS on one thread (`blas_threads(1)`) while it hands out work.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Iterable

import numba
import numpy as np

from quant import kernels


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """Kept for the process: idle threads cost nothing, starting them costs ~0.1 ms a call."""
    return ThreadPoolExecutor(workers, thread_name_prefix="rax-worker", initializer=numba.set_num_threads,
                              initargs=(1,))


def run_parts(work: Callable[[int], None], parts: Iterable[int], workers: int) -> None:
    """work(part) for every part, on `workers` threads (inline for one); the first error is
    raised here once every part has ended."""
    parts = list(parts)
    if workers <= 1 or len(parts) <= 1:
        for part in parts:
            work(part)
        return
    list(_pool(workers).map(work, parts))


def product(matrix, x: np.ndarray, workers: int) -> np.ndarray:
    """x @ Wᵀ for an `engine.weights.Matrix` W [n_out, n_in] and float32 x [T, n_in]: each
    worker dequantizes and multiplies its own share of W's rows into its columns of the
    result."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty((x.shape[0], matrix.n_out), np.float32)
    bounds = np.linspace(0, matrix.n_out, max(1, min(workers, matrix.n_out)) + 1).astype(np.int64)

    def share(i: int) -> None:
        a, b = int(bounds[i]), int(bounds[i + 1])
        kernels.matmul(matrix.raw[a:b], matrix.ggml_type, matrix.n_in, x, out[:, a:b])
    run_parts(share, range(len(bounds) - 1), workers)
    return out


def dense_product(x: np.ndarray, w: np.ndarray, workers: int) -> np.ndarray:
    """x @ w for float32 arrays, each worker taking its share of x's rows."""
    out = np.empty((x.shape[0], w.shape[1]), np.float32)
    bounds = np.linspace(0, x.shape[0], max(1, min(workers, x.shape[0])) + 1).astype(np.int64)

    def share(i: int) -> None:
        a, b = int(bounds[i]), int(bounds[i + 1])
        np.matmul(x[a:b], w, out=out[a:b])
    run_parts(share, range(len(bounds) - 1), workers)
    return out
