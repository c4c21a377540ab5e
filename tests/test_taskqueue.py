"""core.taskqueue: a task message written straight into the broker's list is
the one kombu would have written. (That a worker runs it, every run test
shows: run creates wake the worker this way.)"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import redis
from celery import current_app
from django.conf import settings

from core import taskqueue
from core.observability import context


def _probe_task(queue: str) -> Any:
    """A task sent to a queue of its own, so that no running worker
    consumes it."""

    def probe(value: str) -> None:
        return None

    return current_app.task(
        name=f"tests.probe.{queue}",
        ignore_result=True,
        soft_time_limit=30,
        time_limit=40,
    )(probe)


def _decoded(raw: bytes) -> dict[str, Any]:
    envelope = json.loads(raw)
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def test_message_is_the_envelope_kombu_writes() -> None:
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    task = _probe_task(queue)
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        with context.bound(request="req-1"):
            task.apply_async(("x",), queue=queue)
            pipe = client.pipeline(transaction=False)
            taskqueue.push(pipe, task, ("x",), queue=queue)
            pipe.execute()
        # LPUSH: the newest is first.
        ours, theirs = (_decoded(raw) for raw in client.lrange(queue, 0, -1))
    finally:
        client.delete(queue)
    assert ours["body"] == theirs["body"] == [["x"], {}, theirs["body"][2]]
    assert ours["content-type"] == theirs["content-type"] == "application/json"
    assert ours["content-encoding"] == theirs["content-encoding"]
    assert set(ours["headers"]) == set(theirs["headers"])
    for name in ("task", "timelimit", "ignore_result", "argsrepr", "kwargsrepr"):
        assert ours["headers"][name] == theirs["headers"][name], name
    assert ours["headers"]["agents_request_id"] == "req-1"
    assert ours["headers"]["id"] == ours["headers"]["root_id"]
    assert ours["headers"]["id"] != theirs["headers"]["id"]
    assert set(ours["properties"]) == set(theirs["properties"])
    for name in ("delivery_info", "delivery_mode", "priority", "body_encoding"):
        assert ours["properties"][name] == theirs["properties"][name], name
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]


def test_the_queue_is_the_routed_one() -> None:
    from assistants.tasks import run_execute_task, thread_summarize_task
    from tools.tasks import vector_store_files_ingest_task

    assert taskqueue.message(run_execute_task, ("run_x",))[0] == "runs"
    assert taskqueue.message(vector_store_files_ingest_task, ())[0] == "ingestion"
    assert taskqueue.message(thread_summarize_task, ())[0] == "celery"


def test_direct_only_for_the_events_redis() -> None:
    assert taskqueue.direct_possible()  # the test stack's default broker
    assert not taskqueue._direct_possible("redis://a:6379/0", "redis://b:6379/0")
    assert not taskqueue._direct_possible("amqp://a//", "amqp://a//")


def test_a_broker_channel_keeps_one_redis_client() -> None:
    """core.broker.reuse_channel_clients: one client per channel, not one
    per command (each ack built one)."""
    with current_app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as again:
            assert first is again
            assert first.ping()
        given = redis.Redis.from_url(settings.REDIS_URL)
        with channel.conn_or_acquire(given) as passed:
            assert passed is given
