"""`rax run` as ../shared/CONTRACT.md specifies it: JSON output, prompt ids, logprobs, errors."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from raxcli.sampling import log_softmax

FIXTURES = Path(__file__).parent / "fixtures"
F32 = FIXTURES / "gguf" / "tiny-vk2-F32.gguf"
SHORT_PROMPT = "<|im_start|>user\nHello, how are you?<|im_end|>\n"


def rax(*args, stdin=None, env=None):
    return subprocess.run([sys.executable, "-m", "raxcli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def run_json(*args, stdin=None):
    proc = rax("run", "--json", *args, stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, "--json prints exactly one JSON object and nothing else"
    return json.loads(lines[0])


def test_raw_greedy_json_gives_reference_prompt_ids_first_token_and_logprobs():
    ref = np.load(FIXTURES / "ref" / "tiny-vk2-F32.npz")
    out = run_json("--model", F32, "--raw", "--greedy", "--top-logprobs", 5, "--max-tokens", 3,
                   "--prompt", SHORT_PROMPT)
    assert out["prompt_token_ids"] == [int(t) for t in ref["prompt_short"]]
    want = log_softmax(ref["logits_short"][-1].astype(np.float64))
    first = out["logprobs"][0]
    assert out["token_ids"][0] == first["id"] == int(np.argmax(want))
    assert abs(first["logprob"] - want[first["id"]]) < 0.05
    assert [e["id"] for e in first["top"]] == [int(i) for i in np.argsort(-want)[:5]]
    for entry in first["top"]:
        assert abs(entry["logprob"] - want[entry["id"]]) < 0.05
    assert len(out["token_ids"]) == len(out["logprobs"]) == 3
    assert out["finish_reason"] == "length"
    assert set(out) >= {"model", "prompt_token_ids", "token_ids", "text", "thinking",
                        "finish_reason", "logprobs", "boxes", "stats"}
    assert set(out["stats"]) >= {"prompt_tokens", "generated_tokens", "load_s", "vision_s",
                                 "prefill_tok_s", "decode_tok_s", "peak_rss_mb"}
    assert out["stats"]["prompt_tokens"] == 13 and out["stats"]["generated_tokens"] == 3


@pytest.mark.parametrize("flags, opening", [
    ([], "<|im_start|>assistant\n<think>\n"),
    (["--no-think"], "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
])
def test_chat_template_wraps_the_prompt_and_switches_thinking(flags, opening):
    ref = np.load(FIXTURES / "ref" / "tiny-vk2-F32.npz")
    out = run_json("--model", F32, "--greedy", "--max-tokens", 1, "--prompt", "Hello, how are you?", *flags)
    user_turn = [int(t) for t in ref["prompt_short"]]
    assert out["prompt_token_ids"][:len(user_turn)] == user_turn
    from raxcli.tokenizer import Tokenizer
    from raxcli.engine.gguf_file import GGUFFile
    tok = Tokenizer.from_gguf_metadata(GGUFFile(F32).metadata)
    assert tok.decode(out["prompt_token_ids"][len(user_turn):]) == opening


def test_prompt_from_standard_input_and_as_document_after_the_prompt():
    alone = run_json("--model", F32, "--raw", "--greedy", "--max-tokens", 1, stdin=SHORT_PROMPT)
    both = run_json("--model", F32, "--raw", "--greedy", "--max-tokens", 1,
                    "--prompt", "Summarise:", stdin="Hello")
    from raxcli.tokenizer import Tokenizer
    from raxcli.engine.gguf_file import GGUFFile
    tok = Tokenizer.from_gguf_metadata(GGUFFile(F32).metadata)
    assert alone["prompt_token_ids"] == tok.encode(SHORT_PROMPT)
    assert both["prompt_token_ids"] == tok.encode("Summarise:\n\nHello")


def test_seeded_sampling_is_reproducible_and_differs_across_seeds():
    args = ("--model", F32, "--raw", "--max-tokens", 8, "--temperature", 1.0, "--top-k", 0, "--prompt", SHORT_PROMPT)
    a, b, c = (run_json(*args, "--seed", s) for s in (1, 1, 2))
    assert a["token_ids"] == b["token_ids"]
    assert a["token_ids"] != c["token_ids"]


def test_plain_output_streams_the_answer_and_show_think_sends_thinking_to_stderr():
    proc = rax("run", "--model", F32, "--greedy", "--max-tokens", 6, "--show-think", "--prompt", "Hi")
    assert proc.returncode == 0, proc.stderr
    out = run_json("--model", F32, "--greedy", "--max-tokens", 6, "--prompt", "Hi")
    # the tiny random model never closes its thinking in 6 tokens: all of it is thinking
    assert out["text"] == "" and out["thinking"]
    assert out["thinking"].strip() in proc.stderr
    assert proc.stdout.strip() == ""


# -- bad input: one line on stderr naming the file, exit status 2, no traceback -------------

def _patched(tmp_path, name, edit):
    data = bytearray(F32.read_bytes())
    edit(data)
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


def _set_tensor_type(data, tensor, ggml_type):
    i = data.find(tensor.encode()) + len(tensor)
    n_dims = int.from_bytes(data[i:i + 4], "little")
    at = i + 4 + 8 * n_dims
    data[at:at + 4] = int(ggml_type).to_bytes(4, "little")


def _rename_tensor(data, old, new):
    i = data.find(old.encode())
    data[i:i + len(old)] = new.encode()


def _write(path, data):
    path.write_bytes(data)
    return path


def _other_architecture(path):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.ones((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


BAD_FILES = {
    "missing": (lambda tmp: tmp / "absent.gguf", "no such file"),
    "folder": (lambda tmp: tmp, "folder"),
    "not-gguf": (lambda tmp: _write(tmp / "notes.gguf", b"hello\n"), "not a GGUF"),
    "empty": (lambda tmp: _write(tmp / "empty.gguf", b""), "GGUF"),
    "truncated": (lambda tmp: _write(tmp / "cut.gguf", F32.read_bytes()[:500_000]), "truncated"),
    "other-architecture": (lambda tmp: _other_architecture(tmp / "llama.gguf"), "architecture 'llama'"),
    "unsupported-type": (lambda tmp: _patched(tmp, "iq.gguf", lambda d: _set_tensor_type(
        d, "blk.0.ffn_up.weight", gguf.GGMLQuantizationType.IQ4_NL)), "IQ4_NL"),
    "missing-tensor": (lambda tmp: _patched(tmp, "gap.gguf", lambda d: _rename_tensor(
        d, "blk.1.ffn_up.weight", "blk.1.ffn_uq.weight")), "blk.1.ffn_up.weight is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_model_file_is_one_line_and_exit_2(tmp_path, case):
    make, reason = BAD_FILES[case]
    path = make(tmp_path)
    proc = rax("run", "--model", path, "--prompt", "hi")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(path) in lines[0] and reason in lines[0]


def test_prompt_over_the_context_limit_is_refused_with_exit_2():
    proc = rax("run", "--model", F32, "--max-context", 32, "--prompt", "word " * 100)
    assert proc.returncode == 2
    assert "does not fit the context of 32 tokens" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_no_model_anywhere_says_how_to_get_one(tmp_path):
    env = {"RAX_MODEL": "", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "raxcli", "run", "--prompt", "hi"], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, **env}, timeout=300)
    assert proc.returncode == 2
    assert "no model found" in proc.stderr and "hf download" in proc.stderr


def test_missing_prompt_is_refused_with_exit_2():
    proc = rax("run", "--model", F32, stdin="")
    assert proc.returncode == 2 and "no prompt" in proc.stderr


def test_the_rax_console_script_is_installed():
    exe = shutil.which("rax", path=str(Path(sys.executable).parent))
    assert exe, "pip install -e . puts `rax` beside the interpreter"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "run" in proc.stdout
