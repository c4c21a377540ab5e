"""Django's ASGI handler, without the per-request thread and hop costs.

Django's own handler builds the middleware chain in async mode and wraps
each request in a fresh ``ThreadSensitiveContext``: every request starts
two OS threads, and every sync middleware hook and the view cost a
``sync_to_async`` hop each (~15 per request), about 3 ms of CPU on this
machine before any work is done. Our views and middleware are sync, so this
handler runs the whole chain in one hop, on a one-thread executor taken from
a pool of idle ones and returned after the request. Async responses (the
Server-Sent Event streams) are still sent by the event loop.

Requests that start a run (create, create-thread-and-run, submit tool
outputs) enter the chain at most ``WEB_RUN_START_CONCURRENCY`` at a time
per process; the rest wait their turn on the event loop, in order, before
anything is written. Under the load benchmark (200 streaming-run users on
2 cores) a process otherwise ran a dozen run creates at once: each took
0.25 s p50 instead of ~8 ms, the threads' contention for the GIL and the
cores slowed every other request (CRUD p95 0.4-0.5 s), and a queued run
then crawled through a worker running 100 others. Admitted a few at a
time, each create is quick, other requests do not wait behind them, and
the runs, once created, start at once. A run's wait under overload moves
from the worker queue to admission (its client waits for the stream's
first bytes); its end-to-end time stays as it was, because throughput is
what bounds it. The stream itself is not held: the slot is free once the
view has returned its response.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

from core.ratelimit import is_run_start

# Idle executors kept for reuse; concurrent requests beyond this still get
# one each, it is only the idle reserve that is bounded.
MAX_IDLE_EXECUTORS = 64


class _ExecutorPool:
    def __init__(self) -> None:
        self._idle: list[ThreadPoolExecutor] = []
        self._lock = threading.Lock()

    def acquire(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        # One call at a time on one thread: what ThreadSensitiveContext needs.
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")

    def release(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE_EXECUTORS:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._executors = _ExecutorPool()
        # Created on first use: it belongs to the event loop serving us.
        self._run_starts: asyncio.Semaphore | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(
                f"Django can only handle ASGI/HTTP connections, not {scope['type']}."
            )
        executor = self._executors.acquire()
        try:
            # The request's thread-sensitive work (the chain, DB access, the
            # response's close) all runs on this one thread, as in Django's
            # handler, but the thread outlives the request.
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self._executors.release(executor)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        chain = sync_to_async(self.get_response, thread_sensitive=True)
        if not is_run_start(request.method or "", request.path):
            return await chain(request)
        if self._run_starts is None:
            self._run_starts = asyncio.Semaphore(settings.WEB_RUN_START_CONCURRENCY)
        async with self._run_starts:
            return await chain(request)
