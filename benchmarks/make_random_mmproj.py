"""Write a random-weight mmproj GGUF with the Qwen3.5-2B vision tower's shape, for timing.

Same tensor names, types and `clip.*` metadata as llama.cpp's converter writes for
Qwen3.5-2B with --outtype f16 (ViT 24 × 1024, 16 heads, MLP 4096, patch 16, 48×48 position
table, 2×2 merger into 2048): matrices and the patch kernel F16, norms, biases and the
position table F32. Weights are random (N(0, 1/fan_in), LayerNorm weights near 1), so the
output means nothing; the cost is the real one.

    python benchmarks/make_random_mmproj.py /work/bench-models/mmproj-qwen35-2b-random-F16.gguf
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import gguf

from quant.page_cache import release_page_cache

SHAPE = dict(n_embd=1024, n_ff=4096, n_head=16, n_layer=24, patch=16, pos_side=48, merge=2, out=2048)


def write_mmproj(path: Path, seed: int = 0, **shape) -> None:
    s = {**SHAPE, **shape}
    d, ff, P = s["n_embd"], s["n_ff"], s["patch"]
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(path, arch="clip")
    w.add_type(gguf.GGUFType.MMPROJ)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_clip_has_vision_encoder(True)
    w.add_vision_projection_dim(s["out"])
    w.add_vision_image_size(s["pos_side"] * P)
    w.add_vision_patch_size(P)
    w.add_vision_embedding_length(d)
    w.add_vision_feed_forward_length(ff)
    w.add_vision_block_count(s["n_layer"])
    w.add_vision_head_count(s["n_head"])
    w.add_vision_image_mean([0.5, 0.5, 0.5])
    w.add_vision_image_std([0.5, 0.5, 0.5])
    w.add_clip_projector_type(gguf.VisionProjectorType.QWEN3VL)
    w.add_vision_use_gelu(True)
    w.add_vision_spatial_merge_size(s["merge"])
    w.add_vision_attention_layernorm_eps(1e-6)

    def matrix(name, n_out, n_in):
        w.add_tensor(name, (rng.standard_normal((n_out, n_in), np.float32) / np.sqrt(n_in)).astype(np.float16))

    def vector(name, n, centre=0.0, spread=0.05):
        w.add_tensor(name, (centre + spread * rng.standard_normal(n, np.float32)).astype(np.float32))

    for i in range(s["n_layer"]):
        p = f"v.blk.{i}."
        vector(p + "ln1.weight", d, 1.0, 0.1)
        vector(p + "ln1.bias", d)
        matrix(p + "attn_qkv.weight", 3 * d, d)
        vector(p + "attn_qkv.bias", 3 * d)
        matrix(p + "attn_out.weight", d, d)
        vector(p + "attn_out.bias", d)
        vector(p + "ln2.weight", d, 1.0, 0.1)
        vector(p + "ln2.bias", d)
        matrix(p + "ffn_up.weight", ff, d)
        vector(p + "ffn_up.bias", ff)
        matrix(p + "ffn_down.weight", d, ff)
        vector(p + "ffn_down.bias", d)
    merged = d * s["merge"] ** 2
    matrix("mm.0.weight", merged, merged)
    vector("mm.0.bias", merged)
    matrix("mm.2.weight", s["out"], merged)
    vector("mm.2.bias", s["out"])
    vector("v.post_ln.weight", d, 1.0, 0.1)
    vector("v.post_ln.bias", d)
    kernel = rng.standard_normal((2, d, 3, P, P), np.float32) / np.sqrt(6 * P * P)
    w.add_tensor("v.patch_embd.weight", kernel[0].astype(np.float16))
    w.add_tensor("v.patch_embd.weight.1", kernel[1].astype(np.float16))
    vector("v.patch_embd.bias", d)
    w.add_tensor("v.position_embd.weight", rng.normal(0, 0.5, (s["pos_side"] ** 2, d)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    write_mmproj(args.out, args.seed)
    release_page_cache(args.out)        # read back in large pages (quant/page_cache.py)
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
