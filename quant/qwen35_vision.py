"""The vision tower of a Qwen3.5 checkpoint as llama.cpp's mmproj (`clip`, projector
`qwen3vl_merger`): metadata and tensors, following conversion/qwen3vl.py (Qwen3VLVisionModel).

- blocks.N.attn.qkv / attn.proj / mlp.linear_fc1 / linear_fc2 / norm1 / norm2 →
  v.blk.N.attn_qkv / attn_out / ffn_up / ffn_down / ln1 / ln2;
- merger.norm → v.post_ln, merger.linear_fc1 / fc2 → mm.0 / mm.2;
- patch_embed.proj (a Conv3d [hidden, 3, 2, p, p]) splits along time into v.patch_embd.weight
  and v.patch_embd.weight.1; pos_embed → v.position_embd.
Image mean / std come from preprocessor_config.json (or processor_config.json); a checkpoint
without either gets Qwen3.5's own 0.5 / 0.5.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGUFValueType

from .errors import ConversionError
from .gguf_out import Metadata
from .qwen35_text import SourceTensor
from .safetensors_reader import SafetensorsCheckpoint

V = GGUFValueType
QWEN35_IMAGE_MEAN = QWEN35_IMAGE_STD = [0.5, 0.5, 0.5]
_BLOCK = {"attn.qkv": "attn_qkv", "attn.proj": "attn_out", "mlp.linear_fc1": "ffn_up",
          "mlp.linear_fc2": "ffn_down", "norm1": "ln1", "norm2": "ln2"}
_MERGER = {"linear_fc1": "mm.0", "linear_fc2": "mm.2", "norm": "v.post_ln"}


def vision_hparams(config: dict) -> dict:
    vision = config.get("vision_config")
    if not vision:
        raise ConversionError("config.json has no vision_config: this checkpoint has no vision tower for --mmproj")
    missing = [k for k in ("depth", "hidden_size", "intermediate_size", "num_heads", "patch_size",
                           "spatial_merge_size", "temporal_patch_size") if k not in vision]
    if missing:
        raise ConversionError(f"config.json: vision_config lacks {', '.join(missing)}")
    if vision.get("deepstack_visual_indexes"):
        raise ConversionError("vision towers with deepstack mergers (Qwen3-VL) are not supported by rax")
    if vision["temporal_patch_size"] != 2:
        raise ConversionError("llama.cpp's qwen3vl_merger needs temporal_patch_size 2")
    return vision


def _processor_config(folder: Path) -> dict:
    merged: dict = {}
    for name, inner in (("preprocessor_config.json", "media_proc_cfg"), ("processor_config.json", "image_processor")):
        path = folder / name
        if path.is_file():
            cfg = json.loads(path.read_text(encoding="utf-8"))
            merged.update({**cfg, **(cfg.get(inner) or {})})
    return merged


def add_vision_hparams(meta: Metadata, folder: Path, config: dict, vision: dict, file_type: int) -> None:
    text = {**config, **(config.get("text_config") or {})}
    processor = _processor_config(folder)
    image_size = vision.get("image_size") or int(vision.get("num_position_embeddings", 2304) ** 0.5
                                                 * vision["patch_size"])
    meta.u32("general.file_type", file_type)
    meta.bool("clip.has_vision_encoder", True)
    meta.u32("clip.vision.projection_dim", text["hidden_size"])
    meta.u32("clip.vision.image_size", image_size)
    meta.u32("clip.vision.patch_size", vision["patch_size"])
    meta.u32("clip.vision.embedding_length", vision["hidden_size"])
    meta.u32("clip.vision.feed_forward_length", vision["intermediate_size"])
    meta.u32("clip.vision.block_count", vision["depth"])
    meta.u32("clip.vision.attention.head_count", vision["num_heads"])
    meta.array("clip.vision.image_mean", processor.get("image_mean", QWEN35_IMAGE_MEAN), V.FLOAT32)
    meta.array("clip.vision.image_std", processor.get("image_std", QWEN35_IMAGE_STD), V.FLOAT32)
    meta.string("clip.projector_type", "qwen3vl_merger")
    meta.bool("clip.use_gelu", True)
    meta.u32("clip.vision.spatial_merge_size", vision["spatial_merge_size"])
    meta.f32("clip.vision.attention.layer_norm_epsilon", text.get("rms_norm_eps", 1e-6))
    meta.array("clip.vision.is_deepstack_layers", [False] * vision["depth"], V.BOOL)


def _mmproj_name(rest: str) -> str:
    """GGUF name of visual.<rest> (not the patch embedding)."""
    parts = rest.split(".")
    if parts[0] == "blocks" and len(parts) >= 4:
        layer, module, suffix = parts[1], ".".join(parts[2:-1]), parts[-1]
        if module in _BLOCK:
            return f"v.blk.{layer}.{_BLOCK[module]}.{suffix}"
    if parts[0] == "merger" and len(parts) == 3 and parts[1] in _MERGER:
        return f"{_MERGER[parts[1]]}.{parts[2]}"
    if rest == "pos_embed.weight":
        return "v.position_embd.weight"
    if rest == "patch_embed.proj.bias":
        return "v.patch_embd.bias"
    raise ConversionError(f"cannot map vision tensor 'visual.{rest}' to an mmproj tensor")


def vision_tensors(checkpoint: SafetensorsCheckpoint) -> list[SourceTensor]:
    out = []
    for hf_name, stored in checkpoint.tensors.items():
        if hf_name.startswith("model.visual."):
            rest = hf_name[len("model.visual."):]
        elif hf_name.startswith("visual."):
            rest = hf_name[len("visual."):]
        else:
            continue
        if rest == "patch_embed.proj.weight":
            out += _patch_embedding(checkpoint, hf_name)
            continue
        name = _mmproj_name(rest)
        rows = lambda a, b, h=hf_name: checkpoint.rows(h, a, b)      # noqa: E731
        out.append(SourceTensor(name, hf_name, stored.shape, rows, stored.n_bytes))
    if not out:
        raise ConversionError(f"{checkpoint.folder}: no vision tensors (model.visual.*) in the checkpoint")
    return out


def _patch_embedding(ck: SafetensorsCheckpoint, hf_name: str) -> list[SourceTensor]:
    """Conv3d [hidden, C, 2, p, p] → two Conv2d kernels [hidden, C, p, p], one per frame."""
    w = ck.array(hf_name)
    if w.ndim != 5 or w.shape[2] != 2:
        raise ConversionError(f"{hf_name}: expected a Conv3d kernel [hidden, C, 2, p, p], got {w.shape}")
    out = []
    for t, name in enumerate(("v.patch_embd.weight", "v.patch_embd.weight.1")):
        frame = np.ascontiguousarray(w[:, :, t])
        flat = frame.reshape(-1, frame.shape[-1])
        out.append(SourceTensor(name, hf_name, frame.shape, lambda a, b, f=flat: f[a:b],
                                ck.tensors[hf_name].n_bytes // 2))
    return out
