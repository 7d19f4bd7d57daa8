"""Quantized tensors: ggml block formats (`formats`) and Numba kernels on them (`kernels`).

Importing `quant` sets one process-wide default: GOMP_SPINCOUNT=10000 (unless already set),
read by the OpenMP runtime behind Numba's parallel kernels when it starts. By default idle
OpenMP workers spin for ~0.3 s worth of iterations after each kernel and starve OpenBLAS
(measured on 2 cores: prefill tiles 10x slower); OMP_WAIT_POLICY=passive instead costs
~0.1 ms of wake-up per call, which small decode matvecs feel. 10000 spins keeps both fast.
"""
import os

os.environ.setdefault("GOMP_SPINCOUNT", "10000")
