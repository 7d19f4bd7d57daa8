"""The GPU engine (raxcli/engine/gpu) against transformers' reference and the CPU engine.

The GPU engine is written against the NumPy API that CuPy mirrors; here NumPy stands in for
CuPy, so every line of its math runs on any machine. Where CuPy finds a CUDA device, the same
model also runs on it and must give the stand-in's logits (the `gpu` tests; skipped without one).
"""
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from raxcli import multimodal as mm
from raxcli.engine import ops
from raxcli.engine.gpu import layers
from raxcli.engine.gpu.model import DeviceTextModel
from raxcli.engine.gpu.runtime import DeviceUnavailable, cuda_arrays
from raxcli.engine.text import TextModel
from raxcli.engine.weights import ModelWeights
from reference_support import teacher_forced_logits

FIXTURES = Path(__file__).parent / "fixtures"
# tiny-vk2: 2 v-heads per k-head (tiled); the k-quant files: Q4_K/Q6_K and a mix of types
STEMS = ["tiny-vk1-F32", "tiny-vk2-F32", "tiny-vk2-Q8_0", "k256-Q4_K_M", "k256-mixed"]
F32_ATOL = 2e-3           # float32 weights: as the CPU engine's float path (measured ≤ 1.2e-4)
F16_ATOL = 0.3            # float16 weights and products (measured ≤ 0.17; logits reach ±40)


def _gpu():
    try:
        return cuda_arrays()
    except DeviceUnavailable:
        return None


CUPY = _gpu()
needs_gpu = pytest.mark.skipif(CUPY is None, reason="no CuPy with a CUDA device here")
_weights = {}


def weights_at(path) -> ModelWeights:
    if path not in _weights:
        _weights[path] = ModelWeights(path)
    return _weights[path]


def weights(stem) -> ModelWeights:
    return weights_at(FIXTURES / "gguf" / f"{stem}.gguf")


@pytest.mark.parametrize("stem", STEMS)
def test_float32_device_engine_gives_the_reference_logits_through_prefill_and_decode(stem):
    """The prompt crosses four chunks of the delta rule; decoding runs the recurrent rule."""
    ref = np.load(FIXTURES / "ref" / f"{stem}.npz")
    logits = teacher_forced_logits(DeviceTextModel(weights(stem), np, weight_dtype=np.float32), ref)
    np.testing.assert_allclose(logits, ref["greedy_long_logits"], rtol=0, atol=F32_ATOL)
    assert [int(t) for t in logits.argmax(1)] == [int(t) for t in ref["greedy_long"]]


@pytest.mark.parametrize("stem", ["tiny-vk2-Q8_0", "k256-Q4_K_M"])
def test_float16_device_weights_stay_within_the_stated_tolerance(stem):
    ref = np.load(FIXTURES / "ref" / f"{stem}.npz")
    logits = teacher_forced_logits(DeviceTextModel(weights(stem), np, weight_dtype=np.float16), ref)
    distance = np.abs(logits - ref["greedy_long_logits"]).max()
    assert 1e-3 < distance <= F16_ATOL     # (above 1e-3: the weights really are float16)


def test_prompt_in_pieces_and_every_logit_equal_the_cpu_engine():
    """Pieces of 100 tokens (not a multiple of the delta rule's chunk): every state carries over."""
    ref = np.load(FIXTURES / "ref" / "tiny-vk2-F32.npz")
    device = DeviceTextModel(weights("tiny-vk2-F32"), np, weight_dtype=np.float32)
    device.prefill_chunk = 100
    got = device.prefill(ref["prompt_long"], device.new_state(), all_logits=True)
    cpu = TextModel(weights("tiny-vk2-F32"))
    want = cpu.prefill(ref["prompt_long"], cpu.new_state(), all_logits=True)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def test_explicit_multimodal_positions_and_short_batches_match_the_cpu_engine():
    """Vision tokens come with their own (t, h, w) rotary positions; a 5-token batch takes the
    recurrent rule token by token."""
    w = weights("tiny-vk2-F32")
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((40, w.config.n_embd)).astype(np.float32)
    positions = np.stack([np.full(40, 3), 3 + np.arange(40) // 8, 3 + np.arange(40) % 8])
    outputs = []
    for m in (DeviceTextModel(w, np, weight_dtype=np.float32), TextModel(w)):
        state = m.new_state()
        m.forward(m.embed([1, 2, 3]), state)
        m.forward(embeddings, state, positions)
        hidden = m.forward(m.embed([7, 8, 9, 10, 11]), state)
        outputs.append((np.asarray(hidden), state.next_position))
    np.testing.assert_allclose(outputs[0][0], outputs[1][0], rtol=0, atol=1e-4)
    assert outputs[0][1] == outputs[1][1] == 16


def test_array_forms_equal_the_cpu_kernels():
    rng = np.random.default_rng(1)
    a = np.tril(rng.uniform(-0.5, 0.5, (3, 2, 16, 16)).astype(np.float32), -1)
    np.testing.assert_allclose(layers.unit_lower_inverse(a), ops.unit_lower_inverse(a), rtol=0, atol=1e-5)

    x, taps = rng.standard_normal((5, 12)).astype(np.float32), rng.standard_normal((4, 12)).astype(np.float32)
    state_a = rng.standard_normal((3, 12)).astype(np.float32)
    state_b = state_a.copy()
    np.testing.assert_allclose(layers.causal_conv(x, taps, state_a), ops.causal_conv1d(x, taps.T, state_b),
                               rtol=0, atol=1e-5)
    np.testing.assert_array_equal(state_a, state_b)

    q = rng.standard_normal((4, 6, 32)).astype(np.float32)
    cos, sin = ops.rope_cos_sin(np.tile(np.arange(6), (3, 1)), 16, 1e4, [3, 3, 2])
    np.testing.assert_allclose(layers.rotate_half(q, cos, sin), ops.rotate_half(q, cos, sin, np.empty_like(q)),
                               rtol=0, atol=1e-6)


def test_missing_cupy_or_device_is_a_one_line_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy → ImportError
    with pytest.raises(DeviceUnavailable, match=r"needs CuPy: pip install 'rax\[gpu\]'"):
        cuda_arrays()

    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient\nmore")
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_driver)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.raises(DeviceUnavailable) as err:
        cuda_arrays()
    assert str(err.value) == ("--device gpu: CUDA is not usable here "
                              "(cudaErrorInsufficientDriver: CUDA driver version is insufficient)")


@pytest.mark.skipif(CUPY is not None, reason="this machine can run the GPU engine")
@pytest.mark.parametrize("command", [["run", "--prompt", "hi", "--max-tokens", "2"], ["bench", "--gen-tokens", "2"],
                                     ["chat"], ["serve", "--port", "0"]])
def test_device_gpu_without_a_gpu_is_one_line_and_exit_2(command):
    proc = subprocess.run([sys.executable, "-m", "raxcli", *command, "--model", FIXTURES / "gguf" / "tiny-vk2-F32.gguf",
                           "--device", "gpu"], capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device gpu" in lines[0] and "Traceback" not in proc.stderr


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cupy_engine_gives_the_numpy_stand_in_logits(dtype):
    ref = np.load(FIXTURES / "ref" / "k256-Q4_K_M.npz")
    on_gpu = teacher_forced_logits(DeviceTextModel(weights("k256-Q4_K_M"), CUPY, weight_dtype=dtype), ref)
    stand_in = teacher_forced_logits(DeviceTextModel(weights("k256-Q4_K_M"), np, weight_dtype=dtype), ref)
    atol = F32_ATOL if dtype == np.float32 else F16_ATOL
    np.testing.assert_allclose(on_gpu, stand_in, rtol=0, atol=atol)
    np.testing.assert_allclose(on_gpu, ref["greedy_long_logits"], rtol=0, atol=atol)


def test_weights_larger_than_the_free_device_memory_are_refused_before_uploading():
    from raxcli.engine.gpu.runtime import check_room
    runtime = types.SimpleNamespace(memGetInfo=lambda: (3 * 2**30, 8 * 2**30))
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime))
    check_room(fake, 2 * 2**30)
    with pytest.raises(DeviceUnavailable, match=r"the weights take 4.0 GiB on the GPU, which has 3.0 GiB free of 8.0$"):
        check_room(fake, 4 * 2**30)
    with pytest.raises(DeviceUnavailable, match=r"free of 8.0 \(RAX_GPU_WEIGHTS=float16 keeps them in half that\)$"):
        DeviceTextModel(weights("tiny-vk2-F32"), types.SimpleNamespace(
            cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(memGetInfo=lambda: (1000, 8 * 2**30)))),
            weight_dtype=np.float32)


# ---------------------------------------------------------------------------------------
# The vision tower on the device (tests/fixtures/vision: transformers' embeddings and logits)
# ---------------------------------------------------------------------------------------
VISION = FIXTURES / "vision"
VISION_CASES = json.loads((VISION / "manifest.json").read_text())["cases"]


def vision_model():
    text_config = weights_at(VISION / "gguf" / "tiny-vl-BF16.gguf").config
    return mm.load_vision(VISION / "gguf" / "mmproj-tiny-vl-F16.gguf", text_config)


def _media(case, vis):
    info = VISION_CASES[case]
    out = [mm.load_image(VISION / "media" / n, vis) for n in info["images"]]
    return out + ([mm.load_video(VISION / "media" / info["video"], vis)] if info.get("video") else [])


@pytest.mark.parametrize("case", [c for c in VISION_CASES if c != "multi_turn"])
def test_device_vision_tower_gives_transformers_embeddings(case):
    from raxcli.engine.gpu.vision import DeviceVisionTower
    vis = vision_model()
    tower = DeviceVisionTower(vis.weights, np)
    ref = np.load(VISION / "ref" / f"{case}.npz")
    got = np.concatenate([tower.encode(v) for v in _media(case, vis)])
    want = ref["video_embeds" if VISION_CASES[case]["video"] else "image_embeds"]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4


def test_picture_prompt_through_the_device_engines_gives_transformers_logits():
    """Vision tower and text model both on the device: spliced embeddings, multimodal
    positions, then greedy decoding."""
    from raxcli.chat import render_chat
    from raxcli.engine.gpu.vision import DeviceVisionTower
    case = next(c for c in VISION_CASES if c != "multi_turn" and not VISION_CASES[c]["video"])
    info, ref = VISION_CASES[case], np.load(VISION / "ref" / f"{case}.npz")
    text_weights = weights_at(VISION / "gguf" / "tiny-vl-BF16.gguf")
    vis = mm.load_vision(VISION / "gguf" / "mmproj-tiny-vl-F16.gguf", text_weights.config)
    vis.tower = DeviceVisionTower(vis.weights, np)
    text = DeviceTextModel(text_weights, np, weight_dtype=np.float32)
    from raxcli.tokenizer import Tokenizer
    content = [{"type": "image"}] * len(info["images"]) + [{"type": "text", "text": info["text"]}]
    turn = {"role": "user", "content": content}
    rendered = render_chat(text_weights.file.metadata["tokenizer.chat_template"], [turn], add_generation_prompt=True,
                           enable_thinking=False)
    seg = mm.encode_prompt(Tokenizer.from_gguf_metadata(text_weights.file.metadata), text, vis, rendered,
                           _media(case, vis), 0)
    state = text.new_state()
    logits = text.logits(text.forward(seg.embeddings, state, seg.positions)[-2:])
    assert np.abs(logits[0] - ref["logits_before_last"]).max() < 2e-3
    step = logits[1]
    for want_id, want_logits in zip(ref["greedy"], ref["greedy_logits"]):
        assert np.abs(step - want_logits).max() < 2e-3 and int(np.argmax(step)) == want_id
        step = text.decode(int(want_id), state)


def test_erf_without_scipy_is_accurate_to_a_few_float32_ulps():
    from raxcli.engine.gpu.vision import erf
    x = np.linspace(-6, 6, 20001).astype(np.float32)
    want = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.abs(erf(x) - want).max() < 4e-7     # float32's ulp below 1: 6e-8


@needs_gpu
def test_cupy_vision_tower_gives_the_numpy_stand_in_embeddings():
    from raxcli.engine.gpu.vision import DeviceVisionTower
    vis = vision_model()
    case = next(c for c in VISION_CASES if c != "multi_turn")
    for visual in _media(case, vis):
        np.testing.assert_allclose(DeviceVisionTower(vis.weights, CUPY).encode(visual),
                                   DeviceVisionTower(vis.weights, np).encode(visual), rtol=0, atol=1e-4)


def test_rax_info_names_the_gpu_or_why_there_is_none(monkeypatch):
    from raxcli.engine.gpu.runtime import describe_gpu
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert describe_gpu() == ("none — --device gpu needs CuPy: pip install 'rax[gpu]' "
                              "(CuPy for CUDA 12; needs an NVIDIA GPU and its driver)")
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                    getDeviceProperties=lambda i: {"name": b"NVIDIA H100 80GB HBM3"},
                                    memGetInfo=lambda: (79 * 2**30, 80 * 2**30))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=types.SimpleNamespace(runtime=runtime)))
    assert describe_gpu() == "NVIDIA H100 80GB HBM3, 79.0 GiB free of 80.0 (--device gpu)"


@pytest.mark.parametrize("with_picture", [False, True])
def test_rax_run_on_the_device_engines_answers_as_on_the_cpu(monkeypatch, with_picture):
    """`rax run --device gpu` end to end (loader, vision, generation, --json), NumPy standing in."""
    import io
    from dataclasses import replace
    from raxcli import oneshot
    from raxcli.engine.gpu import runtime
    monkeypatch.setattr(runtime, "cuda_arrays", lambda: np)
    case = next(c for c in VISION_CASES if c != "multi_turn" and not VISION_CASES[c]["video"])
    images = [str(VISION / "media" / n) for n in VISION_CASES[case]["images"]] if with_picture else []
    req = oneshot.Request(model=str(VISION / "gguf" / "tiny-vl-BF16.gguf"), images=images,
                          mmproj=str(VISION / "gguf" / "mmproj-tiny-vl-F16.gguf") if with_picture else None,
                          prompt="Describe it.", greedy=True, max_tokens=12, top_logprobs=3, json=True)
    results = [oneshot.run(replace(req, device=device), stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.StringIO())
               for device in ("cpu", "gpu")]
    cpu, gpu = results
    assert gpu["prompt_token_ids"] == cpu["prompt_token_ids"] and gpu["token_ids"] == cpu["token_ids"]
    assert len(gpu["token_ids"]) == len(gpu["logprobs"]) == 12
    for a, b in zip(cpu["logprobs"], gpu["logprobs"]):
        assert abs(a["logprob"] - b["logprob"]) < 0.05     # the CPU decodes with fine int8 activations
