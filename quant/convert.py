"""`rax quantize`: a Qwen3.5 checkpoint (or a GGUF) → GGUF files in llama.cpp's layout.

Two sources:
- a Hugging Face checkpoint folder → the text GGUF (`qwen35`) and, when asked, the mmproj
  (`clip` / `qwen3vl_merger`). f32 / f16 / bf16 / q8_0 follow convert_hf_to_gguf.py
  --outtype; q4_0 / q4_k_m are what llama-quantize makes of the converter's f32 file (the
  same tensors, then its type mix and reference quantizers). With q4_0 / q4_k_m the mmproj
  is written in F16, as the mmproj files published beside 4-bit Qwen3.5 GGUFs usually are
  (the vision tower is small and its errors reach every image token);
- a GGUF file → the same file requantized as llama-quantize would (tensors already in their
  target type are copied byte for byte, the rest dequantized to float32 and quantized again).

Tensors stream one at a time (and big ones a chunk of rows at a time) from the memory map to
a temporary file that is renamed only once complete.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from gguf import GGMLQuantizationType

from .errors import ConversionError
from .gguf_in import GGUFSource
from .gguf_out import Metadata, OutputTensor, write_gguf
from .hf_tokenizer import add_tokenizer
from .kernels import dequantize
from .model_card import add_model_card
from .qwen35_text import ARCH, SourceTensor, add_hparams, n_mtp_layers, text_hparams, text_tensors
from .qwen35_vision import add_vision_hparams, vision_hparams, vision_tensors
from .safetensors_reader import SafetensorsCheckpoint
from .tensor_types import FILE_TYPES, FileType, converter_type, llama_quantize_types

T = GGMLQuantizationType
GGML_QUANT_VERSION = 2
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Plan:
    """One output file: where it goes, its metadata and its tensors."""
    path: Path
    metadata: Metadata
    tensors: list[OutputTensor]

    @property
    def source_bytes(self) -> int:
        return sum(t.source_bytes for t in self.tensors)


def file_type(name: str) -> FileType:
    try:
        return FILE_TYPES[name.lower()]
    except KeyError:
        raise ConversionError(f"unsupported --type {name!r} (choose {', '.join(FILE_TYPES)})") from None


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise ConversionError(f"{folder}: no config.json (not a Hugging Face checkpoint folder)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc})") from None


# -- Hugging Face checkpoint ---------------------------------------------------------------------
def plan_text(checkpoint: SafetensorsCheckpoint, config: dict, ftype: FileType, out: Path) -> Plan:
    hp = text_hparams(config)
    n_mtp = n_mtp_layers(hp, checkpoint)
    sources = text_tensors(checkpoint, hp)
    if ftype.via_llama_quantize:
        # llama-quantize's choices on the converter's f32 file
        types = llama_quantize_types({s.name: (s.shape, T.F32) for s in sources}, ftype,
                                     hp["num_hidden_layers"] + n_mtp)
    else:
        types = {s.name: converter_type(s.name, s.shape, ftype) for s in sources}
    tensors = [_output(checkpoint, s, types[s.name]) for s in sources]

    meta = Metadata()
    meta.string("general.architecture", ARCH)
    meta.string("general.type", "model")
    add_model_card(meta, checkpoint.folder, _n_params(tensors))
    add_hparams(meta, hp, ftype.ftype, n_mtp)
    meta.u32("general.quantization_version", GGML_QUANT_VERSION)
    add_tokenizer(meta, checkpoint.folder, config, hp["vocab_size"])
    return Plan(out, meta, tensors)


def plan_mmproj(checkpoint: SafetensorsCheckpoint, config: dict, ftype: FileType, out: Path) -> Plan:
    vision = vision_hparams(config)
    if ftype.via_llama_quantize:
        ftype = FILE_TYPES["f16"]
    sources = vision_tensors(checkpoint)
    tensors = [_output(checkpoint, s, converter_type(s.name, s.shape, ftype, mmproj=True)) for s in sources]
    meta = Metadata()
    meta.string("general.architecture", "clip")
    meta.string("general.type", "mmproj")
    add_model_card(meta, checkpoint.folder, _n_params(tensors))
    add_vision_hparams(meta, checkpoint.folder, config, vision, ftype.ftype)
    meta.u32("general.quantization_version", GGML_QUANT_VERSION)
    return Plan(out, meta, tensors)


def _output(checkpoint: SafetensorsCheckpoint, s: SourceTensor, qtype) -> OutputTensor:
    return OutputTensor(s.name, s.shape, qtype, values=s.rows, source_bytes=s.source_bytes,
                        done=lambda: checkpoint.release(s.hf_name))


def _n_params(tensors: list[OutputTensor]) -> int:
    return sum(int(np.prod(t.shape)) for t in tensors)


# -- GGUF requantization -------------------------------------------------------------------------
def plan_requantize(source: GGUFSource, ftype: FileType, out: Path) -> Plan:
    arch = source.metadata["general.architecture"] if "general.architecture" in source.metadata else None
    if arch != ARCH:
        raise ConversionError(f"{source.path}: requantizing works on qwen35 text GGUFs, this one is {arch!r} "
                              "(convert an mmproj from the checkpoint instead)")
    block_count = int(source.metadata[f"{ARCH}.block_count"])
    current = {n: (t.shape, t.qtype) for n, t in source.tensors.items()}
    types = llama_quantize_types(current, ftype, block_count)
    tensors = []
    for name, t in source.tensors.items():
        qtype = types[name]
        n_cols = t.shape[-1]
        if qtype == t.qtype:
            out_t = OutputTensor(name, t.shape, qtype, raw=lambda a, b, n=name: source.rows(n, a, b))
        else:
            out_t = OutputTensor(name, t.shape, qtype, values=lambda a, b, n=name, q=t.qtype, c=n_cols:
                                 source.rows(n, a, b, convert=lambda raw: dequantize(raw, q, c)))
        out_t.source_bytes = t.n_bytes
        out_t.done = lambda n=name: source.release(n)
        tensors.append(out_t)
    meta = Metadata()
    for kv in source.metadata:
        if kv.key not in ("general.quantization_version", "general.file_type"):
            meta.add(kv.key, kv.value, kv.type, kv.sub_type)
    # llama-quantize sets these two last
    meta.u32("general.quantization_version", GGML_QUANT_VERSION)
    meta.u32("general.file_type", ftype.ftype)
    return Plan(out, meta, tensors)


# -- the command ---------------------------------------------------------------------------------
def plan(src: Path, out: Path, type_name: str, mmproj: Path | None = None) -> tuple[list[Plan], Callable[[], None]]:
    """The files to write for `rax quantize SRC OUT --type T [--mmproj P]`, and a closer."""
    ftype = file_type(type_name)
    src = Path(src)
    if src.is_dir():
        config = read_config(src)
        checkpoint = SafetensorsCheckpoint(src)
        try:
            plans = [plan_text(checkpoint, config, ftype, Path(out))]
            if mmproj is not None:
                plans.append(plan_mmproj(checkpoint, config, ftype, Path(mmproj)))
        except BaseException:
            checkpoint.close()
            raise
        return plans, checkpoint.close
    if not src.is_file():
        raise ConversionError(f"{src}: no such file or folder")
    if mmproj is not None:
        raise ConversionError(f"{src}: --mmproj needs a checkpoint folder (a text GGUF holds no vision tower)")
    source = GGUFSource(src)
    try:
        return [plan_requantize(source, ftype, Path(out))], source.close
    except BaseException:
        source.close()
        raise


def run(plans: list[Plan], progress: Progress = lambda n: None) -> None:
    for p in plans:
        write_gguf(p.path, p.metadata, p.tensors, progress)
