"""`rax chat` driven as a person would drive it: through a pseudo-terminal (pexpect).

Each test starts one chat process and runs many commands in it, as a process start pays
for Python, Numba and the model load."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect")

FIXTURES = Path(__file__).parent / "fixtures"
TEXT_MODEL = FIXTURES / "gguf" / "tiny-vk2-Q8_0.gguf"
VISION_MODEL = FIXTURES / "vision" / "gguf" / "tiny-vl-BF16.gguf"
PICTURE = FIXTURES / "vision" / "media" / "square.png"
FRAMES = FIXTURES / "vision" / "media" / "frames"
# prompt_toolkit draws the prompt ">>> " as ">>>" and a cursor move; a transcript line has a space
PROMPT = r">>>(?=\x1b\[)"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def environment(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RAX_MODEL", "NO_COLOR")}
    # the chat keeps its history and chats under HOME; pexpect's terminal does not answer
    # prompt_toolkit's cursor-position queries
    return {**env, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "PROMPT_TOOLKIT_NO_CPR": "1",
            "TERM": "xterm-256color", "COLORTERM": "truecolor"}


def start_chat(home: Path, *args, cwd=None):
    child = pexpect.spawn(sys.executable, ["-m", "raxcli", "chat", *map(str, args)], env=environment(home),
                          cwd=str(cwd or home), dimensions=(40, 120), encoding="utf-8", timeout=90)
    child.expect(PROMPT)
    return child


def command(child, text: str, *expected: str) -> str:
    """Type a line, wait for what it should print and the next prompt; the text between."""
    child.send(text + "\r")
    seen = []
    for pattern in expected:
        child.expect(pattern)
        seen.append(child.before + child.after)
    child.expect(PROMPT)
    return ANSI.sub("", "".join(seen) + child.before)


def leave(child) -> int:
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus


FOOTER = r"\d+ prompt · \d+ answer tokens"


def test_slash_commands_and_save_load_round_trip(tmp_path):
    chat = start_chat(tmp_path, "--model", TEXT_MODEL, "--greedy", "--max-tokens", 16, "--ram-gb", 16)
    banner = ANSI.sub("", chat.before)
    assert "tier ≥ 12 GB" in banner and "answer 16 · think 2048" in banner
    assert "pictures are off" in banner

    assert "/image PATH" in command(chat, "/help", "/exit")
    command(chat, "/think off", "thinking off")
    command(chat, "/think show", "thinking off, shown")
    command(chat, "/budget 99999", "cap for thinking; using 8192", "thinking budget 8192")
    command(chat, "/budget many", "/budget N")
    command(chat, "/system Be brief.", "system message set")
    command(chat, "/system", "Be brief.")

    answer = command(chat, "Hello there", FOOTER)
    assert "context" in answer
    command(chat, "/stats", "conversation: 1 turns")
    info = command(chat, "/info", "tier")
    assert "qwen35" in info and "Q8_0" in info

    saved = tmp_path / "saved chat.json"
    command(chat, f"/save '{saved}'", "saved 1 turns")
    data = json.loads(saved.read_text())
    assert data["system"] == "Be brief."
    assert [(m["role"], m["text"]) for m in data["messages"]][0] == ("user", "Hello there")
    assert data["messages"][1]["role"] == "assistant"

    command(chat, "/clear", "new conversation")
    command(chat, "/stats", "conversation: 0 turns")
    loaded = command(chat, f"/load {str(saved).replace(' ', chr(92) + ' ')}", "loaded 1 turns")
    assert ">>> Hello there" in loaded and "system: Be brief." in loaded
    command(chat, "And again", FOOTER)
    command(chat, "/stats", "conversation: 2 turns")
    command(chat, f"/save {tmp_path / 'two.json'}", "saved 2 turns")
    two = json.loads((tmp_path / "two.json").read_text())
    assert [m["text"] for m in two["messages"] if m["role"] == "user"] == ["Hello there", "And again"]

    command(chat, f"/image {PICTURE}", "pictures are off")
    command(chat, "/load /no/such/chat.json", "no such file")
    command(chat, "/frobnicate", "unknown command /frobnicate")
    assert leave(chat) == 0
    # every finished turn is kept in the chat folder as well
    kept = list((tmp_path / "data" / "rax" / "chats").glob("chat-*.json"))
    assert kept and json.loads(kept[0].read_text())["messages"]


def test_ctrl_c_stops_the_answer_and_keeps_the_conversation_with_low_ram_limits(tmp_path):
    chat = start_chat(tmp_path, "--model", TEXT_MODEL, "--ram-gb", 2, "--max-tokens", 5000,
                      "--think-budget", 900, "--seed", 1)
    banner = ANSI.sub("", chat.before)
    assert "tier < 4 GB" in banner and "answer 512 · think 256" in banner
    assert "--max-tokens 5000 is more than this machine's cap for answers; using 512" in banner
    assert "--think-budget 900 is more than this machine's cap for thinking; using 256" in banner

    chat.send("Tell me a long story\r")
    chat.expect("thinking · [0-9]+ tokens")      # the thinking panel is streaming
    chat.sendintr()
    chat.expect(r"stopped \(Ctrl-C\)")
    chat.expect(PROMPT)
    command(chat, "/stats", "conversation: 1 turns")
    chat.send("Go on\r")                         # the chat goes on from what was kept
    # what the tiny random model samples now depends on where the first answer was cut: it
    # may skip thinking and finish its 512 tokens in a third of a second, before any Ctrl-C
    if chat.expect(["thinking · [0-9]+ tokens", FOOTER]) == 0:
        chat.sendintr()
        chat.expect([r"stopped \(Ctrl-C\)", FOOTER])
    chat.expect(PROMPT)
    command(chat, "/stats", "conversation: 2 turns")
    chat.sendintr()                               # Ctrl-C at the prompt only clears the line
    chat.expect(PROMPT)
    chat.send("/exit\r")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    kept = json.loads(next((tmp_path / "data" / "rax" / "chats").glob("chat-*.json")).read_text())
    assert kept["messages"][1]["finish_reason"] == "interrupted"
    assert len(kept["messages"]) == 4


@pytest.mark.skipif(not VISION_MODEL.exists(), reason="vision fixture absent")
def test_pictures_attach_by_command_and_by_path_in_the_message(tmp_path):
    work = tmp_path / "pictures here"
    work.mkdir()
    (work / "my square.png").write_bytes(PICTURE.read_bytes())
    chat = start_chat(tmp_path, "--model", VISION_MODEL, "--greedy", "--max-tokens", 8, cwd=work)
    assert "pictures mmproj-tiny-vl-F16.gguf" in ANSI.sub("", chat.before)

    shown = command(chat, f"/image {PICTURE}", "square.png · 96×96", "1 attached")
    assert "▀" in shown                         # drawn as half-block cells
    reply = command(chat, "What is in it?", FOOTER)
    assert "vision" in reply
    # a path typed (with a space in it) into the message is attached and taken out of the text
    reply = command(chat, "and in my square.png ?", "my square.png · 96×96", FOOTER)
    command(chat, "/image /no/such.png", "no such file")
    command(chat, f"/video {FRAMES}", "frames · video", "attached to your next message")
    command(chat, "And the video?", FOOTER)
    command(chat, f"/save {tmp_path / 'pics.json'}", "saved 3 turns")
    users = [m for m in json.loads((tmp_path / "pics.json").read_text())["messages"] if m["role"] == "user"]
    assert users[0]["images"] == [str(PICTURE.resolve())]
    assert users[1]["images"] == [str((work / "my square.png").resolve())] and users[1]["text"] == "and in?"
    assert users[2]["videos"] == [str(FRAMES.resolve())]
    assert leave(chat) == 0


def test_piped_chat_reads_one_message_per_line_and_prints_plain_text(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "raxcli", "chat", "--model", str(TEXT_MODEL), "--greedy",
                           "--max-tokens", "8", "--no-think"], input="Hello\n/stats\n", capture_output=True,
                          text=True, env=environment(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout
    assert re.search(FOOTER, proc.stdout) and "conversation: 1 turns" in proc.stdout


def test_without_any_model_chat_says_how_to_get_one(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "raxcli", "chat"], capture_output=True, text=True,
                          env=environment(tmp_path), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "rax pull unsloth/Qwen3.5-2B-GGUF:Q4_K_M" in proc.stderr and "Traceback" not in proc.stderr
