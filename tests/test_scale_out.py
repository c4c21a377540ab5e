"""Scale-out (issue #8): two web processes and two Celery workers on loopback.

Every process is started as ``make run`` starts it (``tests/cluster.py``),
on the test database and Redis, with the run clocks of ``LIVE_RUN_SETTINGS``
(heartbeat 0.5 s, a worker presumed dead after 3 s, reaper every 0.5 s) so
that a killed worker's run is recovered within seconds. The model is the
scripted engine (``tests/fake_engine.py``), whose slow replies let a test
act while a run is in flight.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from assistants.engine.client import replica_order
from tests.cluster import Cluster, Proc, other_workers_paused
from tests.conftest import Tenant, _database_url, live_env, make_tenant
from tests.fake_engine import MODEL_ID, FakeEngine

pytestmark = pytest.mark.live
pytest_plugins = ["tests.fake_engine"]

REPLICATED_MODEL = "fake-model-2-replicas"


# --- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Cluster]:
    """Web processes A and B; workers are added by each test."""
    with django_db_blocker.unblock():
        env = live_env(_database_url())
    env.update(LOG_LEVEL="INFO", LOG_FORMAT="json")
    data_dir = Path(env.get("DATA_DIR") or ".data")
    group = Cluster(env=env, log_dir=data_dir / "scale-out-logs")
    with other_workers_paused():
        try:
            group.web("web-a")
            group.web("web-b")
            yield group
        finally:
            group.stop()


@pytest.fixture
def workers(cluster: Cluster) -> Iterator[list[Proc]]:
    """Two runs workers on the threads pool, as deployed, for this test,
    stopped after it. One run at a time each, so that consecutive runs of a
    thread spread over both."""
    started = [
        cluster.worker(f"worker-{uuid.uuid4().hex[:6]}", pool="threads")
        for _ in range(2)
    ]
    yield started
    _stop_workers(cluster)


def _stop_workers(cluster: Cluster) -> None:
    for proc in [p for p in cluster.procs if p.port == 0]:
        proc.kill()  # SIGKILL: only tests' runs are left behind, all ended
        cluster.procs.remove(proc)


@pytest.fixture
def web_a(cluster: Cluster) -> Proc:
    return cluster.procs[0]


@pytest.fixture
def web_b(cluster: Cluster) -> Proc:
    return cluster.procs[1]


@pytest.fixture
def tenant(registered_engine: FakeEngine, django_db_blocker: Any) -> Tenant:
    """A committed project and key (and the scripted engine registered)."""
    with django_db_blocker.unblock():
        return make_tenant()


# --- helpers ------------------------------------------------------------------


def _api(web: Proc, tenant: Tenant) -> httpx.Client:
    return httpx.Client(base_url=f"{web.url}/v1", headers=tenant.headers, timeout=30)


def _assistant(http: httpx.Client, model: str = MODEL_ID) -> str:
    return str(http.post("/assistants", json={"model": model}).json()["id"])


def _thread(http: httpx.Client) -> str:
    body = {"messages": [{"role": "user", "content": "hello"}]}
    return str(http.post("/threads", json=body).json()["id"])


def _create_run(
    http: httpx.Client, thread_id: str, assistant_id: str, request_id: str = ""
) -> dict[str, Any]:
    headers = {"X-Request-Id": request_id} if request_id else {}
    response = http.post(
        f"/threads/{thread_id}/runs",
        json={"assistant_id": assistant_id},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _get_run(http: httpx.Client, thread_id: str, run_id: str) -> dict[str, Any]:
    return dict(http.get(f"/threads/{thread_id}/runs/{run_id}").json())


def _wait(
    http: httpx.Client,
    thread_id: str,
    run_id: str,
    statuses: set[str],
    timeout: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = _get_run(http, thread_id, run_id)
        if run["status"] in statuses:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run['status']}"
        time.sleep(0.1)


def _worker_of(run_id: str, django_db_blocker: Any, timeout: float = 20) -> int:
    """The pid of the worker process executing the run (from its row)."""
    from assistants.models import Run

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with django_db_blocker.unblock():
            worker = Run.objects.get(pk=run_id).worker
        if worker:
            return int(worker.rsplit(":", 1)[1])
        time.sleep(0.05)
    raise AssertionError("no worker claimed the run")


def _owner(cluster: Cluster, pid: int) -> Proc:
    """Which started worker (a process group) holds ``pid``."""
    for proc in cluster.procs:
        if proc.port == 0 and os.getpgid(pid) == proc.popen.pid:
            return proc
    raise AssertionError(f"pid {pid} is not one of the cluster's workers")


def _events(web: Proc, tenant: Tenant, thread_id: str, run_id: str) -> list[Any]:
    """Every event of the run through ``web``'s /events stream, to the end."""
    events: list[tuple[str, str, Any]] = []
    event_id = name = ""
    url = f"{web.url}/v1/threads/{thread_id}/runs/{run_id}/events"
    with httpx.stream("GET", url, headers=tenant.headers, timeout=60) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("id:"):
                event_id = line[3:].strip()
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
                events.append(
                    (event_id, name, data if data == "[DONE]" else orjson.loads(data))
                )
                if name == "done":
                    break
    return events


def _delta_text(events: list[Any]) -> str:
    return "".join(
        part["text"]["value"]
        for _, name, data in events
        if name == "thread.message.delta"
        for part in data["delta"]["content"]
    )


def _stream_id(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


# --- tests --------------------------------------------------------------------


def test_a_run_created_on_one_web_process_streams_completely_from_another(
    web_a: Proc,
    web_b: Proc,
    workers: list[Proc],
    tenant: Tenant,
    registered_engine: FakeEngine,
) -> None:
    words = [f"w{i} " for i in range(30)]
    registered_engine.script({"chunks": words, "delay_per_chunk": 0.05})
    with _api(web_a, tenant) as a, _api(web_b, tenant) as b:
        assistant = _assistant(a)
        thread = _thread(a)
        run = _create_run(a, thread, assistant)
        _wait(b, thread, run["id"], {"in_progress", "completed"})
        # Attached mid-run on B, with no Last-Event-ID: the whole stream.
        events = _events(web_b, tenant, thread, run["id"])
    names = [name for _, name, _ in events]
    assert names[0] == "thread.run.created"
    assert names[-2:] == ["thread.run.completed", "done"]
    assert _delta_text(events) == "".join(words)
    ids = [_stream_id(i) for i, name, _ in events if name != "done"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_worker_killed_mid_run_leaves_no_stuck_run(
    cluster: Cluster,
    web_a: Proc,
    workers: list[Proc],
    tenant: Tenant,
    registered_engine: FakeEngine,
    django_db_blocker: Any,
) -> None:
    registered_engine.script(
        {"chunks": ["slow "] * 100, "delay_per_chunk": 0.1}, {"content": "recovered"}
    )
    with _api(web_a, tenant) as http:
        thread = _thread(http)
        run = _create_run(http, thread, _assistant(http))
        _wait(http, thread, run["id"], {"in_progress"})
        first = _owner(cluster, _worker_of(run["id"], django_db_blocker))
        # Mid-answer: the engine is streaming the slow reply to it.
        deadline = time.monotonic() + 20
        while not registered_engine.requests():
            assert time.monotonic() < deadline, "the engine was never called"
            time.sleep(0.05)
        time.sleep(0.5)
        first.kill()  # SIGKILL to the main process and its pool child at once
        final = _wait(http, thread, run["id"], {"completed", "failed"}, timeout=60)
        assert final["status"] == "completed"
        messages = http.get(f"/threads/{thread}/messages").json()["data"]
    answers = [m for m in messages if m["role"] == "assistant"]
    assert [m["content"][0]["text"]["value"] for m in answers] == ["recovered"]
    survivor = _owner(cluster, _worker_of(run["id"], django_db_blocker))
    assert survivor is not first


def test_a_worker_added_while_runs_are_in_flight_takes_queued_work(
    cluster: Cluster,
    web_a: Proc,
    tenant: Tenant,
    registered_engine: FakeEngine,
    django_db_blocker: Any,
) -> None:
    try:
        only = cluster.worker("worker-first")
        # The first run keeps the only worker (one process) busy for ~6 s;
        # three more queue up behind it.
        registered_engine.script(
            {"chunks": ["busy "] * 60, "delay_per_chunk": 0.1},
            *[{"chunks": ["next "] * 10, "delay_per_chunk": 0.1}] * 3,
        )
        with _api(web_a, tenant) as http:
            assistant = _assistant(http)
            threads = [_thread(http) for _ in range(4)]
            runs = [_create_run(http, t, assistant) for t in threads]
            _wait(http, threads[0], runs[0]["id"], {"in_progress"})
            added = cluster.worker("worker-added")
            finals = [
                _wait(http, t, r["id"], {"completed", "failed"})
                for t, r in zip(threads, runs, strict=True)
            ]
        assert [f["status"] for f in finals] == ["completed"] * 4
        owners = [_owner(cluster, _worker_of(r["id"], django_db_blocker)) for r in runs]
        assert owners[0] is only
        # Queued while only one worker existed, taken by the one added later.
        assert added in owners[1:]
    finally:
        _stop_workers(cluster)


def test_every_run_of_a_thread_goes_to_one_engine_replica_whichever_worker_runs_it(
    cluster: Cluster,
    web_a: Proc,
    web_b: Proc,
    tenant: Tenant,
    registered_engine: FakeEngine,
    django_db_blocker: Any,
) -> None:
    """A thread's runs keep their engine replica across workers: the first
    turn runs on one worker, the later turns on another one started in its
    place (which worker takes a run is otherwise up to the broker)."""
    from core.services.models import language_model_register

    urls = [registered_engine.url, registered_engine.replica_url]
    with django_db_blocker.unblock():
        language_model_register(
            name=REPLICATED_MODEL, base_urls=urls, context_window=8192
        )
    port_of_url = {
        registered_engine.url: registered_engine.port,
        registered_engine.replica_url: registered_engine.replica_port,
    }
    runs_per_thread = 3
    request_ids: dict[str, tuple[str, str]] = {}  # request id → thread, run
    workers_of: dict[str, set[int]] = defaultdict(set)
    try:
        worker = cluster.worker("replica-first", pool="threads")
        with _api(web_a, tenant) as a, _api(web_b, tenant) as b:
            assistant = _assistant(a, REPLICATED_MODEL)
            # At least four threads, and some on each replica.
            threads: list[str] = []
            while len(threads) < 4 or len(
                {replica_order(REPLICATED_MODEL, urls, t)[0] for t in threads}
            ) < len(urls):
                threads.append(_thread(a))
            for turn in range(runs_per_thread):
                if turn == 1:  # the later turns on another worker
                    replaced = worker
                    worker = cluster.worker("replica-second", pool="threads")
                    replaced.kill()
                    cluster.procs.remove(replaced)
                made = []
                for i, thread in enumerate(threads):
                    http = a if (i + turn) % 2 == 0 else b  # either web process
                    request_id = str(uuid.uuid4())
                    run = _create_run(http, thread, assistant, request_id)
                    request_ids[request_id] = (thread, run["id"])
                    made.append((thread, run["id"]))
                for thread, run_id in made:
                    final = _wait(a, thread, run_id, {"completed", "failed"})
                    assert final["status"] == "completed"
                    workers_of[thread].add(_worker_of(run_id, django_db_blocker))
    finally:
        _stop_workers(cluster)
    ports: dict[str, set[int]] = defaultdict(set)
    for request in registered_engine.requests():
        request_id = request["headers"].get("x-request-id")
        if request_id in request_ids:
            thread, _run_id = request_ids[request_id]
            ports[thread].add(request["port"])
    assert set(ports) == set(threads)
    for thread in threads:
        expected = port_of_url[replica_order(REPLICATED_MODEL, urls, thread)[0]]
        assert ports[thread] == {expected}, thread
    # Both replicas served some thread, and every thread was run by both
    # workers: the routing does not depend on the worker.
    assert {p for s in ports.values() for p in s} == set(port_of_url.values())
    assert all(len(w) == 2 for w in workers_of.values()), dict(workers_of)


def test_one_threads_worker_holds_several_runs_at_once(
    cluster: Cluster,
    web_a: Proc,
    tenant: Tenant,
    registered_engine: FakeEngine,
    django_db_blocker: Any,
) -> None:
    """The runs worker as deployed: four runs streaming at the same time in
    one process, each on its own thread and (pooled) connection."""
    try:
        only = cluster.worker("worker-threads", concurrency=4, pool="threads")
        registered_engine.script(
            *[{"chunks": ["slow "] * 20, "delay_per_chunk": 0.1}] * 4
        )
        with _api(web_a, tenant) as http:
            assistant = _assistant(http)
            threads = [_thread(http) for _ in range(4)]
            runs = [_create_run(http, t, assistant) for t in threads]
            # All four in progress together (the answers take ~2 s each).
            deadline = time.monotonic() + 20
            while True:
                statuses = [
                    http.get(f"/threads/{t}/runs/{r['id']}").json()["status"]
                    for t, r in zip(threads, runs, strict=True)
                ]
                if statuses == ["in_progress"] * 4:
                    break
                assert time.monotonic() < deadline, statuses
                time.sleep(0.05)
            finals = [
                _wait(http, t, r["id"], {"completed", "failed"})
                for t, r in zip(threads, runs, strict=True)
            ]
        assert [f["status"] for f in finals] == ["completed"] * 4
        pids = {_worker_of(r["id"], django_db_blocker) for r in runs}
        assert pids == {only.popen.pid}
    finally:
        _stop_workers(cluster)
