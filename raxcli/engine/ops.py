"""Element-wise and small dense operations of the model, in NumPy and Numba.

Kernels on quantized weights live in `quant`; this module holds what the model does
between matrix products. Each Numba kernel has a plain NumPy twin in the model code
or the tests that it is checked against.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from .arrays import array_module
from .kernels import fast_exp, silu as _silu_value


def sigmoid(x):
    """NumPy or CuPy arrays (the GPU engine's too)."""
    xp = array_module(x)
    return (1.0 / (1.0 + xp.exp(-x))).astype(xp.float32, copy=False)


def silu(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x · sigmoid(x) in one pass (NumPy's x / (1 + exp(-x)) made three prompt-sized
    temporaries); out may be x itself."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if out is None:
        out = x.copy()
    elif not (out.flags.c_contiguous and out.shape == x.shape and out.dtype == np.float32):
        raise ValueError("silu's out must be a contiguous float32 array of x's shape")
    elif out is not x:
        out[...] = x
    _silu_(out.reshape(-1))
    return out


@nb.njit(cache=True, fastmath=True, error_model="numpy")
def _silu_(x):
    for i in range(x.size):           # in place: see _swiglu_
        x[i] = _silu_value(x[i])


def swiglu(gate: np.ndarray, up: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """silu(gate) · up, the MLP's activation (fused: one pass, no temporaries); out may be gate."""
    if out is None:
        out = gate.copy()
    elif out is not gate:
        out[...] = gate
    _swiglu_(out.reshape(-1), up.reshape(-1))
    return out


@nb.njit(cache=True, fastmath=True, error_model="numpy")
def _swiglu_(gate, up):
    # in place on one array: with `out` a second argument that is gate itself, LLVM's overlap
    # check sent the loop to its scalar version (28 µs for 6144 values instead of 3.5)
    for i in range(gate.size):
        gate[i] = _silu_value(gate[i]) * up[i]


def times_sigmoid_(x: np.ndarray, gate: np.ndarray) -> np.ndarray:
    """x ← x · σ(gate) in place (attention's output gate; NumPy's form made three temporaries).
    x contiguous; gate as many values in rows of its last axis, which may lie apart in memory
    (attention's gate: every other half-row of the q projection, read where it is)."""
    n = gate.shape[-1]
    _times_sigmoid(x.reshape(-1, n), gate.reshape(-1, n))
    return x


@nb.njit(cache=True, fastmath=True, error_model="numpy")
def _times_sigmoid(x, gate):
    for r in range(x.shape[0]):
        for i in range(x.shape[1]):
            x[r, i] = x[r, i] / (np.float32(1.0) + fast_exp(-gate[r, i]))


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float, out: np.ndarray | None = None) -> np.ndarray:
    """x · rsqrt(mean(x²) + eps) · weight over the last axis (GGUF weights carry Qwen's +1);
    into `out` (contiguous, x's shape) when given. x's rows may lie apart in memory (the
    per-head queries inside the q projection's output are read where they are)."""
    x = np.asarray(x, dtype=np.float32)
    if out is None:
        out = np.empty(x.shape, np.float32)
    elif out.shape != x.shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("rms_norm's out must be a contiguous float32 array of x's shape")
    n = x.shape[-1]
    rows = x.reshape(-1, n)                 # a view where the rows are evenly spaced, else a copy
    _rms_norm(rows if rows.strides[-1] == 4 else np.ascontiguousarray(rows), weight, np.float32(eps),
              out.reshape(-1, n))
    return out


@nb.njit(cache=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
def _rms_norm(x, weight, eps, out):
    n = x.shape[1]
    for t in range(x.shape[0]):
        ss = np.float32(0.0)
        for i in range(n):
            ss += x[t, i] * x[t, i]
        inv = np.float32(1.0) / np.sqrt(ss / np.float32(n) + eps)
        for i in range(n):
            out[t, i] = x[t, i] * inv * weight[i]


def causal_conv1d(x: np.ndarray, weight: np.ndarray, conv_state: np.ndarray) -> np.ndarray:
    """Depthwise causal conv over time. x: [T, C]; weight: [C, K]; conv_state: [K-1, C]
    holds the inputs before x and is replaced by the last K-1 inputs:
    out[t, c] = Σ_j weight[c, j] · x[t − (K−1) + j, c], earlier inputs read from conv_state.
    One pass in Numba: NumPy's shifted products made four prompt-sized temporaries, the
    largest transient memory of a long prompt."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x)
    _causal_conv(x, np.ascontiguousarray(weight.T, dtype=np.float32), conv_state, out)
    keep = conv_state.shape[0]
    if x.shape[0] >= keep:
        conv_state[:] = x[x.shape[0] - keep:]
    else:
        conv_state[:] = np.concatenate([conv_state[x.shape[0]:], x])
    return out


@nb.njit(cache=True, parallel=True)
def _causal_conv(x, taps, conv_state, out):
    T, C = x.shape
    K = taps.shape[0]
    P = K - 1
    for t in nb.prange(T):
        for c in range(C):
            out[t, c] = np.float32(0.0)
        for j in range(K):
            src = t - P + j
            row = x[src] if src >= 0 else conv_state[P + src]
            for c in range(C):
                out[t, c] += taps[j, c] * row[c]


@nb.njit(cache=True, parallel=True)
def unit_lower_inverse(a):
    """(I + a)⁻¹ for strictly lower-triangular a: [..., L, L], by forward substitution."""
    L = a.shape[-1]
    flat = a.reshape(-1, L, L)
    out = np.zeros_like(flat)
    for b in nb.prange(flat.shape[0]):
        m = flat[b]
        x = out[b]
        for i in range(L):
            x[i, i] = 1.0
            for j in range(i):           # row i of X = e_i - sum_{j<i} a[i, j] X[j]
                aij = m[i, j]
                if aij != 0.0:
                    for c in range(j + 1):
                        x[i, c] -= aij * x[j, c]
    return out.reshape(a.shape)


def rope_cos_sin(positions: np.ndarray, n_rot: int, theta: float, sections) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved multimodal rotary tables. positions: [3, T] (temporal, height, width);
    frequency j uses the height stream when j % 3 == 1 and j < 3·sections[1], the width
    stream when j % 3 == 2 and j < 3·sections[2], else the temporal one. Returns cos, sin
    of shape [T, n_rot] laid out for rotate-half (NeoX) pairing."""
    half = n_rot // 2
    inv_freq = 1.0 / (theta ** (np.arange(0, n_rot, 2, dtype=np.float32) / np.float32(n_rot)))
    stream = np.zeros(half, dtype=np.int64)
    j = np.arange(half)
    stream[(j % 3 == 1) & (j < 3 * sections[1])] = 1
    stream[(j % 3 == 2) & (j < 3 * sections[2])] = 2
    pos = positions.astype(np.float32)[stream]                     # [half, T]
    freqs = (pos * inv_freq[:, None]).T.astype(np.float32)         # [T, half]
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: contiguous float32 [H, T, head_dim]; rotates the first n_rot dims in place."""
    return rotate_half(x, cos, sin, x)


def rotate_half(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Rotary embedding, rotate-half pairing, of x [H, T, d] (any strides) into out (x itself,
    or a new [H, T, d] array): the first n_rot dims (cos, sin: [T, n_rot]) become
    [x₁·cos − x₂·sin, x₂·cos + x₁·sin] for their halves x₁, x₂; the dims past n_rot are
    copied. Text attention rotates in place, the vision tower out of its qkv buffer."""
    _rotate_half(x, np.ascontiguousarray(cos, dtype=np.float32), np.ascontiguousarray(sin, dtype=np.float32), out)
    return out


@nb.njit(cache=True, parallel=True)
def _rotate_half(x, cos, sin, out):
    heads, T, d = x.shape
    half = cos.shape[1] // 2
    for task in nb.prange(heads * T):
        h, t = task // T, task % T
        for i in range(half):
            a, b = x[h, t, i], x[h, t, i + half]
            out[h, t, i] = a * cos[t, i] - b * sin[t, i]
            out[h, t, i + half] = b * cos[t, i + half] + a * sin[t, i + half]
        for i in range(2 * half, d):
            out[h, t, i] = x[h, t, i]


def softmax(x, axis: int = -1):
    """NumPy or CuPy arrays."""
    xp = array_module(x)
    m = xp.max(x, axis=axis, keepdims=True)
    e = xp.exp(x - m)
    return e / xp.sum(e, axis=axis, keepdims=True)
