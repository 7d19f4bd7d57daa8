"""Text <-> token ids: a `tokenizers.Tokenizer` built from the vocabulary a GGUF carries.

GGUF files made by llama.cpp's converter store a byte-level BPE tokenizer as parallel
arrays (`tokenizer.ggml.tokens`, `.token_type`, `.merges`) plus the name of the
pre-tokenizer (`tokenizer.ggml.pre`). We rebuild from them what the model's own
tokenizer.json describes, so that prompts tokenize as they do in transformers:

- NFC normalisation, then the model's split regex, then GPT-2's byte-to-char table;
- BPE with `ignore_merges=True`: a whole pre-token found in the vocabulary is taken as
  one token before any merge is tried. Qwen3.5's vocabulary holds tokens its merges
  cannot build; llama.cpp applies neither this nor NFC and so tokenizes some
  multilingual text differently from transformers (and from tiktoken, Qwen's original);
- CONTROL and USER_DEFINED tokens (`<|im_start|>`, `<think>`, ...) are added tokens,
  so their text in a prompt becomes their single id.
"""
from __future__ import annotations

import codecs
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE

# The split rules, as the models' tokenizer.json files write them.
# Qwen2 (also Qwen2.5 / Qwen3): letters are \p{L} only.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Qwen3.5: combining marks (\p{M}) stay inside words, so Devanagari, Thai, Arabic
# vowel signs etc. are not split off into punctuation runs.
QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|"
                r" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# `tokenizer.ggml.pre` -> split regex (names as llama.cpp's src/llama-vocab.cpp maps them).
PRE_TOKENIZER_SPLITS = {
    "qwen2": QWEN2_SPLIT,
    "deepseek-r1-qwen": QWEN2_SPLIT,
    "qwen35": QWEN35_SPLIT,
}

# gguf TokenType values
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6


def _byte_to_char() -> dict[int, str]:
    """GPT-2's table mapping each byte to a printable character (ByteLevel tokenizers)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return table


BYTE_TO_CHAR = _byte_to_char()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


class Tokenizer:
    """Encode / decode with a GGUF's byte-level BPE vocabulary.

    Build with `from_gguf(path)` or `from_gguf_metadata(...)`. `vocab_size` counts every
    entry of `tokenizer.ggml.tokens`, padding entries included.
    """

    def __init__(self, tokens: Sequence[str], token_types: Sequence[int], merges: Sequence[str], pre: str,
                 *, eos_id: int | None = None, bos_id: int | None = None, padding_id: int | None = None):
        if pre not in PRE_TOKENIZER_SPLITS:
            raise ValueError(f"unsupported tokenizer pre-tokenizer {pre!r} "
                             f"(rax knows {', '.join(sorted(PRE_TOKENIZER_SPLITS))})")
        if len(token_types) != len(tokens):
            raise ValueError(f"tokenizer has {len(tokens)} tokens but {len(token_types)} token types")
        self.pre = pre
        self.eos_id, self.bos_id, self.padding_id = eos_id, bos_id, padding_id
        # The token texts live in the Rust tokenizer (id_to_token); keeping them as Python
        # strings as well cost ~20 MB for a 248k vocabulary. Only the ids it cannot answer,
        # later repeats of a text (the vocabulary keeps a text's first id), are kept here.
        self._n_tokens = n = len(tokens)
        self._types = np.asarray(token_types, dtype=np.int8)
        vocab = dict(zip(reversed(tokens), range(n - 1, -1, -1)))   # a repeated text keeps its first id
        self._repeats = {} if len(vocab) == n else {i: t for i, t in enumerate(tokens) if vocab[t] != i}
        # "a b" -> ("a", "b"); byte-level token text never holds a plain space
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        try:
            model = BPE(vocab=vocab, merges=pairs, ignore_merges=True, fuse_unk=False, byte_fallback=False)
        except Exception as exc:  # tokenizers raises its own Exception type for bad merges
            raise ValueError(f"tokenizer merges do not fit its vocabulary: {exc}") from None
        tok = HFTokenizer(model)
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRE_TOKENIZER_SPLITS[pre]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        # Added tokens keep their vocabulary ids (the text is already in the BPE vocab).
        # llama.cpp's converter stores them as plain text, not byte-level encoded.
        added = [AddedToken(tokens[i], special=bool(self._types[i] == TOKEN_CONTROL), normalized=False)
                 for i in np.flatnonzero((self._types == TOKEN_CONTROL) | (self._types == TOKEN_USER_DEFINED))]
        tok.add_special_tokens(added)
        self._tok = tok
        self._bytes_cache: dict[int, bytes] = {}

    # -- construction from GGUF ----------------------------------------------
    @classmethod
    def from_gguf_metadata(cls, tokens: Sequence[str] | Mapping[str, Any], token_types: Sequence[int] | None = None,
                           merges: Sequence[str] | None = None, pre: str | None = None,
                           eos_id: int | None = None, *, model: str = "gpt2", bos_id: int | None = None,
                           padding_id: int | None = None) -> Tokenizer:
        """From the tokenizer fields of a GGUF, one by one, or from the whole metadata mapping
        (`GGUFFile.metadata`, plain Python values keyed `tokenizer.ggml.*`) as the first argument."""
        if isinstance(tokens, Mapping):
            md = tokens
            if "tokenizer.ggml.tokens" not in md:
                raise ValueError("the file has no tokenizer (tokenizer.ggml.tokens is missing)")
            model = md.get("tokenizer.ggml.model", "gpt2")
            if model != "gpt2":
                raise ValueError(f"unsupported tokenizer model {model!r} (rax reads byte-level BPE, 'gpt2', only)")
            if "tokenizer.ggml.merges" not in md:
                raise ValueError("the file's BPE tokenizer has no merges (tokenizer.ggml.merges is missing)")
            tokens = md["tokenizer.ggml.tokens"]
            token_types = md.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
            merges = md["tokenizer.ggml.merges"]
            pre = md.get("tokenizer.ggml.pre", "default")
            eos_id = md.get("tokenizer.ggml.eos_token_id")
            bos_id = md.get("tokenizer.ggml.bos_token_id")
            padding_id = md.get("tokenizer.ggml.padding_token_id")
        if model != "gpt2":
            raise ValueError(f"unsupported tokenizer model {model!r} (rax reads byte-level BPE, 'gpt2', only)")
        if token_types is None or merges is None or pre is None:
            raise ValueError("from_gguf_metadata needs tokens, token_types, merges and pre")
        return cls(tokens, token_types, merges, pre, eos_id=eos_id, bos_id=bos_id, padding_id=padding_id)

    @classmethod
    def from_gguf(cls, path_or_reader: str | Path | Any) -> Tokenizer:
        """From a GGUF file path (read with rax's fast reader) or an open `gguf.GGUFReader`."""
        if isinstance(path_or_reader, (str, Path)):
            from .engine.gguf_file import GGUFFile
            return cls.from_gguf_metadata(GGUFFile(path_or_reader).metadata)
        reader = path_or_reader
        md = {key: field.contents() for key, field in reader.fields.items() if key.startswith("tokenizer.ggml.")}
        return cls.from_gguf_metadata(md)

    # -- the vocabulary ------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._n_tokens

    def _text(self, token_id: int) -> str:
        text = self._repeats.get(token_id)
        return text if text is not None else self._tok.id_to_token(token_id)

    def id_of(self, token: str) -> int | None:
        """The id of a token given by its vocabulary text (`"<|im_end|>"`, `"Ġthe"`), or None."""
        return self._tok.token_to_id(token)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (b"" for an id outside the vocabulary)."""
        cached = self._bytes_cache.get(token_id)
        if cached is not None:
            return cached
        if not 0 <= token_id < self._n_tokens:
            return b""
        text = self._text(token_id)
        if self._types[token_id] in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            raw = text.encode("utf-8")
        else:
            try:
                raw = bytes(CHAR_TO_BYTE[c] for c in text)
            except KeyError:    # not byte-level text: taken as is, as the ByteLevel decoder does
                raw = text.encode("utf-8", "surrogateescape")
        self._bytes_cache[token_id] = raw
        return raw

    def token_text(self, token_id: int) -> str:
        """One token's text for display (logprobs). Bytes that are not valid UTF-8 on their
        own (a piece of a character split across tokens) are shown as `\\xNN` escapes."""
        return self.token_bytes(token_id).decode("utf-8", "backslashreplace")

    @property
    def bos_token(self) -> str | None:
        return self._text(self.bos_id) if self.bos_id is not None and self.bos_id < self.vocab_size else None

    @property
    def eos_token(self) -> str | None:
        return self._text(self.eos_id) if self.eos_id is not None and self.eos_id < self.vocab_size else None

    # -- encode / decode -----------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special-token strings in it become their single ids."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens included; invalid UTF-8 becomes U+FFFD."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)


class StreamDecoder:
    """Turns ids, fed one at a time, into text as soon as whole characters are known.

    A character whose UTF-8 bytes are spread over several tokens comes out with the token
    that completes it; `flush()` ends the stream (an incomplete tail becomes U+FFFD). The
    concatenated output equals `Tokenizer.decode` of all the ids.
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self._tokenizer.token_bytes(int(token_id)))

    @property
    def pending(self) -> bool:
        """Are bytes of an unfinished character waiting for the next token?"""
        return bool(self._utf8.getstate()[0])

    def flush(self) -> str:
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text
