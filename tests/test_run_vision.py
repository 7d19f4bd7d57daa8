"""`rax run --image / --video` end to end, as the contract's checks drive it: prompt ids exact,
greedy tokens as transformers chose them, and one-line errors with exit status 2."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from raxcli.warmup import NOTICE

VISION = Path(__file__).parent / "fixtures" / "vision"
MEDIA = VISION / "media"
TEXT_GGUF = VISION / "gguf" / "tiny-vl-BF16.gguf"
MMPROJ = VISION / "gguf" / "mmproj-tiny-vl-F16.gguf"
MANIFEST = json.loads((VISION / "manifest.json").read_text())
STOP_IDS = {1500, 1502}          # <|endoftext|>, <|im_end|> of the fixture tokenizer


def rax(*args):
    return subprocess.run([sys.executable, "-m", "raxcli", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ})


def media_flags(info):
    flags = []
    for name in info["images"]:
        flags += ["--image", MEDIA / name]
    if info.get("video"):
        flags += ["--video", MEDIA / info["video"]]
    return flags


@pytest.mark.parametrize("case, explicit_mmproj", [
    ("square", True),
    ("two_images", True),
    ("odd", False),            # --mmproj left out: the one beside the model is found
    ("video_frames", True),
    ("video_file", True),
])
def test_greedy_json_matches_transformers(case, explicit_mmproj):
    ref = np.load(VISION / "ref" / f"{case}.npz")
    info = MANIFEST["cases"][case]
    proc = rax("run", "--model", TEXT_GGUF, *(["--mmproj", MMPROJ] if explicit_mmproj else []),
               *media_flags(info), "--prompt", info["text"], "--no-think", "--greedy", "--json",
               "--top-logprobs", 5, "--max-tokens", len(ref["greedy"]))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["prompt_token_ids"] == ref["input_ids"].tolist()
    want = ref["greedy"].tolist()
    stop = next((i for i, t in enumerate(want) if t in STOP_IDS), len(want))
    assert out["token_ids"] == want[:stop]
    assert out["logprobs"][0]["id"] == want[0] and len(out["logprobs"][0]["top"]) == 5
    assert out["stats"]["vision_s"] > 0
    assert out["stats"]["prompt_tokens"] == len(ref["input_ids"])


@pytest.fixture(scope="module")
def lonely_model(tmp_path_factory):
    """The text GGUF alone in a folder (no mmproj beside it)."""
    folder = tmp_path_factory.mktemp("lonely")
    shutil.copy(TEXT_GGUF, folder / TEXT_GGUF.name)
    return folder / TEXT_GGUF.name


def broken_files(tmp: Path) -> dict:
    (tmp / "broken.png").write_bytes(b"this is not a picture")
    (tmp / "broken.mp4").write_bytes(b"\0" * 2048)
    (tmp / "empty").mkdir(exist_ok=True)
    return {"broken_png": tmp / "broken.png", "broken_mp4": tmp / "broken.mp4", "empty": tmp / "empty"}


@pytest.mark.parametrize("name, args, message", [
    ("image without mmproj", lambda m, f: ["--model", m, "--image", MEDIA / "square.png"], "--mmproj"),
    ("mmproj of another width", lambda m, f: ["--model", Path(__file__).parent / "fixtures" / "gguf" / "k256-Q4_K_M.gguf",
                                              "--mmproj", MMPROJ, "--image", MEDIA / "square.png"], "width"),
    ("text GGUF as mmproj", lambda m, f: ["--model", m, "--mmproj", m, "--image", MEDIA / "square.png"], "not an mmproj"),
    ("undecodable image", lambda m, f: ["--model", TEXT_GGUF, "--image", f["broken_png"]], "broken.png"),
    ("missing image", lambda m, f: ["--model", TEXT_GGUF, "--image", MEDIA / "nope.png"], "no such file"),
    ("empty frame folder", lambda m, f: ["--model", TEXT_GGUF, "--video", f["empty"]], "no frames"),
    ("unreadable video", lambda m, f: ["--model", TEXT_GGUF, "--video", f["broken_mp4"]], "broken.mp4"),
])
def test_bad_vision_input_is_one_line_and_exit_2(tmp_path, lonely_model, name, args, message):
    proc = rax("run", *args(lonely_model, broken_files(tmp_path)), "--prompt", "hi", "--max-tokens", 1)
    assert proc.returncode == 2, (name, proc.stderr)
    # a first run on a fresh kernel cache says it is compiling before it gets to the input
    lines = [line for line in proc.stderr.strip().splitlines() if line != NOTICE]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0]
    assert proc.stdout == ""
