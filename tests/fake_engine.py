"""A scripted OpenAI-compatible engine: a real HTTP server in a subprocess.

Tests make the model say exact things by queueing replies, then check what
the platform sent. The server speaks ``GET /v1/models`` and
``POST /v1/chat/completions`` (streamed as Server-Sent Events when the
request says ``stream: true``, with a usage chunk when it asks for one
through ``stream_options.include_usage``), and listens on two ports that
share one state, so a model entry can list two replicas.

Control endpoints (also reachable through ``FakeEngine``):

``POST /__script``  a JSON list of replies, appended to the queue; each chat
    request consumes the next one. A reply is a dict with any of:
    ``content`` (text), ``chunks`` (the content as explicit stream chunks),
    ``tool_calls`` (``[{"name", "arguments" (str or JSON value), "id"?}]``),
    ``finish_reason``, ``usage`` (``{"prompt_tokens", "completion_tokens"}``),
    ``cached_tokens`` (reported as ``prompt_tokens_details.cached_tokens``),
    ``delay_per_chunk`` (seconds), ``hang`` (seconds before answering),
    ``status`` with ``error_message`` (an OpenAI error body), ``garbage``
    (an answer that is not JSON), ``disconnect_after`` (drop the connection
    after that many chunks), ``repeat_tool_ids`` (repeat a tool call's id
    and name on every delta, as llama-cpp-python does).
``GET /__requests``  every chat request received, oldest first: its JSON
    body plus ``aborted`` (true when the client went away before the answer
    was complete), ``completed``, ``headers`` (authorization, x-request-id,
    accept) and ``port`` (which of the two ports it reached); ``META_KEYS``.
``POST /__reset``  forget queued replies and recorded requests.

With nothing queued the engine answers ``DEFAULT_REPLY`` at once (the
benchmarks' "engine that answers instantly").

Use from tests: ``pytest_plugins = ["tests.fake_engine"]`` and the
``fake_engine`` fixture (reset for each test; the process is per session).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from core.stack.proc import die_with_parent

if TYPE_CHECKING:
    from core.models import LanguageModel

BASE_DIR = Path(__file__).resolve().parent.parent
MODEL_ID = "fake-model"
DEFAULT_REPLY: dict[str, Any] = {"content": "Hello from the fake engine."}
# Keys /__requests adds to each request body (none is a chat-completion field).
META_KEYS = ("aborted", "completed", "headers", "port")
# Bounded so that a benchmark's thousands of requests cannot grow the server.
MAX_RECORDED = 10_000


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.replies: deque[dict[str, Any]] = deque()
        self.requests: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDED)

    def next_reply(self) -> dict[str, Any]:
        with self.lock:
            return self.replies.popleft() if self.replies else dict(DEFAULT_REPLY)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The default (5) drops connections under a benchmark's bursts.
    request_queue_size = 128

    def __init__(self, port: int, state: _State) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing its connection (after [DONE], or to cancel) is
        # normal here; anything else is printed as usual.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _ClientGone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without TCP_NODELAY each small event waits for the previous one's
    # delayed ACK on a kept-alive connection: 40 ms per answer.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: tests read /__requests instead

    # -- routing

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._json(
                200,
                {
                    "object": "list",
                    "data": [{"id": MODEL_ID, "object": "model", "owned_by": "fake"}],
                },
            )
        elif self.path == "/__requests":
            with self.server.state.lock:
                recorded = [
                    {
                        **(r["body"] if isinstance(r["body"], dict) else {}),
                        **{key: r[key] for key in META_KEYS},
                    }
                    for r in self.server.state.requests
                ]
            self._json(200, recorded)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = self._body()
        state = self.server.state
        if self.path == "/__script":
            with state.lock:
                state.replies.extend(body)
            self._json(200, {"queued": len(state.replies)})
        elif self.path == "/__reset":
            with state.lock:
                state.replies.clear()
                state.requests.clear()
            self._json(200, {})
        elif self.path == "/v1/chat/completions":
            self._chat(body)
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    # -- the engine

    def _chat(self, body: Any) -> None:
        state = self.server.state
        record: dict[str, Any] = {
            "body": body,
            "headers": {
                key.lower(): value
                for key, value in self.headers.items()
                if key.lower() in {"authorization", "x-request-id", "accept"}
            },
            "port": self.server.server_port,
            "aborted": False,
            "completed": False,
        }
        with state.lock:
            state.requests.append(record)
        reply = state.next_reply()
        try:
            self._wait(float(reply.get("hang", 0)))
            if "status" in reply:
                message = reply.get("error_message", "scripted failure")
                self._json(
                    int(reply["status"]),
                    {
                        "error": {
                            "message": message,
                            "type": "scripted",
                            "param": None,
                            "code": int(reply["status"]),
                        }
                    },
                )
            elif isinstance(body, dict) and body.get("stream"):
                self._stream(reply, body)
            else:
                self._complete(reply, body)
            record["completed"] = True
        except _ClientGone:
            record["aborted"] = True
            self.close_connection = True

    def _complete(self, reply: dict[str, Any], body: Any) -> None:
        if reply.get("garbage"):
            self._raw(200, "application/json", b"<html>this is not json</html>")
            return
        calls = _tool_calls(reply)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": _content(reply) or None,
        }
        if calls:
            message["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["name"], "arguments": call["arguments"]},
                }
                for call in calls
            ]
        self._json(
            200,
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", MODEL_ID),
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "finish_reason": _finish_reason(reply, calls),
                    }
                ],
                "usage": _usage(reply, body, len(_chunks(reply)) + len(calls)),
            },
        )

    def _stream(self, reply: dict[str, Any], body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if reply.get("garbage"):
            self._event("this is not json")
            self._event("[DONE]")
            self._end()
            return
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        delay = float(reply.get("delay_per_chunk", 0))
        drop_after = reply.get("disconnect_after")
        sent = 0

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            nonlocal sent
            if drop_after is not None and sent >= int(drop_after):
                self.close_connection = True
                raise _Dropped
            if delay and sent:
                self._wait(delay)
            self._event(
                json.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body.get("model", MODEL_ID),
                        "choices": [
                            {"index": 0, "delta": delta, "finish_reason": finish}
                        ],
                    }
                )
            )
            sent += 1

        calls = _tool_calls(reply)
        try:
            chunk({"role": "assistant", "content": ""})
            for piece in _chunks(reply):
                chunk({"content": piece})
            for index, call in enumerate(calls):
                head = {"index": index, "id": call["id"], "type": "function"}
                chunk(
                    {
                        "tool_calls": [
                            {
                                **head,
                                "function": {"name": call["name"], "arguments": ""},
                            }
                        ]
                    }
                )
                for piece in _split(call["arguments"], 3):
                    delta: dict[str, Any] = {"index": index}
                    if reply.get("repeat_tool_ids"):
                        delta = {**head, "function": {"name": call["name"]}}
                    delta.setdefault("function", {})["arguments"] = piece
                    chunk({"tool_calls": [delta]})
            chunk({}, _finish_reason(reply, calls))
        except _Dropped:
            return
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = _usage(reply, body, sent - 2)
            self._event(
                json.dumps(
                    {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": body.get("model", MODEL_ID),
                        "choices": [],
                        "usage": usage,
                    }
                )
            )
        self._event("[DONE]")
        self._end()

    # -- I/O helpers

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _json(self, status: int, payload: Any) -> None:
        self._raw(status, "application/json", json.dumps(payload).encode())

    def _raw(self, status: int, content_type: str, data: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError as exc:
            raise _ClientGone from exc

    def _event(self, data: str) -> None:
        payload = f"data: {data}\n\n".encode()
        self._write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")

    def _end(self) -> None:
        self._write(b"0\r\n\r\n")

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError as exc:
            raise _ClientGone from exc

    def _wait(self, seconds: float) -> None:
        """Sleep, noticing a client that hangs up meanwhile (_ClientGone)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.02))
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError as exc:
                    raise _ClientGone from exc
                if not peeked:
                    raise _ClientGone


class _Dropped(Exception):
    pass


def _content(reply: dict[str, Any]) -> str:
    if "chunks" in reply:
        return "".join(reply["chunks"])
    return str(reply.get("content", "" if reply.get("tool_calls") else "Hello."))


def _chunks(reply: dict[str, Any]) -> list[str]:
    if "chunks" in reply:
        return [str(piece) for piece in reply["chunks"]]
    text = _content(reply)
    # Word by word, keeping the spaces, as an engine streams tokens.
    pieces: list[str] = []
    for word in text.split(" "):
        pieces.append(f" {word}" if pieces else word)
    return [p for p in pieces if p]


def _tool_calls(reply: dict[str, Any]) -> list[dict[str, str]]:
    calls = []
    for n, call in enumerate(reply.get("tool_calls") or []):
        arguments = call.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        calls.append(
            {
                "id": call.get("id") or f"engine-call-{n}",
                "name": call["name"],
                "arguments": arguments,
            }
        )
    return calls


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _finish_reason(reply: dict[str, Any], calls: list[dict[str, str]]) -> str:
    return str(reply.get("finish_reason") or ("tool_calls" if calls else "stop"))


def _usage(reply: dict[str, Any], body: Any, completion: int) -> dict[str, Any]:
    words = sum(
        len(str(m.get("content") or "").split())
        for m in (body or {}).get("messages", [])
        if isinstance(m, dict)
    )
    usage: dict[str, Any] = {
        "prompt_tokens": max(words, 1),
        "completion_tokens": max(completion, 0),
        **(reply.get("usage") or {}),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if "cached_tokens" in reply:
        usage["prompt_tokens_details"] = {"cached_tokens": reply["cached_tokens"]}
    return usage


def serve(port: int, replica_port: int) -> None:
    """Serve on both ports until SIGTERM; print the bound ports as JSON."""
    state = _State()
    servers = [_Server(port, state), _Server(replica_port, state)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print(
        json.dumps(
            {"port": servers[0].server_port, "replica_port": servers[1].server_port}
        ),
        flush=True,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.shutdown()


# --- pytest side -------------------------------------------------------------


@dataclass
class FakeEngine:
    """A handle on the fake engine process: script it, read what it got."""

    port: int
    replica_port: int
    process: subprocess.Popen[str]

    @property
    def url(self) -> str:
        """Base URL, as a model entry's ``base_urls`` lists it."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def replica_url(self) -> str:
        """A second base URL served by the same process and script."""
        return f"http://127.0.0.1:{self.replica_port}/v1"

    def _control(self, method: str, path: str, payload: Any = None) -> Any:
        response = httpx.request(
            method, f"http://127.0.0.1:{self.port}{path}", json=payload, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def script(self, *replies: dict[str, Any]) -> None:
        """Queue replies; each chat request consumes the next one."""
        self._control("POST", "/__script", list(replies))

    def requests(self) -> list[dict[str, Any]]:
        """Every chat request received since the last reset, oldest first:
        the JSON body plus ``META_KEYS`` (``aborted``, ``completed``,
        ``headers``, ``port``)."""
        return list(self._control("GET", "/__requests"))

    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of ``requests()``, exactly as sent."""
        return [
            {k: v for k, v in r.items() if k not in META_KEYS} for r in self.requests()
        ]

    def wait_for_abort(self, timeout: float = 5.0) -> dict[str, Any]:
        """The first request the client abandoned, waiting up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for request in self.requests():
                if request["aborted"]:
                    return request
            time.sleep(0.02)
        raise AssertionError(f"no request was aborted within {timeout} s")

    def reset(self) -> None:
        self._control("POST", "/__reset")

    def model(
        self,
        *,
        id: str = MODEL_ID,  # noqa: A002
        base_urls: list[str] | None = None,
        capabilities: dict[str, Any] | None = None,
        served_name: str = "",
        api_key: str = "",
    ) -> LanguageModel:
        """An unsaved registry entry pointing at this engine (no DB needed)."""
        from core.models import LanguageModel

        return LanguageModel(
            id=id,
            served_name=served_name,
            base_urls=base_urls if base_urls is not None else [self.url],
            api_key=api_key,
            capabilities=capabilities if capabilities is not None else {},
        )


@pytest.fixture(scope="session")
def fake_engine_server() -> Iterator[FakeEngine]:
    """The fake engine process, started once per test session."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_engine"],
        cwd=BASE_DIR,
        env={**os.environ, "PYTHONPATH": str(BASE_DIR)},
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent(),  # never outlive pytest
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"the fake engine exited with {process.wait()}")
    ports = json.loads(line)
    engine = FakeEngine(
        port=ports["port"], replica_port=ports["replica_port"], process=process
    )
    try:
        yield engine
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def fake_engine(fake_engine_server: FakeEngine) -> FakeEngine:
    """The fake engine with no queued replies and no recorded requests."""
    fake_engine_server.reset()
    return fake_engine_server


@pytest.fixture
def registered_engine(fake_engine: FakeEngine, django_db_blocker: Any) -> FakeEngine:
    """The fake engine, in the model registry as ``MODEL_ID``."""
    from core.services.models import language_model_register

    with django_db_blocker.unblock():
        language_model_register(
            name=MODEL_ID, base_urls=[fake_engine.url], context_window=8192
        )
    return fake_engine


@pytest.fixture
def engine(registered_engine: FakeEngine, live_worker: Any) -> FakeEngine:
    """The registered fake engine with a live Celery worker running runs."""
    return registered_engine


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--replica-port", type=int, default=0)
    arguments = parser.parse_args()
    serve(arguments.port, arguments.replica_port)
