"""Run events in Redis (what one publish sends, a reader gets in one read),
and what a worker does as it starts."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from django.conf import settings

from assistants.runs import events


def test_a_blocked_reader_gets_all_events_of_one_publish_in_one_read() -> None:
    run_id = f"run_events_{time.monotonic_ns()}"
    key = events.stream_key(run_id)
    reads: list[Any] = []
    reader = redis.Redis.from_url(settings.REDIS_URL)

    def read() -> None:
        reads.append(reader.xread({key: "0-0"}, block=5000, count=256))

    thread = threading.Thread(target=read)
    thread.start()
    # The reader is blocked on the stream before the events are written.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        blocked = events.client().info("clients").get("blocked_clients", 0)
        if blocked:
            break
        time.sleep(0.01)
    assert blocked, "the reader never blocked"
    names = [
        "thread.message.completed",
        "thread.run.step.completed",
        "thread.run.completed",
    ]
    assert events.publish_many(
        run_id, [(name, {"n": i}) for i, name in enumerate(names)]
    )
    thread.join(timeout=10)
    [[_key, entries]] = reads[0]
    assert [fields[b"event"].decode() for _id, fields in entries] == names
    events.client().delete(key)
    reader.close()


@pytest.fixture
def preloaded(monkeypatch: Any) -> threading.Event:
    """Set when ``embeddings.preload`` is called (instead of loading)."""
    from tools import embeddings

    loaded = threading.Event()
    monkeypatch.setattr(embeddings, "preload", loaded.set)
    return loaded


def test_a_threads_worker_preloads_the_embedding_model_and_prefork_does_not(
    preloaded: threading.Event, settings: Any
) -> None:
    from celery.concurrency import prefork, thread

    from assistants import tasks

    settings.EMBEDDINGS_PRELOAD = True

    class Consumer:
        def __init__(self, pool: Any) -> None:
            self.pool = pool

    tasks._preload_embeddings(
        sender=Consumer(prefork.TaskPool.__new__(prefork.TaskPool))
    )
    assert not preloaded.wait(0.3)
    settings.EMBEDDINGS_PRELOAD = False
    tasks._preload_embeddings(sender=Consumer(thread.TaskPool.__new__(thread.TaskPool)))
    assert not preloaded.wait(0.3)
    settings.EMBEDDINGS_PRELOAD = True
    tasks._preload_embeddings(sender=Consumer(thread.TaskPool.__new__(thread.TaskPool)))
    assert preloaded.wait(5)


def test_an_ingestion_child_preloads_the_embedding_model_as_it_starts(
    preloaded: threading.Event, settings: Any
) -> None:
    from tools import tasks

    settings.EMBEDDINGS_PRELOAD = False
    tasks._preload_embeddings()
    assert not preloaded.wait(0.3)
    settings.EMBEDDINGS_PRELOAD = True
    tasks._preload_embeddings()
    assert preloaded.wait(5)
