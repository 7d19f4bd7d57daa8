"""Pictures through `rax serve`: data URLs and file URLs reach the vision tower as files do in
`rax run --image`, so prompt ids and greedy tokens equal transformers' (the vision fixtures'
references); pictures the processor refuses are a 400, and `rax run --server --image` works."""
import base64
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("openai")

from serve_support import ROOT, ServerProcess, client, http  # noqa: E402

VISION = ROOT / "tests" / "fixtures" / "vision"
MEDIA = VISION / "media"
TEXT_GGUF = VISION / "gguf" / "tiny-vl-BF16.gguf"
MANIFEST = json.loads((VISION / "manifest.json").read_text()) if (VISION / "manifest.json").exists() else None
STOP_IDS = {1500, 1502}          # <|endoftext|>, <|im_end|> of the fixture tokenizer

pytestmark = pytest.mark.skipif(MANIFEST is None or not TEXT_GGUF.exists(), reason="needs the vision fixtures")


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess(model=TEXT_GGUF)     # the mmproj beside the model is found
    yield proc
    proc.stop()


def data_url(path: Path) -> str:
    kind = "jpeg" if path.suffix == ".jpg" else "png"
    return f"data:image/{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def expected(case: str):
    ref = np.load(VISION / "ref" / f"{case}.npz")
    want = ref["greedy"].tolist()
    stop = next((i for i, t in enumerate(want) if t in STOP_IDS), len(want))
    return ref["input_ids"].tolist(), want[:stop], len(want)


@pytest.mark.parametrize("case, urls", [
    ("square", [data_url]),
    ("exif", [data_url]),                                   # EXIF orientation applied from the bytes
    ("two_images", [data_url, lambda p: p.as_uri()]),      # one data URL, one file URL
])
def test_pictures_give_transformers_greedy_tokens(server, case, urls):
    info = MANIFEST["cases"][case]
    prompt_ids, tokens, n = expected(case)
    parts = [{"type": "image_url", "image_url": {"url": url(MEDIA / name)}} for name, url in zip(info["images"], urls)]
    reply = client(server.url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": parts + [{"type": "text", "text": info["text"]}]}],
        temperature=0, max_tokens=n,
        extra_body={"return_token_ids": True, "chat_template_kwargs": {"enable_thinking": False}})
    assert reply.model_extra["prompt_token_ids"] == prompt_ids
    assert reply.choices[0].model_extra["token_ids"] == tokens
    assert reply.usage.prompt_tokens == len(prompt_ids)


def test_rax_run_sends_pictures_to_the_server(server):
    info = MANIFEST["cases"]["square"]
    prompt_ids, tokens, n = expected("square")
    out = subprocess.run([sys.executable, "-m", "raxcli", "run", "--server", server.url, "--image",
                          str(MEDIA / "square.png"), "--prompt", info["text"], "--no-think", "--greedy",
                          "--max-tokens", str(n), "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["prompt_token_ids"] == prompt_ids and result["token_ids"] == tokens


def test_a_picture_the_processor_refuses_is_a_400(server, tmp_path):
    from PIL import Image
    path = tmp_path / "sliver.png"
    Image.new("RGB", (2000, 4), (9, 9, 9)).save(path)       # aspect ratio over the processor's 200
    status, reply = http("POST", f"{server.url}/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(path)}}, {"type": "text", "text": "hm"}]}]})
    assert status == 400 and reply["error"]["code"] == "invalid_image"
    assert "messages[0].content[0]" in reply["error"]["message"] and "rax-serve-" not in reply["error"]["message"]
    assert http("GET", f"{server.url}/health")[1]["status"] == "ok"
