"""Starting `rax serve` for tests: as a real subprocess (the CLI end to end) or in a thread
(an app built in the test, e.g. with a scripted generator). Both listen on a free loopback port."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "gguf" / "tiny-vk2-Q8_0.gguf"


class ServerProcess:
    def __init__(self, *args: str, model: Path = TINY, timeout: float = 60.0):
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "raxcli", "serve", "--model", str(model), "--port", "0",
             "--log-level", "warning", *args],
            stdout=subprocess.DEVNULL, stderr=self.log, cwd=ROOT)
        self.url = self._wait_for_url(timeout)

    def _wait_for_url(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in Path(self.log.name).read_text().splitlines():
                if line.startswith("rax serve:") and "http://" in line:
                    return "http://" + line.split("http://", 1)[1].split("/v1", 1)[0]
            if self.proc.poll() is not None:
                raise RuntimeError(f"rax serve exited: {Path(self.log.name).read_text()}")
            time.sleep(0.05)
        raise RuntimeError("rax serve did not start in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def log_text(self) -> str:
        return Path(self.log.name).read_text()


class ServerThread:
    """uvicorn serving `app` in a daemon thread of this process."""

    def __init__(self, app):
        import uvicorn
        from raxcli.serve import listening_socket
        sock = listening_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def http(method: str, url: str, body: bytes | dict | None = None, headers: dict | None = None):
    """(status, parsed JSON body) of a plain HTTP request; error statuses are returned, not raised."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def client(url: str, api_key: str = "none", max_retries: int = 0):
    import openai
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=max_retries, timeout=60)


def wait_idle(url: str, timeout: float = 5.0) -> float:
    """Seconds until /health says nothing is generating or waiting."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        _, health = http("GET", f"{url}/health")
        if not health["generating"] and not health["waiting"]:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"the server is still busy after {timeout} s")
