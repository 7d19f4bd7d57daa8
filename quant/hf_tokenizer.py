"""A Hugging Face byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json) as GGUF
`tokenizer.*` metadata, entry for entry as llama.cpp's converter writes it for Qwen models.

What the converter reads through transformers is read here from the files themselves:
- tokens: one per id up to the model's vocab_size; ids the tokenizer lacks (the embedding is
  padded past it) become "[PAD<id>]", type UNUSED; added tokens are CONTROL when marked
  special or shaped like <|...|>, otherwise USER_DEFINED; the rest NORMAL;
- the pre-tokenizer name, from the split regex (llama.cpp hashes the encoding of a test
  string; for Qwen3.5's tokenizer that names "qwen35");
- merges as "a b" strings; special ids from tokenizer_config.json (token text → added id),
  then config.json's *_token_id for the ones still unset; add_bos/add_eos from the
  ByteLevel post-processor and tokenizer_config.json; the chat template from
  tokenizer_config.json, else chat_template.jinja, else chat_template.json.
"""
from __future__ import annotations

import json
from pathlib import Path

from gguf import GGUFValueType

from .errors import ConversionError
from .gguf_out import Metadata

V = GGUFValueType
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5
SPECIAL_TYPES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
SPECIAL_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id",
                "sep": "seperator_token_id", "pad": "padding_token_id", "cls": "cls_token_id",
                "mask": "mask_token_id"}

# split regexes of the pre-tokenizers llama.cpp knows by name (Qwen3.5 adds \p{M} to letters)
PRE_TOKENIZERS = {
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""": "qwen35",
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""": "qwen2",
}


class TokenizerError(ConversionError):
    """The checkpoint's tokenizer is missing or of a kind rax cannot convert."""


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise TokenizerError(f"{path}: not valid JSON ({exc})") from None


def _split_patterns(node) -> list[str]:
    """Every Split regex inside a pre_tokenizer tree."""
    if isinstance(node, dict):
        found = []
        if node.get("type") == "Split" and isinstance(node.get("pattern"), dict) and "Regex" in node["pattern"]:
            found.append(node["pattern"]["Regex"])
        for value in node.values():
            found += _split_patterns(value)
        return found
    if isinstance(node, list):
        return [p for item in node for p in _split_patterns(item)]
    return []


def looks_special(text: str) -> bool:
    """Added tokens llama.cpp types CONTROL even when not marked special."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _merge_strings(merges: list) -> list[str]:
    if not merges or isinstance(merges[0], str):
        return list(merges)
    # the [a, b] form (transformers >= 4.45): spaces inside a part are stored as U+0120-shifted
    return [" ".join("".join(chr(ord(c) + 256) if c == " " else c for c in part) for part in pair)
            for pair in merges]


def add_tokenizer(meta: Metadata, folder: Path, config: dict, vocab_size: int) -> None:
    """Append the tokenizer.* entries for the checkpoint in `folder`."""
    tok = _read_json(folder / "tokenizer.json")
    if tok is None:
        raise TokenizerError(f"{folder}: missing tokenizer.json (rax converts byte-level BPE tokenizers)")
    model = tok.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise TokenizerError(f"{folder / 'tokenizer.json'}: not a BPE tokenizer")
    tok_config = _read_json(folder / "tokenizer_config.json") or {}

    added = tok.get("added_tokens") or []
    special = {a["id"]: bool(a.get("special")) for a in added}
    for tid, entry in (tok_config.get("added_tokens_decoder") or {}).items():
        if isinstance(entry, dict) and "special" in entry:
            special[int(tid)] = bool(entry["special"])
    text_of = {i: t for t, i in model["vocab"].items()}
    text_of.update({a["id"]: a["content"] for a in added})
    if text_of and max(text_of) >= vocab_size:
        raise TokenizerError(f"{folder / 'tokenizer.json'}: token id {max(text_of)} is past the model's "
                             f"vocab_size {vocab_size}")

    tokens, types = [], []
    added_ids = {a["id"] for a in added}
    for i in range(vocab_size):
        if i not in text_of:
            tokens.append(f"[PAD{i}]")
            types.append(UNUSED)
            continue
        text = text_of[i]
        if i in added_ids:
            if special.get(i) or looks_special(text):
                types.append(CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(USER_DEFINED)
        else:
            types.append(NORMAL)
        tokens.append(text)

    meta.string("tokenizer.ggml.model", "gpt2")
    meta.string("tokenizer.ggml.pre", _pre_tokenizer_name(tok, folder))
    meta.array("tokenizer.ggml.tokens", tokens, V.STRING)
    meta.array("tokenizer.ggml.token_type", types, V.INT32)
    merges = _merge_strings(model.get("merges") or [])
    if merges:
        meta.array("tokenizer.ggml.merges", merges, V.STRING)

    ids, add_flags = _special_ids(tok, tok_config, config)
    for typ, tid in ids.items():
        meta.u32(f"tokenizer.ggml.{SPECIAL_KEYS[typ]}", tid)
    for typ, flag in add_flags.items():
        if typ in ("bos", "eos", "sep"):
            meta.bool(f"tokenizer.ggml.add_{typ}_token", flag)
    _add_chat_template(meta, folder, tok_config)


def _pre_tokenizer_name(tok: dict, folder: Path) -> str:
    patterns = _split_patterns(tok.get("pre_tokenizer"))
    for pattern in patterns:
        if pattern in PRE_TOKENIZERS:
            return PRE_TOKENIZERS[pattern]
    raise TokenizerError(f"{folder / 'tokenizer.json'}: pre-tokenizer not recognised "
                         "(rax knows the Qwen3.5 and Qwen2 split rules)")


def _special_ids(tok: dict, tok_config: dict, config: dict) -> tuple[dict[str, int], dict[str, bool]]:
    ids: dict[str, int] = {}
    add: dict[str, bool] = {}
    post = tok.get("post_processor") or {}
    for proc in post.get("processors", [post]):
        if isinstance(proc, dict) and proc.get("type") == "ByteLevel":
            add.setdefault("bos", False)
            add.setdefault("eos", False)
    added = tok.get("added_tokens") or []
    for typ in SPECIAL_TYPES:
        flag = tok_config.get(f"add_{typ}_token")
        if isinstance(flag, bool):
            add.setdefault(typ, flag)
        entry = tok_config.get(f"{typ}_token")
        content = entry.get("content") if isinstance(entry, dict) else entry
        if isinstance(content, str):
            tid = next((a.get("id") for a in added if a.get("content") == content), None)
            if isinstance(tid, int) and tid >= 0:
                ids.setdefault(typ, tid)
    for typ in SPECIAL_TYPES:
        tid = config.get(f"{typ}_token_id")
        if tid is None:
            tid = (config.get("text_config") or {}).get(f"{typ}_token_id")
        if isinstance(tid, int) and not isinstance(tid, bool) and tid >= 0:
            ids.setdefault(typ, tid)
    return ids, add


def _add_chat_template(meta: Metadata, folder: Path, tok_config: dict) -> None:
    template = tok_config.get("chat_template")
    if template is None:
        jinja, as_json = folder / "chat_template.jinja", folder / "chat_template.json"
        if jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        elif as_json.is_file():
            template = (_read_json(as_json) or {}).get("chat_template")
    if isinstance(template, list):         # named templates: "default" is the chat template
        named = {}
        for choice in template:
            name = "".join(c if c.isascii() and c.isalnum() else "_" for c in choice.get("name", ""))
            if name and choice.get("template") is not None:
                named[name] = choice["template"]
        for name, text in named.items():
            if name != "default":
                meta.string(f"tokenizer.chat_template.{name}", text)
        if len(named) > ("default" in named):
            meta.array("tokenizer.chat_templates", [n for n in named if n != "default"], V.STRING)
        template = named.get("default")
    if isinstance(template, str):
        meta.string("tokenizer.chat_template", template)
