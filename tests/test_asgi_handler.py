"""core.asgi_handler: one hop per request, on reused request threads."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from asgiref.sync import async_to_sync

from core.asgi_handler import SyncChainASGIHandler


async def _get(app: Any, path: str) -> tuple[int, bytes]:
    sent: list[dict[str, Any]] = []

    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
        "scheme": "http",
        "asgi": {"version": "3.0"},
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(
        m.get("body", b"") for m in sent if m["type"] == "http.response.body"
    )
    return status, body


def test_sequential_requests_reuse_one_request_thread() -> None:
    handler = SyncChainASGIHandler()
    status, body = async_to_sync(_get)(handler, "/v1/no/such/route")
    assert status == 404 and b"Invalid URL" in body
    idle = list(handler._executors._idle)
    assert len(idle) == 1
    threads_before = threading.active_count()
    for _ in range(20):
        async_to_sync(_get)(handler, "/v1/no/such/route")
    assert handler._executors._idle == idle  # the same executor, every time
    assert threading.active_count() <= threads_before + 1


def test_the_middleware_chain_is_built_for_sync_calls() -> None:
    handler = SyncChainASGIHandler()
    # Django marks a chain built with is_async=False as a plain callable.
    assert not getattr(handler._middleware_chain, "_is_coroutine", False)
    import inspect

    assert not inspect.iscoroutinefunction(handler._middleware_chain)
