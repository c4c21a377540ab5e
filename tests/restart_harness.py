"""Restart drills: a private stack, a loopback load, and a client-side audit.

Used by ``tests/test_restarts.py`` (a short drill) and
``bench/restart_bench.py`` (the long one). The stack is the real thing, on
its own data directory and ports, so restarting its PostgreSQL and Redis
disturbs nobody else: embedded PostgreSQL and Redis (``core.stack``), the
scripted engine (``tests/fake_engine.py``), uvicorn and Celery workers, all
as subprocesses started the way ``make run`` starts them.

The load (``Load``) is a few client threads, each repeating: create an
assistant, a thread, two messages, a run (every third one streamed). Every
answer is classified: 2xx (the ids and contents it acknowledged go into the
client-side ``History``), 503 with the OpenAI error body and ``Retry-After``
(an outage answered properly), or anything else (a failure: a 500, another
status, a malformed 503, a dropped connection, a timeout). ``audit`` then
reads every acknowledged object back through the API and compares.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from core.stack.commands import web_command, worker_command
from core.stack.postgres import EmbeddedPostgres
from core.stack.proc import die_with_parent, free_port, stop_process
from core.stack.redis import EmbeddedRedis

BASE_DIR = Path(__file__).resolve().parent.parent
API_KEY = "sk-restart-drill"
MODEL = "fake-model"
TERMINAL = {"completed", "failed", "cancelled", "incomplete", "expired"}
# Fast run clocks, so the reaper's moves fit a short drill.
RUN_CLOCKS = {
    "RUN_HEARTBEAT_SECONDS": "1",
    "RUN_HEARTBEAT_TIMEOUT_SECONDS": "5",
    "REAPER_INTERVAL_SECONDS": "1",
    "RUN_REQUEUE_AFTER_SECONDS": "5",
    # Several restarts may hit one run; it must still end.
    "RUN_MAX_ATTEMPTS": "5",
}
CLIENT_TIMEOUT = 30.0


def _log(message: str) -> None:
    print(f"[drill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Cluster:
    """One private platform: PostgreSQL, Redis, engine, web, workers."""

    def __init__(
        self, data_dir: Path, *, workers: int = 1, worker_concurrency: int = 2
    ) -> None:
        self.data_dir = data_dir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.postgres = EmbeddedPostgres(data_dir)
        self.redis = EmbeddedRedis(data_dir)
        self.worker_count = workers
        self.worker_concurrency = worker_concurrency
        self.engine: subprocess.Popen[str] | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.port = 0
        self.engine_port = 0
        self.env: dict[str, str] = {}
        self._worker_serial = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- lifecycle ----------------------------------------------------------

    def start(self) -> None:
        self.postgres.start()
        self.redis.start()
        self.engine = subprocess.Popen(
            [sys.executable, "-m", "tests.fake_engine"],
            cwd=BASE_DIR,
            env={**os.environ, "PYTHONPATH": str(BASE_DIR)},
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=die_with_parent(),
        )
        assert self.engine.stdout is not None
        line = self.engine.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake engine exited with {self.engine.wait()}")
        engine_port = json.loads(line)["port"]
        self.engine_port = engine_port
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AGENTS_ENGINE", "MODEL_", "DB_POOL"))
            and k not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"}
        }
        self.env = {
            **inherited,
            **RUN_CLOCKS,
            "DJANGO_SETTINGS_MODULE": "config.settings.local",
            "DATA_DIR": str(self.data_dir),
            "FILES_DIR": str(self.data_dir / "files"),
            "DATABASE_URL": self.postgres.url(),
            "REDIS_URL": self.redis.url,
            "BOOTSTRAP_API_KEY": API_KEY,
            "DEFAULT_MODEL": MODEL,
            "MODEL_BASE_URL": f"http://127.0.0.1:{engine_port}/v1",
            "LOG_LEVEL": "WARNING",
            "SANDBOX_POOL_SIZE": "0",
            # Each restart would load the embedding model again; no run of
            # the drill needs it.
            "EMBEDDINGS_PRELOAD": "0",
            # The drill measures restarts, not the rate limiter.
            "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000",
            "RATE_LIMIT_RUNS_PER_MINUTE": "1000000",
            "PYTHONPATH": str(BASE_DIR),
        }
        subprocess.run(
            [sys.executable, "manage.py", "bootstrap"],
            cwd=BASE_DIR,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.port = free_port()
        self.web = subprocess.Popen(
            web_command(self.port),
            cwd=BASE_DIR,
            env=self.env,
            stdout=open(self.data_dir / "web.log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),
        )
        for _ in range(self.worker_count):
            self.start_worker()
        self._wait_web()

    def _wait_web(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.web is not None and self.web.poll() is None, "web exited"
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{self.base_url}/models", timeout=2)
                return
            time.sleep(0.2)
        raise TimeoutError("the web process did not answer within 60 s")

    def start_worker(self) -> subprocess.Popen[bytes]:
        self._worker_serial += 1
        log_path = self.data_dir / f"worker-{self._worker_serial}.log"
        proc = subprocess.Popen(
            worker_command(
                concurrency=self.worker_concurrency,
                hostname=f"drill-{os.getpid()}-{self._worker_serial}@%h",
            ),
            cwd=BASE_DIR,
            env=self.env,
            stdout=open(log_path, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            # Its own process group: a SIGKILL drill takes the pool children
            # too, as an OOM kill or a lost node would.
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        self.workers.append(proc)
        deadline = time.monotonic() + 90
        while b" ready." not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {log_path}")
            time.sleep(0.2)
        return proc

    def kill_worker(self) -> None:
        """SIGKILL the oldest live worker and its pool, start a new one."""
        victim = next(p for p in self.workers if p.poll() is None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        self.workers.remove(victim)
        self.start_worker()

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        stop_process(self.web, "drill web", timeout=15)
        if self.engine is not None:
            stop_process(self.engine, "drill engine", timeout=10)  # type: ignore[arg-type]
        self.redis.stop()
        self.postgres.stop()

    def script_engine(self, *replies: dict[str, Any]) -> None:
        """Queue scripted replies (see tests/fake_engine.py)."""
        httpx.post(
            f"http://127.0.0.1:{self.engine_port}/__script",
            json=list(replies),
            timeout=10,
        ).raise_for_status()

    # --- direct reads (the audit's ground truth for "nothing left active") --

    def sql(self, query: str) -> str:
        return self.postgres.psql(query, database="agents")


# --- the load ----------------------------------------------------------------


@dataclass
class Answer:
    what: str
    started: float
    ended: float
    status: int  # 0: no HTTP answer (connection error, timeout)
    kind: str  # "ok", "unavailable" (a proper 503), "error"
    detail: str = ""


@dataclass
class History:
    """What the client was told, and nothing else."""

    assistants: dict[str, str] = field(default_factory=dict)  # id -> name
    threads: dict[str, str] = field(default_factory=dict)  # id -> metadata tag
    messages: dict[str, tuple[str, str]] = field(default_factory=dict)
    runs: dict[str, tuple[str, float]] = field(default_factory=dict)
    streams_done: int = 0
    streams_cut: int = 0
    answers: list[Answer] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def classify(response: httpx.Response) -> tuple[str, str]:
    if 200 <= response.status_code < 300:
        return "ok", ""
    body: Any = None
    with contextlib.suppress(ValueError):
        body = response.json()
    error = body.get("error") if isinstance(body, dict) else None
    proper = (
        isinstance(error, dict)
        and isinstance(error.get("message"), str)
        and "type" in error
        and "Traceback" not in response.text
    )
    if response.status_code == 503 and proper and response.headers.get("retry-after"):
        return "unavailable", ""
    return "error", response.text[:300]


class Load:
    """``clients`` threads of create-assistant/thread/messages/run loops."""

    def __init__(self, base_url: str, *, clients: int = 4) -> None:
        self.base_url = base_url
        self.clients = clients
        self.history = History()
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.sent = 0

    def start(self) -> None:
        for n in range(self.clients):
            thread = threading.Thread(target=self._loop, args=(n,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT + 10)

    def _record(self, answer: Answer) -> None:
        with self.history.lock:
            self.history.answers.append(answer)
            self.sent += 1

    def _call(
        self, http: httpx.Client, what: str, method: str, path: str, body: Any = None
    ) -> Any | None:
        started = time.time()
        try:
            response = http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            self._record(Answer(what, started, time.time(), 0, "error", repr(exc)))
            return None
        kind, detail = classify(response)
        self._record(
            Answer(what, started, time.time(), response.status_code, kind, detail)
        )
        return response.json() if kind == "ok" else None

    def _stream_run(
        self, http: httpx.Client, thread_id: str, assistant_id: str
    ) -> str | None:
        """A streamed run: acknowledged once the 200 and its run id arrived."""
        started = time.time()
        run_id: str | None = None
        done = False
        try:
            with http.stream(
                "POST",
                f"/threads/{thread_id}/runs",
                json={"assistant_id": assistant_id, "stream": True},
            ) as response:
                if response.status_code != 200:
                    response.read()
                    kind, detail = classify(response)
                    self._record(
                        Answer(
                            "run:stream",
                            started,
                            time.time(),
                            response.status_code,
                            kind,
                            detail,
                        )
                    )
                    return None
                for line in response.iter_lines():
                    if line.startswith("data: {") and run_id is None:
                        data = json.loads(line[6:])
                        if data.get("object") == "thread.run":
                            run_id = data["id"]
                            self._record(
                                Answer("run:stream", started, time.time(), 200, "ok")
                            )
                    if line == "data: [DONE]":
                        done = True
                        break
        except httpx.HTTPError as exc:
            if run_id is None:
                self._record(
                    Answer("run:stream", started, time.time(), 0, "error", repr(exc))
                )
        with self.history.lock:
            if done:
                self.history.streams_done += 1
            elif run_id is not None:
                self.history.streams_cut += 1
        return run_id

    def _loop(self, n: int) -> None:
        http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=CLIENT_TIMEOUT,
        )
        i = 0
        with http:
            while not self.stopping.is_set():
                i += 1
                if not self._iteration(http, f"{n}-{i}-{uuid.uuid4().hex[:8]}", i):
                    time.sleep(0.25)  # as a client honouring Retry-After would

    def _iteration(self, http: httpx.Client, tag: str, i: int) -> bool:
        h = self.history
        assistant = self._call(
            http,
            "assistant",
            "POST",
            "/assistants",
            {"model": MODEL, "name": f"a-{tag}", "instructions": "Be brief."},
        )
        if assistant is None:
            return False
        with h.lock:
            h.assistants[assistant["id"]] = f"a-{tag}"
        thread = self._call(
            http, "thread", "POST", "/threads", {"metadata": {"tag": tag}}
        )
        if thread is None:
            return False
        with h.lock:
            h.threads[thread["id"]] = tag
        for k in range(2):
            content = f"m-{tag}-{k}"
            message = self._call(
                http,
                "message",
                "POST",
                f"/threads/{thread['id']}/messages",
                {"role": "user", "content": content},
            )
            if message is None:
                return False
            with h.lock:
                h.messages[message["id"]] = (thread["id"], content)
        if self.stopping.is_set():
            return True
        if i % 3 == 0:
            run_id = self._stream_run(http, thread["id"], assistant["id"])
        else:
            run = self._call(
                http,
                "run",
                "POST",
                f"/threads/{thread['id']}/runs",
                {"assistant_id": assistant["id"]},
            )
            run_id = run["id"] if run else None
        if run_id is None:
            return False
        with h.lock:
            h.runs[run_id] = (thread["id"], time.time())
        # A read, so that outages are also seen by GETs.
        self._call(http, "list", "GET", f"/threads/{thread['id']}/messages?limit=5")
        return True


# --- the audit ---------------------------------------------------------------

ACTIVE_SQL = (
    "SELECT count(*) FROM assistants_run WHERE status IN "
    "('queued', 'in_progress', 'cancelling', 'requires_action')"
)


def wait_runs_settled(cluster: Cluster, timeout: float) -> int:
    """Wait for every run in the database (acknowledged or not) to end;
    returns how many are still active after ``timeout``."""
    deadline = time.monotonic() + timeout
    active = int(cluster.sql(ACTIVE_SQL))
    while active and time.monotonic() < deadline:
        time.sleep(1)
        active = int(cluster.sql(ACTIVE_SQL))
    return active


@dataclass
class Audit:
    checked: int = 0
    lost: list[str] = field(default_factory=list)
    run_statuses: Counter[str] = field(default_factory=Counter)


def audit(base_url: str, history: History) -> Audit:
    """Read back everything the client was told exists, through the API."""
    result = Audit()
    http = httpx.Client(
        base_url=base_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=CLIENT_TIMEOUT,
    )

    def get(path: str) -> Any | None:
        for _ in range(5):
            response = http.get(path)
            if response.status_code == 200:
                return response.json()
            if response.status_code != 503:
                return None
            time.sleep(1)
        return None

    with http:
        for assistant_id, name in history.assistants.items():
            result.checked += 1
            body = get(f"/assistants/{assistant_id}")
            if body is None or body.get("name") != name:
                result.lost.append(f"assistant {assistant_id}")
        posted: dict[str, list[tuple[str, str]]] = {}
        for message_id, (thread_id, content) in history.messages.items():
            posted.setdefault(thread_id, []).append((message_id, content))
        for thread_id, tag in history.threads.items():
            result.checked += 1
            body = get(f"/threads/{thread_id}")
            if body is None or body.get("metadata", {}).get("tag") != tag:
                result.lost.append(f"thread {thread_id}")
                continue
            listed = get(f"/threads/{thread_id}/messages?limit=100&order=asc")
            seen: dict[str, str] = {}
            for message in (listed or {}).get("data", []):
                text = "".join(
                    part["text"]["value"]
                    for part in message.get("content", [])
                    if part.get("type") == "text"
                )
                seen[message["id"]] = text
            for message_id, content in posted.get(thread_id, []):
                result.checked += 1
                if seen.get(message_id) != content:
                    result.lost.append(f"message {message_id}")
        for run_id, (thread_id, _when) in history.runs.items():
            result.checked += 1
            body = get(f"/threads/{thread_id}/runs/{run_id}")
            if body is None:
                result.lost.append(f"run {run_id}")
                continue
            result.run_statuses[body["status"]] += 1
    return result


# --- the drill ----------------------------------------------------------------


@dataclass
class Event:
    kind: str  # "postgres", "redis", "worker"
    down_at: float
    back_at: float
    recovery: float | None = None  # first 2xx sent after back_at, seconds
    run_recovery: float | None = None  # first run completed after back_at


@dataclass
class Report:
    sent: int
    acknowledged: int
    unavailable_503: int
    other_errors: int
    error_samples: list[str]
    lost: int
    lost_samples: list[str]
    audited: int
    runs_acknowledged: int
    run_statuses: dict[str, int]
    runs_left_active: int
    runs_requeued: int
    streams_done: int
    streams_cut: int
    fsync: str
    synchronous_commit: str
    events: list[dict[str, Any]]
    recovery_seconds: dict[str, dict[str, float]]
    # 2xx latency before the first event (the baseline) and around outages.
    latency_steady: dict[str, float]
    latency_outage: dict[str, float]


def _latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0.0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {
        "count": float(len(ordered)),
        "median": statistics.median(ordered),
        "p95": p95,
    }


def _recoveries(events: list[Event], history: History, cluster: Cluster) -> None:
    completions = [
        float(x)
        for x in cluster.sql(
            "SELECT extract(epoch FROM completed_at) FROM assistants_run "
            "WHERE completed_at IS NOT NULL"
        ).split()
    ]
    for event in events:
        oks = [
            a.ended
            for a in history.answers
            if a.kind == "ok" and a.started >= event.back_at
        ]
        event.recovery = (min(oks) - event.back_at) if oks else None
        later = [t for t in completions if t >= event.back_at]
        event.run_recovery = (min(later) - event.back_at) if later else None


def _in_outage(answer: Answer, events: list[Event], grace: float) -> bool:
    return any(e.down_at - 1 <= answer.started <= e.back_at + grace for e in events)


def drill(
    cluster: Cluster,
    plan: list[str],
    *,
    clients: int = 4,
    down_seconds: float = 3.0,
    steady_seconds: float = 8.0,
    settle_timeout: float = 120.0,
    immediate_every: int = 2,
    long_down_seconds: float | None = None,
) -> Report:
    """Run ``plan`` (a list of "postgres" / "redis" / "worker") under load,
    ``steady_seconds`` of plain load before, between and after the events;
    then settle, audit and report. With ``long_down_seconds`` every second
    restart of each dependency stays down that long instead (longer than the
    web process's connection-pool wait, so requests are answered 503)."""
    load = Load(cluster.base_url, clients=clients)
    events: list[Event] = []
    load.start()
    try:
        time.sleep(steady_seconds)
        counts: Counter[str] = Counter()
        for kind in plan:
            counts[kind] += 1
            down = down_seconds
            if long_down_seconds is not None and counts[kind] % 2 == 0:
                down = long_down_seconds
            _log(f"{kind}: going down")
            down_at = time.time()
            if kind == "postgres":
                # Alternate fast and immediate (crash-like, WAL replay) stops.
                immediate = immediate_every > 0 and counts[kind] % immediate_every == 0
                cluster.postgres.restart(down_seconds=down, immediate=immediate)
                kind = "postgres-immediate" if immediate else "postgres"
            elif kind == "redis":
                cluster.redis.restart(down_seconds=down)
            elif kind == "worker":
                cluster.kill_worker()
            else:
                raise ValueError(kind)
            back_at = time.time()
            events.append(Event(kind, down_at, back_at))
            _log(f"{kind}: back after {back_at - down_at:.1f} s")
            time.sleep(steady_seconds)
    finally:
        load.stop()
    left = wait_runs_settled(cluster, settle_timeout)
    history = load.history
    checked = audit(cluster.base_url, history)
    _recoveries(events, history, cluster)
    answers = history.answers
    grace = 30.0
    errors = [a for a in answers if a.kind == "error"]
    # A 503 long after every outage would be a bug too.
    stray = [
        a
        for a in answers
        if a.kind == "unavailable" and not _in_outage(a, events, grace)
    ]
    by_kind: dict[str, list[float]] = {}
    for event in events:
        if event.recovery is not None:
            by_kind.setdefault(event.kind, []).append(event.recovery)
    recovery = {
        kind: {
            "median": statistics.median(values),
            "max": max(values),
            "count": float(len(values)),
        }
        for kind, values in by_kind.items()
    }
    all_recoveries = [e.recovery for e in events if e.recovery is not None]
    if all_recoveries:
        recovery["all"] = {
            "median": statistics.median(all_recoveries),
            "max": max(all_recoveries),
            "count": float(len(all_recoveries)),
        }
    return Report(
        sent=len(answers),
        acknowledged=sum(a.kind == "ok" for a in answers),
        unavailable_503=sum(a.kind == "unavailable" for a in answers),
        other_errors=len(errors) + len(stray),
        error_samples=[
            f"{a.what} {a.status} {a.detail[:160]}" for a in (errors + stray)[:10]
        ],
        lost=len(checked.lost),
        lost_samples=checked.lost[:10],
        audited=checked.checked,
        runs_acknowledged=len(history.runs),
        run_statuses=dict(checked.run_statuses),
        runs_left_active=left,
        runs_requeued=int(
            cluster.sql("SELECT count(*) FROM assistants_run WHERE attempts > 1")
        ),
        streams_done=history.streams_done,
        streams_cut=history.streams_cut,
        fsync=cluster.sql("SHOW fsync"),
        synchronous_commit=cluster.sql("SHOW synchronous_commit"),
        events=[vars(e) for e in events],
        recovery_seconds=recovery,
        latency_steady=_latency(
            [
                a.ended - a.started
                for a in answers
                if a.kind == "ok" and (not events or a.ended < events[0].down_at)
            ]
        ),
        latency_outage=_latency(
            [
                a.ended - a.started
                for a in answers
                if a.kind == "ok" and _in_outage(a, events, grace)
            ]
        ),
    )
