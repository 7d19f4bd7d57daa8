"""The vision tower and the prompt splice against transformers, and their parts against
plain NumPy twins.

Fixture: tests/fixtures/vision (a tiny random Qwen3.5 VL checkpoint converted by llama.cpp:
text BF16 + mmproj F16; references from transformers 5.23 in float32, tower read back from
the F16 mmproj)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from raxcli import multimodal as mm
from raxcli.chat import render_chat
from raxcli.engine import vision
from raxcli.engine.mmproj import VisionWeights
from raxcli.engine.weights import ModelFileError
from raxcli.errors import UserError
from raxcli.loader import load_model

VISION = Path(__file__).parent / "fixtures" / "vision"
MEDIA = VISION / "media"
TEXT_GGUF = VISION / "gguf" / "tiny-vl-BF16.gguf"
MMPROJ = VISION / "gguf" / "mmproj-tiny-vl-F16.gguf"
MANIFEST = json.loads((VISION / "manifest.json").read_text())
CASES = [c for c in MANIFEST["cases"] if c != "multi_turn"]


@pytest.fixture(scope="module")
def loaded():
    return load_model(TEXT_GGUF)


@pytest.fixture(scope="module")
def vis(loaded):
    return mm.load_vision(MMPROJ, loaded.model.config)


def case_media(case, vis):
    info = MANIFEST["cases"][case]
    out = [mm.load_image(MEDIA / n, vis) for n in info["images"]]
    if info.get("video"):
        out.append(mm.load_video(MEDIA / info["video"], vis))
    return out


def user_turn(info):
    content = [{"type": "image"} for _ in info["images"]]
    if info.get("video"):
        content.append({"type": "video"})
    return {"role": "user", "content": content + [{"type": "text", "text": info["text"]}]}


# ---------------------------------------------------------------------------------------
# Kernels against NumPy twins
# ---------------------------------------------------------------------------------------
def test_layer_norm_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, (37, 96)).astype(np.float32)
    w, b = rng.normal(1, 0.1, 96).astype(np.float32), rng.normal(0, 0.1, 96).astype(np.float32)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    want = (x - mean) / np.sqrt(var + 1e-6) * w + b
    assert np.abs(vision.layer_norm(x, w, b, 1e-6) - want).max() < 1e-5


def test_gelu_kernels_match_their_formulas():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 3, (9, 50)).astype(np.float32)
    bias = rng.normal(0, 1, 50).astype(np.float32)
    v = (x + bias).astype(np.float64)
    tanh_form = 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    erf_form = 0.5 * v * (1 + np.vectorize(math.erf)(v / math.sqrt(2)))
    assert np.abs(vision.bias_gelu_tanh_(x.copy(), bias) - tanh_form).max() < 1e-5
    assert np.abs(vision.bias_gelu_erf_(x.copy(), bias) - erf_form).max() < 1e-5
    assert np.abs(erf_form - tanh_form).max() > 1e-4        # the two forms are not the same


def test_softmax_numerators_are_numpys_scaled_exponentials_and_their_sums():
    s = np.random.default_rng(2).normal(0, 5, (7, 33)).astype(np.float32)
    scale = np.float32(0.125)
    e = np.exp(((s - s.max(-1, keepdims=True)) * scale).astype(np.float64))   # float32 steps, as the kernel
    got, sums = s.copy(), np.empty(7, np.float32)
    vision._softmax_numerators(got, scale, sums)
    np.testing.assert_allclose(got, e, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(sums, e.sum(-1), rtol=1e-6)


@pytest.mark.parametrize("n, budget_rows, workers", [
    (1, None, 1),       # a single patch
    (64, None, 1),      # one block
    (64, 7, 2),         # ragged blocks: 7 rows at a time, the last one short; heads split in two
    (200, 1, 3),        # one query row at a time, three workers for three heads
    (50, None, 8),      # more workers than heads
])
def test_attention_in_row_blocks_equals_one_block(monkeypatch, n, budget_rows, workers):
    rng = np.random.default_rng(n)
    q, k, v = (rng.normal(0, 1, (3, n, 16)).astype(np.float32) for _ in range(3))
    scores = np.einsum("hnd,hmd->hnm", q, k) / 4.0
    p = np.exp(scores - scores.max(-1, keepdims=True))
    want = np.einsum("hnm,hmd->nhd", p / p.sum(-1, keepdims=True), v).reshape(n, 48)
    if budget_rows:
        monkeypatch.setattr(vision, "ATTENTION_BYTES", 4 * n * budget_rows)
    assert np.abs(vision.attention(q, k, v, workers) - want).max() < 1e-5


def test_mlp_in_row_chunks_equals_one_pass(monkeypatch, vis):
    image = mm.load_image(MEDIA / "odd.jpg", vis)
    whole = vis.encode(image)
    monkeypatch.setattr(vision, "MLP_ROWS", 7)            # 640 patches: 92 chunks, the last short
    assert np.abs(vis.encode(image) - whole).max() < 1e-5       # BLAS sums in another order


def test_block_order_is_the_processors_patch_order():
    rows, cols = vision.block_order_coords(4, 6, 2)
    # first 2x2 block, then the block to its right
    assert list(zip(rows[:8], cols[:8])) == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    assert sorted(zip(rows, cols)) == [(r, c) for r in range(4) for c in range(6)]


def test_position_table_resamples_with_aligned_corners():
    side = 8
    table = np.arange(side * side * 2, dtype=np.float32).reshape(side * side, 2)
    rows, cols = vision.block_order_coords(side, side, 2)
    # a grid the table's size reads the table itself
    same = vision.position_embedding(table, side, side, side, 2)
    assert np.array_equal(same, table[rows * side + cols])
    # on any grid the corner patches read the corner entries exactly (align_corners=True)
    grid = vision.position_embedding(table, side, 6, 10, 2)
    r, c = vision.block_order_coords(6, 10, 2)
    for rr, cc, entry in ((0, 0, 0), (0, 9, side - 1), (5, 0, side * (side - 1)), (5, 9, side * side - 1)):
        assert np.array_equal(grid[(r == rr) & (c == cc)][0], table[entry])


def test_rotary_kernel_matches_rotate_half_on_strided_heads():
    rng = np.random.default_rng(4)
    cos, sin = vision.rotary_cos_sin(4, 6, 2, 16, 10000.0)
    qkv = rng.normal(0, 1, (24, 3, 2, 16)).astype(np.float32).transpose(1, 2, 0, 3)   # as the tower slices it
    x = qkv[1]
    want = x * cos + np.concatenate([-x[..., 8:], x[..., :8]], axis=-1) * sin
    got = vision.apply_rotary(x, cos, sin)
    assert got.flags.c_contiguous and np.abs(got - want).max() < 1e-6


def test_rotary_turns_rows_then_columns():
    cos, sin = vision.rotary_cos_sin(4, 4, 2, 16, 10000.0)
    rows, cols = vision.block_order_coords(4, 4, 2)
    inv = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)
    want = np.concatenate([rows[:, None] * inv, cols[:, None] * inv], axis=1)
    assert np.abs(cos[:, :8] - np.cos(want)).max() < 1e-6
    assert np.abs(sin[:, :8] - np.sin(want)).max() < 1e-6
    assert np.array_equal(cos[:, :8], cos[:, 8:]) and np.array_equal(sin[:, :8], sin[:, 8:])


# ---------------------------------------------------------------------------------------
# The tower and the prompt against transformers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_vision_embeddings_match_transformers(case, vis):
    ref = np.load(VISION / "ref" / f"{case}.npz")
    kind = "video" if MANIFEST["cases"][case]["video"] else "image"
    got = np.concatenate([vis.encode(v) for v in case_media(case, vis)])
    want = ref[f"{kind}_embeds"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_prompt_ids_positions_and_logits_match_transformers(case, loaded, vis):
    ref = np.load(VISION / "ref" / f"{case}.npz")
    info = MANIFEST["cases"][case]
    rendered = render_chat(loaded.chat_template, [user_turn(info)], add_generation_prompt=True,
                           enable_thinking=False)
    assert rendered == str(ref["rendered"])
    seg = mm.encode_prompt(loaded.tokenizer, loaded.model, vis, rendered, case_media(case, vis), 0)
    assert seg.ids == ref["input_ids"].tolist()
    assert np.array_equal(seg.positions, ref["positions"])
    assert seg.next_position == int(ref["positions"].max()) + 1
    state = loaded.model.new_state()
    hidden = loaded.model.forward(seg.embeddings, state, seg.positions)
    logits = loaded.model.logits(hidden[-2:])
    assert np.abs(logits[0] - ref["logits_before_last"]).max() < 2e-3
    # greedy steps (the decode positions continue from max(position) + 1)
    step_logits = logits[1]
    for want_id, want_logits in zip(ref["greedy"], ref["greedy_logits"]):
        assert np.abs(step_logits - want_logits).max() < 2e-3
        assert int(np.argmax(step_logits)) == want_id
        step_logits = loaded.model.decode(int(want_id), state)


def test_images_in_later_turns_continue_the_positions(loaded, vis):
    """Turn by turn (as the REPL feeds a chat) gives what one pass over the chat gives."""
    ref = np.load(VISION / "ref" / "multi_turn.npz")
    rendered = str(ref["rendered"])
    cut = rendered.index("<|im_start|>user", 1)           # the second user turn starts here
    first, second = [mm.load_image(MEDIA / n, vis) for n in MANIFEST["cases"]["multi_turn"]["images"]]
    state = loaded.model.new_state()
    seg1 = mm.encode_prompt(loaded.tokenizer, loaded.model, vis, rendered[:cut], [first], 0)
    loaded.model.forward(seg1.embeddings, state, seg1.positions)
    assert state.next_position == seg1.next_position
    seg2 = mm.encode_prompt(loaded.tokenizer, loaded.model, vis, rendered[cut:], [second], state.next_position)
    assert seg1.ids + seg2.ids == ref["input_ids"].tolist()
    assert np.array_equal(np.concatenate([seg1.positions, seg2.positions], axis=1), ref["positions"])
    hidden = loaded.model.forward(seg2.embeddings, state, seg2.positions)
    assert np.abs(loaded.model.logits(hidden[-1]) - ref["greedy_logits"][0]).max() < 2e-3


def test_placeholders_must_match_the_media(loaded, vis):
    image = mm.load_image(MEDIA / "square.png", vis)
    with pytest.raises(UserError, match="places for 0 image"):
        mm.encode_prompt(loaded.tokenizer, loaded.model, vis, "no placeholder here", [image], 0)
    with pytest.raises(UserError, match="places for 1 image.*0 image"):
        mm.encode_prompt(loaded.tokenizer, loaded.model, vis,
                         "<|vision_start|><|image_pad|><|vision_end|>", [], 0)


def test_text_only_segments_count_positions_from_the_start(loaded, vis):
    seg = mm.encode_prompt(loaded.tokenizer, loaded.model, vis, "Hello there", [], 7)
    assert seg.ids == loaded.tokenizer.encode("Hello there")
    assert seg.positions[:, 0].tolist() == [7, 7, 7] and seg.next_position == 7 + len(seg.ids)


# ---------------------------------------------------------------------------------------
# Loading mmproj files
# ---------------------------------------------------------------------------------------
def rewrite_mmproj(src: Path, dst: Path, tensor_type=None, metadata: dict | None = None):
    """A copy of an mmproj with its 2-D matrices stored as `tensor_type` and/or metadata changed."""
    import gguf
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, arch="clip")
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name == "general.architecture":
            continue
        value = field.contents()
        if metadata and field.name in metadata:
            value = metadata[field.name]
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, value)
        else:
            writer.add_key_value(field.name, value, vtype)
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        qtype = gguf.GGMLQuantizationType.F32
        if tensor_type is not None and data.ndim == 2 and (t.name.startswith("mm.") or ".blk." in t.name):
            qtype = tensor_type
            data = gguf.quants.quantize(data, qtype)
        writer.add_tensor(t.name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


@pytest.mark.parametrize("tensor_type, tolerance", [
    (None, 1e-5),       # every tensor F32: the F16 values, widened
    ("Q8_0", 0.1),      # matrices in Q8_0 (as llama-quantize makes quantized mmproj files)
])
def test_mmproj_in_other_tensor_types_gives_nearly_the_same_embeddings(tmp_path, loaded, vis, tensor_type, tolerance):
    import gguf
    qtype = getattr(gguf.GGMLQuantizationType, tensor_type) if tensor_type else None
    path = rewrite_mmproj(MMPROJ, tmp_path / "mmproj-copy.gguf", qtype)
    other = mm.load_vision(path, loaded.model.config)
    image = mm.load_image(MEDIA / "odd.jpg", vis)
    want = vis.encode(image)
    got = other.encode(image)
    assert np.abs(got - want).max() < tolerance * np.abs(want).max()


def test_other_projectors_are_refused(tmp_path, loaded):
    path = rewrite_mmproj(MMPROJ, tmp_path / "mmproj-other.gguf", metadata={"clip.projector_type": "qwen2vl_merger"})
    with pytest.raises(UserError, match="projector 'qwen2vl_merger' is not supported"):
        mm.load_vision(path, loaded.model.config)


def test_a_text_gguf_is_not_an_mmproj(loaded):
    with pytest.raises(UserError, match="not an mmproj"):
        mm.load_vision(TEXT_GGUF, loaded.model.config)


def test_an_mmproj_for_another_width_is_refused():
    class Other:
        n_embd = 256
    with pytest.raises(UserError, match="projects into width 64.*256"):
        mm.load_vision(MMPROJ, Other())


def test_missing_tensors_are_named():
    weights = VisionWeights(MMPROJ)
    del weights.file.tensors["mm.2.weight"]
    with pytest.raises(ModelFileError, match="mm.2.weight is missing"):
        weights.matrix("mm.2.weight", 64, 256)


def test_find_mmproj_beside_the_model(tmp_path):
    model = tmp_path / "model.gguf"
    model.write_bytes(b"")
    assert mm.find_mmproj(model, None) is None
    (tmp_path / "mmproj-F16.gguf").write_bytes(b"")
    assert mm.find_mmproj(model, None) == tmp_path / "mmproj-F16.gguf"
    assert mm.find_mmproj(model, "elsewhere.gguf") == Path("elsewhere.gguf")
    (tmp_path / "mmproj-BF16.gguf").write_bytes(b"")
    with pytest.raises(UserError, match="several mmproj files.*--mmproj"):
        mm.find_mmproj(model, None)


def test_blas_threads_are_set_and_restored():
    from raxcli.blas_threads import blas_thread_count, blas_threads
    before = blas_thread_count()
    if before is None:
        pytest.skip("NumPy's BLAS here is not an OpenBLAS")
    with blas_threads(1):
        assert blas_thread_count() == 1
    assert blas_thread_count() == before
