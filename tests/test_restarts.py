"""Surviving PostgreSQL and Redis restarts and killed workers.

The drill runs on a private stack (``tests/restart_harness.py``: its own
embedded PostgreSQL and Redis, scripted engine, web and worker), because
restarting the session's shared services would disturb every other test.
The long version with figures is ``bench/restart_bench.py``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import django.db
import httpx
import kombu.exceptions
import psycopg
import pytest
import redis.exceptions
from django.db import connection
from django.test import RequestFactory

from core.errors import exception_handler
from core.views import server_error
from tests.restart_harness import API_KEY, TERMINAL, Cluster, classify, drill

RECOVERY_LIMIT = 30.0
HELLO = {"messages": [{"role": "user", "content": "Hello?"}]}


@pytest.mark.parametrize(
    "exc",
    [
        django.db.OperationalError("server closed the connection unexpectedly"),
        django.db.InterfaceError("connection already closed"),
        psycopg.OperationalError("connection failed"),
        redis.exceptions.ConnectionError("Error 111 connecting"),
        redis.exceptions.TimeoutError("Timeout reading from socket"),
        kombu.exceptions.OperationalError("Error 111 connecting"),
    ],
    ids=lambda e: type(e).__module__ + "." + type(e).__name__,
)
def test_an_unreachable_dependency_is_a_503_with_the_error_body(exc: Exception) -> None:
    response = exception_handler(exc, {})
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert response.data["error"]["type"] == "server_error"
    assert response.data["error"]["code"] == "service_unavailable"
    assert "retry" in response.data["error"]["message"]


def test_a_wrapped_outage_is_recognised_through_its_cause() -> None:
    try:
        try:
            raise redis.exceptions.ConnectionError("refused")
        except redis.exceptions.ConnectionError as inner:
            raise RuntimeError("publishing failed") from inner
    except RuntimeError as outer:
        response = exception_handler(outer, {})
    assert response.status_code == 503


def test_a_bug_is_still_a_500() -> None:
    response = exception_handler(ValueError("a bug"), {})
    assert response.status_code == 500
    assert "Retry-After" not in response


def test_an_outage_outside_drf_is_a_503_too() -> None:
    """handler500 runs inside Django's except block (a middleware, a store
    page): it reads the exception from there."""
    request = RequestFactory().get("/store/")
    try:
        raise django.db.OperationalError("the database system is shutting down")
    except django.db.OperationalError:
        response = server_error(request)
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    assert b'"service_unavailable"' in response.content
    try:
        raise KeyError("a bug")
    except KeyError:
        assert server_error(request).status_code == 500


def test_a_channel_whose_broker_connection_is_gone_fails_as_a_connection_error() -> (
    None
):
    """kombu 5.7 raised AttributeError here (acking a late-acked task after a
    Redis restart), which ended the worker; see core/broker.py."""
    from kombu.transport import redis as kombu_redis

    import config.celery  # noqa: F401  (installs the patch, as the worker does)

    class DeadChannel:
        connection = None

    with pytest.raises(redis.exceptions.ConnectionError):
        kombu_redis.Channel._connparams(DeadChannel())  # type: ignore[arg-type]


def test_a_worker_retries_the_broker_at_least_every_five_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kombu's default backoff reaches 30 s: after a long Redis outage the
    worker would idle that long after Redis is back."""
    from kombu.connection import Connection

    import config.celery  # noqa: F401  (installs the cap, as the worker does)
    from core.broker import BROKER_RECONNECT_MAX_SECONDS

    seen: dict[str, Any] = {}

    def record(self: Any, *args: Any, **kwargs: Any) -> None:
        seen.update(kwargs, args=args)

    monkeypatch.setattr(Connection, "_ensure_connection", record)
    connection = Connection("redis://127.0.0.1:1/0")
    connection.ensure_connection(None, None)  # as Celery's consumer calls it
    assert seen["interval_max"] == BROKER_RECONNECT_MAX_SECONDS == 5.0
    connection.ensure_connection(None, None, interval_max=1)
    assert seen["interval_max"] == 1


def test_events_are_dropped_not_raised_while_redis_is_away(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run in progress must not fail because its live events cannot be
    published; PostgreSQL has its state."""
    from assistants.runs import events
    from core.stack.proc import free_port

    monkeypatch.setattr(events, "_publish_down_until", 0.0)
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens
    assert events.publish("run_x", "thread.run.in_progress", {"id": "run_x"}) == ""
    events.publish_many("run_x", [("thread.message.delta", {"id": "msg_x"})])
    assert events.cancel_requested("run_x") is False
    with pytest.raises(redis.exceptions.ConnectionError):
        events.request_cancel("run_x")  # the API answers this one 503


@pytest.mark.django_db
def test_the_database_has_fsync_and_synchronous_commit_on() -> None:
    """A 2xx means the commit is on disk: no setting trades that away."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW fsync")
        assert cursor.fetchone()[0] == "on"
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


# --- the drill on a private stack --------------------------------------------


def _client(cluster: Cluster) -> httpx.Client:
    return httpx.Client(
        base_url=cluster.base_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=30,
    )


def _until_2xx(http: httpx.Client, method: str, path: str, body: Any = None) -> float:
    """Seconds until ``path`` answers 2xx; every other answer must be a
    proper 503 meanwhile."""
    start = time.monotonic()
    while time.monotonic() - start < RECOVERY_LIMIT:
        response = http.request(method, path, json=body)
        kind, detail = classify(response)
        if kind == "ok":
            return time.monotonic() - start
        assert kind == "unavailable", (response.status_code, detail)
        time.sleep(0.2)
    raise AssertionError(f"{path} did not recover within {RECOVERY_LIMIT} s")


def _ended_run(
    http: httpx.Client, thread_id: str, run_id: str, timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = http.get(f"/threads/{thread_id}/runs/{run_id}")
        if response.status_code == 200:
            run = response.json()
            if run["status"] in TERMINAL:
                break
        time.sleep(0.3)
    return run


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    # Under the session's DATA_DIR when there is one: pytest's own temporary
    # directories are pruned by concurrent sessions, logs included.
    root = Path(os.environ["DATA_DIR"]) if os.environ.get("DATA_DIR") else tmp_path
    data_dir = root / "restart-drill"
    shutil.rmtree(data_dir, ignore_errors=True)
    stack = Cluster(data_dir, workers=1)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.mark.live
def test_restarts_and_killed_workers_lose_nothing(cluster: Cluster) -> None:
    with _client(cluster) as http:
        assistant = http.post(
            "/assistants", json={"model": "fake-model", "name": "drill"}
        ).json()

        # PostgreSQL down: every answer is a 503 with the error body and
        # Retry-After (after the pool's wait), never a 500 or a traceback.
        cluster.postgres.stop()
        response = http.post("/threads", json={})
        assert classify(response) == ("unavailable", ""), response.text
        assert "Traceback" not in response.text
        cluster.postgres.start()
        assert _until_2xx(http, "GET", "/assistants") < RECOVERY_LIMIT

        # Redis down: a run is still created (PostgreSQL holds it) although
        # its wake-up cannot be sent; the reaper sends it once Redis is back.
        thread = http.post("/threads", json=HELLO).json()
        cluster.redis.stop()
        created = http.post(
            f"/threads/{thread['id']}/runs", json={"assistant_id": assistant["id"]}
        )
        assert created.status_code == 200, created.text
        assert created.json()["status"] == "queued"
        cluster.redis.start()
        run = _ended_run(http, thread["id"], created.json()["id"], 30)
        assert run.get("status") == "completed", run

        # A stream that loses Redis mid-run still ends, from PostgreSQL.
        cluster.script_engine(
            {"content": "one two three four five six", "delay_per_chunk": 0.5}
        )
        thread = http.post("/threads", json=HELLO).json()
        lines: list[str] = []
        with http.stream(
            "POST",
            f"/threads/{thread['id']}/runs",
            json={"assistant_id": assistant["id"], "stream": True},
        ) as response:
            assert response.status_code == 200
            reader = response.iter_lines()
            for line in reader:
                lines.append(line)
                if line == "event: thread.message.delta" or len(lines) > 40:
                    break
            cluster.redis.restart(down_seconds=1)
            lines += list(reader)
        frames = [line for line in lines if line]
        assert frames[-2:] == ["event: done", "data: [DONE]"], frames
        assert frames[-4] == "event: thread.run.completed", frames

    # The drill: steady load, a PostgreSQL restart (immediate: crash-like,
    # WAL replay), a Redis restart, a worker SIGKILLed and replaced.
    report = drill(
        cluster,
        ["postgres", "redis", "worker"],
        clients=3,
        down_seconds=3,
        steady_seconds=5,
        immediate_every=1,
    )
    print(report, file=sys.stderr)
    assert report.acknowledged > 50 and report.runs_acknowledged > 5, report
    assert report.lost == 0, report.lost_samples
    assert report.other_errors == 0, report.error_samples
    assert report.runs_left_active == 0
    assert set(report.run_statuses) == {"completed"}, report.run_statuses
    for event in report.events:
        assert event["recovery"] is not None, event
        assert event["recovery"] < RECOVERY_LIMIT, event
        assert event["run_recovery"] is not None, event
        assert event["run_recovery"] < RECOVERY_LIMIT, event
    assert report.fsync == "on"
    assert report.synchronous_commit == "on"
