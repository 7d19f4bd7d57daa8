"""The Qwen3.5 vision tower: pixels → one embedding per 2×2 patch block, in the text width.

As transformers' Qwen3_5VisionModel computes it (float32):
  patch embedding   a Conv3d over (temporal pair, 16×16) = one product per patch with the
                    kernel's two temporal slices (an image is its own frame twice, so its
                    patches meet the sum of the slices);
  position          the learned side×side table, bilinearly resampled to the patch grid with
                    align_corners=True (endpoints map to endpoints), added to every frame;
  blocks            pre-norm: x + proj(attn(LN1 x)), x + fc2(gelu_tanh(fc1(LN2 x))); attention
                    over the patches of one frame pair (transformers' cu_seqlens: each
                    temporal slice of a video is its own segment) with 2-D axial rotary
                    (first half of the frequencies from the patch row, second from the column);
  merger            LayerNorm per patch, 4 consecutive patches (one 2×2 block: the processor
                    emits patches block by block) concatenated → fc1 → exact GELU → fc2.
A video is encoded one temporal slice at a time, so memory holds one frame pair's activations;
attention runs a head at a time, in blocks of query rows so one score block stays under
ATTENTION_BYTES.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from .arrays import array_module
from .kernels import fast_exp
from .ops import rotate_half
from .mmproj import VisionConfig, VisionWeights
from .worker_pool import dense_product, product, run_parts

ATTENTION_BYTES = 2 << 20       # one worker's block of attention weights (one head, some query
                                # rows): about a core's L2; 0.6-2.4 MB measured alike at 784 patches
MLP_ROWS = 4096                 # patches per MLP pass (4096 × 4096 floats = 64 MB at the 2B's width)


# ---------------------------------------------------------------------------------------
# Element-wise steps (each checked against its formula in tests/test_vision.py)
# ---------------------------------------------------------------------------------------
@nb.njit(cache=True, parallel=True, fastmath=True)
def layer_norm(x, weight, bias, eps):
    """Per-row LayerNorm over the last axis: (x − mean) / √(var + eps) · weight + bias."""
    n, d = x.shape
    out = np.empty_like(x)
    for i in nb.prange(n):
        mean = 0.0
        for j in range(d):
            mean += x[i, j]
        mean /= d
        var = 0.0
        for j in range(d):
            t = x[i, j] - mean
            var += t * t
        inv = 1.0 / math.sqrt(var / d + eps)
        for j in range(d):
            out[i, j] = np.float32((x[i, j] - mean) * inv) * weight[j] + bias[j]
    return out


@nb.njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def bias_gelu_tanh_(x, bias):
    """x ← gelu_tanh(x + bias) in place (transformers' gelu_pytorch_tanh), one pass: tanh(u)
    as 1 − 2 / (exp(2u) + 1) with kernels.fast_exp, which vectorises (libm's tanh does not;
    NumPy's ten passes over the [n, 4096] buffer took 0.13 s a picture)."""
    n, d = x.shape
    c = np.float32(math.sqrt(2.0 / math.pi))
    for i in nb.prange(n):
        for j in range(d):
            v = x[i, j] + bias[j]
            u = c * (v + np.float32(0.044715) * v * v * v)
            t = np.float32(1.0) - np.float32(2.0) / (fast_exp(np.float32(2.0) * u) + np.float32(1.0))
            x[i, j] = np.float32(0.5) * v * (np.float32(1.0) + t)
    return x


@nb.njit(cache=True, parallel=True)
def bias_gelu_erf_(x, bias):
    """x ← gelu(x + bias) in place, the exact (erf) form nn.GELU() computes."""
    n, d = x.shape
    r = 1.0 / math.sqrt(2.0)
    for i in nb.prange(n):
        for j in range(d):
            v = x[i, j] + bias[j]
            x[i, j] = 0.5 * v * (1.0 + math.erf(v * r))
    return x


# ---------------------------------------------------------------------------------------
# Geometry: position table, rotary angles
# ---------------------------------------------------------------------------------------
def block_order_coords(grid_h: int, grid_w: int, merge: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each patch in the processor's order: 2×2 merge blocks in raster order,
    patches raster within a block."""
    rows = np.arange(grid_h).reshape(grid_h // merge, merge, 1, 1)
    cols = np.arange(grid_w).reshape(1, 1, grid_w // merge, merge)
    shape = (grid_h // merge, grid_w // merge, merge, merge)
    r = np.broadcast_to(rows.transpose(0, 2, 1, 3), shape)
    c = np.broadcast_to(cols.transpose(0, 2, 1, 3), shape)
    return r.reshape(-1), c.reshape(-1)


def _axis_taps(index: np.ndarray, size: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear, align_corners=True taps into a table of `side` for positions of an axis of
    `size`: [n, 2] indices and float32 weights."""
    src = index.astype(np.float32) * np.float32(side - 1) / np.float32(max(size - 1, 1))
    floor = np.floor(src)
    taps = floor.astype(np.int64)[:, None] + np.arange(2)
    dist = np.abs(src[:, None] - floor[:, None] - np.arange(2, dtype=np.float32))
    weights = np.maximum(np.float32(1) - dist, np.float32(0)).astype(np.float32)
    return np.clip(taps, 0, side - 1), weights


def position_embedding(table: np.ndarray, side: int, grid_h: int, grid_w: int, merge: int) -> np.ndarray:
    """The side×side table resampled to the grid, patches in block order: [h·w, n_embd]."""
    row, col = block_order_coords(grid_h, grid_w, merge)
    h_taps, h_w = _axis_taps(row, grid_h, side)
    w_taps, w_w = _axis_taps(col, grid_w, side)
    out = np.zeros((row.size, table.shape[1]), np.float32)
    for a in range(2):
        for b in range(2):
            out += table[h_taps[:, a] * side + w_taps[:, b]] * (h_w[:, a] * w_w[:, b])[:, None]
    return out


def rotary_cos_sin(grid_h: int, grid_w: int, merge: int, head_dim: int, theta: float):
    """2-D axial rotary for the patches (block order): cos, sin of shape [h·w, head_dim];
    frequencies 0..d/4 turn with the row, d/4..d/2 with the column, repeated for the
    rotate-half pairing."""
    spatial = head_dim // 2                 # d/2 dims per axis pair: d/4 frequencies
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, spatial, 2, dtype=np.float32) / np.float32(spatial))))
    inv_freq = inv_freq.astype(np.float32)
    row, col = block_order_coords(grid_h, grid_w, merge)
    angles = np.concatenate([row[:, None].astype(np.float32) * inv_freq,
                             col[:, None].astype(np.float32) * inv_freq], axis=1)
    angles = np.concatenate([angles, angles], axis=1)
    return np.cos(angles), np.sin(angles)


def apply_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: [heads, n, d] (any strides) → x·cos + rotate_half(x)·sin, contiguous."""
    return rotate_half(x, cos, sin, np.empty(x.shape, np.float32))


def patches(frames, config: VisionConfig):
    """frames: float32 [t, 3, H, W] → [t, n, 3·P·P] in block order (NumPy or CuPy arrays)."""
    P, M = config.patch_size, config.merge_size
    t, ch, H, W = frames.shape
    x = frames.reshape(t, ch, H // P // M, M, P, W // P // M, M, P)
    x = x.transpose(0, 2, 5, 3, 6, 1, 4, 7)
    return array_module(frames).ascontiguousarray(x).reshape(t, (H // P) * (W // P), ch * P * P)


# ---------------------------------------------------------------------------------------
# The tower
# ---------------------------------------------------------------------------------------
def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, workers: int = 1) -> np.ndarray:
    """Full (bidirectional) attention, q, k, v: [heads, n, d] → [n, heads·d].

    The heads are dealt out to `workers` threads (engine/worker_pool.py), each running
    single-threaded BLAS on one head's block of query rows at a time: scores q·kᵀ, softmax
    numerators in place (scaled by 1/√d there), P·V, then the division by the row sums as
    the rows are written out. Measured at 784 patches, 16 heads of 64 (2 cores): 18 ms a
    layer, against 40-47 ms for all heads at once through two-threaded BLAS, whose Q·Kᵀ
    (K = 64) ran at ~70 GFLOP/s and whose [heads, rows, n] blocks left the caches."""
    heads, n, d = q.shape
    out = np.empty((n, heads, d), np.float32)
    rows = max(1, min(n, ATTENTION_BYTES // (4 * n)))
    scale = np.float32(d ** -0.5)

    workers = max(1, min(workers, heads))

    def run(first_head: int) -> None:
        scores = np.empty((rows, n), np.float32)
        sums = np.empty(rows, np.float32)
        o = np.empty((rows, d), np.float32)
        for h in range(first_head, heads, workers):
            k_t = k[h].T                                        # BLAS reads the transpose in place
            for start in range(0, n, rows):
                r = min(n, start + rows) - start
                np.matmul(q[h, start:start + r], k_t, out=scores[:r])
                _softmax_numerators(scores[:r], scale, sums)
                np.matmul(scores[:r], v[h], out=o[:r])
                _divide_rows_into(o[:r], sums, out, h, start)

    run_parts(run, range(workers), workers)
    return out.reshape(n, heads * d)


@nb.njit(cache=True, nogil=True, fastmath=True)
def _softmax_numerators(s, scale, sums):
    """s ← exp(scale · (s − max of its row)) in place, sums ← the rows' totals (softmax =
    s / sums; `attention` divides its [rows, d] output instead of the [rows, n] weights).
    Serial: each attention worker runs its own, with the GIL released."""
    n = s.shape[1]
    for i in range(s.shape[0]):
        top = s[i, 0]
        for j in range(1, n):
            top = max(top, s[i, j])
        total = np.float32(0.0)
        for j in range(n):
            e = fast_exp((s[i, j] - top) * scale)
            s[i, j] = e
            total += e
        sums[i] = total


@nb.njit(cache=True, nogil=True)
def _divide_rows_into(o, sums, out, head, start):
    """out[start + i, head] = o[i] / sums[i]: the softmax's division, written head-interleaved."""
    for i in range(o.shape[0]):
        inv = np.float32(1.0) / sums[i]
        for j in range(o.shape[1]):
            out[start + i, head, j] = o[i, j] * inv


class VisionTower:
    def __init__(self, weights: VisionWeights):
        self.weights = weights
        self.config: VisionConfig = weights.config
        w = weights
        # an image meets both temporal slices of the patch kernel with the same pixels
        self.patch_w_image = np.ascontiguousarray((w.patch_w[0] + w.patch_w[1]).T)
        self.patch_w_pair = [np.ascontiguousarray(m.T) for m in w.patch_w]

    def embed_patches(self, frames: np.ndarray, workers: int = 1) -> np.ndarray:
        """One frame (an image) or a temporal pair → patch embeddings [n, n_embd]."""
        p = patches(frames, self.config)
        if p.shape[0] == 1:
            x = dense_product(p[0], self.patch_w_image, workers)
        else:
            x = dense_product(p[0], self.patch_w_pair[0], workers)
            x += dense_product(p[1], self.patch_w_pair[1], workers)
        x += self.weights.patch_b
        return x

    def block(self, b, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, workers: int = 1) -> np.ndarray:
        c = self.config
        n = x.shape[0]
        h = layer_norm(x, b.ln1_w, b.ln1_b, c.eps)
        qkv = product(b.attn_qkv, h, workers)
        qkv += b.attn_qkv_b
        qkv = qkv.reshape(n, 3, c.n_head, c.head_dim).transpose(1, 2, 0, 3)   # [3, heads, n, hd]
        q = apply_rotary(qkv[0], cos, sin)
        k = apply_rotary(qkv[1], cos, sin)
        o = product(b.attn_out, attention(q, k, np.ascontiguousarray(qkv[2]), workers), workers)
        o += b.attn_out_b
        x = x + o
        for start in range(0, n, MLP_ROWS):      # rows are independent: bound the n × n_ff buffer
            rows = slice(start, start + MLP_ROWS)
            h = layer_norm(x[rows], b.ln2_w, b.ln2_b, c.eps)
            h = bias_gelu_tanh_(product(b.ffn_up, h, workers), b.ffn_up_b)
            h = product(b.ffn_down, h, workers)
            h += b.ffn_down_b
            x[rows] += h
        return x

    def merge(self, x: np.ndarray, workers: int = 1) -> np.ndarray:
        """[n, n_embd] → [n / merge², projection_dim]."""
        w, c = self.weights, self.config
        h = layer_norm(x, w.post_ln_w, w.post_ln_b, c.eps).reshape(-1, c.n_embd * c.merge_size ** 2)
        h = bias_gelu_erf_(product(w.mm0, h, workers), w.mm0_b)
        out = product(w.mm2, h, workers)
        out += w.mm2_b
        return out

    def encode_frames(self, frames: np.ndarray, position: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                      workers: int = 1) -> np.ndarray:
        """Run one image ([1, 3, H, W]) or one temporal pair ([2, 3, H, W]) through the tower;
        position, cos, sin: the grid's position embedding and rotary tables; the products and
        attention heads shared among `workers` threads (engine/worker_pool.py)."""
        x = self.embed_patches(frames, workers)
        x += position
        for b in self.weights.blocks:
            x = self.block(b, x, cos, sin, workers)
        return self.merge(x, workers)

    def encode(self, visual) -> np.ndarray:
        """A `media.VisualInput` → its embeddings [n_tokens, projection_dim]."""
        c = self.config
        gt, gh, gw = visual.grid_thw
        position = position_embedding(self.weights.position, c.n_pos_side, gh, gw, c.merge_size)
        cos, sin = rotary_cos_sin(gh, gw, c.merge_size, c.head_dim, c.rope_theta)
        workers = nb.get_num_threads()
        if visual.kind == "image":
            return self.encode_frames(visual.normalised(), position, cos, sin, workers)
        tp = c.temporal_patch_size      # each temporal pair is its own attention segment
        return np.concatenate([self.encode_frames(visual.normalised(t * tp, (t + 1) * tp), position, cos, sin,
                                                  workers) for t in range(gt)])
