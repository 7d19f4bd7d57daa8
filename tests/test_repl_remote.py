"""`rax chat --server URL`: the same REPL, driven through a pseudo-terminal, answered by
`rax serve` (a real subprocess with the tiny model) or by a scripted stand-in server."""
import base64
import json
import socket
import subprocess
import sys

import pytest

pexpect = pytest.importorskip("pexpect")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

from serve_support import TINY, ServerProcess, ServerThread, wait_idle  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse, StreamingResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402
from test_repl import ANSI, FOOTER, PICTURE, PROMPT, command, environment, leave  # noqa: E402

KEY = "sekrit"


@pytest.fixture(scope="module")
def server():
    process = ServerProcess("--api-key", KEY)
    yield process
    process.stop()


def start_chat(home, url, *args, cwd=None):
    child = pexpect.spawn(sys.executable, ["-m", "raxcli", "chat", "--server", url, *map(str, args)],
                          env=environment(home), cwd=str(cwd or home), dimensions=(40, 120), encoding="utf-8",
                          timeout=60)
    child.expect(PROMPT)
    return child


def rax_json(home, *args) -> dict:
    proc = subprocess.run([sys.executable, "-m", "raxcli", "run", "--json", *map(str, args)], capture_output=True,
                          text=True, env=environment(home), timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def answers(path) -> list[tuple[str, str]]:
    """(thinking, text) of each answer in a saved chat."""
    return [(m.get("thinking", ""), m["text"]) for m in json.loads(path.read_text())["messages"]
            if m["role"] == "assistant"]


def test_a_chat_through_rax_serve_answers_as_rax_run_does(server, tmp_path):
    url = f"{server.url}/v1"
    chat = start_chat(tmp_path, url, "--api-key", KEY, "--greedy", "--max-tokens", 12)
    banner = ANSI.sub("", chat.before)
    assert f"tiny-vk2-Q8_0 at {url} (context 4096 tokens)" in banner
    assert "answer 12 · think the server's default" in banner
    assert f"pictures are off: {url} says tiny-vk2-Q8_0 cannot see them" in banner

    reply = command(chat, "Hello", FOOTER)
    assert "▸ thought for 12 tokens" in reply and "hit max tokens" in reply
    stats = command(chat, "/stats", "conversation: 1 turns")
    assert "hit max tokens" in stats and "of 4096 tokens of context" in stats
    info = " ".join(command(chat, "/info", "chat kept in").split())
    assert f"server: {url}" in info and "model: tiny-vk2-Q8_0" in info and "context_length 4096" in info
    command(chat, f"/save {tmp_path / 'thinking.json'}", "saved 1 turns")

    command(chat, "/clear", "new conversation")
    command(chat, "/stats", "conversation: 0 turns")
    command(chat, "/think off", "thinking off")
    command(chat, "Say something", FOOTER)
    command(chat, f"/save {tmp_path / 'plain.json'}", "saved 1 turns")
    command(chat, f"/video {PICTURE.parent / 'frames'}", "videos cannot be sent to a server")
    assert leave(chat) == 0

    # the same seedless greedy prompts through `rax run`, locally and through the same server
    local = rax_json(tmp_path, "--model", TINY, "--greedy", "--max-tokens", 12, "--ram-gb", 16, "-p", "Hello")
    remote = rax_json(tmp_path, "--server", server.url, "--api-key", KEY, "--greedy", "--max-tokens", 12,
                      "-p", "Hello")
    assert answers(tmp_path / "thinking.json") == [(local["thinking"], local["text"])]
    assert (remote["thinking"], remote["text"]) == (local["thinking"], local["text"]) and local["thinking"]
    plain = rax_json(tmp_path, "--model", TINY, "--greedy", "--max-tokens", 12, "--ram-gb", 16, "--no-think",
                     "-p", "Say something")
    assert answers(tmp_path / "plain.json") == [("", plain["text"])] and plain["text"]


def test_ctrl_c_stops_a_remote_answer_and_the_chat_goes_on(server, tmp_path):
    chat = start_chat(tmp_path, server.url, "--api-key", KEY, "--max-tokens", 3000, "--seed", 1)
    for message in ("Tell me a long story", "Go on"):
        chat.send(message + "\r")
        chat.expect("thinking · [0-9]+ tokens")      # the thinking panel is streaming
        chat.sendintr()
        chat.expect(r"stopped \(Ctrl-C\)")
        chat.expect(PROMPT)
        assert wait_idle(server.url) < 5              # the closed stream stopped the server's generation
    command(chat, "/stats", "conversation: 2 turns")
    chat.sendintr()                                   # Ctrl-C at the prompt only clears the line
    chat.expect(PROMPT)
    assert leave(chat) == 0
    kept = json.loads(next((tmp_path / "data" / "rax" / "chats").glob("chat-*.json")).read_text())
    assert [m.get("finish_reason") for m in kept["messages"]] == [None, "interrupted", None, "interrupted"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["unreachable", "refused key", "not a url"])
def test_a_server_that_cannot_be_used_stops_the_start_with_one_line(server, tmp_path, case):
    url, key, expected = {
        "unreachable": (f"http://127.0.0.1:{free_port()}", KEY, "cannot reach"),
        "refused key": (server.url, "wrong", "refused the API key"),
        "not a url": ("ftp://example", KEY, "give an http(s) URL"),
    }[case]
    proc = subprocess.run([sys.executable, "-m", "raxcli", "chat", "--server", url, "--api-key", key],
                          capture_output=True, text=True, env=environment(tmp_path), timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rax: ") and expected in lines[0], proc.stderr


# -- a stand-in server: thinking inline in the content, boxes in the answer ---------------------

def sse(choices: list, **extra) -> str:
    chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "scripted", "choices": choices}
    return f"data: {json.dumps({**chunk, **extra})}\n\n"


class ScriptedServer:
    """Answers each chat request with inline <think> text (as servers that do not split the
    reasoning send it) and a grounding answer; remembers the requests. `mode` "break" drops
    the connection mid-answer; "no finish" ends the stream without a finish reason, as a
    server shutting down does."""

    ANSWER = '[{"bbox_2d": [0, 0, 1000, 500], "label": "top half"}]'

    def __init__(self):
        self.requests = []
        self.mode = "answer"

        async def chat(request):
            self.requests.append(await request.json())
            pieces = ["<think>\nlook", "ing closely</think>\n\n", self.ANSWER[:20], self.ANSWER[20:]]
            mode = self.mode

            def events():
                for i, piece in enumerate(pieces):
                    if mode == "break" and i == 2:
                        raise ConnectionAbortedError("the scripted server drops the connection")
                    if mode == "no finish" and i == 2:
                        break
                    yield sse([{"index": 0, "delta": {"content": piece},
                                "finish_reason": "stop" if i == len(pieces) - 1 else None}])
                usage = {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}
                yield sse([], usage=usage)
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")

        async def models(request):
            return JSONResponse({"object": "list", "data": [{"id": "scripted", "object": "model",
                                                             "max_model_len": 8192}]})

        self.thread = ServerThread(Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                                                     Route("/v1/models", models)]))
        self.url = self.thread.url


def test_pictures_go_as_data_urls_and_boxes_are_drawn_from_a_remote_answer(tmp_path):
    stand_in = ScriptedServer()
    work = tmp_path / "pictures here"
    work.mkdir()
    (work / "my square.png").write_bytes(PICTURE.read_bytes())
    try:
        chat = start_chat(tmp_path, stand_in.url, cwd=work)
        banner = ANSI.sub("", chat.before)
        assert "scripted at" in banner and "(context 8192 tokens)" in banner and "as data URLs" in banner
        command(chat, f"/image {PICTURE}", "square.png · 96×96", "1 attached")
        reply = command(chat, "Where is the top half?", "boxes drawn on the full picture: ")
        assert "▸ thought for" in reply and "top half" in reply and "▀" in reply
        assert "50 prompt · 12 answer tokens" in reply and "context 62/8192" in reply
        command(chat, "and in my square.png ?", "my square.png · 96×96", "boxes drawn")
        assert leave(chat) == 0
    finally:
        stand_in.thread.stop()

    png = "data:image/png;base64," + base64.b64encode(PICTURE.read_bytes()).decode()
    first, second = stand_in.requests
    assert first["messages"] == [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": png}}, {"type": "text", "text": "Where is the top half?"}]}]
    # the whole chat goes each turn: the first picture again, the answer without its thinking,
    # and the picture whose path was typed, taken out of the text
    assert second["messages"][1] == {"role": "assistant", "content": ScriptedServer.ANSWER}
    assert second["messages"][2]["content"] == [{"type": "image_url", "image_url": {"url": png}},
                                                {"type": "text", "text": "and in?"}]
    drawn = sorted((tmp_path / "data" / "rax" / "chats").glob("chat-*-turn*-boxes.png"))
    assert [p.name.rsplit("-", 2)[1] for p in drawn] == ["turn1", "turn2"]


def test_a_server_lost_mid_chat_costs_one_line_and_the_chat_goes_on(tmp_path):
    stand_in = ScriptedServer()
    try:
        chat = start_chat(tmp_path, stand_in.url, "--no-think")
        stand_in.mode = "break"
        broken = command(chat, "first", "the connection broke during the answer")
        assert "Traceback" not in broken
        stand_in.mode = "no finish"
        command(chat, "second", "the server ended the answer early")
        stand_in.mode = "answer"
        command(chat, "third", FOOTER)
    finally:
        stand_in.thread.stop()
    gone = command(chat, "fourth", "cannot reach")
    assert "Traceback" not in gone
    command(chat, "/stats", "conversation: 2 turns")     # the broken and the refused turns left no trace
    assert leave(chat) == 0
    kept = json.loads(next((tmp_path / "data" / "rax" / "chats").glob("chat-*.json")).read_text())
    assert [(m["text"], m.get("finish_reason")) for m in kept["messages"]] == [
        ("second", None), ("", "interrupted"), ("third", None), (ScriptedServer.ANSWER, "stop")]
