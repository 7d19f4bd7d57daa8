"""`rax info`: what is inside a GGUF, without loading the weights."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .engine.config import ConfigError, TextConfig
from .engine.gguf_file import GGUFFile, GGUFFormatError
from .errors import UserError


def describe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        f = GGUFFile(path)
    except GGUFFormatError as exc:
        raise UserError(f"{path}: {exc}") from None
    md = f.metadata
    by_type: Counter = Counter()
    n_params = 0
    for t in f.tensors.values():
        by_type[t.ggml_type.name] += t.n_bytes
        n_params += t.n_elements
    total = sum(by_type.values()) or 1
    info = {
        "file": str(path),
        "architecture": md.get("general.architecture"),
        "name": md.get("general.name"),
        "parameters": n_params,
        "tensor_bytes": total,
        "tensor_types": {k: round(v / total, 4) for k, v in by_type.most_common()},
        "chat_template": "tokenizer.chat_template" in md,
        "vocab_size": len(md.get("tokenizer.ggml.tokens", ())),
    }
    try:
        embd = f.tensors.get("token_embd.weight")
        c = TextConfig.from_metadata(md, n_vocab=embd.shape[0] if embd else info["vocab_size"])
        info.update({
            "context_length": c.context_length,
            "layers": c.n_layer,
            "mtp_layers": c.n_nextn,
            "layer_pattern": "".join("D" if r else "A" for r in c.is_recurrent[:c.n_layer]),
            "hidden": c.n_embd,
        })
    except ConfigError as exc:
        info["note"] = str(exc)
    return info
