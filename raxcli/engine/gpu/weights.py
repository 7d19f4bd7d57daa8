"""A model's weights on the device: dequantized once from the memory-mapped GGUF and
uploaded, a slice of rows at a time (the host never holds a whole dequantized matrix).

The matrices that read one input are stacked into one, so each is one GEMM: DeltaNet's
qkv | gate | β | α, attention's q | k | v, and the MLP's gate | up."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..weights import Matrix, ModelWeights
from .runtime import check_room

UPLOAD_ROWS = 8192          # rows dequantized on the host per upload (64 MB for 2048 floats)


def upload_stacked(xp, matrices: list[Matrix], dtype):
    """The matrices' rows one after another, [Σ n_out, n_in], on the device in `dtype`."""
    n_in = matrices[0].n_in
    out = xp.empty((sum(m.n_out for m in matrices), n_in), dtype)
    row = 0
    for m in matrices:
        for a in range(0, m.n_out, UPLOAD_ROWS):
            b = min(m.n_out, a + UPLOAD_ROWS)
            out[row + a:row + b] = xp.asarray(m.rows(np.arange(a, b)).astype(dtype))
        row += m.n_out
    return out


def split_points(matrices: list[Matrix]) -> list[int]:
    """Where a stacked product's columns change matrix (for xp.split)."""
    return [int(v) for v in np.cumsum([m.n_out for m in matrices])[:-1]]


@dataclass
class DeviceLayer:
    attn_norm: object
    post_attention_norm: object
    mixer_in: object            # the stacked input projections of the token mixer
    mixer_split: list
    mixer_out: object           # ssm_out or attn_output
    ffn_gate_up: object
    ffn_down: object
    # DeltaNet
    conv_taps: object = None    # [kernel, conv_dim]
    ssm_a: object = None
    ssm_dt_bias: object = None
    ssm_norm: object = None
    # attention
    attn_q_norm: object = None
    attn_k_norm: object = None


class DeviceWeights:
    """Every trunk tensor of `weights` on the device (the MTP block is not used there)."""

    def __init__(self, weights: ModelWeights, xp, dtype=np.float32):
        self.xp, self.dtype = xp, dtype
        trunk = [m for layer in weights.layers for m in vars(layer).values() if isinstance(m, Matrix)]
        n_values = sum(m.n_out * m.n_in for m in trunk + [weights.output])
        check_room(xp, n_values * np.dtype(dtype).itemsize,
                   " (RAX_GPU_WEIGHTS=float16 keeps them in half that)" if np.dtype(dtype).itemsize == 4 else "")
        vec = lambda v: xp.asarray(np.ascontiguousarray(v, dtype=np.float32))   # noqa: E731
        mat = lambda *ms: upload_stacked(xp, list(ms), dtype)                    # noqa: E731
        self.output_norm = vec(weights.output_norm)
        self.output = mat(weights.output)
        self.layers = []
        for w in weights.layers:
            common = dict(attn_norm=vec(w.attn_norm), post_attention_norm=vec(w.post_attention_norm),
                          ffn_gate_up=mat(w.ffn_gate, w.ffn_up), ffn_down=mat(w.ffn_down))
            if w.attn_qkv is not None:
                inputs = [w.attn_qkv, w.attn_gate, w.ssm_beta, w.ssm_alpha]
                layer = DeviceLayer(**common, mixer_in=mat(*inputs), mixer_split=split_points(inputs),
                                    mixer_out=mat(w.ssm_out), conv_taps=vec(w.ssm_conv1d.T),
                                    ssm_a=vec(w.ssm_a), ssm_dt_bias=vec(w.ssm_dt_bias), ssm_norm=vec(w.ssm_norm))
            else:
                inputs = [w.attn_q, w.attn_k, w.attn_v]
                layer = DeviceLayer(**common, mixer_in=mat(*inputs), mixer_split=split_points(inputs),
                                    mixer_out=mat(w.attn_output), attn_q_norm=vec(w.attn_q_norm),
                                    attn_k_norm=vec(w.attn_k_norm))
            self.layers.append(layer)

    @property
    def nbytes(self) -> int:
        arrays = [self.output, self.output_norm]
        for layer in self.layers:
            arrays += [v for v in vars(layer).values() if hasattr(v, "nbytes")]
        return int(sum(a.nbytes for a in arrays))
