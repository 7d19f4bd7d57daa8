"""int8-activation products (quant/gemv.py, rowdot.py) against float64 products on the
dequantized weights: plain int8 within llama.cpp-like error, `fine` (with the residual code)
close to exact, and a batch of tokens equal to the tokens one at a time."""
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

from quant import kernels
from quant.activations import FINE, Int8Activations
from quant.rows import ROWS_PER_TASK

TYPES = [T.Q8_0, T.Q4_0, T.Q4_K, T.Q5_K, T.Q6_K]
F16_FIELDS = {T.Q8_0: (0,), T.Q4_0: (0,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,)}
N_ROWS = ROWS_PER_TASK + 3
# three k-quant super-blocks; 23 blocks of 32, so the four-block loop has a tail
COLS = {T.Q8_0: 736, T.Q4_0: 736, T.Q4_K: 768, T.Q5_K: 768, T.Q6_K: 768}


def random_blocks(qtype, rng):
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (N_ROWS, COLS[qtype] // block, size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        scale = (rng.standard_normal(raw.shape[:2]) * 1e-2).astype(np.float16)
        raw[:, :, off:off + 2] = scale.view(np.uint8).reshape(*raw.shape[:2], 2)
    return raw.reshape(N_ROWS, -1)


def relative_error(got, want):
    return np.linalg.norm(got - want) / np.linalg.norm(want)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("fine, tolerance", [(False, 2e-2), (True, 2e-4)], ids=["int8", "fine"])
def test_int8_products_are_close_to_exact(qtype, fine, tolerance, rng):
    raw, n = random_blocks(qtype, rng), COLS[qtype]
    X = rng.standard_normal((3, n)).astype(np.float32)
    want = X.astype(np.float64) @ kernels.dequantize(raw, qtype, n).T.astype(np.float64)
    w = kernels.BoundWeight(raw, qtype, n)
    got = w.matmul_int8(Int8Activations.quantize(X, fine=fine, block=w.activation_block), X)
    assert got.shape == (3, N_ROWS)
    assert 0 < relative_error(got, want) <= tolerance


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_a_batch_of_tokens_equals_the_tokens_one_at_a_time(qtype, rng):
    """Drafted tokens are verified in a batch; their logits must be the single-step ones."""
    raw, n = random_blocks(qtype, rng), COLS[qtype]
    w = kernels.BoundWeight(raw, qtype, n)
    X = rng.standard_normal((4, n)).astype(np.float32)
    block = w.activation_block
    batch = w.matmul_int8(Int8Activations.quantize(X, fine=True, block=block), X)
    for t in range(4):
        one = w.matmul_int8(Int8Activations.quantize(X[t:t + 1], fine=True, block=block), X[t:t + 1])
        np.testing.assert_array_equal(batch[t], one[0])


@pytest.mark.parametrize("block", [32, 256])
def test_fine_activations_keep_the_rounding_residual(block, rng):
    x = rng.standard_normal((2, 512)).astype(np.float32)
    x[0, 256:512] = 0.0                                         # an all-zero block keeps scale 0
    acts = Int8Activations.quantize(x, fine=True, block=block)
    step = np.repeat(acts.xd, block, axis=1)
    coarse = acts.xq * step
    fine = (acts.xq + acts.xq_lo / np.float32(FINE)) * step
    assert np.all(np.abs(coarse - x) <= 0.5 * step + 1e-7)
    assert np.all(np.abs(fine - x) <= 0.5 * step / FINE + 1e-6)
    assert acts.xd[0, -1] == 0 and not acts.xq[0, 256:].any()
    assert np.abs(acts.xq).max() == 127
    np.testing.assert_allclose(acts.sum32, x.reshape(2, -1, 32).sum(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(acts.sum16, x.reshape(2, -1, 16).sum(-1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block", [32, 256])
@pytest.mark.parametrize("fine", [False, True], ids=["int8", "fine"])
def test_activation_codes_round_half_to_even_as_numpys_rint(block, fine, rng):
    x = (rng.standard_normal((2, 1024)) * 3).astype(np.float32)
    x[0, :block] = np.arange(block) - block / 2 + 0.5                  # every code a tie: .5 steps
    x[0, 0] = -(block / 2)                                              # and the block's maximum
    x[1, block:2 * block] = 0.0
    acts = Int8Activations.quantize(x, fine=fine, block=block)
    blocks = x.reshape(2, -1, block)
    d = np.abs(blocks).max(-1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d > 0)
    scaled = blocks * inv
    codes = np.rint(scaled)
    np.testing.assert_array_equal(acts.xq, codes.reshape(2, -1))
    np.testing.assert_array_equal(acts.xd, d[..., 0])
    if fine:
        low = np.rint((scaled - codes) * np.float32(FINE))
        np.testing.assert_array_equal(acts.xq_lo, low.reshape(2, -1))
        np.testing.assert_array_equal(acts.code_sums, (FINE * codes + low).sum(-1))
    else:
        np.testing.assert_array_equal(acts.code_sums, codes.sum(-1))


def test_activations_of_the_wrong_block_size_are_refused(rng):
    raw = random_blocks(T.Q4_K, rng)
    X = rng.standard_normal((1, COLS[T.Q4_K])).astype(np.float32)
    with pytest.raises(ValueError, match="blocks of 256"):
        kernels.BoundWeight(raw, T.Q4_K, COLS[T.Q4_K]).matmul_int8(Int8Activations.quantize(X, block=32), X)



@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens", [1, 3])
def test_matrices_of_one_buffer_in_one_pass_equal_each_alone(qtype, n_tokens, rng):
    """DeltaNet's four input projections (a 3-row β among them) or the MLP's gate and up, as
    views of one file: one kernel pass gives each matrix's products exactly."""
    n, row_bytes = COLS[qtype], random_blocks(qtype, rng).shape[1]
    sizes = [N_ROWS, 3, 1, 2 * N_ROWS]
    file = np.concatenate([random_blocks(qtype, rng)[:1, :7].reshape(-1)] +     # a header: odd offsets
                          [np.concatenate([random_blocks(qtype, rng)] * 2)[:k].reshape(-1) for k in sizes])
    file.flags.writeable = False
    starts = 7 + np.cumsum([0] + [k * row_bytes for k in sizes])
    weights = [kernels.BoundWeight(file[a:a + k * row_bytes].reshape(k, row_bytes), qtype, n)
               for a, k in zip(starts, sizes)]
    group = kernels.BoundGroup(weights)
    X = rng.standard_normal((n_tokens, n)).astype(np.float32)
    acts = Int8Activations.quantize(X, fine=True, block=group.activation_block)
    together = group.matmul_int8(acts, np.empty((n_tokens, group.n_rows), np.float32))
    alone = np.concatenate([w.matmul_int8(acts, X) for w in weights], axis=1)
    np.testing.assert_array_equal(together, alone)


def test_only_matrices_of_one_type_width_and_buffer_share_a_pass(rng):
    raw = random_blocks(T.Q8_0, rng)
    a, b = (kernels.BoundWeight(part, T.Q8_0, COLS[T.Q8_0]) for part in (raw[:4], raw[4:]))
    assert a.shares_pass_with(b)
    other_buffer = kernels.BoundWeight(raw.copy()[:4], T.Q8_0, COLS[T.Q8_0])
    assert not a.shares_pass_with(other_buffer)
    other_type = kernels.BoundWeight(raw.view(np.uint8)[:, :COLS[T.Q8_0] // 32 * 18], T.Q4_0, COLS[T.Q4_0])
    assert not a.shares_pass_with(other_type)
    with pytest.raises(ValueError, match="one type, width and buffer"):
        kernels.BoundGroup([a, other_buffer])


def test_requantizing_into_the_same_arrays_follows_the_new_values(rng):
    x, y = rng.standard_normal((2, 1, 512)).astype(np.float32)
    acts = Int8Activations.quantize(x, fine=True, block=256)
    arrays = [acts.xq, acts.xq_lo, acts.xd, acts.sum32]
    acts.requantize(y)
    fresh = Int8Activations.quantize(y, fine=True, block=256)
    for name in ("xq", "xq_lo", "xd", "xd_fine", "sum16", "sum32", "code_sums"):
        np.testing.assert_array_equal(getattr(acts, name), getattr(fresh, name))
    assert all(a is b for a, b in zip(arrays, [acts.xq, acts.xq_lo, acts.xd, acts.sum32]))
    with pytest.raises(ValueError, match="hold"):
        acts.requantize(np.zeros((2, 512), np.float32))

# -- int16 products for many tokens (quant/gemm.py) ---------------------------------------------
@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n_tokens", [5, 37], ids=["one_group", "ragged_groups"])
def test_int16_products_for_many_tokens_are_close_to_exact(qtype, n_tokens, rng):
    from quant.gemm import Int16Tokens
    raw, n = random_blocks(qtype, rng), COLS[qtype]
    X = rng.standard_normal((n_tokens, n)).astype(np.float32)
    want = X.astype(np.float64) @ kernels.dequantize(raw, qtype, n).T.astype(np.float64)
    w = kernels.BoundWeight(raw, qtype, n)
    assert w.has_int16
    got = w.matmul_int16(Int16Tokens.quantize(X), X)
    assert got.shape == (n_tokens, N_ROWS)             # N_ROWS is no multiple of the 8-row tile
    assert 0 < relative_error(got, want) <= 2e-4


def test_int16_activations_keep_14_bits_per_run_of_32(rng):
    from quant.gemm import Int16Tokens
    from quant.tile16 import TOKENS, X16_MAX
    x = rng.standard_normal((TOKENS + 3, 64)).astype(np.float32)        # a group and a ragged one
    acts = Int16Tokens.quantize(x)
    assert acts.x16.shape == (2, 32, TOKENS, 2)                         # [groups, pairs, token, 2]
    every = acts.x16.transpose(0, 2, 1, 3).reshape(2 * TOKENS, 64)      # back to [token, value]
    values = every[:len(x)]
    scale = np.repeat(acts.xd.transpose(0, 2, 1).reshape(2 * TOKENS, 2)[:len(x)], 32, axis=1)
    assert np.abs(values).max() == X16_MAX
    assert np.all(np.abs(values * scale - x) <= 0.5 * scale + 1e-7)
    assert not every[len(x):].any()                                     # padding tokens
    np.testing.assert_allclose(acts.xsum32, x.reshape(len(x), 2, 32).sum(-1), rtol=1e-5, atol=1e-5)
