"""Server-Sent Events for a run, read from its Redis stream.

Frames are ``event: <name>\\ndata: <json>\\n\\n``; the response ends after a
final event (a terminal status, or ``requires_action``) with
``event: done\\ndata: [DONE]``. Each frame carries its stream id, so a client
that reconnects with ``Last-Event-ID`` resumes where it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.http import StreamingHttpResponse
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from assistants.api.v1.serializers import run_to_wire
from assistants.models import Run, RunStatus
from assistants.runs.events import CONNECT_TIMEOUT_SECONDS, FINAL_EVENTS, stream_key
from core.db import release_connection
from core.errors import is_outage

KEEPALIVE_MS = 15_000
# After Redis went away under a stream: how often the run's state is read
# from PostgreSQL while the stream is quiet.
OUTAGE_POLL_MS = 1_000
DONE = b"event: done\ndata: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def frame(event: str, data: bytes, entry_id: str | None = None) -> bytes:
    head = f"id: {entry_id}\n" if entry_id else ""
    return f"{head}event: {event}\ndata: ".encode() + data + b"\n\n"


# One client (and so one connection pool) per event loop and Redis URL. A
# client per stream cost a TCP connect and handshake on every SSE response,
# the largest share of the web process's CPU per run. Async connections
# belong to the loop that opened them, hence the key.
_clients: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, aioredis.Redis]] = {}


def _client() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    url = settings.REDIS_URL  # read at call time: tests and tools change it
    key = (id(loop), url)
    held = _clients.get(key)
    if held is None or held[0] is not loop:
        for stale in [k for k, (lp, _) in _clients.items() if lp.is_closed()]:
            del _clients[stale]
        held = (
            loop,
            aioredis.Redis.from_url(
                url,
                # Fail fast while Redis restarts (run_events then polls
                # PostgreSQL) rather than redis-py's default ~7 s of retries.
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=0.5), retries=2),
            ),
        )
        _clients[key] = held
    return held[1]


def _ended_run(run_id: str) -> dict[str, Any] | None:
    """The run's wire object if it has ended; None while it is active, and
    while PostgreSQL is unreachable (the stream then waits, it is not cut)."""
    try:
        run = Run.objects.filter(pk=run_id).first()
    except DatabaseError as exc:
        if not is_outage(exc):
            raise
        close_old_connections()
        return None
    if run is None or run.status in (
        RunStatus.QUEUED,
        RunStatus.IN_PROGRESS,
        RunStatus.CANCELLING,
    ):
        return None
    return run_to_wire(run)


# One event of a run: its stream id (None when read from PostgreSQL after
# the stream was gone), its name and its JSON data.
Entry = tuple[str | None, str, bytes]


async def _closing(run_id: str) -> Entry | None:
    """The last event of a run that has ended, from PostgreSQL; None while
    it goes on."""
    ended = await sync_to_async(_ended_run)(run_id)
    if ended is None:
        return None
    return None, f"thread.run.{ended['status']}", orjson.dumps(ended)


async def run_batches(
    run_id: str, *, after: str = "0-0"
) -> AsyncIterator[tuple[list[Entry], bool]]:
    """The run's events after stream id ``after``, as each read of its
    Redis stream returns them: ``(entries, final)``, final on the batch that
    ends with the run's last event, after which the iteration stops. An
    empty batch when the stream was quiet for a while (time for a
    keep-alive)."""
    client = _client()
    last = after
    key = stream_key(run_id)
    block = KEEPALIVE_MS
    while True:
        try:
            reply = await client.xread({key: last}, block=block, count=256)
        except (aioredis.ConnectionError, aioredis.TimeoutError):
            # Redis is restarting. The run goes on (its events are dropped
            # meanwhile; PostgreSQL has its state): keep the client's stream
            # open, end it from PostgreSQL when the run ends, and read on from
            # ``last`` once Redis is back (new entries get later, time-based
            # ids). The final event may have been dropped, so from now on
            # PostgreSQL is asked every second while the stream is quiet.
            block = OUTAGE_POLL_MS
            closing = await _closing(run_id)
            if closing is not None:
                yield [closing], True
                return
            yield [], False
            await asyncio.sleep(OUTAGE_POLL_MS / 1000)
            continue
        if not reply:
            # Quiet for a while: if the run ended and its stream is gone
            # (expired, or Redis restarted), answer from PostgreSQL.
            closing = await _closing(run_id)
            if closing is not None:
                yield [closing], True
                return
            yield [], False
            continue
        batch: list[Entry] = []
        for raw_id, fields in reply[0][1]:
            last = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            event = fields[b"event"].decode()
            batch.append((last, event, fields[b"data"]))
            if event in FINAL_EVENTS:
                yield batch, True
                return
        yield batch, False


async def run_events(
    run_id: str,
    *,
    after: str = "0-0",
    prelude: list[tuple[str, dict[str, Any]]] | None = None,
) -> AsyncIterator[bytes]:
    """The run's Server-Sent Events. Each read of the stream goes out as
    one chunk, however many events it returned: every chunk costs a pass
    through Django's and uvicorn's send path and a system call, and a run's
    events come a few at a time (created with queued; the step, its message
    and the first delta; the completions)."""
    if prelude:
        yield b"".join(frame(event, orjson.dumps(data)) for event, data in prelude)
    async for batch, final in run_batches(run_id, after=after):
        if not batch:
            yield KEEPALIVE
            continue
        chunk = b"".join(
            frame(event, data, entry_id) for entry_id, event, data in batch
        )
        yield chunk + DONE if final else chunk


def sse_response(stream: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """The view's last word: called on the request's thread once its database
    work is done. Django gives a request's connection back only when the
    response closes, which for a stream is when the run ends: 200 open
    streams held 200 connections and exhausted the pool (load benchmark).
    The stream itself needs PostgreSQL only now and then (``_ended_run``),
    and takes a connection for that moment (``release_connection``: only a
    pooled one is given back, never inside a transaction; tests run views
    in one)."""
    release_connection()
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response
