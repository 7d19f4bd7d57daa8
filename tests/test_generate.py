"""The generation loop: stop tokens, thinking kept apart, the think budget, limits.

A scripted model (it always puts the next token of a script on top) drives the real
Generator and tokenizer, so each rule is checked on a known token stream.
"""
from pathlib import Path

import numpy as np
import pytest

from raxcli.engine.gguf_file import GGUFFile
from raxcli.engine.text import TextModel
from raxcli.engine.weights import ModelWeights
from raxcli.generate import THINK_BUDGET_CLOSE, Completion, ContextOverflow, GenerationSettings, Generator
from raxcli.oneshot import Request, sampling_for
from raxcli.sampling import SamplingParams

FIXTURE = Path(__file__).parent / "fixtures" / "gguf" / "tiny-vk2-Q8_0.gguf"


@pytest.fixture(scope="module")
def tokenizer():
    from raxcli.tokenizer import Tokenizer
    return Tokenizer.from_gguf_metadata(GGUFFile(FIXTURE).metadata)


class ScriptedModel:
    """Logits that put the script's next token first, whatever was fed (records the feed)."""

    def __init__(self, script, n_vocab, context_length=4096):
        self.script = list(script)
        self.n_vocab = n_vocab
        self.fed = []
        self.config = type("Config", (), {"context_length": context_length})()

    def _next_logits(self):
        logits = np.zeros(self.n_vocab, np.float32)
        if self.script:
            logits[self.script.pop(0)] = 10.0
        return logits

    def embed(self, ids):
        self.fed.extend(int(i) for i in ids)
        return np.zeros((len(ids), 1), np.float32)

    def forward(self, embeddings, state, positions=None, last_only=False):
        state.n_tokens += len(embeddings)
        return np.zeros((1 if last_only else len(embeddings), 1), np.float32)

    def prefill(self, ids, state):
        return self.logits(self.forward(self.embed(ids), state, last_only=True)[-1])

    def logits(self, hidden):
        return self._next_logits()

    def decode(self, token, state):
        self.fed.append(int(token))
        state.n_tokens += 1
        return self._next_logits()


class State:
    n_tokens = 0

    def reserve(self, n_tokens):
        self.reserved = n_tokens


def run(tokenizer, script, prompt="<|im_start|>assistant\n<think>\n", **settings):
    model = ScriptedModel(script, tokenizer.vocab_size)
    gen = Generator(model, tokenizer)
    settings = GenerationSettings(params=SamplingParams(temperature=0.0), **settings)
    completion = Completion(prompt_token_ids=tokenizer.encode(prompt))
    steps = list(gen.generate(completion.prompt_token_ids, State(), settings))
    for step in steps:
        completion.add(step)
    return completion, model, steps


def test_thinking_and_answer_come_apart_and_the_stop_token_is_excluded(tokenizer):
    script = tokenizer.encode("Let me see.\n</think>\n\nHello there<|im_end|>") + [7, 7]
    completion, _, steps = run(tokenizer, script)
    assert completion.thinking == "Let me see."
    assert completion.text == "Hello there"
    assert completion.finish_reason == "stop"
    assert tokenizer.id_of("<|im_end|>") not in completion.token_ids
    assert all(s.thinking for s in steps if s.text and "see" in s.text)


def test_max_tokens_ends_with_length(tokenizer):
    completion, _, _ = run(tokenizer, tokenizer.encode(" a b c d e f g"), prompt="x", max_tokens=3)
    assert completion.finish_reason == "length" and len(completion.token_ids) == 3


def test_think_budget_closes_thinking_with_a_sentence_then_answers(tokenizer):
    rambling = tokenizer.encode(" think" * 30)
    answer = tokenizer.encode("42<|im_end|>")
    # once the budget is spent the script is ignored while the closing sentence is forced
    closing = tokenizer.encode(THINK_BUDGET_CLOSE)
    script = rambling[:5] + [0] * len(closing) + answer
    completion, model, _ = run(tokenizer, script, think_budget=5)
    assert completion.token_ids[:5] == rambling[:5]
    assert completion.token_ids[5:5 + len(closing)] == closing
    assert completion.text == "42"
    assert "limited time" in completion.thinking and "</think>" not in completion.thinking
    # the forced words were fed to the model, so its state matches the text
    assert model.fed == completion.prompt_token_ids + completion.token_ids


def test_think_budget_waits_for_a_whole_utf8_character(tokenizer):
    ids = tokenizer.encode("日本語の文章")
    split = [i for i, t in enumerate(ids) if tokenizer.stream_decoder().feed(t) == ""]
    if not split:
        pytest.skip("the tiny vocabulary spells this text without split characters")
    budget = split[0] + 1          # the budget runs out in the middle of a character
    closing = tokenizer.encode(THINK_BUDGET_CLOSE)
    completion, _, _ = run(tokenizer, ids + [0] * 40, think_budget=budget, max_tokens=60)
    at = next(i for i in range(len(completion.token_ids)) if completion.token_ids[i:i + len(closing)] == closing)
    assert at > budget
    assert "\ufffd" not in completion.thinking


def test_prompt_over_the_context_is_refused_before_any_work(tokenizer):
    model = ScriptedModel([], tokenizer.vocab_size, context_length=8)
    gen = Generator(model, tokenizer)
    with pytest.raises(ContextOverflow, match="context of 8 tokens"):
        next(gen.generate(list(range(20)), State(), GenerationSettings(params=SamplingParams())))
    assert model.fed == []


def test_greedy_means_plain_argmax_without_the_recommended_penalty():
    params = sampling_for(Request(greedy=True), thinking=True, media=False)
    assert params.greedy and params.presence_penalty == 0.0
    assert sampling_for(Request(greedy=True, presence_penalty=1.0), True, False).presence_penalty == 1.0
    assert sampling_for(Request(), thinking=True, media=False).presence_penalty == 1.5


def test_recommended_sampling_follows_the_model_card_table():
    assert sampling_for(Request(), thinking=True, media=True).temperature == 0.6
    no_think = sampling_for(Request(), thinking=False, media=False)
    assert (no_think.temperature, no_think.top_p, no_think.top_k, no_think.presence_penalty) == (1.0, 1.0, 20, 2.0)
    vision = sampling_for(Request(), thinking=False, media=True)
    assert (vision.temperature, vision.top_p, vision.presence_penalty) == (0.7, 0.8, 1.5)


def test_real_model_greedy_generation_is_deterministic(tokenizer):
    model = TextModel(ModelWeights(FIXTURE))
    gen = Generator(model, tokenizer)
    settings = GenerationSettings(params=SamplingParams(temperature=0.0), max_tokens=8)
    prompt = tokenizer.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    runs = [[s.token_id for s in gen.generate(prompt, model.new_state(), settings) if s.token_id is not None]
            for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) > 0
