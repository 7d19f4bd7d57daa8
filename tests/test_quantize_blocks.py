"""quant.quantize against llama.cpp's own quantizers, byte for byte.

- the float types and the 32-value formats against gguf-py's `quants.quantize` (which
  llama.cpp's converter writes with), on random, heavy-tailed and edge-case blocks;
- every written type against bytes made by ggml's quantize_row_*_ref itself (the committed
  ggml-quant-blocks.npz, made by tests/fixtures/convert/make_convert_fixtures.py), which is
  what llama-quantize runs without an importance matrix: equal bytes, so equal error.
"""
from __future__ import annotations

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants as gguf_quants

from convert_support import CONVERT
from quant.kernels import dequantize
from quant.quantize import QuantizeError, WRITABLE, quantize
from quant.quantize_k import QK_K

GGUF_PY_TYPES = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q5_0]
GGML_TYPES = [T.Q4_K, T.Q6_K, T.Q8_0, T.Q5_0, T.Q4_0]


def blocks_with_edges(rng, n_rows=40, n_cols=512) -> np.ndarray:
    """Normal, Student-t and awkward rows: zeros, constants, exact rounding ties, huge/tiny values."""
    x = np.concatenate([rng.standard_normal((12, n_cols)) * 0.05,
                        rng.standard_t(2, (12, n_cols)) * 0.02,
                        rng.standard_normal((n_rows - 24, n_cols))]).astype(np.float32)
    x[24] = 0.0
    x[25] = -1.5
    x[26, :32] = np.arange(32, dtype=np.float32) - 15.5          # x / d lands on .5 exactly
    x[27] = rng.standard_normal(n_cols).astype(np.float32) * np.float32(1e-6)
    x[28] = rng.standard_normal(n_cols).astype(np.float32) * np.float32(5e3)
    x[29, 7] = 100.0                                            # a lone outlier
    x[30, :32] = 0.5                                            # ties for the max: the first wins
    x[30, 5] = -0.5
    return x


@pytest.mark.parametrize("qtype", GGUF_PY_TYPES, ids=lambda t: t.name)
def test_quantize_matches_gguf_py_bytes(qtype):
    rng = np.random.default_rng(int(qtype) + 11)
    x = blocks_with_edges(rng)
    ours = quantize(x, qtype)
    theirs = np.asarray(gguf_quants.quantize(x, qtype)).view(np.uint8).reshape(x.shape[0], -1)
    assert ours.shape == theirs.shape
    bad = np.nonzero((ours != theirs).any(axis=1))[0]
    assert bad.size == 0, f"{qtype.name}: rows {bad.tolist()} differ from gguf-py"


@pytest.fixture(scope="module")
def ggml_blocks():
    return dict(np.load(CONVERT / "ggml-quant-blocks.npz"))


@pytest.mark.parametrize("qtype", GGML_TYPES, ids=lambda t: t.name)
def test_quantize_matches_ggml_reference_bytes(qtype, ggml_blocks):
    rows = ggml_blocks["rows_f16"].astype(np.float32)
    ours = quantize(rows, qtype)
    theirs = ggml_blocks[qtype.name]
    block, size = GGML_QUANT_SIZES[qtype]
    differs = (ours.reshape(-1, size) != theirs.reshape(-1, size)).any(axis=1)
    assert not differs.any(), f"{qtype.name}: {differs.sum()} of {differs.size} blocks differ from ggml"


@pytest.mark.parametrize("qtype", [T.Q4_K, T.Q6_K], ids=lambda t: t.name)
def test_k_quant_error_is_small_and_shrinks_with_bits(qtype):
    """Round trip through our kernels' dequantization: the error a 4- or 6-bit code allows."""
    x = (np.random.default_rng(5).standard_normal((64, 2 * QK_K)) * 0.02).astype(np.float32)
    back = dequantize(quantize(x, qtype), qtype, x.shape[1])
    rel = np.sqrt(np.mean((back - x) ** 2) / np.mean(x ** 2))
    assert rel < {T.Q4_K: 0.12, T.Q6_K: 0.03}[qtype], rel


def test_k_quant_keeps_zero_and_constant_super_blocks():
    x = np.zeros((3, QK_K), np.float32)
    x[1] = 0.25
    x[2, :16] = 1e-20           # below ggml's GROUP_MAX_EPS: an all-zero Q6_K block
    for qtype in (T.Q4_K, T.Q6_K):
        back = dequantize(quantize(x, qtype), qtype, QK_K)
        assert np.array_equal(back[0], x[0])
        np.testing.assert_allclose(back[1], x[1], rtol=2e-3)
        assert np.abs(back[2]).max() < 1e-6


def test_quantize_rejects_partial_blocks_and_unwritable_types():
    x = np.ones((2, 48), np.float32)
    with pytest.raises(QuantizeError, match="not whole Q8_0 blocks"):
        quantize(x, T.Q8_0)
    with pytest.raises(QuantizeError, match="Q4_K"):
        quantize(np.ones((1, 64), np.float32), T.Q4_K)
    with pytest.raises(QuantizeError, match="cannot write Q2_K"):
        quantize(np.ones((1, 256), np.float32), T.Q2_K)
    assert T.Q2_K not in WRITABLE and T.Q6_K in WRITABLE
