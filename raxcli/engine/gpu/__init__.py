"""The GPU engine (`--device gpu`): the Qwen3.5 decoder as array expressions on CuPy.

A second implementation of the engine's operations, chosen once at load: weights are
dequantized once and uploaded (float32, or float16 on request), every product is a cuBLAS
GEMM, the DeltaNet states and the KV caches live on the device, and only the logits come
back. The code is written against the NumPy API that CuPy mirrors, so the tests run it with NumPy
standing in for CuPy (tests/test_gpu_engine.py) and, where a GPU is present, on CuPy.
"""
