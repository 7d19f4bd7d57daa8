"""quant.kernels against gguf-py's reference dequantization, for every ggml type rax reads.

Weights come two ways: gguf-py quantizing random floats (the float types and the 32-value
formats, the only ones gguf-py can write), and random bytes with sane float16 scales (every
quantized type), which set every bit of the packed codes and scales, -128 in Q8_0 included.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants as gguf_quants

from quant import formats, kernels
from quant.rows import ROWS_PER_TASK

ALL_TYPES = sorted(formats.SUPPORTED, key=int)
FLOAT_TYPES = {T.F32, T.F16, T.BF16}
GGUF_QUANTIZES = FLOAT_TYPES | {T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1}
INT8_TYPES = [T.Q8_0, T.Q4_0, T.Q4_K, T.Q5_K, T.Q6_K]
# byte offsets of the float16 scales/minimums inside one block
F16_FIELDS = {T.Q8_0: (0,), T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2),
              T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}

N_ROWS = 2 * ROWS_PER_TASK + 5          # not a multiple of the rows a thread task takes
# a float matvec may sum in any order: its error is float32 rounding over n_cols terms
MATVEC_RTOL = 1e-5
# int8 activations: x rounded to 1/254 of its block's largest |value|: about 0.6% per row for
# blocks of 32 (Q8_0, Q4_0), up to 2.1% for the k-quants' blocks of 256 (llama.cpp's q8_K)
INT8_RTOL = 3e-2


def cols_for(qtype) -> int:
    """A row length of several blocks; float rows get a ragged tail past the 32-value runs."""
    block = GGML_QUANT_SIZES[qtype][0]
    return 100 if block == 1 else 2 * max(block, 256)


def quantized_weights(qtype, n_rows, n_cols, rng):
    """gguf-py's bytes for random float weights (scaled like a real layer)."""
    w = rng.standard_normal((n_rows, n_cols), dtype=np.float32) * np.float32(0.05)
    return np.ascontiguousarray(gguf_quants.quantize(w, qtype)).view(np.uint8).reshape(n_rows, -1)


def random_block_weights(qtype, n_rows, n_cols, rng):
    """Random bytes for every block, with finite float16 scales of weight-like size."""
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (n_rows, n_cols // block, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scale = (rng.standard_normal(raw.shape[:2]) * 1e-2).astype(np.float16)
        raw[:, :, off:off + 2] = scale.view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(n_rows, -1)


SOURCES = {"gguf_quantized": quantized_weights, "random_blocks": random_block_weights}
CASES = [pytest.param(t, s, id=f"{t.name}-{s}") for t in ALL_TYPES for s in SOURCES
         if (s == "gguf_quantized") == (t in GGUF_QUANTIZES) or (s == "random_blocks" and t not in FLOAT_TYPES)]


def weights(qtype, source, n_rows=N_ROWS, seed=0):
    rng = np.random.default_rng([int(qtype), seed])
    n_cols = cols_for(qtype)
    return SOURCES[source](qtype, n_rows, n_cols, rng), n_cols


def reference(raw, qtype, n_cols):
    return gguf_quants.dequantize(raw, qtype).reshape(raw.shape[0], n_cols).astype(np.float32, copy=False)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# -- dequantization: bit for bit ---------------------------------------------------------------
@pytest.mark.parametrize("qtype, source", CASES)
def test_dequantize_matches_gguf_bit_for_bit(qtype, source):
    raw, n_cols = weights(qtype, source)
    got, want = kernels.dequantize(raw, qtype, n_cols), reference(raw, qtype, n_cols)
    assert got.dtype == np.float32 and got.shape == want.shape
    differ = np.argwhere(got.view(np.uint32) != want.view(np.uint32))
    assert differ.size == 0, f"{len(differ)} values differ, first at (row, col) {differ[:5].tolist()}"


@pytest.mark.parametrize("qtype, source", CASES)
def test_dequantize_of_a_row_slice_matches_gguf(qtype, source):
    raw, n_cols = weights(qtype, source)
    part = raw[5:N_ROWS - 3]                          # a zero-copy view starting mid-matrix
    np.testing.assert_array_equal(kernels.dequantize(part, qtype, n_cols), reference(part, qtype, n_cols))


@pytest.mark.parametrize("qtype, source", CASES)
def test_dequantize_rows_returns_the_same_rows(qtype, source):
    raw, n_cols = weights(qtype, source)
    ids = np.array([N_ROWS - 1, 0, 7, 7, 20])       # any order, repeats allowed
    np.testing.assert_array_equal(kernels.dequantize_rows(raw, qtype, n_cols, ids), reference(raw, qtype, n_cols)[ids])


def test_dequantize_reads_a_read_only_memory_map(tmp_path):
    raw, n_cols = weights(T.Q4_K, "random_blocks")
    path = tmp_path / "w.bin"
    raw.tofile(path)
    mapped = np.memmap(path, dtype=np.uint8, mode="r", shape=raw.shape)
    np.testing.assert_array_equal(kernels.dequantize(mapped, T.Q4_K, n_cols), reference(raw, T.Q4_K, n_cols))


# -- matvec ------------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype, source", CASES)
def test_matvec_equals_dequantized_product(qtype, source, rng):
    raw, n_cols = weights(qtype, source)
    x = rng.standard_normal(n_cols, dtype=np.float32)
    want = reference(raw, qtype, n_cols).astype(np.float64) @ x
    got = kernels.matvec(raw, qtype, n_cols, x)
    assert got.dtype == np.float32 and got.shape == (N_ROWS,)
    assert np.linalg.norm(got - want) <= MATVEC_RTOL * np.linalg.norm(want)


@pytest.mark.parametrize("n_rows", [1, ROWS_PER_TASK - 1, ROWS_PER_TASK, 3 * ROWS_PER_TASK + 1])
def test_matvec_covers_every_row_for_any_row_count(n_rows, rng):
    raw, n_cols = weights(T.Q8_0, "gguf_quantized", n_rows=n_rows)
    x = rng.standard_normal(n_cols, dtype=np.float32)
    out = np.full(n_rows, np.nan, np.float32)
    kernels.matvec(raw, T.Q8_0, n_cols, x, out=out)
    np.testing.assert_allclose(out, reference(raw, T.Q8_0, n_cols) @ x, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("qtype", INT8_TYPES, ids=lambda t: t.name)
def test_int8_activation_matvec_is_close_to_the_exact_path(qtype, rng):
    source = "gguf_quantized" if qtype in GGUF_QUANTIZES else "random_blocks"
    raw, n_cols = weights(qtype, source)
    assert kernels.has_int8_kernel(qtype)
    x = rng.standard_normal(n_cols, dtype=np.float32)
    exact = kernels.matvec(raw, qtype, n_cols, x)
    fast = kernels.matvec(raw, qtype, n_cols, x, int8_activations=True)
    error = np.linalg.norm(fast - exact) / np.linalg.norm(exact)
    assert 0 < error <= INT8_RTOL


def test_int8_activations_fall_back_to_the_exact_path_without_a_kernel(rng):
    raw, n_cols = weights(T.Q3_K, "random_blocks")
    x = rng.standard_normal(n_cols, dtype=np.float32)
    assert not kernels.has_int8_kernel(T.Q3_K)
    np.testing.assert_array_equal(kernels.matvec(raw, T.Q3_K, n_cols, x, int8_activations=True),
                                  kernels.matvec(raw, T.Q3_K, n_cols, x))


def test_quantize_activations_round_trips_within_half_a_step(rng):
    x = rng.standard_normal(256, dtype=np.float32)
    x[32:64] = 0.0                                    # an all-zero block keeps scale 0
    xq, xd = kernels.quantize_activations(x)
    assert xq.dtype == np.int8 and xd.dtype == np.float32 and xd[1] == 0
    step = np.repeat(xd, 32)
    assert np.all(np.abs(xq * step - x) <= 0.5 * step + 1e-7)
    assert np.abs(xq).max() == 127


# -- matmul ------------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype, source", CASES)
@pytest.mark.parametrize("n_tokens", [3, kernels.MATVEC_TOKENS + 4], ids=["matvec_per_token", "tiles"])
def test_matmul_equals_dequantized_product(qtype, source, n_tokens, rng, monkeypatch):
    raw, n_cols = weights(qtype, source)
    monkeypatch.setattr(kernels, "TILE_BYTES", 4 * n_cols * 10)   # 4 tiles, the last one short
    X = rng.standard_normal((n_tokens, n_cols), dtype=np.float32)
    want = X.astype(np.float64) @ reference(raw, qtype, n_cols).T.astype(np.float64)
    got = kernels.matmul(raw, qtype, n_cols, X)
    assert got.dtype == np.float32 and got.shape == (n_tokens, N_ROWS)
    assert np.linalg.norm(got - want) <= MATVEC_RTOL * np.linalg.norm(want)


def test_matmul_of_one_token_is_matvec(rng):
    raw, n_cols = weights(T.Q6_K, "random_blocks")
    x = rng.standard_normal((1, n_cols), dtype=np.float32)
    np.testing.assert_array_equal(kernels.matmul(raw, T.Q6_K, n_cols, x)[0], kernels.matvec(raw, T.Q6_K, n_cols, x[0]))


# -- formats and argument checks -----------------------------------------------------------------
def test_row_nbytes_follows_gguf_quant_sizes():
    assert formats.row_nbytes(T.Q8_0, 2048) == 64 * 34
    assert formats.row_nbytes(T.Q4_K, 2048) == 8 * 144
    assert formats.row_nbytes(T.F16, 7) == 14
    with pytest.raises(ValueError, match="whole blocks"):
        formats.row_nbytes(T.Q6_K, 100)


@pytest.mark.parametrize("qtype", [T.IQ2_XXS, T.Q8_1, T.TQ1_0, T.MXFP4, T.I8], ids=lambda t: t.name)
def test_unsupported_types_raise_a_clear_error(qtype):
    assert not formats.is_supported(qtype)
    with pytest.raises(formats.UnsupportedTensorType, match=qtype.name):
        kernels.dequantize(np.zeros((1, 64), np.uint8), qtype, 32)
    assert issubclass(formats.UnsupportedTensorType, ValueError)


def test_supported_types_accept_names_and_numbers():
    assert formats.is_supported("q4_k") and formats.is_supported(int(T.Q6_K))
    assert not formats.is_supported(9999) and not formats.is_supported("Q9_9")


def test_mismatched_shapes_are_rejected(rng):
    raw, n_cols = weights(T.Q4_0, "gguf_quantized")
    with pytest.raises(ValueError, match="bytes"):
        kernels.matvec(raw, T.Q4_0, n_cols + 32, np.zeros(n_cols + 32, np.float32))
    with pytest.raises(ValueError, match="shape"):
        kernels.matvec(raw, T.Q4_0, n_cols, np.zeros(n_cols - 1, np.float32))
    with pytest.raises(IndexError):
        kernels.dequantize_rows(raw, T.Q4_0, n_cols, [N_ROWS])


# -- blocks written by llama.cpp ---------------------------------------------------------------
FIXTURES = sorted((Path(__file__).parent / "fixtures" / "gguf").glob("*.gguf"))


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_every_tensor_of_a_llama_cpp_file_dequantizes_bit_for_bit(path):
    from gguf import GGUFReader
    reader = GGUFReader(path)
    for tensor in reader.tensors:
        qtype, n_cols = T(tensor.tensor_type), int(tensor.shape[0])
        raw = np.asarray(tensor.data).view(np.uint8)
        raw = raw.reshape(-1, formats.row_nbytes(qtype, n_cols))
        want = reference(raw, qtype, n_cols)
        np.testing.assert_array_equal(kernels.dequantize(raw, qtype, n_cols), want, err_msg=tensor.name)
        x = np.random.default_rng(0).standard_normal(n_cols, dtype=np.float32)
        error = kernels.matvec(raw, qtype, n_cols, x) - want.astype(np.float64) @ x
        # relative to sum |w x|: a row of a norm weight can cancel to ~0
        assert np.linalg.norm(error) <= MATVEC_RTOL * np.linalg.norm(np.abs(want) @ np.abs(x)), tensor.name
