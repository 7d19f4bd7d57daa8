"""The chunked and fused forms of the gated delta rule against the step-by-step reference."""
import numpy as np
import pytest

from raxcli.engine import ops
from raxcli.engine.deltanet import chunked_delta_rule, l2_normalize, recurrent_delta_rule


def random_inputs(T, H=4, dk=16, dv=24, seed=0):
    rng = np.random.default_rng(seed)
    q = l2_normalize(rng.standard_normal((T, H, dk)).astype(np.float32)) * dk ** -0.5
    k = l2_normalize(rng.standard_normal((T, H, dk)).astype(np.float32))
    v = rng.standard_normal((T, H, dv)).astype(np.float32)
    g = -rng.uniform(0.01, 1.0, (T, H)).astype(np.float32)
    beta = rng.uniform(0.05, 0.95, (T, H)).astype(np.float32)
    state = rng.standard_normal((H, dk, dv)).astype(np.float32) * 0.3
    return q, k, v, g, beta, state


@pytest.mark.parametrize("T", [
    1,      # a single token through the chunked path
    7,      # shorter than one chunk (padded)
    64,     # exactly one chunk
    65,     # spills one token into a second chunk
    150,    # several chunks, ragged end
])
def test_chunked_delta_rule_matches_recurrence(T):
    q, k, v, g, beta, state = random_inputs(T)
    s_ref, s_chunk = state.copy(), state.copy()
    o_ref = recurrent_delta_rule(q, k, v, g, beta, s_ref)
    o_chunk = chunked_delta_rule(q, k, v, g, beta, s_chunk)
    np.testing.assert_allclose(o_chunk, o_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s_chunk, s_ref, rtol=1e-4, atol=1e-4)


def test_unit_lower_inverse_inverts():
    rng = np.random.default_rng(2)
    a = np.tril(rng.standard_normal((3, 2, 64, 64)).astype(np.float32) * 0.1, -1)
    inv = ops.unit_lower_inverse(a)
    eye = np.eye(64, dtype=np.float32)
    np.testing.assert_allclose((eye + a) @ inv, np.broadcast_to(eye, a.shape), atol=1e-4)


def test_causal_conv_carries_state_across_calls():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 6)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    whole = ops.causal_conv1d(x, w, np.zeros((3, 6), np.float32))
    state = np.zeros((3, 6), np.float32)
    parts = [ops.causal_conv1d(x[a:b], w, state) for a, b in [(0, 4), (4, 5), (5, 10)]]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6, atol=1e-6)
    # reference: out[t, c] = sum_j w[c, j] * x[t - 3 + j, c]
    padded = np.concatenate([np.zeros((3, 6), np.float32), x])
    ref = np.stack([(padded[t:t + 4].T * w).sum(1) for t in range(10)])
    np.testing.assert_allclose(whole, ref, rtol=1e-5, atol=1e-6)
