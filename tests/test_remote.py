"""The remote backend: the same Step records as the local engine, from rax serve and from
servers that stream differently (thinking inline in the content, tool calls in pieces)."""
import base64
import io
import json

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

from PIL import Image  # noqa: E402
from serve_support import TINY, ServerThread  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from raxcli.errors import UserError  # noqa: E402
from raxcli.generate import Completion  # noqa: E402
from raxcli.remote import RemoteBackend, RemoteSettings, ThinkSplitter, api_base  # noqa: E402
from raxcli.tools import parse_tool_calls  # noqa: E402


def gather(steps) -> Completion:
    completion = Completion(prompt_token_ids=[])
    for step in steps:
        completion.add(step)
    return completion


# -- against rax serve -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded():
    from raxcli.loader import load_model
    return load_model(TINY)


@pytest.fixture(scope="module")
def rax_server(loaded):
    from raxcli.serve import create_app
    from raxcli.serve_engine import LocalEngine
    server = ServerThread(create_app(LocalEngine(loaded, "tiny")))
    yield server
    server.stop()


@pytest.mark.parametrize("thinking", [None, False])
def test_steps_from_rax_serve_gather_to_the_local_engines_answer(loaded, rax_server, thinking):
    from raxcli.chat import render_chat
    from raxcli.generate import GenerationSettings, thinking_open_at_end
    from raxcli.sampling import recommended_params
    messages = [{"role": "user", "content": "Write a line"}]
    ids = loaded.tokenizer.encode(render_chat(loaded.chat_template, messages, enable_thinking=thinking))
    gen = loaded.generator
    params = recommended_params(thinking_open_at_end(ids, gen.think_id, gen.end_think_id), False)
    local = gather(gen.generate(ids, loaded.model.new_state(),
                                GenerationSettings(params.with_overrides(seed=9), max_tokens=20, top_logprobs=2)))

    backend = RemoteBackend(rax_server.url)
    remote = gather(backend.generate(messages, RemoteSettings(seed=9, max_tokens=20, top_logprobs=2,
                                                              thinking=thinking, token_ids=True)))
    assert backend.model == "tiny" and backend.prompt_token_ids == ids
    assert remote.token_ids == local.token_ids
    assert (remote.text, remote.thinking, remote.finish_reason) == (local.text, local.thinking, local.finish_reason)
    assert [(lp.id, lp.token) for lp in remote.logprobs] == [(lp.id, lp.token) for lp in local.logprobs]
    assert [lp.logprob for lp in remote.logprobs] == pytest.approx([lp.logprob for lp in local.logprobs])
    assert remote.stats["generated_tokens"] == 20 and remote.stats["prompt_tokens"] == len(ids)


def test_should_stop_ends_a_remote_answer_early(rax_server):
    calls = iter(range(1000))
    steps = list(RemoteBackend(rax_server.url).generate(
        [{"role": "user", "content": "hi"}], RemoteSettings(max_tokens=500, temperature=0),
        should_stop=lambda: next(calls) >= 5))
    assert steps[-1].finish_reason == "interrupted" and len(steps) <= 8


# -- against a server that streams in other ways ------------------------------------------------

class CannedServer:
    """Answers every chat request with the given SSE chunks and remembers the request."""

    def __init__(self, deltas, status=200, error=None):
        self.requests = []

        async def chat(request):
            self.requests.append(await request.json())
            if status != 200:
                return JSONResponse({"error": error}, status_code=status)

            def events():
                for i, delta in enumerate(deltas):
                    finish = "stop" if i == len(deltas) - 1 else None
                    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "canned",
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")

        async def models(request):
            return JSONResponse({"object": "list", "data": [{"id": "canned", "object": "model"}]})

        self.thread = ServerThread(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                                     Route("/v1/models", models)]))
        self.url = self.thread.url

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.thread.stop()


def test_inline_think_tags_in_content_become_thinking():
    deltas = [{"role": "assistant", "content": ""}, {"content": "<th"}, {"content": "ink>\nweigh it"},
              {"content": " up</thi"}, {"content": "nk>\n\nThe answer"}, {"content": "."}]
    with CannedServer(deltas) as server:
        reply = gather(RemoteBackend(server.url).generate([{"role": "user", "content": "q"}], RemoteSettings()))
    assert (reply.thinking, reply.text, reply.finish_reason) == ("weigh it up", "The answer.", "stop")


def test_thinking_opened_by_the_prompt_is_found_by_its_closing_tag():
    deltas = [{"content": "first thoughts"}, {"content": "</think>\n\nAnswer"}]
    with CannedServer(deltas) as server:
        reply = gather(RemoteBackend(server.url).generate([{"role": "user", "content": "q"}], RemoteSettings()))
    assert (reply.thinking, reply.text) == ("first thoughts", "Answer")


def test_streamed_tool_calls_come_out_as_the_model_writes_them():
    deltas = [{"content": "Let me look."},
              {"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                               "function": {"name": "get_weather", "arguments": "{\"ci"}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": "ty\": \"Oslo\", \"days\": 2}"}}]}]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with CannedServer(deltas) as server:
        reply = gather(RemoteBackend(server.url).generate([{"role": "user", "content": "q"}],
                                                          RemoteSettings(thinking=False, tools=tools)))
        assert server.requests[0]["tools"] == tools
    outside, calls = parse_tool_calls(reply.text)
    assert outside == "Let me look."
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", {"city": "Oslo", "days": 2})]


def test_images_travel_as_data_urls_and_only_set_values_are_sent(tmp_path):
    path = tmp_path / "p.bmp"      # not PNG or JPEG: re-encoded as PNG on the way
    Image.new("RGB", (5, 3), (1, 2, 3)).save(path)
    with CannedServer([{"content": "ok"}]) as server:
        RemoteBackend(server.url, model="chosen").generate(
            [{"role": "user", "content": [{"type": "image", "image": str(path)}, {"type": "text", "text": "hm"}]}],
            RemoteSettings(seed=4, thinking=False, top_k=7)).__next__()
        sent = server.requests[0]
    part = sent["messages"][0]["content"][0]
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith("data:image/png;base64,")
    raw = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(raw)).getpixel((4, 2)) == (1, 2, 3)
    assert sent["model"] == "chosen" and sent["seed"] == 4 and sent["top_k"] == 7
    assert sent["chat_template_kwargs"] == {"enable_thinking": False}
    assert "temperature" not in sent and "top_p" not in sent     # the server's defaults stay


def test_server_errors_become_one_line_user_errors():
    with CannedServer([], status=401, error={"message": "bad key", "type": "authentication_error"}) as server:
        with pytest.raises(UserError, match="API key"):
            list(RemoteBackend(server.url, model="m").generate([{"role": "user", "content": "q"}], RemoteSettings()))
    with CannedServer([], status=400, error={"message": "prompt too long", "type": "invalid_request_error"}) as s:
        with pytest.raises(UserError, match="400: prompt too long"):
            list(RemoteBackend(s.url, model="m").generate([{"role": "user", "content": "q"}], RemoteSettings()))
    with pytest.raises(UserError, match="cannot reach"):
        list(RemoteBackend("http://127.0.0.1:9", model="m", max_retries=0).generate(
            [{"role": "user", "content": "q"}], RemoteSettings()))


# -- pieces ------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, base", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
    ("localhost:8000/v1", "http://localhost:8000/v1"),
    ("https://host/api/v1/", "https://host/api/v1"),
])
def test_server_urls_are_taken_with_or_without_v1(url, base):
    assert api_base(url) == base


def test_think_splitter_passes_plain_answers_through_when_thinking_is_off():
    splitter = ThinkSplitter(expect_thinking=False)
    assert splitter.feed("Hello") == [("Hello", False)]
    assert splitter.feed(" there </think>") == [(" there </think>", False)]


def test_think_splitter_without_any_tag_decides_answer_at_the_end():
    splitter = ThinkSplitter(expect_thinking=True)
    assert splitter.feed("no tags") == [] and splitter.feed(" at all") == []
    assert splitter.flush() == [("no tags at all", False)]


# -- the chat session the REPL drives ----------------------------------------------------------

def test_a_remote_chat_sends_the_whole_history_each_turn():
    from raxcli.conversation import Message
    from raxcli.remote_session import RemoteChatSession
    from raxcli.session import ChatOptions
    with CannedServer([{"reasoning_content": "hmm"}, {"content": "Hi there"}]) as server:
        session = RemoteChatSession(RemoteBackend(server.url), ChatOptions(thinking=False, max_tokens=50,
                                                                           sampling={"seed": 3}))
        session.set_system("be kind")
        for text in ("hello", "again"):
            user = Message("user", text)
            steps = list(session.ask(user, prompt=session.build_prompt(user)))
        first, second = server.requests
    assert steps[-1].stats["finish_reason"] == "stop" and steps[-1].stats["context"] == 4096
    assert [m.text for m in session.conversation.messages] == ["hello", "Hi there", "again", "Hi there"]
    assert session.conversation.messages[1].thinking == "hmm"
    assert second["messages"] == [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"},
                                  {"role": "assistant", "content": "Hi there"}, {"role": "user", "content": "again"}]
    assert second["max_tokens"] == 50 and second["seed"] == 3
    assert second["chat_template_kwargs"] == {"enable_thinking": False}
