"""The vision GGUF ("mmproj") that llama.cpp's converter writes for Qwen3.5: config and weights.

Layout (conversion/qwen3vl.py, projector `qwen3vl_merger`, metadata under `clip.*`):
  v.patch_embd.weight, v.patch_embd.weight.1   the Conv3d patch kernel [n_embd, 3, P, P],
                                               split over its two temporal slices
  v.patch_embd.bias, v.position_embd.weight    learned position table [side², n_embd]
  v.blk.N.ln1 / ln2 (LayerNorm weight+bias), attn_qkv (fused q|k|v + bias),
  v.blk.N.attn_out, ffn_up, ffn_down (+ biases)
  v.post_ln                                    the merger's LayerNorm (per patch)
  mm.0, mm.2                                   the merger's MLP: 4·n_embd → 4·n_embd → text width
Matrices stay in their stored ggml type (`Matrix`: tiles dequantized into BLAS products);
the small tensors (norms, biases, patch kernel, position table) are read as float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quant import formats, kernels

from .weights import CheckedTensors, Matrix, ModelFileError, open_gguf

PROJECTOR = "qwen3vl_merger"


@dataclass(frozen=True)
class VisionConfig:
    n_embd: int                 # ViT width
    n_ff: int
    n_head: int
    n_layer: int
    patch_size: int
    merge_size: int             # spatial merge (2: 2×2 patches → one text token)
    n_pos_side: int             # the learned position table is n_pos_side × n_pos_side
    projection_dim: int         # text width the merger projects into
    eps: float
    image_mean: tuple[float, ...]
    image_std: tuple[float, ...]
    temporal_patch_size: int = 2
    rope_theta: float = 10000.0         # the tower's axial rotary base (fixed in Qwen3-VL/3.5)
    image_min_pixels: int | None = None  # only when the file says (llama.cpp's converter does not)
    image_max_pixels: int | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_metadata(cls, md: dict, path: Path) -> "VisionConfig":
        def need(key: str):
            if key not in md:
                raise ModelFileError(f"{path}: metadata key {key!r} is missing")
            return md[key]

        arch = md.get("general.architecture")
        if arch != "clip":
            raise ModelFileError(f"{path}: not an mmproj (vision) GGUF: its architecture is {arch!r}, "
                                 f"expected 'clip'")
        if not md.get("clip.has_vision_encoder", False):
            raise ModelFileError(f"{path}: the mmproj has no vision encoder")
        projector = md.get("clip.projector_type", md.get("clip.vision.projector_type"))
        if projector != PROJECTOR:
            raise ModelFileError(f"{path}: projector {projector!r} is not supported "
                                 f"(rax runs {PROJECTOR!r}, the Qwen3.5 vision tower)")
        if any(md.get("clip.vision.is_deepstack_layers", [])):
            raise ModelFileError(f"{path}: this mmproj has deepstack layers (Qwen3-VL); rax runs "
                                 f"Qwen3.5's tower, which has none")
        n_embd = int(need("clip.vision.embedding_length"))
        n_head = int(need("clip.vision.attention.head_count"))
        patch = int(need("clip.vision.patch_size"))
        if n_embd % n_head or (n_embd // n_head) % 4:
            raise ModelFileError(f"{path}: width {n_embd} does not split into {n_head} heads "
                                 f"with a head size divisible by 4")
        mean = tuple(float(v) for v in md.get("clip.vision.image_mean", (0.5, 0.5, 0.5)))
        std = tuple(float(v) for v in md.get("clip.vision.image_std", (0.5, 0.5, 0.5)))
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ModelFileError(f"{path}: bad image_mean / image_std in metadata")
        min_px = md.get("clip.vision.image_min_pixels")
        max_px = md.get("clip.vision.image_max_pixels")
        return cls(
            n_embd=n_embd,
            n_ff=int(need("clip.vision.feed_forward_length")),
            n_head=n_head,
            n_layer=int(need("clip.vision.block_count")),
            patch_size=patch,
            merge_size=int(md.get("clip.vision.spatial_merge_size", 2)),
            n_pos_side=int(need("clip.vision.image_size")) // patch,
            projection_dim=int(need("clip.vision.projection_dim")),
            eps=float(md.get("clip.vision.attention.layer_norm_epsilon", 1e-6)),
            image_mean=mean,
            image_std=std,
            image_min_pixels=int(min_px) if min_px else None,
            image_max_pixels=int(max_px) if max_px else None,
        )


@dataclass
class VisionBlockWeights:
    ln1_w: np.ndarray
    ln1_b: np.ndarray
    attn_qkv: Matrix            # [3·n_embd, n_embd]: rows q | k | v, heads contiguous in each
    attn_qkv_b: np.ndarray
    attn_out: Matrix
    attn_out_b: np.ndarray
    ln2_w: np.ndarray
    ln2_b: np.ndarray
    ffn_up: Matrix
    ffn_up_b: np.ndarray
    ffn_down: Matrix
    ffn_down_b: np.ndarray


class VisionWeights(CheckedTensors):
    """Opens and validates an mmproj GGUF: metadata, tensor presence, types and shapes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file = open_gguf(self.path, "an mmproj GGUF")
        self.config = c = VisionConfig.from_metadata(self.file.metadata, self.path)
        for info in self.file.tensors.values():
            if not formats.is_supported(info.ggml_type):
                raise ModelFileError(f"{self.path}: tensor {info.name} has type {info.ggml_type.name}, "
                                     f"which rax does not support")
        P, d = c.patch_size, c.n_embd
        # both temporal slices of the patch kernel, [n_embd, 3·P·P] each
        self.patch_w = [self.dense(name, (d, 3, P, P)).reshape(d, 3 * P * P)
                        for name in ("v.patch_embd.weight", "v.patch_embd.weight.1")]
        self.patch_b = self.dense("v.patch_embd.bias", (d,))
        self.position = self.dense("v.position_embd.weight", (c.n_pos_side ** 2, d))
        self.blocks = [self._block(i) for i in range(c.n_layer)]
        self.post_ln_w = self.dense("v.post_ln.weight", (d,))
        self.post_ln_b = self.dense("v.post_ln.bias", (d,))
        merged = d * c.merge_size ** 2
        self.mm0 = self.matrix("mm.0.weight", merged, merged)
        self.mm0_b = self.dense("mm.0.bias", (merged,))
        self.mm2 = self.matrix("mm.2.weight", c.projection_dim, merged)
        self.mm2_b = self.dense("mm.2.bias", (c.projection_dim,))

    def dense(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A small tensor as float32 in `shape` (dequantized row by row)."""
        info = self._info(name)
        if info.shape != tuple(shape):
            raise ModelFileError(f"{self.path}: tensor {name} has shape {info.shape}, expected {tuple(shape)}")
        n_rows = shape[0] if len(shape) > 1 else 1
        raw = self.file.raw(name).reshape(n_rows, -1)
        try:
            values = kernels.dequantize(raw, info.ggml_type, int(np.prod(shape)) // n_rows)
        except ValueError as exc:
            raise ModelFileError(f"{self.path}: tensor {name}: {exc}") from None
        return np.ascontiguousarray(values.reshape(shape), dtype=np.float32)

    def _block(self, i: int) -> VisionBlockWeights:
        c, p = self.config, f"v.blk.{i}."
        d = c.n_embd
        return VisionBlockWeights(
            ln1_w=self.dense(p + "ln1.weight", (d,)), ln1_b=self.dense(p + "ln1.bias", (d,)),
            attn_qkv=self.matrix(p + "attn_qkv.weight", 3 * d, d),
            attn_qkv_b=self.dense(p + "attn_qkv.bias", (3 * d,)),
            attn_out=self.matrix(p + "attn_out.weight", d, d),
            attn_out_b=self.dense(p + "attn_out.bias", (d,)),
            ln2_w=self.dense(p + "ln2.weight", (d,)), ln2_b=self.dense(p + "ln2.bias", (d,)),
            ffn_up=self.matrix(p + "ffn_up.weight", c.n_ff, d),
            ffn_up_b=self.dense(p + "ffn_up.bias", (c.n_ff,)),
            ffn_down=self.matrix(p + "ffn_down.weight", d, c.n_ff),
            ffn_down_b=self.dense(p + "ffn_down.bias", (d,)),
        )

    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.file.tensors.values())
