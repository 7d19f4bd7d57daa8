"""The thread count of the OpenBLAS that NumPy loaded, so that --threads bounds BLAS too.

NumPy has no API for it (threadpoolctl does it this way): find the loaded OpenBLAS in the
process's memory map and call its set_num_threads, whatever prefix or suffix the build gave
the symbol (NumPy's wheels: scipy_openblas_set_num_threads64_). No OpenBLAS, no change.
"""
from __future__ import annotations

import ctypes

_NAMES = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
          "openblas_set_num_threads64_", "openblas_set_num_threads")


def set_blas_threads(n: int) -> bool:
    """Returns whether an OpenBLAS was found and told."""
    import numpy  # noqa: F401  (loads OpenBLAS)
    try:
        paths = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()}
    except OSError:
        return False
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _NAMES:
            if hasattr(lib, name):
                getattr(lib, name)(ctypes.c_int(n))
                return True
    return False
