"""`rax quantize` end to end: what it prints, how it fails, and that a failed run leaves no OUT.

Every bad input is one line on stderr naming the file and the reason, exit status 2; an
interrupted run exits 130. In both cases neither OUT nor a temporary file is left behind, and
an OUT that existed before is untouched.
"""
from __future__ import annotations

import errno
import json
import shutil

import pytest
from typer.testing import CliRunner

import quant.gguf_out
from convert_support import GGUF, TINY_HF, tiny_checkpoint
from make_random_checkpoint import make_checkpoint
from raxcli.cli import app


def rax(*args):
    return CliRunner().invoke(app, ["quantize", *map(str, args)])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rax: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_writes_text_and_mmproj_and_says_what_it_wrote(tmp_path):
    result = rax(TINY_HF, tmp_path / "m.gguf", "--type", "q4_k_m", "--mmproj", tmp_path / "mm.gguf", "-q")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.gguf").is_file() and (tmp_path / "mm.gguf").is_file()
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'm.gguf'}: ") and "Q4_K" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'mm.gguf'}: ") and "F16" in lines[1]
    assert leftovers(tmp_path) == []


def test_progress_bar_goes_to_stderr_by_bytes(tmp_path):
    result = rax(TINY_HF, tmp_path / "m.gguf", "--type", "q8_0")
    assert result.exit_code == 0
    assert "m.gguf" in result.stderr and "kB" in result.stderr


def test_unsupported_type(tmp_path):
    assert_one_line_error(rax(TINY_HF, tmp_path / "m.gguf", "--type", "q3_k_s"), "unsupported --type 'q3_k_s'")


def test_unknown_architecture(tmp_path):
    ck = tmp_path / "llama"
    shutil.copytree(TINY_HF, ck)
    config = json.loads((ck / "config.json").read_text())
    config["architectures"] = ["LlamaForCausalLM"]
    (ck / "config.json").write_text(json.dumps(config))
    assert_one_line_error(rax(ck, tmp_path / "m.gguf", "--type", "f16"), "unsupported architecture 'LlamaForCausalLM'")


def test_missing_shard(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", "tiny", shard_bytes=100_000)
    second = sorted(ck.glob("model-*-of-*.safetensors"))[1]
    second.unlink()
    assert_one_line_error(rax(ck, tmp_path / "m.gguf", "--type", "q8_0"), f"missing shard {second.name}")


def test_truncated_shard(tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(TINY_HF, ck)
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert_one_line_error(rax(ck, tmp_path / "m.gguf", "--type", "q8_0"), "model.safetensors", "truncated")


def test_missing_tokenizer(tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(TINY_HF, ck)
    (ck / "tokenizer.json").unlink()
    assert_one_line_error(rax(ck, tmp_path / "m.gguf", "--type", "q8_0"), "missing tokenizer.json")


def test_missing_source(tmp_path):
    assert_one_line_error(rax(tmp_path / "nothing", tmp_path / "m.gguf", "--type", "q8_0"), "no such file")


def test_source_that_is_not_gguf(tmp_path):
    (tmp_path / "x.gguf").write_text("hello")
    assert_one_line_error(rax(tmp_path / "x.gguf", tmp_path / "m.gguf", "--type", "q8_0"), "not a GGUF file")


def test_mmproj_from_a_gguf(tmp_path):
    assert_one_line_error(rax(GGUF / "tiny-vk2-F16.gguf", tmp_path / "m.gguf", "--type", "q8_0",
                              "--mmproj", tmp_path / "mm.gguf"), "--mmproj needs a checkpoint folder")


@pytest.mark.parametrize("where", ["missing folder", "a folder", "under a file"])
def test_output_that_cannot_be_written(tmp_path, where):
    out = {"missing folder": tmp_path / "no" / "m.gguf", "a folder": tmp_path,
           "under a file": GGUF / "tiny-vk2-F16.gguf" / "m.gguf"}[where]
    assert_one_line_error(rax(TINY_HF, out, "--type", "q8_0"), str(out))


def fail_after(monkeypatch, n_calls, error):
    """Make the n-th tensor chunk's quantization raise `error` (the conversion dies midway)."""
    real, calls = quant.gguf_out.quantize, []

    def flaky(values, qtype):
        calls.append(qtype)
        if len(calls) == n_calls:
            raise error
        return real(values, qtype)
    monkeypatch.setattr(quant.gguf_out, "quantize", flaky)
    return calls


def test_failure_midway_leaves_no_output_and_keeps_an_old_one(tmp_path, monkeypatch):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"old contents")
    calls = fail_after(monkeypatch, 20, OSError(errno.ENOSPC, "No space left on device"))
    result = rax(TINY_HF, out, "--type", "q8_0", "-q")
    assert len(calls) == 20
    assert_one_line_error(result, "No space left on device")
    assert out.read_bytes() == b"old contents"
    assert leftovers(tmp_path) == []


def test_interrupt_midway_leaves_no_output(tmp_path, monkeypatch):
    fail_after(monkeypatch, 30, KeyboardInterrupt())
    result = rax(tiny_checkpoint(tmp_path), tmp_path / "m.gguf", "--type", "f16", "--mmproj", tmp_path / "mm.gguf")
    assert result.exit_code == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-vk2"]


def test_large_written_files_leave_the_page_cache_and_small_ones_stay(tmp_path, monkeypatch):
    import os
    from quant import page_cache
    calls = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: calls.append(advice), raising=False)
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 1000)
    assert not page_cache.release_page_cache(small) and calls == []
    monkeypatch.setattr(page_cache, "LARGE_FILE", 500)
    assert page_cache.release_page_cache(small) and calls == [os.POSIX_FADV_DONTNEED]
    assert not page_cache.release_page_cache(tmp_path / "missing.bin")
