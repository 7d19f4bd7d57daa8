"""A Qwen3.5 text checkpoint in llama.cpp's `qwen35` layout: hyperparameters and tensors.

The facts come from llama.cpp's converter (conversion/qwen.py: Qwen3_5TextModel and the
classes it builds on); this is an independent implementation of them:
- names: `model.language_model.*` / `model.*` → token_embd, blk.N.*, output_norm, output;
  `mtp.*` → blk.{n_layer + i}.* with fc → nextn.eh_proj, pre_fc_norm_embedding / _hidden →
  nextn.enorm / hnorm, norm → nextn.shared_head_norm (block_count counts the MTP layers);
- values: every RMSNorm weight but the DeltaNet gated norm (`linear_attn.norm`) gets +1
  (HF computes x·(1 + w)); A_log → ssm_a = −exp(A_log); dt_bias → ssm_dt.bias; conv1d
  [C, 1, K] → ssm_conv1d [C, K];
- when v-heads outnumber k-heads (r = n_v / n_k > 1) the v-heads move from grouped order
  (k-head g's j-th v-head at g·r + j) to tiled order (at j·n_k + g), in the v rows of
  attn_qkv, the rows of attn_gate, ssm_alpha, ssm_beta, ssm_a, ssm_dt, the v channels of
  ssm_conv1d and the columns of ssm_out.
Arithmetic is float32, as the converter does it after widening bfloat16.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
from gguf import GGUFValueType

from .errors import ConversionError
from .gguf_out import Metadata
from .safetensors_reader import SafetensorsCheckpoint

V = GGUFValueType
ARCH = "qwen35"
ARCHITECTURES = ("Qwen3_5ForConditionalGeneration", "Qwen3_5ForCausalLM")
DEFAULT_MROPE_SECTIONS = [11, 11, 10, 0]
_SKIPPED_SUFFIXES = (".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")

_TOP = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "linear_attn.in_proj_qkv.weight": "attn_qkv.weight", "linear_attn.in_proj_z.weight": "attn_gate.weight",
    "linear_attn.in_proj_a.weight": "ssm_alpha.weight", "linear_attn.in_proj_b.weight": "ssm_beta.weight",
    "linear_attn.A_log": "ssm_a", "linear_attn.dt_bias": "ssm_dt.bias",
    "linear_attn.conv1d.weight": "ssm_conv1d.weight", "linear_attn.norm.weight": "ssm_norm.weight",
    "linear_attn.out_proj.weight": "ssm_out.weight",
    "eh_proj.weight": "nextn.eh_proj.weight", "enorm.weight": "nextn.enorm.weight",
    "hnorm.weight": "nextn.hnorm.weight", "shared_head.norm.weight": "nextn.shared_head_norm.weight",
}
_MTP_TOP = {"fc": "eh_proj", "pre_fc_norm_embedding": "enorm", "pre_fc_norm_hidden": "hnorm",
            "norm": "shared_head.norm"}


@dataclass
class SourceTensor:
    """One GGUF tensor made from one checkpoint tensor: `rows(start, stop)` gives float32 rows."""
    name: str
    hf_name: str
    shape: tuple[int, ...]
    rows: Callable[[int, int], np.ndarray]
    source_bytes: int


def text_hparams(config: dict) -> dict:
    """config.json with text_config's entries raised to the top (they win), as the converter reads it."""
    arch = (config.get("architectures") or [None])[0]
    if arch not in ARCHITECTURES:
        raise ConversionError(f"unsupported architecture {arch!r}: rax converts {', '.join(ARCHITECTURES)}")
    hp = {**config, **(config.get("text_config") or {})}
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                           "linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                           "linear_value_head_dim", "linear_conv_kernel_dim") if k not in hp]
    if missing:
        raise ConversionError(f"config.json lacks {', '.join(missing)} (not a Qwen3.5 config)")
    if any(k in hp for k in ("num_experts", "num_local_experts", "n_routed_experts")):
        raise ConversionError("Qwen3.5 mixture-of-experts models are not supported by rax")
    return hp


def _rope_parameters(hp: dict) -> dict:
    rope = dict(hp.get("rope_parameters") or hp.get("rope_scaling") or {})
    if "rope_theta" not in rope and hp.get("rope_theta") is not None:
        rope["rope_theta"] = hp["rope_theta"]
    if "partial_rotary_factor" not in rope and hp.get("partial_rotary_factor") is not None:
        rope["partial_rotary_factor"] = hp["partial_rotary_factor"]
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise ConversionError(f"rope_type {rope.get('rope_type')!r} is not supported (Qwen3.5 uses 'default')")
    return rope


def n_mtp_layers(hp: dict, checkpoint: SafetensorsCheckpoint) -> int:
    seen = {int(m.group(1)) for n in checkpoint.tensors if (m := re.match(r"(?:model\.)?mtp\.layers\.(\d+)\.", n))}
    return hp.get("mtp_num_hidden_layers") or (max(seen) + 1 if seen else 0)


def add_hparams(meta: Metadata, hp: dict, file_type: int, n_mtp: int) -> None:
    """qwen35.* entries, in the converter's order (general.file_type sits among them)."""
    a = ARCH
    n_layer = hp["num_hidden_layers"]
    rope = _rope_parameters(hp)
    meta.u32(f"{a}.block_count", n_layer + n_mtp)
    for key, names in (("context_length", ("max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                           "max_sequence_length", "model_max_length")),
                       ("embedding_length", ("hidden_size",)),
                       ("feed_forward_length", ("intermediate_size",)),
                       ("attention.head_count", ("num_attention_heads",)),
                       ("attention.head_count_kv", ("num_key_value_heads",))):
        value = next((hp[n] for n in names if n in hp), None)
        if value is not None:
            meta.u32(f"{a}.{key}", value)
    if "mrope_section" in rope:
        sections = list(rope["mrope_section"])[:4]
        meta.array(f"{a}.rope.dimension_sections", sections + [0] * (4 - len(sections)), V.INT32)
    if rope.get("rope_theta") is not None:
        meta.f32(f"{a}.rope.freq_base", rope["rope_theta"])
    if hp.get("rms_norm_eps") is not None:
        meta.f32(f"{a}.attention.layer_norm_rms_epsilon", hp["rms_norm_eps"])
    head_dim = hp.get("head_dim")
    if head_dim is not None:
        meta.u32(f"{a}.attention.key_length", head_dim)
        meta.u32(f"{a}.attention.value_length", head_dim)
    meta.u32("general.file_type", file_type)
    if n_mtp > 0:
        meta.u32(f"{a}.nextn_predict_layers", n_mtp)
    meta.u32(f"{a}.ssm.conv_kernel", hp["linear_conv_kernel_dim"])
    meta.u32(f"{a}.ssm.state_size", hp["linear_key_head_dim"])
    meta.u32(f"{a}.ssm.group_count", hp["linear_num_key_heads"])
    meta.u32(f"{a}.ssm.time_step_rank", hp["linear_num_value_heads"])
    meta.u32(f"{a}.ssm.inner_size", hp["linear_value_head_dim"] * hp["linear_num_value_heads"])
    layer_types = hp.get("layer_types")
    if layer_types is not None:
        if len(layer_types) != n_layer:
            raise ConversionError(f"config.json: layer_types has {len(layer_types)} entries for {n_layer} layers")
        meta.array(f"{a}.attention.recurrent_layers",
                   [t == "linear_attention" for t in layer_types] + [False] * n_mtp, V.BOOL)
    meta.u32(f"{a}.full_attention_interval", hp.get("full_attention_interval", 4))
    rope_dim = head_dim if head_dim is not None else hp["hidden_size"] // hp["num_attention_heads"]
    meta.u32(f"{a}.rope.dimension_count", int(rope_dim * rope.get("partial_rotary_factor", 0.25)))
    if "mrope_section" not in rope:
        meta.array(f"{a}.rope.dimension_sections", DEFAULT_MROPE_SECTIONS, V.INT32)


def gguf_name(hf_name: str, n_layer: int) -> str | None:
    """The qwen35 name of a checkpoint tensor; None for tensors the text file leaves out."""
    if hf_name.endswith(_SKIPPED_SUFFIXES) or "visual." in hf_name or hf_name.startswith(("mlp", "vision")):
        return None
    name = hf_name.replace("language_model.", "")
    if name.startswith("model.mtp."):
        name = name[len("model."):]
    if name.startswith("mtp."):
        parts = name.split(".", 3)
        if len(parts) == 4 and parts[1] == "layers" and parts[2].isdecimal():
            name = f"model.layers.{n_layer + int(parts[2])}.{parts[3]}"
        elif len(parts) == 3 and parts[1] in _MTP_TOP:
            name = f"model.layers.{n_layer}.{_MTP_TOP[parts[1]]}.{parts[2]}"
    if name == "lm_head.weight":
        return "output.weight"
    if name.startswith("model.") and name[len("model."):] in _TOP:
        return _TOP[name[len("model."):]]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in _LAYER:
        return f"blk.{m.group(1)}.{_LAYER[m.group(2)]}"
    raise ConversionError(f"cannot map checkpoint tensor {hf_name!r} to a qwen35 tensor")


class _VHeads:
    """Index maps from grouped to tiled v-head order (identity when n_v == n_k)."""

    def __init__(self, hp: dict):
        self.n_k, self.n_v = hp["linear_num_key_heads"], hp["linear_num_value_heads"]
        self.d_k, self.d_v = hp["linear_key_head_dim"], hp["linear_value_head_dim"]
        if self.n_v % self.n_k:
            raise ConversionError(f"linear_num_value_heads {self.n_v} is not a multiple of "
                                  f"linear_num_key_heads {self.n_k}")
        self.active = self.n_v != self.n_k

    def tiled(self, head_dim: int) -> np.ndarray:
        """index[i] = the grouped position of tiled position i, over n_v heads of head_dim."""
        r = self.n_v // self.n_k
        grouped = np.arange(self.n_v * head_dim).reshape(self.n_k, r, head_dim)
        return grouped.transpose(1, 0, 2).reshape(-1)

    def qkv_rows(self) -> np.ndarray:
        qk = 2 * self.n_k * self.d_k
        return np.concatenate([np.arange(qk), qk + self.tiled(self.d_v)])


def text_tensors(checkpoint: SafetensorsCheckpoint, hp: dict) -> list[SourceTensor]:
    """The text file's tensors in the converter's order, each reading its rows lazily."""
    n_layer = hp["num_hidden_layers"]
    heads = _VHeads(hp)
    out = []
    for hf_name, stored in checkpoint.tensors.items():
        name = gguf_name(hf_name, n_layer)
        if name is None:
            continue
        out.append(_source(checkpoint, hf_name, name, stored, heads))
    return out


def _source(ck: SafetensorsCheckpoint, hf_name: str, name: str, stored, heads: _VHeads) -> SourceTensor:
    shape = stored.shape
    reorder = heads.active and "linear_attn." in hf_name
    row_index = col_index = None
    if reorder and hf_name.endswith("in_proj_qkv.weight"):
        row_index = heads.qkv_rows()
    elif reorder and hf_name.endswith("in_proj_z.weight"):
        row_index = heads.tiled(heads.d_v)
    elif reorder and hf_name.endswith(("in_proj_a.weight", "in_proj_b.weight")):
        row_index = heads.tiled(1)
    elif reorder and hf_name.endswith("out_proj.weight"):
        col_index = heads.tiled(heads.d_v)

    small = hf_name.endswith(("A_log", "dt_bias", "conv1d.weight")) or len(shape) <= 1
    if small:
        values = _small_tensor(ck, hf_name, name, heads if reorder else None)
        shape = values.shape
        flat = values.reshape(-1, shape[-1]) if values.ndim > 1 else values.reshape(1, -1)
        rows = lambda a, b, flat=flat: flat[a:b]           # noqa: E731
    elif row_index is not None:
        rows = lambda a, b: ck.rows(hf_name, index=row_index[a:b])   # noqa: E731
    elif col_index is not None:
        rows = lambda a, b: ck.rows(hf_name, a, b)[:, col_index]     # noqa: E731
    else:
        rows = lambda a, b: ck.rows(hf_name, a, b)                   # noqa: E731
    return SourceTensor(name, hf_name, tuple(shape), rows, stored.n_bytes)


def _small_tensor(ck: SafetensorsCheckpoint, hf_name: str, name: str, heads: _VHeads | None) -> np.ndarray:
    """1-D tensors and the conv kernel, transformed whole (they are a few KB)."""
    x = ck.array(hf_name)
    if hf_name.endswith("conv1d.weight"):
        x = x.reshape(x.shape[0], -1)                    # [C, 1, K] → [C, K]
        if heads is not None:
            qk = 2 * heads.n_k * heads.d_k
            x = np.concatenate([x[:qk], x[qk:][heads.tiled(heads.d_v)]])
    elif heads is not None and hf_name.endswith(("A_log", "dt_bias")):
        x = x[heads.tiled(1)]
    if hf_name.endswith("A_log"):
        # float64 exp rounded once: the correctly rounded float32 −exp, as PyTorch gives it
        x = (-np.exp(x.astype(np.float64))).astype(np.float32)
    elif name.endswith("norm.weight") and not name.endswith("ssm_norm.weight"):
        x = x + np.float32(1.0)
    if ck.tensors[hf_name].dtype == "F16":
        x = x.astype(np.float16).astype(np.float32)      # the converter computes in float16 here
    return np.ascontiguousarray(x, dtype=np.float32)
