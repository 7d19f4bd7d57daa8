"""Tool calls through `rax serve`: a model that writes Qwen's <tool_call> block is answered
as OpenAI `tool_calls`, streamed or not, and the call can be sent back with its result.
The tiny random model never writes a call by itself, so a scripted generator says it; the
rest (template, tokenizer, server, client) is the real thing."""
import json
import subprocess
import sys

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

from serve_support import ROOT, TINY, ServerThread, client  # noqa: E402

from raxcli.generate import Step  # noqa: E402

SAID = ("I will look it up.\n\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>")
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city"]}}}]


class ScriptedGenerator:
    """Answers every prompt with the same text, token by token, as the real generator would."""

    def __init__(self, real, text: str):
        self.tokenizer = real.tokenizer
        self.think_id, self.end_think_id = real.think_id, real.end_think_id
        self.ids = real.tokenizer.encode(text)
        self.prompts = []

    def generate(self, prompt_ids, state, settings, embeddings=None, positions=None, should_stop=lambda: False):
        self.prompts.append(list(prompt_ids))
        decoder = self.tokenizer.stream_decoder()
        for token in self.ids[:settings.max_tokens]:
            yield Step(token, decoder.feed(token), False)
        yield Step(None, decoder.flush(), False, None, "stop", {})


@pytest.fixture(scope="module")
def scripted():
    from raxcli.loader import load_model
    from raxcli.serve import create_app
    from raxcli.serve_engine import LocalEngine
    loaded = load_model(TINY)
    engine = LocalEngine(loaded, "tiny")
    engine.generator = ScriptedGenerator(loaded.generator, SAID)
    server = ServerThread(create_app(engine))
    yield server, engine.generator, engine
    server.stop()


def ask(api, **extra):
    return api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                       tools=TOOLS, extra_body={"chat_template_kwargs": {"enable_thinking": False}},
                                       **extra)


def test_a_written_tool_call_comes_back_as_tool_calls(scripted):
    server, _, _ = scripted
    reply = ask(client(server.url))
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will look it up."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris", "days": 3}


def test_a_streamed_tool_call_arrives_whole_with_its_finish_reason(scripted):
    server, _, _ = scripted
    chunks = [c for c in ask(client(server.url), stream=True) if c.choices]
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [t for c in chunks for t in c.choices[0].delta.tool_calls or []]
    assert content == "I will look it up."
    assert [(t.index, t.function.name, json.loads(t.function.arguments)) for t in calls] == \
        [(0, "get_weather", {"city": "Paris", "days": 3})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert "<tool_call>" not in content


def test_the_call_and_its_result_go_back_into_the_prompt(scripted):
    server, generator, _ = scripted
    api = client(server.url)
    first = ask(api).choices[0].message
    messages = [{"role": "user", "content": "Weather in Paris?"},
                first.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "rain, 12 C"}]
    api.chat.completions.create(model="tiny", messages=messages, tools=TOOLS,
                                extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    prompt = generator.tokenizer.decode(generator.prompts[-1])
    # (the template gives turns after the last user message an empty thinking block)
    assert ("<|im_start|>assistant\n<think>\n\n</think>\n\nI will look it up.\n\n<tool_call>\n<function=get_weather>\n"
            "<parameter=city>\nParis\n</parameter>\n<parameter=days>\n3\n</parameter>\n</function>\n"
            "</tool_call><|im_end|>") in prompt
    assert "<tool_response>\nrain, 12 C\n</tool_response>" in prompt


def test_rax_run_through_the_server_reports_the_tool_call(scripted, tmp_path):
    server, _, _ = scripted
    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps(TOOLS))
    out = subprocess.run([sys.executable, "-m", "raxcli", "run", "--server", server.url, "--tools", str(tools_file),
                          "--prompt", "Weather in Paris?", "--no-think", "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]
    assert result["text"].startswith("I will look it up.")


class BrokenGenerator(ScriptedGenerator):
    def generate(self, *args, **kwargs):
        yield Step(self.ids[0], "I", False)
        raise RuntimeError("a fault inside the engine")


def test_a_fault_in_the_engine_is_a_500_and_the_server_goes_on(scripted):
    import openai
    server, generator, engine = scripted
    engine.generator = BrokenGenerator(generator, "x")
    try:
        with pytest.raises(openai.InternalServerError, match="a fault inside the engine"):
            client(server.url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
        chunks = client(server.url).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                            stream=True)
        with pytest.raises(openai.APIError, match="a fault inside the engine"):
            list(chunks)
    finally:
        engine.generator = generator
    assert ask(client(server.url)).choices[0].finish_reason == "tool_calls"
