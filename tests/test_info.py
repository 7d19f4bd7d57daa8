"""`rax info`: what a GGUF holds, read from its header without loading the weights."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def info(*args):
    return subprocess.run([sys.executable, "-m", "raxcli", "info", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_json_describes_the_text_model_and_finds_the_mmproj_beside_it():
    proc = info(FIXTURES / "vision" / "gguf" / "tiny-vl-BF16.gguf", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["architecture"] == "qwen35"
    assert (got["layers"], got["layer_pattern"]) == (4, "DDDA")     # full attention every 4th layer
    assert got["vision"] == str(FIXTURES / "vision" / "gguf" / "mmproj-tiny-vl-F16.gguf")
    assert abs(sum(got["tensor_types"].values()) - 1.0) < 1e-3 and "BF16" in got["tensor_types"]
    assert got["limits"]["context"] <= got["context_length"]
    assert got["gpu"]


def test_layer_pattern_counts_and_types_of_a_k_quant_file():
    got = json.loads(info(FIXTURES / "gguf" / "k256-Q4_K_M.gguf", "--json").stdout)
    assert got["layer_pattern"] == "DDDA" * (got["layers"] // 4)
    assert {"Q4_K", "Q6_K"} <= set(got["tensor_types"])
    assert got["mtp_layers"] == 1 and got["vision"] == "none beside the file: text only"


def test_an_mmproj_says_it_is_a_vision_tower():
    got = json.loads(info(FIXTURES / "vision" / "gguf" / "mmproj-tiny-vl-F16.gguf", "--json").stdout)
    assert got["vision"].startswith("this file is a vision tower")


@pytest.mark.parametrize("make", [lambda p: None, lambda p: p.write_bytes(b"not a gguf at all")])
def test_missing_or_foreign_file_is_one_line_and_exit_2(tmp_path, make):
    path = tmp_path / "model.gguf"
    make(path)
    proc = info(path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and str(path) in proc.stderr
