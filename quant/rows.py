"""How the kernels share rows among threads, and the Numba options they compile with."""
from __future__ import annotations

import numba
import numpy as np
from numba import njit

try:
    from numba.np.ufunc import parallel as _nb_parallel
except ImportError:                     # another Numba layout: the public call only
    _nb_parallel = None

from .halves import load_f16, load_f16x8

ROWS_PER_TASK = 16          # rows one parallel task takes; the task's scratch is allocated once
# Dot products may reorder and fuse float sums (no nnan/ninf: NaN and inf still propagate).
DOT = dict(cache=True, parallel=True, fastmath={"reassoc", "contract", "nsz"})
# Dequantization repeats gguf-py's float32 operations exactly: no fast-math at all.
EXACT = dict(cache=True, parallel=True)


@njit(inline="always")
def n_tasks(n_rows):
    return (n_rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK


@njit(inline="always")
def task_rows(task, n_rows):
    return range(task * ROWS_PER_TASK, min(n_rows, (task + 1) * ROWS_PER_TASK))


@njit(inline="always")
def part_rows(part, parts, n_rows):
    """Rows of part `part` of `parts` equal parts. The int8 kernels take one part per thread
    (numba.get_num_threads(), passed in: reading it inside a kernel defeats Numba's cache),
    so each thread allocates its scratch once per call rather than once per few rows."""
    return range(part * n_rows // parts, (part + 1) * n_rows // parts)


@njit(inline="always")
def block_halves(raw, o, stride, n, out):
    """out[b] = the half at raw[o + stride * b] for b < n: one float16 field of each block of a row."""
    for b in range(0, n - 7, 8):
        load_f16x8(raw, o + stride * b, stride, out, b)
    for b in range(n - n % 8, n):
        out[b] = load_f16(raw, o + stride * b)


@njit(inline="always")
def sum_products(a, b):
    """sum of a[i] * b[i] over a (float32 arrays; vectorised under the DOT fast-math flags)."""
    total = np.float32(0.0)
    for i in range(a.size):
        total += a[i] * b[i]
    return total


def thread_count() -> int:
    """numba.get_num_threads() for the kernels' `threads` argument, without its cost on every
    call: it takes a multiprocessing lock each time (~2 % of a decode step, 187 products a
    token). Once Numba's threads are up, its per-thread count is read directly; any other
    state (or a Numba without that function) takes the public call."""
    if _nb_parallel is not None and getattr(_nb_parallel, "_is_initialized", False):
        read = getattr(_nb_parallel, "_get_num_threads", None)
        if read is not None:
            n = int(read())
            if n > 0:
                return n
    return numba.get_num_threads()
