"""`rax serve`: an OpenAI-compatible HTTP server over the local engine.

Routes: POST /v1/chat/completions (streamed as server-sent events or whole), GET /v1/models,
GET /health. One generation runs at a time on a worker thread (the engine's kernels release
the GIL), its deltas handed to the event loop through a queue; up to `queue_size` more
requests wait their turn and any past that get 429 at once. A client that goes away
stops its generation at the next token. Every error is a JSON body in OpenAI's shape.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import socket
import sys
import threading
import time

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .errors import UserError
from .loader import find_model, load_model, set_threads
from .openai_messages import RequestError
from .openai_reply import Delta, chunk_choice, completion_body, new_id, usage_body
from .serve_engine import Job, LocalEngine

log = logging.getLogger("rax.serve")

MAX_BODY_BYTES = 64 * 1024 * 1024      # a few large images as data URLs fit
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                405: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}
_END = object()     # the worker has finished


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    kind = _ERROR_TYPES.get(status, "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class Gate:
    """One generation at a time, up to `queue_size` more waiting; past that, refuse."""

    def __init__(self, queue_size: int):
        self.capacity = queue_size + 1
        self.admitted = 0
        self.turn = asyncio.Lock()

    def admit(self) -> bool:
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def leave(self, had_turn: bool) -> None:
        self.admitted -= 1
        if had_turn:
            self.turn.release()


class Disconnected(Exception):
    """The client went away before its answer was ready."""


class WorkerRun:
    """One generation on a worker thread; its deltas (then an exception or `_END`) arrive on `queue`."""

    def __init__(self, engine: LocalEngine, job: Job, on_finish):
        self.engine, self.job, self.on_finish = engine, job, on_finish
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._work, name="rax-generate", daemon=True).start()

    def _hand_over(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:    # the event loop has closed: the server is shutting down
            self.stop.set()

    def _work(self) -> None:
        outcome = "finished"
        try:
            for delta in self.engine.run(self.job, self.stop.is_set):
                if delta.finish_reason == "interrupted":
                    outcome = "interrupted"
                self._hand_over(delta)
        except RequestError as exc:
            self._hand_over(exc)
            outcome = "refused"
        except Exception as exc:  # a fault of ours: the client gets a 500, the server lives on
            log.exception("generation failed")
            self._hand_over(exc)
            outcome = "failed"
        finally:
            self._hand_over(_END)
            try:
                self.loop.call_soon_threadsafe(self.on_finish, outcome)
            except RuntimeError:
                pass


def create_app(engine: LocalEngine, *, api_key: str | None = None, queue_size: int = 8) -> Starlette:
    gate = Gate(queue_size)
    counts = {"finished": 0, "interrupted": 0, "refused": 0, "failed": 0, "rejected_busy": 0}
    running: set[WorkerRun] = set()
    lifecycle = {"closing": False}

    def shut_down() -> None:
        """Stop every generation now: open streams end with [DONE] and the server can close."""
        lifecycle["closing"] = True
        for run in list(running):
            run.stop.set()

    def authorised(request: Request) -> bool:
        if not api_key:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())

    def unauthorised() -> JSONResponse:
        return error_response(401, "a valid API key is required: send 'Authorization: Bearer KEY'",
                              code="invalid_api_key")

    async def health(request: Request) -> Response:
        busy = gate.turn.locked()
        return JSONResponse({"status": "ok", "model": engine.name, "generating": busy,
                             "waiting": max(0, gate.admitted - int(busy)), "queue_size": gate.capacity - 1,
                             "requests": dict(counts)})

    def model_card() -> dict:
        return {"id": engine.name, "object": "model", "created": engine.created, "owned_by": "rax",
                "context_length": engine.context, "vision": engine.vision is not None}

    async def models(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        return JSONResponse({"object": "list", "data": [model_card()]})

    async def model(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        if request.path_params["model_id"] != engine.name:
            return error_response(404, f"no model {request.path_params['model_id']!r} here; this server "
                                  f"has {engine.name!r}", code="model_not_found")
        return JSONResponse(model_card())

    async def chat_completions(request: Request) -> Response:
        if not authorised(request):
            return unauthorised()
        try:
            job = await run_in_threadpool(engine.prepare, await read_json(request))
        except RequestError as exc:
            return error_response(exc.status, exc.message, exc.param, exc.code)
        if not gate.admit():
            counts["rejected_busy"] += 1
            return error_response(429, f"the server is busy: one generation is running and "
                                  f"{gate.capacity - 1} are waiting; try again shortly", code="server_busy",
                                  headers={"Retry-After": "1"})
        watcher = asyncio.ensure_future(wait_for_disconnect(request))
        had_turn = started = False
        try:
            await first_of(gate.turn.acquire(), watcher)
            had_turn = True
            if lifecycle["closing"]:
                return error_response(503, "the server is shutting down", code="shutting_down")

            def finished(outcome: str) -> None:
                counts[outcome] += 1
                running.discard(run)
                gate.leave(had_turn=True)

            run = WorkerRun(engine, job, finished)
            running.add(run)
            run.start()
            started = True
            first = await next_item(run, watcher)
            if isinstance(first, Exception):
                return failure_response(first)
            if job.stream:
                watcher.cancel()    # from here the streaming response watches the connection
                return StreamedReply(engine, job, run, first)
            deltas = [first]
            while True:
                item = await next_item(run, watcher)
                if item is _END:
                    break
                if isinstance(item, Exception):
                    return failure_response(item)
                deltas.append(item)
            return JSONResponse(completion_body(job, deltas, engine.name, engine.loaded.tokenizer.token_bytes))
        except Disconnected:
            if started:
                run.stop.set()
            return Response(status_code=499)    # nobody reads it; ends the request cleanly
        finally:
            watcher.cancel()
            if not started:
                gate.leave(had_turn)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/chat/completions", chat_completions, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: server_error})
    app.state.engine, app.state.gate, app.state.counts, app.state.shut_down = engine, gate, counts, shut_down
    return app


async def read_json(request: Request):
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestError(f"the request body is over {MAX_BODY_BYTES >> 20} MiB", status=413)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None


async def wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def first_of(awaitable, watcher: asyncio.Future):
    """The awaitable's result, unless the client disconnects first (then `Disconnected`)."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    raise Disconnected()


async def next_item(run: WorkerRun, watcher: asyncio.Future):
    return await first_of(run.queue.get(), watcher)


def failure_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, RequestError):
        return error_response(exc.status, exc.message, exc.param, exc.code)
    return error_response(500, f"generation failed: {type(exc).__name__}: {exc}")


class StreamedReply(StreamingResponse):
    """Server-sent events that stop the worker however the response ends, even when the
    client leaves before the first event is written."""

    def __init__(self, engine: LocalEngine, job: Job, run: WorkerRun, first: Delta):
        super().__init__(sse_events(engine, job, run, first), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.run = run

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.run.stop.set()


async def sse_events(engine: LocalEngine, job: Job, run: WorkerRun, first: Delta):
    """A role chunk, one chunk per step with something to say, the finish reason, usage when
    asked (stream_options.include_usage), then [DONE]."""
    head = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": engine.name}
    token_bytes = engine.loaded.tokenizer.token_bytes

    def event(choices: list[dict], **extra) -> str:
        return f"data: {json.dumps({**head, 'choices': choices, **extra}, ensure_ascii=False)}\n\n"

    try:
        opening = {"prompt_token_ids": job.prompt_ids} if job.return_token_ids else {}
        yield event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}], **opening)
        item = first
        while item is not _END:
            if isinstance(item, Exception):     # too late for a status code: an error event
                yield f"data: {failure_response(item).body.decode()}\n\n"
                return
            choice = chunk_choice(job, item, token_bytes)
            if choice is not None:
                yield event([choice])
            item = await run.queue.get()
        if job.include_usage:
            yield event([], usage=usage_body(job))
        yield "data: [DONE]\n\n"
    finally:
        run.stop.set()


# -- running it ------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound here rather than by uvicorn so that port 0 can pick a free port we can print."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


def load_vision(model_path, mmproj: str | None, text_config, device: str = "cpu"):
    """--mmproj, else the mmproj beside the model, else None (images then get a 400)."""
    from . import multimodal
    found = multimodal.find_mmproj(model_path, mmproj)
    return None if found is None else multimodal.load_vision(found, text_config, device)


class ServerStoppingGenerations(uvicorn.Server):
    """On Ctrl-C / SIGTERM, first stop the running generation: uvicorn's graceful shutdown
    waits for open responses, and a stream of thousands of tokens would hold it."""

    def __init__(self, config: uvicorn.Config, shut_down):
        super().__init__(config)
        self.shut_down = shut_down

    def handle_exit(self, sig, frame) -> None:
        self.shut_down()
        super().handle_exit(sig, frame)


def run_server(*, model: str | None, mmproj: str | None = None, host: str = "127.0.0.1", port: int = 8080,
               api_key: str | None = None, queue_size: int = 8, max_context: int | None = None,
               max_tokens: int | None = None, name: str | None = None, allow_file_urls: bool | None = None,
               threads: int | None = None, device: str = "cpu", log_level: str = "info") -> None:
    path = find_model(model)
    set_threads(threads)
    loaded = load_model(path, device)
    vision = load_vision(path, mmproj, loaded.model.config, device)
    engine = LocalEngine(loaded, name or path.stem, vision=vision, max_context=max_context,
                         max_tokens=max_tokens,
                         allow_file_urls=is_loopback(host) if allow_file_urls is None else allow_file_urls)
    app = create_app(engine, api_key=api_key, queue_size=queue_size)
    sock = listening_socket(host, port)
    bound = sock.getsockname()
    shown_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    say = lambda line: print(f"rax serve: {line}", file=sys.stderr, flush=True)  # noqa: E731
    if not is_loopback(host) and not api_key:
        say(f"warning: listening on {host} without --api-key: anyone who can reach it can use it")
    say(f"{engine.name} ({engine.context} tokens of context{', vision' if engine.vision else ''}) "
        f"on http://{shown_host}:{bound[1]}/v1 (Ctrl-C stops)")
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    ServerStoppingGenerations(config, app.state.shut_down).run(sockets=[sock])
