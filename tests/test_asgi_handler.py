"""core.asgi_handler: one hop per request, on reused request threads."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from asgiref.sync import async_to_sync

from core.asgi_handler import SyncChainASGIHandler


def _scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "server": ("test", 80),
        "client": ("127.0.0.1", 1),
        "scheme": "http",
        "asgi": {"version": "3.0"},
    }


async def _request(app: Any, method: str, path: str) -> list[dict[str, Any]]:
    """The messages ``app`` sent for a body-less request."""
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

    await app(_scope(method, path), receive, send)
    return sent


async def _get(app: Any, path: str) -> tuple[int, bytes]:
    sent = await _request(app, "GET", path)
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


def test_run_starts_are_admitted_a_few_at_a_time_and_others_pass(
    settings: Any,
) -> None:
    from django.http import HttpResponse

    settings.WEB_RUN_START_CONCURRENCY = 2
    handler = SyncChainASGIHandler()
    lock = threading.Lock()
    running = {"starts": 0, "max_starts": 0}
    finished: list[str] = []

    def get_response(request: Any) -> HttpResponse:
        start = request.method == "POST"
        with lock:
            if start:
                running["starts"] += 1
                running["max_starts"] = max(running["max_starts"], running["starts"])
        time.sleep(0.2 if start else 0.01)
        with lock:
            if start:
                running["starts"] -= 1
            finished.append(request.method)
        return HttpResponse(b"ok")

    handler.get_response = get_response  # type: ignore[method-assign]

    async def scenario() -> None:
        starts = [
            asyncio.create_task(
                _request(handler, "POST", f"/v1/threads/thread_{i}/runs")
            )
            for i in range(6)
        ]
        await asyncio.sleep(0.05)  # two are in, four wait
        reads = [
            asyncio.create_task(_request(handler, "GET", "/v1/threads/thread_0"))
            for _ in range(3)
        ]
        await asyncio.gather(*reads)
        # The reads did not wait behind the queued run starts.
        assert finished.count("GET") == 3 and finished.count("POST") <= 2
        await asyncio.gather(*starts)

    async_to_sync(scenario)()
    assert running["max_starts"] == 2
    assert finished.count("POST") == 6
