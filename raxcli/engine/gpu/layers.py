"""The decoder's operations as array expressions, for NumPy or CuPy arrays alike.

Each mirrors a Numba kernel of the CPU engine (raxcli/engine/ops.py, kernels.py) in its
readable form; on a GPU each line is one or a few kernel launches."""
from __future__ import annotations

from ..arrays import array_module
from ..ops import sigmoid


def matmul(x, weight):
    """x [T, n_in] float32 times Wᵀ for W [n_out, n_in] as uploaded (float16 or float32):
    the product accumulates in float32 (cuBLAS and NumPy alike) and comes back float32."""
    return (x.astype(weight.dtype, copy=False) @ weight.T).astype(x.dtype, copy=False)


def rms_norm(x, weight, eps: float):
    xp = array_module(x)
    return x / xp.sqrt(xp.mean(x * x, axis=-1, keepdims=True) + eps) * weight


def silu(x):
    return x * sigmoid(x)


def causal_conv(x, taps, conv_state):
    """Depthwise causal conv over time (ops.causal_conv1d). x: [T, C]; taps: [K, C];
    conv_state: [K-1, C], the inputs before x, replaced by the last K-1 inputs."""
    xp = array_module(x)
    T, K = x.shape[0], taps.shape[0]
    window = xp.concatenate([conv_state, x])                    # [K-1+T, C]
    out = taps[0] * window[:T]
    for j in range(1, K):
        out += taps[j] * window[j:j + T]
    conv_state[...] = window[T:]
    return out


def unit_lower_inverse(a):
    """(I + a)⁻¹ for strictly lower-triangular stacks a [..., L, L], by forward
    substitution one row at a time over the whole stack (ops.unit_lower_inverse's rule)."""
    xp = array_module(a)
    L = a.shape[-1]
    inv = xp.zeros_like(a)
    inv[..., 0, 0] = 1.0
    for i in range(1, L):
        # row i of X = e_i − Σ_{j<i} a[i, j] · X[j]
        inv[..., i, :i] = -xp.einsum("...j,...jc->...c", a[..., i, :i], inv[..., :i, :i])
        inv[..., i, i] = 1.0
    return inv


def rotate_half(x, cos, sin):
    """Rotary embedding of x [H, T, d] on its first n_rot dims (cos, sin: [T, n_rot]),
    rotate-half pairing as ops.rotate_half; a new array."""
    xp = array_module(x)
    n_rot = cos.shape[-1]
    half = n_rot // 2
    x1, x2 = x[..., :half], x[..., half:n_rot]
    return xp.concatenate([x1 * cos[:, :half] - x2 * sin[:, :half],
                           x2 * cos[:, half:] + x1 * sin[:, half:], x[..., n_rot:]], axis=-1)
