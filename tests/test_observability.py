"""/healthz, /readyz, /metrics and the request id in logs (issue #8, part B).

The run tests start their own web process and worker (``tests/cluster.py``)
with JSON logs at INFO, so that the logs can be read back; they share the
suite's ``PROMETHEUS_MULTIPROC_DIR`` (under ``DATA_DIR``), so a scrape of the
web process sums the worker's series too.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.stack.proc import free_port
from tests.cluster import Cluster, Proc, other_workers_paused
from tests.conftest import Tenant, _database_url, live_env, make_tenant
from tests.fake_engine import MODEL_ID, FakeEngine

pytest_plugins = ["tests.fake_engine"]

RUNS_ROUTE = "v1/threads/<str:thread_id>/runs"


# --- helpers ------------------------------------------------------------------


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, **headers: str) -> Samples:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when it does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for (n, labels) in samples if n == name]


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


# --- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Cluster]:
    """One web process and one worker, JSON logs at INFO."""
    with django_db_blocker.unblock():
        env = live_env(_database_url())
    env.update(LOG_LEVEL="INFO", LOG_FORMAT="json")
    data_dir = Path(env.get("DATA_DIR") or ".data")
    group = Cluster(env=env, log_dir=data_dir / "observability-logs")
    with other_workers_paused():
        try:
            group.web("obs-web")
            group.worker(
                "obs-worker",
                extra_env={
                    "METRICS_PORT": str(free_port()),
                    "METRICS_ADDR": "127.0.0.1",
                },
            )
            yield group
        finally:
            group.stop()


@pytest.fixture
def web(cluster: Cluster) -> Proc:
    return cluster.procs[0]


@pytest.fixture
def worker(cluster: Cluster) -> Proc:
    return cluster.procs[1]


@pytest.fixture
def obs_tenant(registered_engine: FakeEngine, django_db_blocker: Any) -> Tenant:
    with django_db_blocker.unblock():
        return make_tenant()


def _run(
    web: Proc, tenant: Tenant, *, request_id: str | None = None
) -> tuple[dict[str, Any], httpx.Response]:
    """A thread and a streamed run on it, read to the end."""
    headers = tenant.headers
    with httpx.Client(base_url=f"{web.url}/v1", headers=headers, timeout=30) as http:
        assistant = http.post("/assistants", json={"model": MODEL_ID}).json()
        thread = http.post(
            "/threads", json={"messages": [{"role": "user", "content": "hi there"}]}
        ).json()
        extra = {"X-Request-Id": request_id} if request_id else {}
        with http.stream(
            "POST",
            f"/threads/{thread['id']}/runs",
            json={"assistant_id": assistant["id"], "stream": True},
            headers=extra,
        ) as response:
            assert response.status_code == 200
            events = [
                line for line in response.iter_lines() if line.startswith("event:")
            ]
        assert "event: thread.run.completed" in events, events
        runs = http.get(f"/threads/{thread['id']}/runs").json()["data"]
    return runs[0], response


# --- health -------------------------------------------------------------------


def test_healthz_answers_without_consulting_any_dependency(client: Any) -> None:
    # No database access is allowed here (no db fixture): it must not need one.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_reports_each_dependency_with_its_latency(
    web: Proc, registered_engine: FakeEngine
) -> None:
    response = httpx.get(f"{web.url}/readyz", timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "redis", "engine"}
    for check in body["checks"].values():
        assert check["ok"] is True
        assert check["latency_ms"] >= 0
    replicas = body["checks"]["engine"]["replicas"]
    assert replicas[registered_engine.url]["ok"] is True


@pytest.mark.django_db
def test_readyz_is_503_when_redis_is_unreachable(client: Any, settings: Any) -> None:
    settings.REDIS_URL = settings.CELERY_BROKER_URL = (
        f"redis://127.0.0.1:{free_port()}/0"
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True


@pytest.mark.django_db
def test_metrics_can_require_a_bearer_token(client: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    right = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert right.status_code == 200
    assert b"agents_runs" in right.content


@pytest.mark.django_db
def test_metrics_can_be_limited_to_networks(client: Any, settings: Any) -> None:
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    assert client.get("/metrics").status_code == 403  # the test client: 127.0.0.1
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "127.0.0.1"]
    assert client.get("/metrics").status_code == 200


# --- metrics after a run --------------------------------------------------------


def test_a_run_moves_its_metrics(
    web: Proc, worker: Proc, obs_tenant: Tenant, registered_engine: FakeEngine
) -> None:
    before = scrape(web.url)
    registered_engine.script(
        {
            "content": "cached answer",
            "usage": {"prompt_tokens": 40, "completion_tokens": 7},
            "cached_tokens": 30,
        }
    )
    run, _ = _run(web, obs_tenant)
    assert run["status"] == "completed"
    # The worker's metrics land in its files when the run ends; the scrape
    # reads them, so no wait is needed beyond the run's end.
    after = scrape(web.url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        delta(
            "agents_http_request_duration_seconds_count",
            method="POST",
            route=RUNS_ROUTE,
            status="200",
        )
        == 1
    )
    assert delta("agents_run_transitions_total", status="in_progress") >= 1
    assert delta("agents_run_transitions_total", status="completed") >= 1
    assert delta("agents_run_duration_seconds_count", status="completed") >= 1
    assert delta("agents_engine_prompt_tokens_total", model=MODEL_ID) >= 40
    assert delta("agents_engine_completion_tokens_total", model=MODEL_ID) >= 7
    assert delta("agents_engine_cached_prompt_tokens_total", model=MODEL_ID) >= 30
    ratio = value(after, "agents_prompt_cache_hit_ratio", model=MODEL_ID)
    assert 0 < ratio <= 1
    # Scrape-time series: present, read from PostgreSQL and Redis.
    assert {s["status"] for s in series(after, "agents_runs")} >= {
        "queued",
        "in_progress",
        "requires_action",
        "cancelling",
    }
    assert {s["queue"] for s in series(after, "agents_queue_depth")} == {
        "celery",
        "runs",
        "ingestion",
    }
    assert ("agents_ingestion_backlog", frozenset()) in after
    assert value(after, "agents_scrape_error", source="database") == 0
    assert value(after, "agents_scrape_error", source="redis") == 0


@pytest.mark.django_db
def test_queue_depth_counts_the_messages_waiting_in_each_queue(
    client: Any, settings: Any
) -> None:
    """Read from the broker at scrape time (a Redis database no worker of the
    suite consumes, so the messages stay put)."""
    import redis as redis_lib

    base = settings.CELERY_BROKER_URL.rsplit("/", 1)[0]
    settings.CELERY_BROKER_URL = f"{base}/14"
    broker = redis_lib.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("runs", "runs\x06\x163", "ingestion")
    try:
        broker.lpush("runs", b"a", b"b")
        broker.lpush("runs\x06\x163", b"c")  # kombu's list for priority 3
        broker.lpush("ingestion", b"d")
        samples = parse(client.get("/metrics").content.decode())
    finally:
        broker.delete("runs", "runs\x06\x163", "ingestion")
    assert value(samples, "agents_queue_depth", queue="runs") == 3
    assert value(samples, "agents_queue_depth", queue="ingestion") == 1
    assert value(samples, "agents_queue_depth", queue="celery") == 0


@pytest.mark.django_db
def test_sandbox_sessions_are_counted(client: Any) -> None:
    """A session a worker process holds shows as active in the scrape."""
    from tools.code_interpreter.runtime import session_manager

    manager = session_manager()
    key = f"observability-{uuid.uuid4().hex}"
    before = value(
        parse(client.get("/metrics").content.decode()),
        "agents_sandbox_sessions",
        state="active",
    )
    manager.session_for(key)
    try:
        during = value(
            parse(client.get("/metrics").content.decode()),
            "agents_sandbox_sessions",
            state="active",
        )
    finally:
        manager.close(key)
    after = value(
        parse(client.get("/metrics").content.decode()),
        "agents_sandbox_sessions",
        state="active",
    )
    assert during == before + 1
    assert after == during - 1


def test_a_worker_serves_its_own_metrics_when_given_a_port(
    worker: Proc, web: Proc, obs_tenant: Tenant, registered_engine: FakeEngine
) -> None:
    """For a worker with no web process beside it (its own pod)."""
    url = f"http://127.0.0.1:{worker.extra_env['METRICS_PORT']}"
    before = scrape(url)
    run, _ = _run(web, obs_tenant)
    after = scrape(url)
    assert run["status"] == "completed"
    assert (
        value(after, "agents_run_transitions_total", status="completed")
        - value(before, "agents_run_transitions_total", status="completed")
        >= 1
    )
    # The database and Redis series come from the web processes only.
    assert not series(after, "agents_queue_depth")
    assert httpx.get(f"{url}/other", timeout=5).status_code == 404


# --- logs -----------------------------------------------------------------------


def test_a_runs_request_id_follows_it_from_api_to_worker_to_engine(
    web: Proc, worker: Proc, obs_tenant: Tenant, registered_engine: FakeEngine
) -> None:
    request_id = str(uuid.uuid4())
    run, response = _run(web, obs_tenant, request_id=request_id)
    assert response.headers["x-request-id"] == request_id
    assert run["status"] == "completed"

    # The engine got it on the chat-completions call.
    sent = [r["headers"].get("x-request-id") for r in registered_engine.requests()]
    assert request_id in sent

    # The web's access log line for the POST, as JSON.
    deadline = time.monotonic() + 10
    while True:
        web_lines = [
            e for e in json_lines(web.log()) if e.get("request_id") == request_id
        ]
        worker_lines = [
            e for e in json_lines(worker.log()) if e.get("request_id") == request_id
        ]
        if (web_lines and worker_lines) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert web_lines, "no web log line carries the request id"
    assert any(e["logger"] == "agents.access" and e["status"] == 200 for e in web_lines)
    for entry in web_lines + worker_lines:
        assert {"ts", "level", "logger", "msg", "request_id"} <= set(entry)
    # The worker's lines for the task carry the request id and the run id.
    assert worker_lines, "no worker log line carries the request id"
    assert all(e.get("run_id") == run["id"] for e in worker_lines)


def test_cached_prompt_tokens_are_read_from_llama_cpp_timings_too() -> None:
    """vLLM's usage field wins; llama.cpp's server reports ``timings``."""
    from assistants.engine.client import _usage

    usage = {"prompt_tokens": 100, "completion_tokens": 5}
    vllm = _usage({**usage, "prompt_tokens_details": {"cached_tokens": 64}})
    assert vllm is not None and vllm.cached_tokens == 64
    llama = _usage(usage, {"cache_n": 90, "prompt_n": 10})
    assert llama is not None and llama.cached_tokens == 90
    both = _usage(
        {**usage, "prompt_tokens_details": {"cached_tokens": 64}}, {"cache_n": 90}
    )
    assert both is not None and both.cached_tokens == 64
    neither = _usage(usage)
    assert neither is not None and neither.cached_tokens is None
