"""The reference fixtures' decoding protocol, shared by the tests that follow it."""
import numpy as np


def teacher_forced_logits(model, ref) -> np.ndarray:
    """Logits after the fixture's 260-token prompt and at each of the reference's greedy steps
    (the reference's tokens fed, not the model's own): [16, n_vocab]."""
    state = model.new_state()
    logits = [model.prefill(ref["prompt_long"], state)]
    for token in ref["greedy_long"][:-1]:
        logits.append(model.decode(int(token), state))
    return np.array(logits)
