"""Turning logits into the next token: penalties, temperature, top-k / top-p / min-p, seeded draws."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0      # 0 means greedy (argmax)
    top_k: int = 20               # 0 disables
    top_p: float = 1.0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def with_overrides(self, **overrides) -> "SamplingParams":
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


# Qwen3.5 model card recommendations (min_p 0 and repetition penalty 1 everywhere). GGUF
# metadata cannot carry a presence penalty, so rax keeps the table.
_RECOMMENDED = {
    # (thinking, has images or video)
    (True, False): SamplingParams(temperature=1.0, top_p=0.95, top_k=20, presence_penalty=1.5),
    (True, True): SamplingParams(temperature=0.6, top_p=0.95, top_k=20, presence_penalty=0.0),
    (False, False): SamplingParams(temperature=1.0, top_p=1.0, top_k=20, presence_penalty=2.0),
    (False, True): SamplingParams(temperature=0.7, top_p=0.8, top_k=20, presence_penalty=1.5),
}


def recommended_params(thinking: bool, media: bool) -> SamplingParams:
    return _RECOMMENDED[(bool(thinking), bool(media))]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max()
    return x - (m + np.log(np.sum(np.exp(x - m))))


def top_k_ids(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, best first, without sorting the whole vocabulary."""
    k = min(k, values.shape[0])
    part = np.argpartition(-values, k - 1)[:k]
    return part[np.argsort(-values[part], kind="stable")]


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, seen_ids: np.ndarray | None = None) -> int:
        p = self.params
        logits = logits.astype(np.float32, copy=True)
        if p.presence_penalty and seen_ids is not None and len(seen_ids):
            logits[np.unique(seen_ids)] -= p.presence_penalty
        if p.greedy:
            return int(np.argmax(logits))

        k = p.top_k if p.top_k and p.top_k > 0 else logits.shape[0]
        ids = top_k_ids(logits, k)
        scaled = logits[ids].astype(np.float64) / p.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        keep = len(ids)
        if p.top_p < 1.0:
            # smallest prefix whose mass reaches top_p (always at least one token)
            keep = min(keep, int(np.searchsorted(np.cumsum(probs), p.top_p) + 1))
        if p.min_p > 0.0:
            keep = min(keep, max(1, int(np.sum(probs >= p.min_p * probs[0]))))
        probs = probs[:keep] / probs[:keep].sum()
        return int(ids[self.rng.choice(keep, p=probs)])
