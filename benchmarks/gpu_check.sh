#!/usr/bin/env bash
# The GPU engine's checks and figures in one run, for a machine with an NVIDIA GPU, CuPy and
# this project installed (pip install -e '.[gpu,test]'):
#
#     bash benchmarks/gpu_check.sh [FOLDER]      # FOLDER for the 2B-shape files (default /tmp/rax-gpu)
#
# 1. tests/test_gpu_engine.py: the CuPy engine against the NumPy stand-in and transformers'
#    logits (its GPU tests skip elsewhere);
# 2. a random-weight GGUF of the Qwen3.5-2B shape (benchmarks/make_random_gguf.py, F16), made
#    Q8_0 by `rax quantize` (no llama.cpp needed);
# 3. `rax bench --device gpu` on it, weights in float32 and in float16, a 512-token prompt.
set -euo pipefail
out=${1:-/tmp/rax-gpu}
python -c "import cupy; print('cupy', cupy.__version__, '-', cupy.cuda.runtime.getDeviceCount(), 'CUDA device(s)')"
python -m pytest -q tests/test_gpu_engine.py
python benchmarks/make_random_gguf.py --out "$out" --types
q8="$out/qwen35-2b-random-Q8_0.gguf"
[ -f "$q8" ] || rax quantize "$out/qwen35-2b-random-F16.gguf" "$q8" --type q8_0
for weights in float32 float16; do
    echo "weights $weights:"
    RAX_GPU_WEIGHTS=$weights rax bench --model "$q8" --device gpu --prompt-tokens 512 --gen-tokens 128 --json
done
