"""The OpenAI protocol pieces of `rax serve` without a server: request messages → template
messages, engine steps → deltas (stop strings, tool calls, thinking framing), tool-call parsing."""
import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from raxcli.chat import render_chat
from raxcli.engine.gguf_file import GGUFFile
from raxcli.generate import Step
from raxcli.openai_messages import RequestError, convert_chat, load_image_url
from raxcli.openai_reply import ReplyShaper, StopMatcher
from raxcli.tools import parse_tool_calls

# the tiny fixture carries Qwen3.5's real chat template
TEMPLATE = GGUFFile(Path(__file__).parent / "fixtures/gguf/tiny-vk2-Q8_0.gguf").metadata["tokenizer.chat_template"]

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                    "units": {"type": "object"}}}}}


def png_data_url(size=(8, 6), color=(200, 10, 10)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# -- messages --------------------------------------------------------------------------------

def test_text_parts_and_data_url_images_become_template_parts_in_order():
    chat = convert_chat([{"role": "developer", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "what is"},
                                                      {"type": "image_url", "image_url": {"url": png_data_url()}},
                                                      {"type": "text", "text": "this?"}]}],
                        allow_file_urls=False)
    assert chat.messages[0] == {"role": "system", "content": "be brief"}
    assert chat.messages[1]["content"] == [{"type": "text", "text": "what is"}, {"type": "image"},
                                           {"type": "text", "text": "this?"}]
    assert len(chat.images) == 1 and chat.images[0].size == (8, 6)
    assert chat.images[0].where == "messages[1].content[1]"
    assert Image.open(io.BytesIO(chat.images[0].data)).getpixel((0, 0)) == (200, 10, 10)


def test_file_urls_are_read_only_when_allowed(tmp_path):
    path = tmp_path / "red dot.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(path)
    url = path.as_uri()
    source = load_image_url(url, allow_file_urls=True)
    assert source.size == (4, 4) and source.path == path
    with pytest.raises(RequestError, match="file URLs"):
        load_image_url(url, allow_file_urls=False)
    with pytest.raises(RequestError, match="cannot read"):
        load_image_url((tmp_path / "missing.png").as_uri(), allow_file_urls=True)


@pytest.mark.parametrize("url, reason", [
    ("data:image/png;base64,!!!not-base64!!!", "not valid base64"),
    ("data:image/png;base64," + base64.b64encode(b"hello, not a picture").decode(), "cannot decode"),
    ("data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").decode(), "cannot decode"),
    ("https://example.com/cat.png", "fetches nothing"),
    ("data:image/png,rawbytes", "base64"),
])
def test_undecodable_or_remote_images_are_request_errors(url, reason):
    with pytest.raises(RequestError, match=reason) as info:
        convert_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
                     allow_file_urls=True)
    assert info.value.status == 400 and info.value.param == "messages[0].content[0]"


@pytest.mark.parametrize("messages, where", [
    ([], "messages"),
    ("hello", "messages"),
    ([{"role": "wizard", "content": "hi"}], "messages[0].role"),
    ([{"role": "user", "content": [{"type": "audio", "data": "..."}]}], "messages[0].content[0]"),
    ([{"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}],
     "messages[0].content[0]"),
    ([{"role": "assistant", "content": None,
       "tool_calls": [{"function": {"name": "f", "arguments": "{not json"}}]}], "messages[0].tool_calls[0]"),
])
def test_malformed_messages_name_the_field(messages, where):
    with pytest.raises(RequestError) as info:
        convert_chat(messages, allow_file_urls=False)
    assert info.value.param.startswith(where)


def test_tool_round_trip_renders_as_qwen_writes_it():
    chat = convert_chat([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "days": 2})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ], [WEATHER_TOOL], allow_file_urls=False)
    text = render_chat(TEMPLATE, chat.messages, tools=chat.tools, enable_thinking=False)
    assert '"name": "get_weather"' in text.split("</tools>")[0]
    assert ("<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
            "<parameter=days>\n2\n</parameter>\n</function>\n</tool_call><|im_end|>") in text
    assert "<|im_start|>user\n<tool_response>\nsunny, 21 C\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_tool_choice_none_hides_the_tools():
    assert convert_chat([{"role": "user", "content": "hi"}], [WEATHER_TOOL], "none",
                        allow_file_urls=False).tools is None


# -- tool-call parsing ----------------------------------------------------------------------

def test_tool_calls_are_parsed_with_schema_types():
    text = ("Let me check.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\n42\n</parameter>\n"
            "<parameter=days>\n3\n</parameter>\n<parameter=units>\n{\"t\": \"C\"}\n</parameter>\n"
            "</function>\n</tool_call>\n<tool_call>\n<function=other>\n<parameter=x>\nmulti\nline\n</parameter>\n"
            "</function>")     # the second block lost its closing tag: generation stopped there
    outside, calls = parse_tool_calls(text, [WEATHER_TOOL])
    assert outside == "Let me check."
    assert [(c.name, c.arguments) for c in calls] == [
        ("get_weather", {"city": "42", "days": 3, "units": {"t": "C"}}),   # "42" stays a string
        ("other", {"x": "multi\nline"})]


def test_text_without_a_well_formed_call_is_left_alone():
    for text in ("no calls here", "<tool_call>\n<function=broken>\n<parameter=a>\n1"):
        assert parse_tool_calls(text) == (text, [])


# -- reply shaping --------------------------------------------------------------------------

def steps_for(pieces):
    """Steps from (text, thinking) pieces, then a final step."""
    steps = [Step(i, text, thinking) for i, (text, thinking) in enumerate(pieces)]
    return steps + [Step(None, "", pieces[-1][1] if pieces else False, None, "length", {})]


def shape(pieces, stops=None, tools=None):
    shaper = ReplyShaper(stops, tools)
    deltas = []
    for step in steps_for(pieces):
        if step.finish_reason:
            deltas.append(shaper.step(step))
            deltas.append(shaper.finish(step.finish_reason))
            break
        deltas.append(shaper.step(step))
        if shaper.stopped:
            deltas.append(shaper.finish("stop"))
            break
    return deltas


def joined(deltas):
    return ("".join(d.reasoning for d in deltas), "".join(d.content for d in deltas),
            [c for d in deltas for c in d.tool_calls], deltas[-1].finish_reason)


def test_stop_string_split_across_tokens_is_cut_and_never_shown():
    deltas = shape([("Hello wo", False), ("rld, E", False), ("N", False), ("D here", False), ("more", False)],
                   stops=["END"])
    assert joined(deltas)[1:] == ("Hello world, ", [], "stop")
    assert all("E" not in d.content for d in deltas[2:])  # "E" was held until "N","D" decided
    assert len([t for d in deltas for t in d.token_ids]) == 4   # generation ended at the stop


def test_text_that_only_looks_like_a_stop_start_is_let_through():
    matcher = StopMatcher(["</end>"])
    assert matcher.feed("a </e") == ("a ", False)
    assert matcher.feed("xit") == ("</exit", False)
    assert matcher.flush() == ""


def test_thinking_framing_newlines_are_dropped():
    deltas = shape([("\n", True), ("plan", True), ("\n\n", True), ("more", True), ("\n", True), ("", True),
                    ("\n\n", False), ("Answer", False)])
    assert joined(deltas)[:2] == ("plan\n\nmore", "Answer")


def test_tool_call_text_is_held_and_returned_as_calls():
    call = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
    pieces = [("Checking.", False), ("\n\n", False), ("<tool", False), ("_call>", False)] + \
        [(call[len("<tool_call>"):], False)]
    reasoning, content, calls, finish = joined(shape(pieces, tools=[WEATHER_TOOL]))
    assert content == "Checking." and finish == "tool_calls"
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_without_tools_tool_call_text_is_plain_content():
    text = "<tool_call>\n<function=f>\n</function>\n</tool_call>"
    assert joined(shape([(text, False)]))[1:] == (text, [], "length")
