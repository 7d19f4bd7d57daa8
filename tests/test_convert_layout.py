"""`rax quantize` on a Hugging Face checkpoint writes what llama.cpp's converter writes.

The references are files made by llama.cpp's own convert_hf_to_gguf.py from the same
checkpoint (tests/fixtures/gguf/tiny-vk2-*.gguf by make_reference.py, the mmproj files by
tests/fixtures/convert/make_convert_fixtures.py). Compared three ways: key by key (value and
GGUF value type), tensor by tensor (name, type, shape, bytes), and the files byte for byte.
No key is exempt: general.name and general.size_label come from the folder name and the
parameter count by the same rules, so the checkpoint is converted under its own name.
"""
from __future__ import annotations

import numpy as np
import pytest

from convert_support import CONVERT, GGUF, differences, read_gguf, tiny_checkpoint
from quant import convert
from make_random_checkpoint import make_checkpoint

TYPES = ["F32", "F16", "BF16", "Q8_0"]


def quantize(src, out, type_name, mmproj=None):
    plans, close = convert.plan(src, out, type_name, mmproj)
    try:
        convert.run(plans)
    finally:
        close()


@pytest.fixture(scope="module")
def tiny_outputs(tmp_path_factory):
    """tiny-vk2 converted to every converter type, with its mmproj."""
    tmp = tmp_path_factory.mktemp("tiny")
    folder = tiny_checkpoint(tmp)
    outputs = {}
    for t in TYPES:
        outputs[t] = (tmp / f"text-{t}.gguf", tmp / f"mmproj-{t}.gguf")
        quantize(folder, outputs[t][0], t.lower(), outputs[t][1])
    return outputs


@pytest.mark.parametrize("type_name", TYPES)
def test_text_gguf_equals_llama_cpp_converter(type_name, tiny_outputs):
    ours = tiny_outputs[type_name][0]
    reference = GGUF / f"tiny-vk2-{type_name}.gguf"
    assert differences(ours, reference) == []
    assert ours.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("type_name", TYPES)
def test_mmproj_equals_llama_cpp_converter(type_name, tiny_outputs):
    ours = tiny_outputs[type_name][1]
    reference = CONVERT / f"tiny-vk2-mmproj-{type_name}.gguf"
    assert differences(ours, reference) == []
    assert ours.read_bytes() == reference.read_bytes()


def test_mmproj_without_processor_config_takes_qwen35_mean_and_std(tmp_path):
    folder = tiny_checkpoint(tmp_path, with_processor=False)
    quantize(folder, tmp_path / "t.gguf", "f16", tmp_path / "m.gguf")
    kv, _ = read_gguf(tmp_path / "m.gguf")
    assert kv["clip.vision.image_mean"][1] == [0.5, 0.5, 0.5]
    assert differences(tmp_path / "m.gguf", CONVERT / "tiny-vk2-mmproj-F16.gguf") == []


def test_sharded_checkpoint_converts_like_one_file(tmp_path):
    single = make_checkpoint(tmp_path / "a" / "ck", "tiny", seed=3)
    sharded = make_checkpoint(tmp_path / "b" / "ck", "tiny", seed=3, shard_bytes=60_000)
    assert len(list(sharded.glob("model-*-of-*.safetensors"))) > 3
    quantize(single, tmp_path / "a.gguf", "q8_0")
    quantize(sharded, tmp_path / "b.gguf", "q8_0")
    assert (tmp_path / "a.gguf").read_bytes() == (tmp_path / "b.gguf").read_bytes()


def test_requantized_f16_equals_converting_straight_to_q8_0(tmp_path, tiny_outputs):
    quantize(GGUF / "tiny-vk2-F16.gguf", tmp_path / "requant.gguf", "q8_0")
    # llama-quantize rewrites general.quantization_version and general.file_type last, so
    # does rax: same keys and values, only those two move to the end
    assert differences(tmp_path / "requant.gguf", tiny_outputs["Q8_0"][0]) == []
    keys = list(read_gguf(tmp_path / "requant.gguf")[0])
    assert keys[-2:] == ["general.quantization_version", "general.file_type"]


def test_requantizing_to_the_same_mix_copies_the_file(tmp_path):
    quantize(GGUF / "k256-Q4_K_M.gguf", tmp_path / "same.gguf", "q4_k_m")
    assert (tmp_path / "same.gguf").read_bytes() == (GGUF / "k256-Q4_K_M.gguf").read_bytes()


def test_rax_logits_on_its_own_f32_output_match_transformers(tiny_outputs):
    from raxcli.engine.text import TextModel
    from raxcli.engine.weights import ModelWeights

    ref = np.load(GGUF.parent / "ref" / "tiny-vk2-F32.npz")
    model = TextModel(ModelWeights(tiny_outputs["F32"][0]))
    logits = model.prefill(ref["prompt_short"], model.new_state(), all_logits=True)
    np.testing.assert_allclose(logits, ref["logits_short"], atol=1e-3, rtol=0)
    assert (logits.argmax(-1) == ref["logits_short"].argmax(-1)).all()
