"""The fused DeltaNet kernel (engine/kernels.py) against the NumPy steps of deltanet.py."""
import numpy as np
import pytest

from raxcli.engine import ops
from raxcli.engine.deltanet import l2_normalize, recurrent_delta_rule, softplus
from raxcli.engine.kernels import deltanet_recurrent

EPS = 1e-6
NO_HISTORY = np.empty((0, 1, 1, 1), np.float32)
PER_TOKEN = ("qkv", "z", "b_raw", "a_raw")


def layer_inputs(T, n_k, n_v, d, K=4, seed=0):
    rng = np.random.default_rng(seed)
    conv_dim = 2 * n_k * d + n_v * d
    f = lambda *shape, s=1.0: (rng.standard_normal(shape) * s).astype(np.float32)  # noqa: E731
    return dict(qkv=f(T, conv_dim), z=f(T, n_v * d), b_raw=f(T, n_v), a_raw=f(T, n_v),
                conv_w=f(conv_dim, K, s=0.5), conv_state=f(K - 1, conv_dim),
                ssm_a=-rng.uniform(0.5, 8, n_v).astype(np.float32), dt_bias=f(n_v),
                norm_w=(1 + f(d, s=0.1)), states=f(n_v, d, d, s=0.3))


def numpy_layer(p, n_k, d):
    """GatedDeltaNet's steps after the projections, as deltanet.py writes them."""
    T, n_v = p["b_raw"].shape
    conv_state, states = p["conv_state"].copy(), p["states"].copy()
    qkv = ops.silu(ops.causal_conv1d(p["qkv"], p["conv_w"], conv_state))
    key_dim = n_k * d
    q = l2_normalize(qkv[:, :key_dim].reshape(T, n_k, d)) * d ** -0.5
    k = l2_normalize(qkv[:, key_dim:2 * key_dim].reshape(T, n_k, d))
    v = qkv[:, 2 * key_dim:].reshape(T, n_v, d)
    q, k = np.tile(q, (1, n_v // n_k, 1)), np.tile(k, (1, n_v // n_k, 1))
    beta = ops.sigmoid(p["b_raw"])
    g = p["ssm_a"] * softplus(p["a_raw"] + p["dt_bias"])
    o = recurrent_delta_rule(q, k, v, g, beta, states)
    out = ops.rms_norm(o, p["norm_w"], EPS) * ops.silu(p["z"].reshape(T, n_v, d))
    return out.reshape(T, n_v * d), conv_state, states


def fused(p, n_k, history=NO_HISTORY):
    """The kernel keeps S transposed (DeltaNetCache.recurrent): in and out in S's layout here."""
    p = {k: v.copy() for k, v in p.items()}
    p["states"] = np.ascontiguousarray(p["states"].transpose(0, 2, 1))
    out = np.empty_like(p["z"])
    deltanet_recurrent(p["qkv"], p["z"], p["b_raw"], p["a_raw"], np.ascontiguousarray(p["conv_w"].T), p["conv_state"],
                       p["ssm_a"],
                       p["dt_bias"], p["norm_w"], EPS, n_k, p["states"], history, out)
    return out, p["conv_state"], p["states"].transpose(0, 2, 1)


@pytest.mark.parametrize("T, n_k, n_v", [
    (1, 2, 2),      # one decode step
    (5, 2, 2),      # a short batch (drafted tokens), longer than the conv's memory
    (2, 2, 4),      # tiled v-heads: v-head j reads k-head j mod n_k
])
def test_fused_recurrent_layer_matches_numpy_steps(T, n_k, n_v):
    d = 16
    p = layer_inputs(T, n_k, n_v, d)
    want_out, want_conv, want_states = numpy_layer(p, n_k, d)
    out, conv, states = fused(p, n_k)
    np.testing.assert_allclose(out, want_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(conv, want_conv, rtol=0, atol=0)
    np.testing.assert_allclose(states, want_states, rtol=1e-4, atol=1e-5)


def test_tentative_tokens_leave_the_state_and_write_each_step_apart():
    T, n_k, n_v, d = 3, 2, 2, 16
    p = layer_inputs(T, n_k, n_v, d, seed=1)
    history = np.zeros((4, n_v, d, d), np.float32)
    out, conv, states = fused(p, n_k, history)
    np.testing.assert_array_equal(conv, p["conv_state"])          # untouched until commit
    np.testing.assert_array_equal(states, p["states"])
    for t in range(T):            # the state after token t is the state after feeding t + 1 tokens
        prefix = {k: (v[:t + 1] if k in PER_TOKEN else v) for k, v in p.items()}
        _, _, want = numpy_layer(prefix, n_k, d)
        np.testing.assert_allclose(history[t].transpose(0, 2, 1), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, numpy_layer(p, n_k, d)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("T, n_past", [(1, 0), (1, 37), (4, 20)])
def test_short_attention_matches_the_blocked_numpy_attention(T, n_past):
    from raxcli.engine.attention import causal_attention
    from raxcli.engine.kernels import fused_causal_attention
    rng = np.random.default_rng(T + n_past)
    q = rng.standard_normal((8, T, 32)).astype(np.float32)
    keys = rng.standard_normal((2, n_past + T, 32)).astype(np.float32)
    values = rng.standard_normal((2, n_past + T, 32)).astype(np.float32)
    out = np.empty((T, 8, 32), np.float32)
    fused_causal_attention(q, keys, values, n_past, out)
    np.testing.assert_allclose(out, causal_attention(q, keys, values, n_past), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T, n_past", [(1, 0), (1, 37), (3, 300)])
def test_short_attention_reads_a_float16_cache_as_its_float32_values(T, n_past):
    from raxcli.engine.attention import causal_attention
    from raxcli.engine.kernels import fused_causal_attention
    rng = np.random.default_rng(T + n_past)
    q = rng.standard_normal((8, T, 64)).astype(np.float32)
    keys = rng.standard_normal((2, n_past + T + 5, 64)).astype(np.float16)     # spare capacity, unread
    values = rng.standard_normal((2, n_past + T + 5, 64)).astype(np.float16)
    out = np.empty((T, 8, 64), np.float32)
    fused_causal_attention(q, keys.view(np.uint16), values.view(np.uint16), n_past, out)
    want = causal_attention(q, keys[:, :n_past + T].astype(np.float32), values[:, :n_past + T].astype(np.float32), n_past)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_a_float16_kv_cache_keeps_what_it_is_given_to_half_precision():
    from raxcli.engine.state import KVCache
    rng = np.random.default_rng(0)
    cache = KVCache(2, 16, dtype=np.float16)
    k, v = rng.standard_normal((2, 300, 16)).astype(np.float32), rng.standard_normal((2, 300, 16)).astype(np.float32)
    cache.append(k[:, :100], v[:, :100])
    keys, values = cache.append(k[:, 100:], v[:, 100:])        # grows: the first 100 carried over
    assert keys.dtype == np.float16 and keys.shape == (2, 300, 16)
    np.testing.assert_allclose(keys, k, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(values, v, rtol=1e-3, atol=1e-4)
    kk, vv = cache.kernel_arrays()
    assert kk.dtype == np.uint16 and np.shares_memory(kk, cache.keys)


def test_a_reserved_kv_cache_takes_its_tokens_without_reallocating():
    from raxcli.engine.state import KVCache
    rng = np.random.default_rng(1)
    cache = KVCache(2, 8, dtype=np.float16)
    k = rng.standard_normal((2, 610, 8)).astype(np.float32)
    cache.append(k[:, :10], k[:, :10])    # room for 266 (KVCache.GROW)
    cache.reserve(610)                    # grows once, exactly, keeping the first 10
    keys_array = cache.keys
    assert keys_array.shape[1] == 610
    for a in range(10, 610, 200):
        cache.append(k[:, a:a + 200], k[:, a:a + 200])
    assert cache.keys is keys_array and cache.length == 610
    np.testing.assert_allclose(cache.keys, k, rtol=1e-3, atol=1e-3)


def test_fast_exp_is_within_two_ulp_of_exp_over_float32s_range():
    from numba import njit
    from raxcli.engine.kernels import fast_exp

    @njit
    def exp_all(x, out):
        for i in range(x.size):
            out[i] = fast_exp(x[i])
    x = np.concatenate([np.linspace(-87, 88, 200_001), [0.0, -1e-8, 1e-8]]).astype(np.float32)
    got = np.empty_like(x)
    exp_all(x, got)
    want = np.exp(x.astype(np.float64))
    ulp = np.spacing(want.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(got - want) / ulp) <= 2.0
    beyond = np.array([88.3, 89.0, 200.0, 1e30, -88.0, -1e30], np.float32)
    exp_all(beyond, got[:6])
    assert np.isfinite(got[:6]).all() and (got[:4] > 2e38).all() and (got[4:6] < 1.3e-38).all()


def test_rms_norm_and_swiglu_match_their_numpy_definitions():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 64)).astype(np.float32)
    w = rng.standard_normal(64).astype(np.float32)
    want = x / np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(ops.rms_norm(x, w, 1e-6), want, rtol=1e-5, atol=1e-6)
    g, u = x[0], x[1]
    np.testing.assert_allclose(ops.swiglu(g, u), g / (1 + np.exp(-g)) * u, rtol=1e-5, atol=1e-6)


def test_swiglu_silu_and_gate_give_the_same_in_place_and_out_of_place():
    rng = np.random.default_rng(6)
    g, u = (rng.normal(0, 4, (2, 300)).astype(np.float32) for _ in range(2))
    want_swiglu = g / (1 + np.exp(-g.astype(np.float64))) * u
    np.testing.assert_allclose(ops.swiglu(g, u), want_swiglu, rtol=1e-5, atol=1e-6)
    in_place = g.copy()
    assert ops.swiglu(in_place, u, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, ops.swiglu(g, u))
    np.testing.assert_allclose(ops.silu(g), g / (1 + np.exp(-g.astype(np.float64))), rtol=1e-5, atol=1e-6)
    x = g.copy()
    np.testing.assert_array_equal(ops.silu(x, out=x), ops.silu(g))
    gated = ops.times_sigmoid_(u.copy(), g)
    np.testing.assert_allclose(gated, u / (1 + np.exp(-g.astype(np.float64))), rtol=1e-5, atol=1e-6)
    extreme = np.array([-200.0, -90.0, 0.0, 90.0, 200.0], np.float32)
    np.testing.assert_allclose(ops.silu(extreme), [0.0, 0.0, 0.0, 90.0, 200.0], atol=1e-35)    # no inf, no NaN


def test_rope_rotates_the_first_n_rot_dims_in_place():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    cos, sin = ops.rope_cos_sin(np.broadcast_to(np.arange(7, 12), (3, 5)), 8, 10000.0, (2, 1, 1))
    half = 4
    want = x.copy()
    want[..., :half] = x[..., :half] * cos[:, :half] - x[..., half:8] * sin[:, :half]
    want[..., half:8] = x[..., half:8] * cos[:, half:] + x[..., :half] * sin[:, half:]
    got = x.copy()
    assert ops.apply_rope(got, cos, sin) is got
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[..., 8:], x[..., 8:])          # past n_rot: untouched
