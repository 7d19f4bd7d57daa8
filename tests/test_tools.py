"""--tools files, and tool calls written in the Qwen3.5 template's own format read back."""
import json
from pathlib import Path

import pytest

from raxcli.chat import render_chat
from raxcli.engine.gguf_file import GGUFFile
from raxcli.errors import UserError
from raxcli.tool_schemas import load_tools
from raxcli.tools import parse_tool_calls

MODEL = Path(__file__).parent / "fixtures" / "gguf" / "tiny-vk2-Q8_0.gguf"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather forecast for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "days": {"type": "integer"}, "zip": {"type": "string"},
        "units": {"type": "object"}, "hours": {"type": "array"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def template():
    return GGUFFile(MODEL).metadata["tokenizer.chat_template"]     # the real Qwen3.5 template


def write(tmp_path, data) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_openai_shape_bare_functions_and_a_tools_object_all_load(tmp_path):
    bare = dict(WEATHER["function"])
    assert load_tools(write(tmp_path, [WEATHER])) == [WEATHER]
    assert load_tools(write(tmp_path, [bare])) == [WEATHER]          # wrapped as transformers wraps it
    assert load_tools(write(tmp_path, {"tools": [WEATHER, bare]})) == [WEATHER, WEATHER]


@pytest.mark.parametrize("content, message", [
    ("[", "not JSON"),
    ("[]", "non-empty JSON list"),
    ('{"name": "f"}', "non-empty JSON list"),
    ('["f"]', "tool 0 is not a JSON object"),
    ('[{"type": "retrieval"}]', "only 'function' tools"),
    ('[{"description": "x"}]', "tool 0 has no name"),
    ('[{"name": "f", "parameters": [1]}]', "'parameters' must be a JSON schema object"),
    ('[{"type": "function", "function": "f"}]', "'function' must be an object"),
])
def test_bad_tools_files_are_one_line_errors(tmp_path, content, message):
    with pytest.raises(UserError) as err:
        load_tools(write(tmp_path, content))
    assert message in str(err.value) and str(err.value).startswith("--tools ") and "\n" not in str(err.value)


def test_missing_tools_file_names_it(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_tools(tmp_path / "absent.json")


def test_the_template_shows_the_tools_to_the_model(template):
    prompt = render_chat(template, [{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER])
    assert prompt.startswith("<|im_start|>system\n# Tools\n\nYou have access to the following functions:")
    assert json.dumps(WEATHER, ensure_ascii=False) in prompt
    assert prompt.endswith("<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n<think>\n")


def test_calls_written_by_the_template_parse_back_to_the_same_arguments(template):
    """The template renders an assistant's tool calls exactly as the model is taught to
    write them; reading that text back must give the same names and typed arguments."""
    calls = [
        {"type": "function", "function": {"name": "get_weather", "arguments": {
            "city": "São Paulo", "days": 3, "zip": "01000", "units": {"temp": "C"}, "hours": [6, 12]}}},
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Line one\nline two"}}},
    ]
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": "Let me look.", "tool_calls": calls}]
    rendered = render_chat(template, messages, add_generation_prompt=False, tools=[WEATHER])
    reply = rendered.split("<|im_start|>assistant\n", 1)[1].split("<|im_end|>")[0]
    assert "<tool_call>\n<function=get_weather>\n<parameter=city>\nSão Paulo\n</parameter>" in reply
    text, parsed = parse_tool_calls(reply, [WEATHER])
    assert [(c.name, c.arguments) for c in parsed] == [(c["function"]["name"], c["function"]["arguments"])
                                                      for c in calls]
    assert "Let me look." in text and "<tool_call>" not in text
