"""`rax serve` end to end: a real server process on a loopback port with the tiny model,
driven by the official `openai` client (and plain HTTP for what a client library would not
send). Answers are checked against `rax run` and the local engine, not against themselves."""
import json
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_support import ROOT, TINY, ServerProcess, client, http, wait_idle  # noqa: E402

NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess("--queue", "32")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api(server):
    return client(server.url)


def rax_run(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "raxcli", "run", *args, "--json"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_health_and_models(server, api):
    status, health = http("GET", f"{server.url}/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "tiny-vk2-Q8_0"
    models = api.models.list()
    assert [m.id for m in models.data] == ["tiny-vk2-Q8_0"]
    assert models.data[0].model_extra["context_length"] == 4096


def test_answer_equals_rax_run_for_the_same_seed(server, api):
    """Thinking on (the template's default): ids, thinking, logprobs as `rax run` gives them."""
    local = rax_run("--model", str(TINY), "--prompt", "Tell me a story", "--seed", "11",
                    "--max-tokens", "24", "--top-logprobs", "3")
    reply = api.chat.completions.create(
        model="tiny-vk2-Q8_0", messages=[{"role": "user", "content": "Tell me a story"}], seed=11,
        max_tokens=24, logprobs=True, top_logprobs=3, extra_body={"return_token_ids": True})
    choice = reply.choices[0]
    assert reply.model_extra["prompt_token_ids"] == local["prompt_token_ids"]
    assert choice.model_extra["token_ids"] == local["token_ids"]
    assert (choice.message.content or "") == local["text"]
    assert choice.message.model_extra.get("reasoning_content", "") == local["thinking"]
    assert choice.finish_reason == local["finish_reason"]
    assert reply.usage.prompt_tokens == len(local["prompt_token_ids"])
    assert reply.usage.completion_tokens == len(local["token_ids"])
    served = choice.logprobs.content
    assert len(served) == len(local["logprobs"])
    for got, want in zip(served, local["logprobs"]):
        assert got.token == want["token"] and got.logprob == pytest.approx(want["logprob"], abs=1e-9)
        assert [t.token for t in got.top_logprobs] == [t["token"] for t in want["top"]]
        assert [t.logprob for t in got.top_logprobs] == pytest.approx([t["logprob"] for t in want["top"]], abs=1e-9)


def test_rax_run_through_the_server_equals_rax_run_locally(server):
    args = ["--prompt", "Name three colours", "--no-think", "--seed", "5", "--max-tokens", "20",
            "--temperature", "0.8", "--top-p", "0.9"]
    local = rax_run("--model", str(TINY), *args)
    remote = rax_run("--server", server.url, *args)
    for key in ("prompt_token_ids", "token_ids", "text", "thinking", "finish_reason"):
        assert remote[key] == local[key], key
    assert remote["stats"]["generated_tokens"] == len(local["token_ids"])


def test_streaming_carries_the_same_answer_as_a_whole_response(api):
    request = dict(model="m", messages=[{"role": "user", "content": "Stream this"}], seed=2, max_tokens=30,
                   extra_body={"return_token_ids": True})
    whole = api.chat.completions.create(**request)
    chunks = list(api.chat.completions.create(**request, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    ids = [i for c in chunks if c.choices for i in c.choices[0].model_extra.get("token_ids") or []]
    assert reasoning == whole.choices[0].message.model_extra.get("reasoning_content", "")
    assert content == (whole.choices[0].message.content or "")
    assert ids == whole.choices[0].model_extra["token_ids"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_strings_cut_the_answer(api):
    request = dict(model="m", messages=[{"role": "user", "content": "Say something"}], temperature=0,
                   max_tokens=40, extra_body=NO_THINK)
    full = api.chat.completions.create(**request).choices[0].message.content
    assert len(full) > 12
    stop = full[6:10]
    cut = full[:full.index(stop)]
    reply = api.chat.completions.create(**request, stop=[stop, "never appears"])
    assert reply.choices[0].message.content == cut and reply.choices[0].finish_reason == "stop"
    streamed = api.chat.completions.create(**request, stop=stop, stream=True)
    chunks = [c for c in streamed if c.choices]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == cut
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_tool_round_trip_reaches_the_model_as_the_template_writes_it(server, api):
    from raxcli.chat import render_chat
    from raxcli.loader import load_model
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                    "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    reply = api.chat.completions.create(model="m", messages=messages, tools=tools, max_tokens=4, temperature=0,
                                        extra_body={"return_token_ids": True, **NO_THINK})
    loaded = load_model(TINY)
    template_messages = [messages[0], {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        messages[2]]
    expected = loaded.tokenizer.encode(render_chat(loaded.chat_template, template_messages, tools=tools,
                                                   enable_thinking=False))
    assert reply.model_extra["prompt_token_ids"] == expected
    assert loaded.tokenizer.id_of("<tool_response>") in expected


def test_disconnect_mid_stream_stops_the_generation(server, api):
    _, before = http("GET", f"{server.url}/health")
    stream = api.chat.completions.create(model="m", messages=[{"role": "user", "content": "Go on forever"}],
                                         max_tokens=3000, temperature=0, stream=True, extra_body=NO_THINK)
    for _, chunk in zip(range(4), stream):
        pass
    stream.close()
    assert wait_idle(server.url, timeout=3.0) < 3.0
    _, after = http("GET", f"{server.url}/health")
    assert after["requests"]["interrupted"] == before["requests"]["interrupted"] + 1
    start = time.monotonic()
    reply = api.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert reply.choices[0].finish_reason == "length" and time.monotonic() - start < 5


def test_twenty_concurrent_clients_each_get_their_own_answer(server, api):
    """Every answer equals what the local engine says to that prompt alone."""
    from raxcli.chat import render_chat
    from raxcli.generate import GenerationSettings
    from raxcli.loader import load_model
    from raxcli.sampling import SamplingParams
    prompts = [f"Question number {i}: what comes next?" for i in range(20)]
    loaded = load_model(TINY)
    expected = []
    for prompt in prompts:
        ids = loaded.tokenizer.encode(render_chat(loaded.chat_template, [{"role": "user", "content": prompt}],
                                                  enable_thinking=False))
        settings = GenerationSettings(SamplingParams(temperature=0.0, presence_penalty=0.0), max_tokens=6)
        steps = loaded.generator.generate(ids, loaded.model.new_state(), settings)
        expected.append([s.token_id for s in steps if s.token_id is not None])

    results = [None] * 20

    def ask(i):
        results[i] = api.chat.completions.create(
            model="m", messages=[{"role": "user", "content": prompts[i]}], temperature=0, max_tokens=6,
            extra_body={"return_token_ids": True, **NO_THINK})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results)
    assert [r.choices[0].model_extra["token_ids"] for r in results] == expected


@pytest.mark.parametrize("body, status, code", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "m"}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, None),
    ({"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}, 400, None),
    ({"messages": [{"role": "user", "content": "word " * 5000}]}, 400, "context_length_exceeded"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}]}, 400, "invalid_image"),
    ({"messages": [{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
                   {"role": "user", "content": "hi"}]}, 400, None),
])
def test_bad_requests_get_a_json_error_and_the_server_lives_on(server, body, status, code):
    got, reply = http("POST", f"{server.url}/v1/chat/completions", body)
    assert got == status
    assert set(reply["error"]) == {"message", "type", "param", "code"} and reply["error"]["message"]
    assert reply["error"]["code"] == code
    assert http("GET", f"{server.url}/health")[0] == 200


def test_a_good_image_without_a_vision_model_is_refused_politely(server, tmp_path):
    from PIL import Image
    path = tmp_path / "dot.png"
    Image.new("RGB", (32, 32), (0, 128, 255)).save(path)
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this"},
                                                      {"type": "image_url", "image_url": {"url": path.as_uri()}}]}]}
    status, reply = http("POST", f"{server.url}/v1/chat/completions", body)
    assert status == 400 and reply["error"]["code"] == "no_vision_model"


def test_unknown_routes_and_methods_answer_in_json(server):
    assert http("GET", f"{server.url}/v1/nothing")[0] == 404
    status, reply = http("GET", f"{server.url}/v1/chat/completions")
    assert status == 405 and reply["error"]["type"] == "invalid_request_error"
