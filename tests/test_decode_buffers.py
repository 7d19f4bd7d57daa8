"""A decode step reuses its arrays (engine/weights.py `Projections`, `Activation.refill`) and
computes the matrices that read one input in one kernel pass: the numbers must be exactly
those of fresh arrays and one product per matrix."""
from pathlib import Path

import numpy as np
import pytest

from raxcli.engine.text import TextModel
from raxcli.engine.weights import Activation, ModelWeights

FIXTURES = Path(__file__).parent / "fixtures"
# k256-mixed stores its matrices in several types, so a layer's projections form several passes
QUANTIZED = ["k256-mixed", "k256-Q4_K_M", "tiny-vk2-Q8_0"]


def model(stem):
    return TextModel(ModelWeights(FIXTURES / "gguf" / f"{stem}.gguf"), activations="fine", kv_dtype=np.float16)


def prompt(stem, n=40):
    return [int(t) for t in np.load(FIXTURES / "ref" / f"{stem}.npz")["prompt_long"][:n]]


@pytest.mark.parametrize("stem", QUANTIZED)
@pytest.mark.parametrize("n_tokens", [1, 3])
def test_projections_in_one_pass_equal_each_matrix_alone(stem, n_tokens):
    m = model(stem)
    x = np.random.default_rng(1).standard_normal((n_tokens, m.config.n_embd)).astype(np.float32)
    for block in m.blocks:
        for projections in (block.mixer.inputs, block.ffn_in):
            together = projections(Activation(x))
            for matrix, out in zip(projections.matrices, together):
                np.testing.assert_array_equal(out, matrix(x))
                assert out.flags.c_contiguous


@pytest.mark.parametrize("stem", QUANTIZED)
def test_two_conversations_decoded_in_turn_equal_each_decoded_alone(stem):
    """Kept buffers and re-made int8 forms must never carry one step's numbers into another:
    two states stepped alternately through one model give what two fresh models give."""
    shared, tokens = model(stem), prompt(stem)
    states = [shared.new_state(), shared.new_state()]
    prompts = [tokens[:24], tokens[10:40]]
    last = [int(np.argmax(shared.prefill(p, s))) for p, s in zip(prompts, states)]
    alternating = [[], []]
    for _ in range(6):
        for i in (0, 1):
            logits = shared.decode(last[i], states[i])
            alternating[i].append(logits)
            last[i] = int(np.argmax(logits))
    for i in (0, 1):
        alone = model(stem)
        state = alone.new_state()
        token = int(np.argmax(alone.prefill(prompts[i], state)))
        for step in range(6):
            logits = alone.decode(token, state)
            np.testing.assert_array_equal(alternating[i][step], logits)
            token = int(np.argmax(logits))


def test_a_refilled_activation_remakes_its_int8_forms():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((2, 1, 512)).astype(np.float32)
    act = Activation(x.copy())
    first = act.int8(True, 256)
    kept_codes = first.xq
    act.x[:] = y
    act.refill()                                    # written in place
    np.testing.assert_array_equal(act.int8(True, 256).xq, Activation(y).int8(True, 256).xq)
    assert act.int8(True, 256).xq is kept_codes     # the same arrays, re-made
    act.refill(x)                                   # or handed a new array
    np.testing.assert_array_equal(act.int8(True, 256).xq, Activation(x).int8(True, 256).xq)
    act.refill(np.zeros((2, 512), np.float32))      # another shape: new forms
    assert act.int8(True, 256).xq.shape == (2, 512)
