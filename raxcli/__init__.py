"""rax: Qwen3.5-family vision-language models from GGUF files, on the CPU.

Importing `quant` first sets its defaults (the Numba cache folder, OpenMP spinning) before
anything imports Numba. One more process-wide default is set here, before NumPy loads
OpenBLAS (it reads it once):
OPENBLAS_THREAD_TIMEOUT=1 (unless already set) makes OpenBLAS's worker threads sleep as soon
as a product is done. By default they spin for a while, and on two cores the spinning took
the cores from the Numba kernels that do the engine's heavy products (measured: a 128-token
prefill 41 → 67 tok/s); BLAS itself only serves the small products between them.
"""
import os

import quant  # noqa: F401  (its defaults, before Numba loads)

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
