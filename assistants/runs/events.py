"""Run events: one Redis stream per run, read by any web process.

The worker (and the API, for the events it causes) appends each event as it
happens; an SSE response reads the stream from where its client stands, so
any web process can serve any run, a reconnecting client resumes with
``Last-Event-ID``, and a client that goes away does not stop the run.
PostgreSQL stays the source of truth: the stream only carries what was
already decided, and it expires a day after the run's last event.
"""

from __future__ import annotations

import threading
from typing import Any

import orjson
import redis
from django.conf import settings

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
                conn = redis.Redis.from_url(url)
                _clients[url] = conn
    return conn


def publish(run_id: str, event: str, data: Any) -> str:
    """Append one event; returns its stream id."""
    key = stream_key(run_id)
    payload = orjson.dumps(data)
    pipe = client().pipeline(transaction=False)
    pipe.xadd(
        key, {"event": event, "data": payload}, maxlen=STREAM_MAXLEN, approximate=True
    )
    pipe.expire(key, STREAM_TTL_SECONDS)
    entry_id, _ = pipe.execute()
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def publish_many(run_id: str, events: list[tuple[str, Any]]) -> None:
    if not events:
        return
    key = stream_key(run_id)
    pipe = client().pipeline(transaction=False)
    for event, data in events:
        pipe.xadd(
            key,
            {"event": event, "data": orjson.dumps(data)},
            maxlen=STREAM_MAXLEN,
            approximate=True,
        )
    pipe.expire(key, STREAM_TTL_SECONDS)
    pipe.execute()


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
    return bool(client().exists(cancel_key(run_id)))
