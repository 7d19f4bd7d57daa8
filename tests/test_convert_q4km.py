"""The q4_0 / q4_k_m mixes: the tensor types llama-quantize chooses, and its bytes.

Without llama.cpp: a k256-shaped random checkpoint (every input width a multiple of 256, the
shape of the committed k256-Q4_K_M.gguf, which llama-quantize made) must get the same type
for every tensor. With llama-quantize present (RAX_LLAMA_BIN or /work/llama-build/build/bin):
rax's f32 output quantized by llama-quantize must equal rax's own q4_k_m / q4_0 output tensor
for tensor, on normal and on heavy-tailed (Student-t) weights, deeper models included (the
"more bits" layer pattern), and the per-tensor error can then be no worse.
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from convert_support import GGUF, LLAMA_QUANTIZE, dequantized, differences, read_gguf
from make_random_checkpoint import SHAPES, make_checkpoint
from quant import convert
from quant.tensor_types import FILE_TYPES, llama_quantize_types

from gguf import GGMLQuantizationType as T

needs_llama_quantize = pytest.mark.skipif(not LLAMA_QUANTIZE.is_file(), reason="llama-quantize not built")


def quantize(src, out, type_name):
    plans, close = convert.plan(src, out, type_name)
    try:
        convert.run(plans)
    finally:
        close()


def types_of(path):
    return {name: t[0] for name, t in read_gguf(path)[1].items()}


def test_q4_k_m_types_equal_llama_quantize_choices_on_k256(tmp_path):
    ck = make_checkpoint(tmp_path / "k256", "k256", seed=4)
    quantize(ck, tmp_path / "q4km.gguf", "q4_k_m")
    ours, reference = types_of(tmp_path / "q4km.gguf"), types_of(GGUF / "k256-Q4_K_M.gguf")
    assert ours == reference
    assert sorted(n for n, t in ours.items() if t == "Q6_K") == [
        "blk.2.attn_qkv.weight", "blk.2.ffn_down.weight", "blk.4.attn_v.weight", "blk.4.ffn_down.weight",
        "token_embd.weight"]


def test_rows_that_are_not_whole_super_blocks_fall_back_like_llama_quantize():
    shapes = {"token_embd.weight": ((1536, 64), T.F32), "blk.0.ffn_down.weight": ((64, 128), T.F32),
              "blk.0.ffn_up.weight": ((128, 64), T.F32), "blk.0.attn_output.weight": ((64, 256), T.F32),
              "blk.0.ssm_conv1d.weight": ((256, 4), T.F32), "blk.0.attn_norm.weight": ((64,), T.F32),
              "blk.0.odd.weight": ((8, 40), T.F32)}
    types = llama_quantize_types(shapes, FILE_TYPES["q4_k_m"], 1)
    assert types == {"token_embd.weight": T.Q8_0,          # tied output: Q6_K needs 256 → Q8_0
                     "blk.0.ffn_down.weight": T.Q8_0,      # Q6_K (first layer) → Q8_0
                     "blk.0.ffn_up.weight": T.Q5_0,        # Q4_K → Q5_0
                     "blk.0.attn_output.weight": T.Q4_K,
                     "blk.0.ssm_conv1d.weight": T.F32, "blk.0.attn_norm.weight": T.F32,
                     "blk.0.odd.weight": T.F16}            # not even 32-value blocks


def relative_errors(source: dict, quantized: dict) -> dict[str, float]:
    return {n: float(np.sqrt(np.mean((quantized[n] - w) ** 2) / max(np.mean(w ** 2), 1e-30)))
            for n, w in source.items()}


@needs_llama_quantize
@pytest.mark.parametrize("shape,dist,type_name", [
    ("k256", "normal", "q4_k_m"),
    ("k256", "student-t", "q4_k_m"),
    ("k256-deep", "student-t", "q4_k_m"),      # 12 layers + MTP: the use_more_bits pattern
    ("tiny", "normal", "q4_k_m"),              # 64-wide rows: every fallback
    ("tiny", "student-t", "q4_0"),
])
def test_quantize_equals_llama_quantize_of_the_f32_file(tmp_path, shape, dist, type_name):
    spec = dict(SHAPES["k256"], layers=12) if shape == "k256-deep" else shape
    ck = make_checkpoint(tmp_path / "ck", spec, dist, seed=9)
    quantize(ck, tmp_path / "f32.gguf", "f32")
    quantize(ck, tmp_path / "rax.gguf", type_name)
    res = subprocess.run([str(LLAMA_QUANTIZE), str(tmp_path / "f32.gguf"), str(tmp_path / "llama.gguf"),
                          type_name.upper(), "1"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert differences(tmp_path / "rax.gguf", tmp_path / "llama.gguf") == []
    source = dequantized(tmp_path / "f32.gguf")
    ours = relative_errors(source, dequantized(tmp_path / "rax.gguf"))
    theirs = relative_errors(source, dequantized(tmp_path / "llama.gguf"))
    worse = {n: (ours[n], theirs[n]) for n in ours if ours[n] > theirs[n]}
    assert not worse
