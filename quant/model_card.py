"""The `general.*` entries that describe a model: name, size label, license, sampling defaults.

llama.cpp's converter takes them from the `gguf` package's `Metadata.load` (heuristics over the
folder name, config.json, the README's YAML model card and generation_config.json); so does
rax, and writes the same keys in the same order and with the same value types.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf
from gguf import GGUFValueType

from .gguf_out import Metadata

V = GGUFValueType
_SAMPLING = [("sequence", V.STRING), ("top_k", V.INT32), ("top_p", V.FLOAT32), ("min_p", V.FLOAT32),
             ("xtc_probability", V.FLOAT32), ("xtc_threshold", V.FLOAT32), ("temp", V.FLOAT32),
             ("penalty_last_n", V.INT32), ("penalty_repeat", V.FLOAT32), ("mirostat", V.INT32),
             ("mirostat_tau", V.FLOAT32), ("mirostat_eta", V.FLOAT32)]
_IDENTITY = ["author", "version", "organization", "finetune", "basename", "description", "quantized_by",
             "size_label"]
_LINKS = [("license_name", "license.name"), ("license_link", "license.link"), ("url", "url"), ("doi", "doi"),
          ("uuid", "uuid"), ("repo_url", "repo_url"), ("source_url", "source.url"), ("source_doi", "source.doi"),
          ("source_uuid", "source.uuid"), ("source_repo_url", "source.repo_url")]
_ENTRY_FIELDS = ["name", "author", "version", "organization", "description", "url", "doi", "uuid", "repo_url"]


def size_label(n_params: int) -> str:
    """'465K', '2.3B': the converter's size label of a dense model."""
    return gguf.size_label(n_params, n_params, 0, 0)


def add_model_card(meta: Metadata, folder: Path, n_params: int) -> None:
    card = gguf.Metadata.load(None, folder, None, n_params)
    if card.sampling_penalty_repeat is None:
        # llama.cpp's converter also reads transformers' name for it
        gen = folder / "generation_config.json"
        if gen.is_file():
            try:
                card.sampling_penalty_repeat = json.loads(gen.read_text(encoding="utf-8")).get("repetition_penalty")
            except ValueError:
                pass
    if card.name is None:
        card.name = folder.name
    if card.size_label is None and n_params > 0:
        card.size_label = size_label(n_params)

    for field, vtype in _SAMPLING:
        value = getattr(card, f"sampling_{field}")
        if value is not None:
            meta.add(f"general.sampling.{field}", value, vtype)
    meta.string("general.name", card.name)
    for field in _IDENTITY:
        value = getattr(card, field)
        if value is not None:
            meta.string(f"general.{field}", value)
    if card.license is not None:
        meta.string("general.license", ",".join(card.license) if isinstance(card.license, list) else card.license)
    for field, key in _LINKS:
        value = getattr(card, field)
        if value is not None:
            meta.string(f"general.{key}", value)
    for kind, entries in (("base_model", card.base_models), ("dataset", card.datasets)):
        if entries is not None:
            meta.u32(f"general.{kind}.count", len(entries))
            for i, entry in enumerate(entries):
                for field in _ENTRY_FIELDS:
                    if field in entry:
                        meta.string(f"general.{kind}.{i}.{field}", entry[field])
    if card.tags:
        meta.array("general.tags", card.tags, V.STRING)
    if card.languages:
        meta.array("general.languages", card.languages, V.STRING)
