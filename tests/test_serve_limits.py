"""`rax serve` at its limits: a short queue under a burst of clients (429 past it, nobody's
answer lost or mixed up) and an API key."""
import threading

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from serve_support import ServerProcess, client, http, wait_idle  # noqa: E402

KEY = "s3cret-key"
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}


@pytest.fixture(scope="module")
def server():
    proc = ServerProcess("--queue", "2", "--api-key", KEY)
    yield proc
    proc.stop()


def test_requests_past_the_queue_get_429_and_the_rest_their_answer(server):
    api = client(server.url, KEY)
    request = dict(model="m", messages=[{"role": "user", "content": "Count slowly"}], temperature=0,
                   max_tokens=40, extra_body={"return_token_ids": True, **NO_THINK})
    expected = api.chat.completions.create(**request).choices[0].model_extra["token_ids"]
    assert len(expected) == 40
    outcomes = [None] * 20
    barrier = threading.Barrier(20)

    def ask(i):
        barrier.wait()
        try:
            outcomes[i] = api.chat.completions.create(**request).choices[0].model_extra["token_ids"]
        except openai.RateLimitError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    answered = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(answered) + len(refused) == 20
    assert len(answered) >= 3 and refused          # one running + two waiting at least
    assert all(ids == expected for ids in answered)
    assert all(e.status_code == 429 and e.body["code"] == "server_busy" for e in refused)
    wait_idle(server.url)
    _, health = http("GET", f"{server.url}/health")
    assert health["requests"]["rejected_busy"] == len(refused)


def test_api_key_is_required_except_for_health(server):
    assert http("GET", f"{server.url}/health")[0] == 200
    for key in ("wrong", ""):
        with pytest.raises(openai.AuthenticationError):
            client(server.url, key or "none").models.list()
    status, reply = http("POST", f"{server.url}/v1/chat/completions",
                         {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 401 and reply["error"]["code"] == "invalid_api_key"
    assert [m.id for m in client(server.url, KEY).models.list().data] == ["tiny-vk2-Q8_0"]
