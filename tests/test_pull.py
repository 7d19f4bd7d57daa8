"""`rax pull` against a stand-in for the Hugging Face hub (HF_ENDPOINT), serving the two
routes huggingface_hub uses: the repository tree and `resolve` (HEAD for metadata, GET
with byte ranges for the content)."""
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from raxcli.errors import UserError
from raxcli.pull import choose_files, parse_spec

REPO = "someone/Tiny-GGUF"
FILES = {
    "Tiny-Q4_K_M.gguf": os.urandom(150_000),
    "Tiny-Q8_0.gguf": os.urandom(210_000),
    "mmproj-F16.gguf": os.urandom(90_000),
    "mmproj-F32.gguf": os.urandom(120_000),
    "README.md": b"# tiny\n",
}


class StandInHub(BaseHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):    # keep the test output quiet
        pass

    def do_HEAD(self):
        self.respond(body=False)

    def do_GET(self):
        self.respond(body=True)

    def respond(self, body: bool):
        self.requests.append((self.command, self.path, self.headers.get("Range")))
        tree = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/main(?:\?.*)?", self.path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/main/([^?]+)", self.path)
        repo = (tree or resolve).group(1) if (tree or resolve) else None
        if repo != REPO:
            return self.send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
        if tree:
            listing = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                       for name, data in FILES.items()]
            return self.send(200, json.dumps(listing).encode(), {"Content-Type": "application/json"}, body)
        name = resolve.group(2)
        if name not in FILES:
            return self.send(404, b"not found", {"X-Error-Code": "EntryNotFound"}, body)
        data = FILES[name]
        headers = {"X-Repo-Commit": "0" * 40, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Accept-Ranges": "bytes"}
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and body:
            start = int(wanted.group(1))
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self.send(206, data[start:], headers, body)
        return self.send(200, data, headers, body)

    def send(self, status, payload, headers, body):
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)


@pytest.fixture(scope="module")
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def pull(endpoint, home, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=endpoint, HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1")
    return subprocess.run([sys.executable, "-m", "raxcli", "pull", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def test_pull_puts_the_default_quant_and_its_mmproj_where_rax_looks(hub, tmp_path, monkeypatch):
    proc = pull(hub, tmp_path, REPO)
    assert proc.returncode == 0, proc.stderr
    folder = tmp_path / ".cache" / "rax" / "models" / "someone--Tiny-GGUF"
    assert (folder / "Tiny-Q4_K_M.gguf").read_bytes() == FILES["Tiny-Q4_K_M.gguf"]
    assert (folder / "mmproj-F16.gguf").read_bytes() == FILES["mmproj-F16.gguf"]
    assert sorted(p.name for p in folder.iterdir()) == ["Tiny-Q4_K_M.gguf", "mmproj-F16.gguf"]
    assert proc.stdout.strip() == f"ready: rax chat --model {folder / 'Tiny-Q4_K_M.gguf'}"

    from raxcli.loader import find_model
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAX_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert find_model(None) == folder / "Tiny-Q4_K_M.gguf"

    again = pull(hub, tmp_path, REPO)        # nothing to do the second time
    assert again.returncode == 0 and "already here" in again.stderr


def test_named_quant_into_a_folder_of_choice(hub, tmp_path):
    proc = pull(hub, tmp_path, f"{REPO}:q8_0", "--dir", tmp_path / "mine", "--no-mmproj")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["Tiny-Q8_0.gguf"]
    assert (tmp_path / "mine" / "Tiny-Q8_0.gguf").read_bytes() == FILES["Tiny-Q8_0.gguf"]


def part_file(folder: Path, name: str) -> Path:
    """Where an interrupted pull leaves its bytes: NAME.<etag prefix>.part beside the target."""
    return folder / f"{name}.{hashlib.sha256(FILES[name]).hexdigest()[:16]}.part"


def test_an_interrupted_download_continues_from_where_it_stopped(hub, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    name = "Tiny-Q8_0.gguf"
    part_file(folder, name).write_bytes(FILES[name][:123_456])
    StandInHub.requests.clear()
    proc = pull(hub, tmp_path, f"{REPO}:Q8_0", "--dir", folder, "--no-mmproj")
    assert proc.returncode == 0, proc.stderr
    assert "resuming at 121 KB" in proc.stderr
    assert ("GET", f"/{REPO}/resolve/main/{name}", "bytes=123456-") in StandInHub.requests
    assert (folder / name).read_bytes() == FILES[name]
    assert not list(folder.glob("*.part"))


def test_a_corrupt_partial_download_is_caught_and_discarded(hub, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    name = "Tiny-Q8_0.gguf"
    part_file(folder, name).write_bytes(b"\0" * 1000)
    proc = pull(hub, tmp_path, f"{REPO}:Q8_0", "--dir", folder, "--no-mmproj")
    assert proc.returncode == 1
    assert "resuming at 1 KB" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("rax: Tiny-Q8_0.gguf: the download is corrupt")
    assert not list(folder.iterdir())
    assert pull(hub, tmp_path, f"{REPO}:Q8_0", "--dir", folder, "--no-mmproj").returncode == 0
    assert (folder / name).read_bytes() == FILES[name]


def test_bad_requests_are_one_line_errors(hub, tmp_path):
    missing = pull(hub, tmp_path, "nobody/Nothing-GGUF")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "nobody/Nothing-GGUF: no such repository" in missing.stderr
    no_quant = pull(hub, tmp_path, f"{REPO}:Q2_K")
    assert no_quant.returncode == 2 and "no Q2_K file here; there are: Q4_K_M, Q8_0" in no_quant.stderr
    offline = pull("http://127.0.0.1:9", tmp_path, REPO)
    assert offline.returncode == 1 and offline.stderr.count("\n") == 1
    assert "cannot reach the Hugging Face hub" in offline.stderr


def test_spec_parsing_and_file_choice():
    assert parse_spec("unsloth/Qwen3.5-2B-GGUF:Q4_K_M") == ("unsloth/Qwen3.5-2B-GGUF", "Q4_K_M")
    assert parse_spec("https://huggingface.co/unsloth/Qwen3.5-2B-GGUF") == ("unsloth/Qwen3.5-2B-GGUF", None)
    with pytest.raises(UserError, match="OWNER/NAME"):
        parse_spec("just-a-name")
    files = ["M-Q4_K_S.gguf", "M-Q4_K_M.gguf", "M-UD-Q4_K_XL.gguf", "M-BF16.gguf", "mmproj-BF16.gguf",
             "mmproj-F16.gguf", "big/M-Q8_0-00001-of-00002.gguf", "big/M-Q8_0-00002-of-00002.gguf"]
    assert choose_files(files, None) == ("M-Q4_K_M.gguf", "mmproj-F16.gguf")
    assert choose_files(files, "q4_k_s") == ("M-Q4_K_S.gguf", "mmproj-F16.gguf")
    with pytest.raises(UserError, match="no Q4_K file here"):
        choose_files(files, "Q4_K")        # a tag is matched whole: Q4_K is neither Q4_K_S nor Q4_K_M
    assert choose_files(files, "bf16")[0] == "M-BF16.gguf"
    with pytest.raises(UserError, match="no Q8_0 file here"):
        choose_files(files, "Q8_0")        # only split files carry Q8_0
    with pytest.raises(UserError, match="only split files"):
        choose_files(["big/M-00001-of-00002.gguf"], None)
