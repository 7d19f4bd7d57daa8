"""Self-speculative decoding (engine/speculative.py) changes speed, never the numbers: the
logits it returns are the trunk's after exactly the tokens fed, whichever drafts are taken."""
from pathlib import Path

import numpy as np
import pytest

from raxcli.engine.speculative import JUDGE_CYCLES, SpeculativeModel
from raxcli.engine.state import DeltaNetCache
from raxcli.engine.text import TextModel
from raxcli.engine.weights import ModelWeights

FIXTURES = Path(__file__).parent / "fixtures"


def models(stem, activations="float", n_draft=3):
    path = FIXTURES / "gguf" / f"{stem}.gguf"
    plain = TextModel(ModelWeights(path), activations=activations)
    spec = SpeculativeModel(TextModel(ModelWeights(path), activations=activations), n_draft=n_draft,
                            min_accepted=0.0)        # never pause: every step drafts
    return plain, spec


def prompt(stem):
    return [int(t) for t in np.load(FIXTURES / "ref" / f"{stem}.npz")["prompt_long"][:120]]


@pytest.mark.parametrize("stem, activations", [("tiny-vk2-F32", "float"), ("k256-Q4_K_M", "fine"),
                                               ("tiny-vk2-Q8_0", "fine")])
def test_greedy_tokens_with_drafting_equal_plain_greedy(stem, activations):
    plain, spec = models(stem, activations)
    runs = []
    for m in (plain, spec):
        state = m.new_state()
        logits, tokens = m.prefill(prompt(stem), state), []
        for _ in range(24):
            tokens.append(int(np.argmax(logits)))
            logits = m.decode(tokens[-1], state)
        runs.append(tokens)
    assert runs[0] == runs[1]


def test_logits_equal_plain_decoding_whether_drafts_are_taken_or_not():
    """A caller that takes the next draft half of the time, else some other token."""
    plain, spec = models("k256-mixed")
    s_plain, s_spec = plain.new_state(), spec.new_state()
    ids = prompt("k256-mixed")
    plain.prefill(ids, s_plain)
    spec.prefill(ids, s_spec)
    rng = np.random.default_rng(0)
    taken = 0
    for _ in range(30):
        d = s_spec.drafting
        if d.batch is not None and d.used < len(d.batch) and rng.random() < 0.5:
            token, taken = d.batch[d.used], taken + 1
        else:
            token = int(rng.integers(0, 1500))
        # a batch of verified tokens against one token at a time: the same kernels, rounding
        # apart (measured 0.7-1.0e-4 on logits up to 14; a wrong state would be off by > 1e-2)
        np.testing.assert_allclose(spec.decode(token, s_spec), plain.decode(token, s_plain), rtol=0, atol=2e-4)
        assert (s_spec.n_tokens, s_spec.next_position) == (s_plain.n_tokens, s_plain.next_position)
    assert taken >= 5


def test_rejected_drafts_are_rolled_back_and_the_mtp_cache_follows_the_trunk():
    plain, spec = models("k256-mixed", n_draft=2)
    ids = prompt("k256-mixed")[:40]
    s_plain, s_spec = plain.new_state(), spec.new_state()
    plain.prefill(ids[:30], s_plain)
    spec.prefill(ids[:30], s_spec)
    for token in ids[30:]:                     # prompt tokens: drafts are mostly wrong
        plain.decode(token, s_plain)
        spec.decode(token, s_spec)
    spec.forward(spec.embed(ids[:1]), s_spec)  # a new turn settles the pending batch
    plain.forward(plain.embed(ids[:1]), s_plain)
    # (drafted tokens take the out-of-place loop of the DeltaNet kernel, whose float sums may
    # round apart from the in-place one's: equal to float32 noise, not bit for bit)
    for a, b in zip(s_spec.layers, s_plain.layers):
        if isinstance(a, DeltaNetCache):
            np.testing.assert_allclose(a.recurrent, b.recurrent, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(a.conv, b.conv, rtol=1e-4, atol=1e-5)
        else:
            assert a.length == b.length == 41
            np.testing.assert_allclose(a.keys[:, :a.length], b.keys[:, :b.length], rtol=1e-4, atol=1e-5)
    # the MTP cache: one entry per position, each from (trunk hidden before, token), as if
    # the whole sequence had been fed plainly
    fed = ids + ids[:1]
    hidden = plain.forward(plain.embed(fed), plain.new_state())
    head, cache = spec.head, spec.head.new_cache()
    previous = np.concatenate([np.zeros((1, hidden.shape[1]), np.float32), hidden[:-1]])
    head.hidden(previous, plain.embed(fed), np.arange(len(fed)), cache)
    mtp = s_spec.drafting.cache
    assert mtp.length == len(fed)
    np.testing.assert_allclose(mtp.keys[:, :mtp.length], cache.keys[:, :cache.length], rtol=0, atol=1e-4)


def test_drafting_pauses_when_too_few_drafts_are_accepted():
    path = FIXTURES / "gguf" / "tiny-vk2-Q8_0.gguf"
    spec = SpeculativeModel(TextModel(ModelWeights(path)), n_draft=2, min_accepted=2.0)   # never enough
    state = spec.new_state()
    spec.prefill(prompt("tiny-vk2-Q8_0")[:20], state)
    for i in range(JUDGE_CYCLES + 1):
        spec.decode(100 + i, state)            # tokens the drafts never guess
    assert state.drafting.plain_left > 0 and state.drafting.batch is None


def test_a_model_without_mtp_block_cannot_draft(tmp_path):
    m = TextModel(ModelWeights(FIXTURES / "gguf" / "tiny-vk2-F32.gguf"))
    m.weights.mtp = None
    with pytest.raises(ValueError, match="MTP"):
        SpeculativeModel(m)
