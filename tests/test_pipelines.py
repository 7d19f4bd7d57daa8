"""`rax run` in shell pipelines: plain output off a terminal or under NO_COLOR, one JSON
object with --json, tool calls, limits fitted to RAM, exit codes 0 / 2 / 130, and one line
for every bad input."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from typer.testing import CliRunner

from raxcli.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = FIXTURES / "gguf" / "tiny-vk2-Q8_0.gguf"


def rax(*args, stdin=None, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "raxcli", *map(str, args)], input=stdin, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_piped_output_is_plain_text_equal_to_the_json_answer():
    args = ["run", "--model", MODEL, "--greedy", "--max-tokens", 24, "--show-think"]
    as_json = rax(*args, "--json", stdin="Write a line about rain")
    plain = rax(*args, stdin="Write a line about rain")
    assert as_json.returncode == plain.returncode == 0, plain.stderr
    out = json.loads(as_json.stdout)
    assert "\x1b" not in plain.stdout + plain.stderr
    assert plain.stdout == out["text"] + "\n"
    assert out["thinking"] and out["thinking"] in plain.stderr     # the thinking goes to stderr


def test_no_color_in_a_terminal_gives_plain_output_without_spinners():
    pexpect = pytest.importorskip("pexpect")
    env = {**os.environ, "NO_COLOR": "1", "TERM": "xterm-256color"}
    child = pexpect.spawn(sys.executable, ["-m", "raxcli", "run", "--model", str(MODEL), "--greedy", "--no-think",
                                           "--max-tokens", "16", "--prompt", "Hello"], env=env, encoding="utf-8",
                          timeout=120)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "\x1b" not in child.before and child.before.strip()


def test_json_is_one_object_with_tool_calls_and_fitted_limits(tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([{"name": "get_weather", "description": "Weather for a city",
                                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                 "required": ["city"]}}]))
    proc = rax("run", "--model", MODEL, "--greedy", "--max-tokens", 4, "--json", "--tools", tools,
               "--ram-gb", 2, "--max-context", 99999, "--prompt", "Weather in Paris?")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["tool_calls"] == []               # random weights call nothing, but the key is there
    from raxcli.engine.gguf_file import GGUFFile
    from raxcli.tokenizer import Tokenizer
    prompt = Tokenizer.from_gguf_metadata(GGUFFile(MODEL).metadata).decode(out["prompt_token_ids"])
    assert prompt.startswith("<|im_start|>system\n# Tools") and '"name": "get_weather"' in prompt
    assert '{"type": "function", "function": {"name": "get_weather"' in prompt
    assert "--max-context 99999 is more than this machine's cap for the context; using 4096" in proc.stderr


def test_run_limits_default_to_the_ram_tier_and_clamp_with_a_warning():
    import io
    from raxcli.oneshot import Request, fitted_limits
    err = io.StringIO()
    assert fitted_limits(Request(ram_gb=2), 262144, err) == {"max_tokens": 256, "think_budget": 128,
                                                              "max_context": 4096}
    assert fitted_limits(Request(ram_gb=64), 8192, err) == {"max_tokens": 2048, "think_budget": 2048,
                                                             "max_context": 8192}     # the model's own limit
    assert err.getvalue() == ""
    assert fitted_limits(Request(ram_gb=6, max_tokens=4000, think_budget=100), 262144, err)["max_tokens"] == 1024
    assert err.getvalue() == "rax: warning: --max-tokens 4000 is more than this machine's cap for answers; using 1024\n"


def test_ctrl_c_ends_a_run_with_status_130():
    proc = subprocess.Popen([sys.executable, "-m", "raxcli", "run", "--model", str(MODEL), "--no-think",
                             "--max-tokens", "8000", "--ram-gb", "16", "--prompt", "Tell me everything"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.read(1)           # the answer has started streaming
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err


def truncated_copy(tmp_path: Path) -> Path:
    data = MODEL.read_bytes()
    path = tmp_path / "truncated.gguf"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def llama_gguf(tmp_path: Path) -> Path:
    """A well-formed GGUF of another architecture."""
    path = tmp_path / "llama.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(128)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def bad_inputs(tmp_path: Path):
    text = tmp_path / "notes.gguf"
    text.write_text("just some text, not a model\n")
    not_json = tmp_path / "tools-broken.json"
    not_json.write_text("{")
    not_a_list = tmp_path / "tools-object.json"
    not_a_list.write_text('{"name": 3}')
    nameless = tmp_path / "tools-nameless.json"
    nameless.write_text('[{"type": "function", "function": {"description": "no name"}}]')
    long_prompt = "many words " * 60
    return [
        (["--model", tmp_path / "missing.gguf", "-p", "hi"], "missing.gguf: no such file"),
        (["--model", tmp_path, "-p", "hi"], "is a folder"),
        (["--model", text, "-p", "hi"], "notes.gguf: not a GGUF file"),
        (["--model", truncated_copy(tmp_path), "-p", "hi"], "truncated.gguf: truncated"),
        (["--model", llama_gguf(tmp_path), "-p", "hi"], "architecture 'llama' is not supported"),
        (["--model", MODEL, "--max-context", 64, "-p", long_prompt], "does not fit the context of 64"),
        (["--model", MODEL, "-p", "hi", "--tools", tmp_path / "none.json"], "--tools"),
        (["--model", MODEL, "-p", "hi", "--tools", not_json], "not JSON"),
        (["--model", MODEL, "-p", "hi", "--tools", not_a_list], "list of function schemas"),
        (["--model", MODEL, "-p", "hi", "--tools", nameless], "has no name"),
        (["--model", MODEL], "no prompt"),
    ]


def test_every_bad_input_exits_2_with_one_line_naming_the_problem(tmp_path):
    runner = CliRunner()
    for args, message in bad_inputs(tmp_path):
        result = runner.invoke(app, ["run", *map(str, args)], input="")
        assert result.exit_code == 2, (args, result.stderr, result.exception)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("rax: ") and message in lines[0], (args, result.stderr)


def test_the_installed_command_reports_bad_input_the_same_way(tmp_path):
    proc = rax("run", "--model", llama_gguf(tmp_path), "--prompt", "hi")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "llama.gguf: architecture 'llama' is not supported" in proc.stderr
