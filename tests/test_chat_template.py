"""Chat templates render exactly as transformers renders them.

The expected prompts in fixtures/chat_template_cases.json come from transformers'
`apply_chat_template(tokenize=False)` on Qwen3.5's own template
(fixtures/make_template_fixtures.py says how they were made).
"""
import json
from pathlib import Path

import pytest

from raxcli.chat import CHATML_TEMPLATE, ChatTemplateError, render_chat

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "chat_template_cases.json").read_text())
CASES = FIXTURES["cases"]


def render_case(case: dict) -> str:
    kwargs = dict(case["kwargs"])
    # transformers hands the tokenizer's special tokens to every template as variables
    return render_chat(FIXTURES["template"], case["messages"], **{**FIXTURES["special_tokens"], **kwargs})


@pytest.mark.parametrize("case", [c for c in CASES if "expected" in c], ids=lambda c: c["name"])
def test_qwen35_template_matches_transformers(case):
    assert render_case(case) == case["expected"]


@pytest.mark.parametrize("case", [c for c in CASES if "error" in c], ids=lambda c: c["name"])
def test_qwen35_template_errors_are_chat_template_errors(case):
    with pytest.raises(ChatTemplateError) as info:
        render_case(case)
    assert str(info.value) == case["error"]


def test_the_table_covers_what_it_claims():
    # every switch and message kind appears at least once, so a shrunk fixture file shows up
    kw = [c["kwargs"] for c in CASES]
    assert {k.get("enable_thinking", "unset") for k in kw} == {True, False, "unset"}
    assert {k["add_generation_prompt"] for k in kw} == {True, False}
    messages = [m for c in CASES for m in c["messages"]]
    assert any("tool_calls" in m for m in messages) and any(m["role"] == "tool" for m in messages)
    assert any("reasoning_content" in m for m in messages) and any("tools" in k for k in kw)
    parts = [p.get("type") for m in messages if isinstance(m["content"], list) for p in m["content"]]
    assert {"text", "image", "video"} <= set(parts)
    assert sum("error" in c for c in CASES) >= 3


def test_enable_thinking_is_passed_only_when_given():
    template = "{{ 'unset' if enable_thinking is not defined else enable_thinking }}"
    msgs = [{"role": "user", "content": "hi"}]
    assert render_chat(template, msgs) == "unset"
    assert render_chat(template, msgs, enable_thinking=False) == "False"
    assert render_chat(template, msgs, enable_thinking=True) == "True"


def test_tojson_keeps_unicode_and_html_and_takes_arguments():
    msgs = [{"role": "user", "content": "x"}]
    data = {"b": "東京 <b>&</b>", "a": [1, 2]}
    assert render_chat("{{ d | tojson }}", msgs, d=data) == json.dumps(data, ensure_ascii=False)
    assert render_chat("{{ d | tojson(indent=2, sort_keys=true) }}", msgs, d=data) == \
        json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True)
    assert render_chat("{{ d | tojson(separators=(',', ':')) }}", msgs, d=data) == \
        json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def test_helpers_and_loop_controls():
    msgs = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "user", "content": "c"}]
    template = ("{%- for m in messages %}{% if loop.index == 2 %}{% continue %}{% endif %}"
                "{{ m.content }}{% endfor %}|{{ strftime_now('%Y') | length }}|{{ bos_token }}")
    assert render_chat(template, msgs, bos_token="<s>") == "ac|4|<s>"


def test_rich_objects_reach_the_template_as_placeholders():
    class Picture:   # stands for a PIL image: the template must not see its methods
        def save(self, path):
            raise AssertionError("the template reached a method of the image")
    msgs = [{"role": "user", "content": [{"type": "image", "image": Picture()}, {"type": "text", "text": "?"}]}]
    assert render_chat("{{ messages[0].content[0].image }}", msgs) == "<Picture>"
    # and Qwen's template still renders it
    out = render_chat(FIXTURES["template"], msgs)
    assert "<|vision_start|><|image_pad|><|vision_end|>?" in out


def test_template_cannot_reach_python_internals():
    with pytest.raises(ChatTemplateError):
        render_chat("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}",
                    [{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError):
        render_chat("{% set ns = namespace(_x=1) %}", [{"role": "user", "content": "x"}])


def test_raise_exception_becomes_chat_template_error():
    template = "{{ raise_exception('Only user and assistant roles are supported!') }}"
    with pytest.raises(ChatTemplateError, match="Only user and assistant roles are supported!"):
        render_chat(template, [{"role": "user", "content": "hi"}])


def test_a_template_that_does_not_parse_is_a_chat_template_error():
    with pytest.raises(ChatTemplateError, match="does not parse"):
        render_chat("{% for m in messages %}{{ m.content }}", [{"role": "user", "content": "hi"}])


# -- the built-in ChatML template, for files without one ----------------------------------
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "image", "image": "a.png"}, {"type": "text", "text": "What is it?"}]},
    {"role": "assistant", "content": "<think>\nA cat.\n</think>\n\nA cat."},
    {"role": "user", "content": "Colour?"},
]
CHATML_BODY = (
    "<|im_start|>system\nBe brief.<|im_end|>\n"
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
    "<|im_start|>assistant\nA cat.<|im_end|>\n"
    "<|im_start|>user\nColour?<|im_end|>\n"
)


def test_chatml_fallback_renders_a_plain_chatml_prompt():
    assert render_chat(None, CONVERSATION) == CHATML_BODY + "<|im_start|>assistant\n"
    assert render_chat(None, CONVERSATION, add_generation_prompt=False) == CHATML_BODY
    assert render_chat(CHATML_TEMPLATE, CONVERSATION) == render_chat(None, CONVERSATION)


def test_chatml_fallback_thinking_switch():
    assert render_chat(None, CONVERSATION, enable_thinking=True).endswith("<|im_start|>assistant\n<think>\n")
    assert render_chat(None, CONVERSATION, enable_thinking=False).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_messages_are_not_modified():
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "thinking": "t"}]
    before = json.dumps(msgs)
    render_chat(None, msgs + [{"role": "user", "content": "again"}])
    assert json.dumps(msgs) == before
