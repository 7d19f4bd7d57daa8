"""The vision tower on the GPU: engine/vision.py's VisionTower as array expressions.

The geometry (position table resampled to the grid, rotary angles) is computed on the host
as the CPU tower does and uploaded; the products, norms, attention and GELUs run on the
device; the embeddings come back to the host, where the prompt's sequence is assembled."""
from __future__ import annotations

import math

import numpy as np

from ..arrays import array_module, to_host
from ..mmproj import VisionWeights
from ..vision import patches, position_embedding, rotary_cos_sin
from .layers import matmul, rotate_half
from .runtime import check_room
from .weights import upload_stacked

ATTENTION_ROWS = 1024           # query rows per block: one block's scores stay ≤ heads · rows · n floats


def layer_norm(x, weight, bias, eps: float):
    mean = x.mean(axis=-1, keepdims=True)
    centred = x - mean
    var = (centred * centred).mean(axis=-1, keepdims=True)
    return centred / (var + eps) ** 0.5 * weight + bias


def gelu_tanh(x):
    """transformers' gelu_pytorch_tanh."""
    xp = array_module(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


def erf(x):
    """erf from NumPy/CuPy element-wise operations (NumPy has none): Numerical Recipes'
    erfc fit, 1.2e-7 in exact arithmetic, within 4e-7 in float32 (tests/test_gpu_engine.py)."""
    xp = array_module(x)
    z = xp.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * xp.exp(poly)
    return xp.where(x >= 0, 1.0 - erfc, erfc - 1.0).astype(x.dtype, copy=False)


def gelu_erf(x):
    """The exact GELU (nn.GELU())."""
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


def full_attention(q, k, v):
    """Bidirectional attention, q, k, v: [heads, n, d] → [n, heads·d], in blocks of query rows."""
    xp = array_module(q)
    heads, n, d = q.shape
    out = xp.empty((heads, n, d), xp.float32)
    k_t = k.transpose(0, 2, 1)
    for start in range(0, n, ATTENTION_ROWS):
        stop = min(n, start + ATTENTION_ROWS)
        scores = (q[:, start:stop] * (d ** -0.5)) @ k_t
        scores = xp.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        out[:, start:stop] = scores @ v
    return out.transpose(1, 0, 2).reshape(n, heads * d)


class DeviceVisionTower:
    """xp: cupy (or numpy standing in). Matrices are uploaded in `dtype` (float32: as the CPU
    tower, which multiplies dequantized tiles in float32)."""

    def __init__(self, weights: VisionWeights, xp, dtype=np.float32):
        self.weights, self.config, self.xp = weights, weights.config, xp
        w = weights
        matrices = [m for b in w.blocks for m in (b.attn_qkv, b.attn_out, b.ffn_up, b.ffn_down)] + [w.mm0, w.mm2]
        check_room(xp, sum(m.n_out * m.n_in for m in matrices) * np.dtype(dtype).itemsize)
        up = lambda m: upload_stacked(xp, [m], dtype)                                   # noqa: E731
        vec = lambda a: xp.asarray(np.ascontiguousarray(a, dtype=np.float32))          # noqa: E731
        # an image meets both temporal slices of the patch kernel with the same pixels
        self.patch_w_image = vec(w.patch_w[0] + w.patch_w[1])                         # [n_embd, 3·P·P]
        self.patch_w_pair = [vec(m) for m in w.patch_w]
        self.patch_b = vec(w.patch_b)
        self.blocks = [dict(ln1_w=vec(b.ln1_w), ln1_b=vec(b.ln1_b), qkv=up(b.attn_qkv), qkv_b=vec(b.attn_qkv_b),
                            out=up(b.attn_out), out_b=vec(b.attn_out_b), ln2_w=vec(b.ln2_w), ln2_b=vec(b.ln2_b),
                            up=up(b.ffn_up), up_b=vec(b.ffn_up_b), down=up(b.ffn_down), down_b=vec(b.ffn_down_b))
                       for b in w.blocks]
        self.post_ln_w, self.post_ln_b = vec(w.post_ln_w), vec(w.post_ln_b)
        self.mm0, self.mm0_b, self.mm2, self.mm2_b = up(w.mm0), vec(w.mm0_b), up(w.mm2), vec(w.mm2_b)

    def encode(self, visual) -> np.ndarray:
        """A `media.VisualInput` → its embeddings [n_tokens, projection_dim] (host)."""
        xp, c = self.xp, self.config
        gt, gh, gw = visual.grid_thw
        position = xp.asarray(position_embedding(self.weights.position, c.n_pos_side, gh, gw, c.merge_size))
        cos, sin = (xp.asarray(t) for t in rotary_cos_sin(gh, gw, c.merge_size, c.head_dim, c.rope_theta))
        if visual.kind == "image":
            slices = [visual.normalised()]
        else:                           # each temporal pair is its own attention segment
            tp = c.temporal_patch_size
            slices = [visual.normalised(t * tp, (t + 1) * tp) for t in range(gt)]
        return np.concatenate([to_host(self._encode_frames(xp.asarray(f), position, cos, sin)) for f in slices])

    def _encode_frames(self, frames, position, cos, sin):
        c = self.config
        p = patches(frames, c)
        if p.shape[0] == 1:
            x = matmul(p[0], self.patch_w_image)
        else:
            x = matmul(p[0], self.patch_w_pair[0]) + matmul(p[1], self.patch_w_pair[1])
        x = x + self.patch_b + position
        n = x.shape[0]
        for b in self.blocks:
            h = layer_norm(x, b["ln1_w"], b["ln1_b"], c.eps)
            qkv = (matmul(h, b["qkv"]) + b["qkv_b"]).reshape(n, 3, c.n_head, c.head_dim).transpose(1, 2, 0, 3)
            o = full_attention(rotate_half(qkv[0], cos, sin), rotate_half(qkv[1], cos, sin), qkv[2])
            x = x + matmul(o, b["out"]) + b["out_b"]
            h = gelu_tanh(matmul(layer_norm(x, b["ln2_w"], b["ln2_b"], c.eps), b["up"]) + b["up_b"])
            x = x + matmul(h, b["down"]) + b["down_b"]
        h = layer_norm(x, self.post_ln_w, self.post_ln_b, c.eps).reshape(-1, c.n_embd * c.merge_size ** 2)
        h = gelu_erf(matmul(h, self.mm0) + self.mm0_b)
        return matmul(h, self.mm2) + self.mm2_b
