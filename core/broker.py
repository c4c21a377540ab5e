"""Broker-side fixes: surviving a Redis restart, and a client per channel.

``reuse_channel_clients``: kombu's Redis channel builds a new ``redis.Redis``
client object for every command it sends without one (each task's ack,
each delivery's bookkeeping): about 0.3 ms of CPU apiece, 5% of a runs
worker's CPU per run in the runs benchmark. The client is only a wrapper
around the channel's connection pool and safe to share between threads, so
one per channel (and pool) is kept.

``cap_broker_reconnect_interval``: Celery's consumer reconnects through
kombu's ``Connection.ensure_connection`` with kombu's default intervals (2 s,
then 2 s more each time, up to 30 s), which Celery's settings cannot change.
After a minute-long Redis outage a worker would then sleep up to 30 s more
before it consumes again; capped at ``BROKER_RECONNECT_MAX_SECONDS`` it is
back within that many seconds of Redis.

``patch_redis_detached_channel`` works around a kombu 5.7 / Celery 5.7 crash
found by ``tests/test_restarts.py``. When the broker connection is lost while
a late-acknowledged task runs, Celery's consumer collects the broken
connection, which detaches its transport (``transport.client = None``) and
later the channel (``channel.connection = None``). Two calls then still go
through that dead channel: closing it tries once more to put the
unacknowledged messages back, and the task, once it finishes, is acked on it.
Both make kombu build a Redis client for it, which reads the host name of a
connection that is gone and raises ``AttributeError``. Celery treats that as
unrecoverable: the worker exits instead of reconnecting.

The patch raises redis' ``ConnectionError`` there instead: the error kombu
and Celery already expect from a dead connection, which they log and ignore
("Couldn't ack", a restore skipped). No work is lost: a message that was
neither restored nor acked stays in Redis's unacked set (kombu restores it
after ``visibility_timeout``; after a Redis restart it is gone with the rest),
and a run's wake-up is re-sent by the reaper anyway, whose claim makes a
second delivery harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def patch_redis_detached_channel() -> None:
    """Make a kombu Redis channel whose connection is gone fail as a
    connection error rather than an AttributeError. Idempotent."""
    import redis.exceptions
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel._connparams
    if getattr(original, "agents_patched", False):
        return

    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        transport = getattr(self, "connection", None)
        if transport is None or getattr(transport, "client", None) is None:
            raise redis.exceptions.ConnectionError(
                "the broker connection this channel used is closed"
            )
        return original(self, asynchronous=asynchronous)

    _connparams.agents_patched = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]


BROKER_RECONNECT_MAX_SECONDS = 5.0


def cap_broker_reconnect_interval() -> None:
    """Default kombu's reconnect interval cap to BROKER_RECONNECT_MAX_SECONDS
    for callers that do not choose one (Celery's consumer). Idempotent."""
    from kombu.connection import Connection

    original = Connection.ensure_connection
    if getattr(original, "agents_patched", False):
        return

    def ensure_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        # interval_max is the fifth positional argument; a caller that
        # passes it (by position or name) keeps its own.
        if len(args) < 5:
            kwargs.setdefault("interval_max", BROKER_RECONNECT_MAX_SECONDS)
        return original(self, *args, **kwargs)

    ensure_connection.agents_patched = True  # type: ignore[attr-defined]
    Connection.ensure_connection = ensure_connection  # type: ignore[method-assign]


def reuse_channel_clients() -> None:
    """One sync ``redis.Redis`` per kombu Redis channel and pool, instead of
    one per command. Idempotent."""
    from kombu.transport import redis as kombu_redis

    original = kombu_redis.Channel.conn_or_acquire
    if getattr(original, "agents_patched", False):
        return

    @contextmanager
    def conn_or_acquire(self: Any, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool = self.pool  # as _create_client reads it (may raise, detached)
        cached = self.__dict__.get("_agents_client")
        if cached is None or cached.connection_pool is not pool:
            cached = self._create_client()
            self.__dict__["_agents_client"] = cached
        yield cached

    conn_or_acquire.agents_patched = True  # type: ignore[attr-defined]
    kombu_redis.Channel.conn_or_acquire = conn_or_acquire  # type: ignore[method-assign]
