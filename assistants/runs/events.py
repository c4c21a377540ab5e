"""Run events: one Redis stream per run, read by any web process.

The worker (and the API, for the events it causes) appends each event as it
happens; an SSE response reads the stream from where its client stands, so
any web process can serve any run, a reconnecting client resumes with
``Last-Event-ID``, and a client that goes away does not stop the run.
PostgreSQL stays the source of truth: the stream only carries what was
already decided, and it expires a day after the run's last event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import redis
from django.conf import settings
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

STREAM_TTL_SECONDS = 24 * 3600
STREAM_MAXLEN = 100_000

# Events that end an SSE response: the run is over, or waits for the client.
FINAL_EVENTS = frozenset(
    {
        "thread.run.completed",
        "thread.run.incomplete",
        "thread.run.failed",
        "thread.run.cancelled",
        "thread.run.expired",
        "thread.run.requires_action",
        "error",
    }
)

_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()

# redis-py's default retry (3 tries, backoff up to 10 s) would hold a request
# or a run ~7 s on each call while Redis restarts; two quick retries cover a
# dropped connection to a live server, then the caller decides.
CONNECT_TIMEOUT_SECONDS = 2.0
# After a failed publish, further events of this process are dropped at once
# for this long instead of each waiting for its own connection error.
PUBLISH_BACKOFF_SECONDS = 1.0
_publish_down_until = 0.0

_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def stream_key(run_id: str) -> str:
    return f"agents:run:{run_id}:events"


def cancel_key(run_id: str) -> str:
    return f"agents:run:{run_id}:cancel"


def client() -> redis.Redis:
    """One client per process (redis-py's pool is thread-safe and resets
    itself after a fork). Per thread it cost a new connection on every web
    request, since each request runs on a thread of its own."""
    url = settings.REDIS_URL  # read at call time: tests and tools change it
    conn = _clients.get(url)
    if conn is None:
        with _clients_lock:
            conn = _clients.get(url)
            if conn is None:
                conn = redis.Redis.from_url(
                    url,
                    socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    retry=Retry(
                        ExponentialWithJitterBackoff(base=0.1, cap=0.5), retries=2
                    ),
                    # A connection idle across a Redis restart is found dead
                    # before use rather than failing the call.
                    health_check_interval=30,
                )
                _clients[url] = conn
    return conn


def _publish_blocked() -> bool:
    return time.monotonic() < _publish_down_until


def _publish_failed(run_id: str, exc: Exception) -> None:
    """Events are a live view of what PostgreSQL already holds: while Redis
    is away they are dropped, not raised, so a run or a request does not fail
    for it. SSE readers answer from PostgreSQL when the final event is
    missing (streaming.run_events)."""
    global _publish_down_until
    _publish_down_until = time.monotonic() + PUBLISH_BACKOFF_SECONDS
    logger.warning("run %s: event dropped, Redis unavailable: %s", run_id, exc)


def publish(run_id: str, event: str, data: Any) -> str:
    """Append one event; returns its stream id ("" if Redis is unavailable
    and the event was dropped)."""
    if _publish_blocked():
        return ""
    key = stream_key(run_id)
    payload = orjson.dumps(data)
    try:
        pipe = client().pipeline(transaction=False)
        pipe.xadd(
            key,
            {"event": event, "data": payload},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )
        pipe.expire(key, STREAM_TTL_SECONDS)
        entry_id, _ = pipe.execute()
    except _UNAVAILABLE as exc:
        _publish_failed(run_id, exc)
        return ""
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def publish_many(
    run_id: str,
    events: list[tuple[str, Any]],
    *,
    also: Callable[[redis.client.Pipeline], None] | None = None,
) -> bool:
    """Append several events in one round trip (dropped, as ``publish``, if
    Redis is unavailable). ``also`` adds other commands to the same round
    trip (a run's wake-up: ``core.taskqueue.push``). False when nothing was
    sent."""
    if (not events and also is None) or _publish_blocked():
        return False
    key = stream_key(run_id)
    try:
        # MULTI/EXEC: Redis serves a blocked XREAD after each command of a
        # plain pipeline, so a stream reader got the first event alone and
        # had to come back for the rest (a round trip and a write to the
        # client more, ~0.7 ms between a run's last two events); after an
        # EXEC it gets them all in one read.
        pipe = client().pipeline(transaction=True)
        for event, data in events:
            pipe.xadd(
                key,
                {"event": event, "data": orjson.dumps(data)},
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        if events:
            pipe.expire(key, STREAM_TTL_SECONDS)
        if also is not None:
            also(pipe)
        pipe.execute()
    except _UNAVAILABLE as exc:
        _publish_failed(run_id, exc)
        return False
    return True


def last_id(run_id: str) -> str:
    """The id of the newest event so far ("0-0" for none): a new stream for
    submit_tool_outputs starts after it."""
    newest: list[Any] = client().xrevrange(stream_key(run_id), count=1)  # type: ignore[assignment]
    if not newest:
        return "0-0"
    entry_id = newest[0][0]
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def request_cancel(run_id: str) -> None:
    """Tell the worker executing ``run_id`` to stop (it polls this key)."""
    client().set(cancel_key(run_id), b"1", ex=3600)


def cancel_requested(run_id: str) -> bool:
    """Whether a cancel was asked for; False while Redis is unavailable (the
    run goes on rather than failing because the flag cannot be read)."""
    if _publish_blocked():
        return False
    try:
        return bool(client().exists(cancel_key(run_id)))
    except _UNAVAILABLE as exc:
        _publish_failed(run_id, exc)
        return False
