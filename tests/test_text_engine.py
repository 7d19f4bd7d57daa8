"""The text engine against transformers' Qwen3.5 on GGUFs written by llama.cpp's converter.

Every fixture in tests/fixtures/gguf has a reference in tests/fixtures/ref, computed by
transformers in float32 on the weights read back from that GGUF (tests/fixtures/README.md).
The engine dequantizes blocks exactly and keeps activations in float32, so quantized files
are held to the same float32 tolerance as F32 ones.
"""
from pathlib import Path

import numpy as np
import pytest

from raxcli.engine.mtp import MTPHead
from raxcli.engine.text import TextModel
from raxcli.engine.weights import ModelWeights
from raxcli.generate import GenerationSettings, Generator
from raxcli.sampling import SamplingParams, log_softmax
from raxcli.tokenizer import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
FILES = sorted(p.stem for p in (FIXTURES / "gguf").glob("*.gguf"))
# logits reach ±40; float32 accumulation differs from torch's by a few 1e-5 per layer
ATOL = 2e-3


def reference(stem):
    return np.load(FIXTURES / "ref" / f"{stem}.npz")


_models = {}


def model(stem) -> TextModel:
    if stem not in _models:
        _models[stem] = TextModel(ModelWeights(FIXTURES / "gguf" / f"{stem}.gguf"))
    return _models[stem]


def test_fixtures_cover_every_block_format():
    types = set()
    for stem in FILES:
        types |= {t.ggml_type.name for t in ModelWeights(FIXTURES / "gguf" / f"{stem}.gguf").file.tensors.values()}
    assert types >= {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
                     "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


@pytest.mark.parametrize("stem", FILES)
def test_prefill_logits_match_transformers_at_every_position_of_short_prompt(stem):
    ref = reference(stem)
    m = model(stem)
    logits = m.prefill(ref["prompt_short"], m.new_state(), all_logits=True)
    np.testing.assert_allclose(logits, ref["logits_short"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("stem", FILES)
def test_prefill_logits_match_transformers_across_chunk_boundaries(stem):
    """260 tokens: four chunks of the delta rule; positions 63/64/65 and 127/128 straddle them."""
    ref = reference(stem)
    m = model(stem)
    logits = m.prefill(ref["prompt_long"], m.new_state(), all_logits=True)
    np.testing.assert_allclose(logits[ref["long_sampled_positions"]], ref["logits_long_sampled"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(logits[ref["long_last_positions"]], ref["logits_long_last"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("stem", FILES)
def test_greedy_continuation_and_step_logits_match_transformers(stem):
    ref = reference(stem)
    m = model(stem)
    state = m.new_state()
    logits = m.prefill(ref["prompt_long"], state)
    chosen = []
    for i, expected in enumerate(ref["greedy_long"]):
        np.testing.assert_allclose(logits, ref["greedy_long_logits"][i], atol=ATOL, rtol=0)
        chosen.append(int(np.argmax(logits)))
        logits = m.decode(int(expected), state)
    assert chosen == [int(t) for t in ref["greedy_long"]]


def test_prefill_then_decode_equals_decoding_token_by_token():
    ids = [int(t) for t in reference("tiny-vk2-F32")["prompt_long"][:90]]
    m = model("tiny-vk2-F32")
    batched = m.new_state()
    m.prefill(ids[:80], batched)
    after_prefill = [m.decode(t, batched) for t in ids[80:]]
    single = m.new_state()
    for t in ids[:80]:
        m.decode(t, single)
    one_by_one = [m.decode(t, single) for t in ids[80:]]
    # the chunked and the recurrent delta rule round differently in float32 (~3e-4 here)
    np.testing.assert_allclose(np.array(after_prefill), np.array(one_by_one), atol=1e-3, rtol=0)
    assert batched.n_tokens == single.n_tokens == 90
    assert batched.next_position == single.next_position == 90


def test_prompt_fed_in_two_parts_equals_one_prefill():
    """A chat turn appends to the state left by the previous one."""
    ids = reference("tiny-vk2-Q8_0")["prompt_long"]
    m = model("tiny-vk2-Q8_0")
    whole = m.prefill(ids, m.new_state())
    state = m.new_state()
    m.prefill(ids[:150], state)
    parts = m.prefill(ids[150:], state)
    np.testing.assert_allclose(parts, whole, atol=1e-3, rtol=0)


def test_mtp_block_is_loaded_apart_from_the_trunk():
    w = ModelWeights(FIXTURES / "gguf" / "k256-mixed.gguf")
    assert w.config.n_layer_all == 5 and w.config.n_nextn == 1
    assert len(w.layers) == 4
    assert w.mtp is not None and w.mtp.eh_proj.raw.shape[0] == w.config.n_embd
    assert w.mtp.block.attn_q is not None     # the MTP block is a gated-attention block


def test_mtp_draft_over_a_batch_equals_drafting_step_by_step():
    ids = reference("k256-mixed")["prompt_long"][:40]
    m = model("k256-mixed")
    hidden = m.forward(m.embed(ids), m.new_state())
    head = MTPHead(m.weights.mtp, m.config)
    batch = head(hidden[:-1], ids[1:], np.arange(39), head.new_cache())
    cache = head.new_cache()
    steps = [head(hidden[i:i + 1], ids[i + 1:i + 2], np.array([i]), cache)[0] for i in range(39)]
    np.testing.assert_allclose(batch, np.array(steps), atol=1e-4, rtol=0)
    assert np.isfinite(batch).all() and batch.std() > 0.1


@pytest.mark.parametrize("stem", ["tiny-vk2-F16", "k256-Q4_K_M"])
def test_generator_greedy_tokens_and_logprobs_match_transformers(stem):
    ref = reference(stem)
    m = model(stem)
    tok = Tokenizer.from_gguf_metadata(m.weights.file.metadata)
    settings = GenerationSettings(params=SamplingParams(temperature=0.0), max_tokens=16, top_logprobs=5)
    steps = list(Generator(m, tok).generate([int(t) for t in ref["prompt_long"]], m.new_state(), settings))
    generated = [s for s in steps if s.token_id is not None]
    expected = [int(t) for t in ref["greedy_long"]]
    # the reference's greedy run may hit <|im_end|>, which the generator does not emit
    n = next((i for i, t in enumerate(expected) if t in (1500, 1502)), len(expected))
    assert [s.token_id for s in generated] == expected[:n]
    for i, step in enumerate(generated):
        want = log_softmax(ref["greedy_long_logits"][i].astype(np.float64))
        assert abs(step.logprob.logprob - want[step.token_id]) < 0.01
        top_ids = [e["id"] for e in step.logprob.top]
        assert top_ids[0] == step.token_id and len(top_ids) == 5
        for entry in step.logprob.top:
            assert abs(entry["logprob"] - want[entry["id"]]) < 0.01
