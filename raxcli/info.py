"""`rax info`: what is inside a GGUF, without loading the weights."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from .engine.config import ConfigError, TextConfig
from .engine.gguf_file import GGUFFile, GGUFFormatError
from .errors import UserError


def describe(path: str | Path, ram_gb: float | None = None) -> dict:
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
    info["vision"] = _vision(path, md)
    info.update(_machine_limits(ram_gb, info.get("context_length")))
    from .engine.gpu.runtime import describe_gpu
    info["gpu"] = describe_gpu()
    return info


def _vision(path: Path, md: dict) -> str:
    """Is this file a vision tower, or is there one beside it?"""
    if md.get("general.architecture") == "clip":
        projector = md.get("clip.projector_type", md.get("clip.vision.projector_type"))
        return f"this file is a vision tower (mmproj, projector {projector})"
    try:
        from .multimodal import find_mmproj
        mmproj = find_mmproj(path, None)
    except ImportError:
        return "not looked for (this build of rax reads text only)"
    except UserError as exc:
        return str(exc)
    return str(mmproj) if mmproj else "none beside the file: text only"


def _machine_limits(ram_gb: float | None, context_length: int | None) -> dict:
    from . import system
    machine = system.detect(ram_gb)
    limits = system.limits_for(machine)
    context = min(limits.context, context_length or limits.context)
    return {
        "machine": system.describe_machine(machine, machine.default_threads()),
        "limits": {"tier": limits.tier, "max_tokens": limits.max_tokens, "think_budget": limits.think_budget,
                   "context": context, "max_tokens_cap": limits.max_tokens_cap, "think_cap": limits.think_cap},
    }
