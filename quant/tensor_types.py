"""Which ggml type each tensor gets: llama.cpp's two sets of rules.

- `converter_type`: convert_hf_to_gguf.py's rule for --outtype f32/f16/bf16/q8_0 (and its
  mmproj): every weight of two or more dimensions in the file type, but 1-D tensors, norms,
  `ssm_conv1d` and position tables stay F32; rows that are not whole blocks fall back to F16.
- `llama_quantize_types`: llama-quantize's `llama_tensor_get_type` for q4_0 and q4_k_m (and
  plain q8_0 / f16 / bf16 / f32 requantization): quantizable weights take the file type's
  default, the output (and tied token embedding) Q6_K, and for Q4_K_M the attn_v-like tensors
  (attn_v, attn_qkv) and ffn_down of the "more bits" layers Q6_K; k-quant rows that are not
  whole 256-value super-blocks fall back (Q4_K → Q5_0, Q6_K → Q8_0, then F16).
Only the branches these file types reach are written out here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

T = GGMLQuantizationType


@dataclass(frozen=True)
class FileType:
    name: str               # the --type spelling
    ftype: int              # llama_ftype, stored as general.file_type
    default: GGMLQuantizationType
    via_llama_quantize: bool


FILE_TYPES = {
    "f32": FileType("f32", 0, T.F32, False),
    "f16": FileType("f16", 1, T.F16, False),
    "bf16": FileType("bf16", 32, T.BF16, False),
    "q8_0": FileType("q8_0", 7, T.Q8_0, False),
    "q4_0": FileType("q4_0", 2, T.Q4_0, True),
    "q4_k_m": FileType("q4_k_m", 15, T.Q4_K, True),
}

_ALWAYS_F32 = re.compile(r"(^|\.)(ssm_conv1d|position_embd|token_types)\.weight$")


def fits(qtype, n_cols: int) -> bool:
    return n_cols % GGML_QUANT_SIZES[qtype][0] == 0


def converter_type(name: str, shape: tuple[int, ...], file_type: FileType, mmproj: bool = False) -> GGMLQuantizationType:
    """The type convert_hf_to_gguf.py gives tensor `name` (GGUF name, NumPy shape)."""
    forced = None
    if mmproj and ".patch_embd.weight" in name:
        forced = T.F16 if file_type.default == T.F16 else T.F32
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return T.F32
    if forced is not None:
        return forced
    if _ALWAYS_F32.search(name) or name[-7:] not in (".weight", ".lora_a", ".lora_b"):
        return T.F32
    qtype = file_type.default
    return qtype if fits(qtype, shape[-1]) else T.F16


# -- llama-quantize ------------------------------------------------------------------------------
def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for key, category in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
                          ("attn_v.weight", "attn_v"), ("ffn_down", "ffn_down")):
        if key in name:
            return category
    return "other"


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """llama-quantize's tensor_allows_quantization for the tensors of a qwen35 file."""
    if len(shape) < 2 or not name.endswith("weight") or "_norm.weight" in name:
        return False
    excluded = ("ffn_gate_inp.weight", "ssm_conv1d", "position_embd", "token_types.weight", ".patch_embd",
                "altup", "laurel", "time_mix_", "attn_rel_b.weight", "shortconv.conv.weight")
    return not any(e in name for e in excluded)


def _layer(name: str) -> int:
    m = re.match(r"blk\.(\d+)\.", name)
    return int(m.group(1)) if m else -1


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _fallback(qtype, n_cols: int):
    if fits(qtype, n_cols):
        return qtype
    qtype = {T.Q4_K: T.Q5_0, T.Q6_K: T.Q8_0}.get(qtype, qtype)
    return qtype if fits(qtype, n_cols) else T.F16


def llama_quantize_types(tensors: dict[str, tuple[tuple[int, ...], GGMLQuantizationType]],
                         file_type: FileType, n_layer_all: int) -> dict[str, GGMLQuantizationType]:
    """name → new type, for {name: (NumPy shape, current type)} of a whole file."""
    default = file_type.default
    quantized = GGML_QUANT_SIZES[default][0] > 1
    tied = "output.weight" not in tensors
    n_attn_v = sum(_category(n) == "attn_v" for n in tensors)
    i_attn_v = i_ffn_down = 0
    out = {}
    # llama-quantize walks the tensors sorted by layer, then by name: the counters follow that order
    for name in sorted(tensors, key=lambda n: (_layer(n), n)):
        shape, current = tensors[name]
        if not allows_quantization(name, shape):
            out[name] = current
            continue
        new = default
        if quantized:
            category = _category(name)
            n_cols = shape[-1]
            if category == "output" or (tied and category == "token_embd"):
                if not fits(new, n_cols):
                    new = T.Q8_0
                elif new != T.Q8_0:
                    new = T.Q6_K
            elif category == "attn_v":
                if file_type.name == "q4_k_m" and _use_more_bits(i_attn_v, n_attn_v):
                    new = T.Q6_K
                i_attn_v += 1
            elif category == "ffn_down":
                if file_type.name == "q4_k_m" and _use_more_bits(i_ffn_down, n_layer_all):
                    new = T.Q6_K
                i_ffn_down += 1
            new = _fallback(new, n_cols)
        out[name] = new
    return out
