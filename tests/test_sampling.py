"""Sampling rules: greedy, top-k / top-p / min-p truncation, presence penalty, seeds."""
import numpy as np

from raxcli.sampling import Sampler, SamplingParams, log_softmax, recommended_params, top_k_ids


def draws(params, logits, n=400, seen=None):
    sampler = Sampler(params)
    return {sampler(logits, seen) for _ in range(n)}


def test_greedy_takes_the_argmax():
    logits = np.array([0.1, 2.0, 1.9, -1.0], np.float32)
    assert Sampler(SamplingParams(temperature=0.0))(logits) == 1


def test_top_k_never_leaves_the_k_best():
    logits = np.array([3.0, 2.9, 2.8, 2.7, 2.6], np.float32)
    assert draws(SamplingParams(temperature=5.0, top_k=2, seed=0), logits) == {0, 1}


def test_top_p_keeps_the_smallest_prefix_reaching_the_mass():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(probs).astype(np.float32)
    assert draws(SamplingParams(temperature=1.0, top_k=0, top_p=0.75, seed=1), logits) == {0, 1}
    assert draws(SamplingParams(temperature=1.0, top_k=0, top_p=0.5, seed=1), logits) == {0}


def test_min_p_drops_tokens_far_below_the_best():
    probs = np.array([0.6, 0.3, 0.05, 0.05])
    logits = np.log(probs).astype(np.float32)
    assert draws(SamplingParams(temperature=1.0, top_k=0, min_p=0.2, seed=2), logits) == {0, 1}


def test_presence_penalty_pushes_seen_tokens_down():
    logits = np.array([1.0, 0.9], np.float32)
    sampler = Sampler(SamplingParams(temperature=0.0, presence_penalty=0.5))
    assert sampler(logits, np.array([0, 0, 0])) == 1


def test_same_seed_same_tokens_and_other_seed_differs():
    logits = np.zeros(1000, np.float32)
    a = [Sampler(SamplingParams(top_k=0, seed=7))(logits) for _ in range(1)]
    s1, s2, s3 = (Sampler(SamplingParams(top_k=0, seed=s)) for s in (7, 7, 8))
    seq1 = [s1(logits) for _ in range(20)]
    assert seq1 == [s2(logits) for _ in range(20)]
    assert seq1 != [s3(logits) for _ in range(20)]
    assert a[0] == seq1[0]


def test_log_softmax_normalises_and_top_k_ids_sorts_best_first():
    logits = np.array([1.0, 3.0, 2.0, -5.0], np.float32)
    lp = log_softmax(logits)
    assert abs(np.exp(lp).sum() - 1.0) < 1e-9
    assert list(top_k_ids(lp, 3)) == [1, 2, 0]


def test_recommended_defaults_follow_the_model_card():
    assert recommended_params(True, False) == SamplingParams(1.0, 20, 0.95, 0.0, 1.5)
    assert recommended_params(True, True) == SamplingParams(0.6, 20, 0.95, 0.0, 0.0)
    assert recommended_params(False, False) == SamplingParams(1.0, 20, 1.0, 0.0, 2.0)
    assert recommended_params(False, True) == SamplingParams(0.7, 20, 0.8, 0.0, 1.5)
