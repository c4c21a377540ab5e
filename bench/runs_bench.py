"""Runs: the platform's own overhead on a run, against the engine called directly.

Run with ``make bench-runs`` (the launcher provides PostgreSQL and Redis; the
local llama.cpp engine is not started)::

    DATA_DIR=/tmp/agents-runsbench AGENTS_ENGINE=off \\
        .venv/bin/python -m core.stack exec -- .venv/bin/python bench/runs_bench.py

The benchmark starts its own scripted engine (``tests/fake_engine.py``, which
answers at once), uvicorn (``config.asgi:application``, one worker) and a
Celery worker, registers the engine as ``bench-engine``, creates a fresh
organization, project, key and assistant, and measures (``--phases``):

    floors      first, from this process: what one query, one publish, one
                reconnect cost on this machine now (the unit prices).
    latency     POST /v1/threads/{id}/runs (stream=true) → thread.run.completed,
                and → the first thread.message.delta (time to first token),
                each against the same engine called directly (time to its
                last chunk, and to its first content chunk), interleaved.
    tokens      the same with a scripted answer of --chunks chunks: added
                stream duration per token and inter-arrival gaps.
    throughput  --throughput-runs runs created at once on as many threads,
                through one worker at each --concurrency; completions/s.

It prints a table, where the time goes (event arrivals, database timestamps,
CPU per run of each process), and the issue's targets as met or missed. It
never fails on a missed target. Results also go to
``bench/results/runs-<timestamp>.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script, so sys.path[0] is bench/; the project root makes the apps,
# ``bench.api_bench`` and ``tests.fake_engine`` importable.
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench.api_bench import (  # noqa: E402  (needs the project root on sys.path)
    _CLK_TCK,
    HOST,
    RESULTS_DIR,
    _percentile,
    _postmaster_pid,
    _process_table,
    _raise_interrupt,
    _tree,
    django_env,
    migrate,
    py_spy,
    request,
    tenant_create,
    versions,
)
from core.stack.commands import (  # noqa: E402
    web_command,
    worker_command,
    worker_env,
)
from core.stack.proc import die_with_parent, free_port  # noqa: E402

# What `make run` serves; --settings measures a candidate instead.
SETTINGS_MODULE = "config.settings.local"
ASGI_APP = "config.asgi:application"
MODEL_NAME = "bench-engine"
PROMPT = "Say hello."

# The targets.
OVERHEAD_P50_MS = 15.0
OVERHEAD_P95_MS = 30.0
ADDED_TTFT_P95_MS = 25.0
MIN_RUNS_PER_S = 50.0
MAX_MS_PER_TOKEN = 2.0

TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")
# Platform events whose arrival the breakdown reports, in the order a run
# emits them.
MILESTONES = (
    "thread.run.created",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.completed",
)


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[runs-bench] {message}", flush=True)


def load_text() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


# --------------------------------------------------------------------------
# The processes under test. Each is started in its own session (a Ctrl-C
# reaches only us, and we stop them in order) and is stopped by its pid.


class Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, *, stdout_pipe: bool = False) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=BASE_DIR,
                env=self.env,
                stdout=subprocess.PIPE if stdout_pipe else log_file,
                stderr=log_file,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.proc.returncode}; see {self.log_path}"
            )

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        # Its descendants (Celery's pool processes), noted before it goes:
        # if it must be killed, they are killed too, each by its pid.
        descendants = set(_tree(_process_table(), self.proc.pid)) - {self.proc.pid}
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            log(f"{self.name} did not stop in 20 s; killing it")
            self.proc.kill()
            self.proc.wait()
        for pid in descendants:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Children:
    """Everything this benchmark started, stopped newest first."""

    def __init__(self) -> None:
        self.items: list[Child] = []

    def add(self, child: Child) -> Child:
        self.items.append(child)
        return child

    def remove(self, child: Child) -> None:
        child.stop()
        self.items.remove(child)

    def stop_all(self) -> None:
        for child in reversed(self.items):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                log(f"stopping {child.name} failed: {exc}")
        self.items.clear()


def start_engine(children: Children, data_dir: Path) -> tuple[Child, int]:
    """tests/fake_engine.py in a subprocess; returns it and its port."""
    child = children.add(
        Child(
            "fake engine",
            [sys.executable, "-m", "tests.fake_engine"],
            {**os.environ, "PYTHONPATH": str(BASE_DIR)},
            data_dir / "runs-bench-engine.log",
        )
    )
    child.start(stdout_pipe=True)
    assert child.proc is not None and child.proc.stdout is not None
    line = child.proc.stdout.readline()
    if not line:
        child.check()
        raise BenchError("the fake engine printed no ports")
    return child, int(json.loads(line)["port"])


def start_web(children: Children, data_dir: Path, settings: str) -> tuple[Child, int]:
    """uvicorn as ``make run`` starts it, on a free port."""
    port = free_port()
    child = children.add(
        Child(
            "uvicorn",
            web_command(
                port,
                host=HOST,
                app=ASGI_APP,
                workers=1,
                extra=["--log-level", "warning"],
            ),
            django_env(settings),
            data_dir / "runs-bench-web.log",
        )
    )
    child.start()
    deadline = time.monotonic() + 60
    while True:
        child.check()
        try:
            request(port, "GET", "/v1/models")  # any answer: it serves
            return child, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"uvicorn did not answer in 60 s; see {child.log_path}")
        time.sleep(0.1)


def start_worker(
    children: Children, data_dir: Path, concurrency: int, settings: str, pool: str
) -> Child:
    """A Celery worker as ``make run`` starts its runs worker (the threads
    pool; ``--pool prefork`` for processes), at ``concurrency``.

    Its readiness is not awaited here: with LOG_LEVEL=WARNING it prints no
    "ready" line, and the warm-up runs wait for it anyway.
    """
    child = children.add(
        Child(
            f"celery worker ({pool}, concurrency {concurrency})",
            worker_command(
                concurrency=concurrency,
                hostname=f"runs-bench-{os.getpid()}-{concurrency}@%h",
                loglevel="WARNING",
                queues=["runs", "celery"],
            ),
            {
                **django_env(settings),
                **worker_env(pool=pool, concurrency=concurrency),
                # No run here embeds anything, and a runs worker loads the
                # embedding model in the background at start (~15 s of CPU
                # on these 2 cores): the latency phase would measure the
                # load, not the runs (overhead p50 40 ms instead of ~15).
                # Once loaded a worker runs the same code with it or without.
                "EMBEDDINGS_PRELOAD": "false",
            },
            data_dir / "runs-bench-worker.log",
        )
    )
    child.start()
    return child


# --------------------------------------------------------------------------
# A minimal SSE client: http.client over a keep-alive connection, with the
# arrival time of every event. The same code reads the platform and the
# engine, so its own cost cancels out of the difference.


@dataclass
class Event:
    at_ns: int  # time.monotonic_ns() when the bytes arrived
    name: str  # "message" when the frame names none (the engine's frames)
    data: bytes
    entry_id: str


@dataclass
class Timeline:
    sent_ns: int
    sent_wall: float
    events: list[Event]

    def offsets(self, name: str) -> list[int]:
        return [e.at_ns - self.sent_ns for e in self.events if e.name == name]

    def first(self, name: str) -> int | None:
        found = self.offsets(name)
        return found[0] if found else None

    def last_name(self) -> str:
        names = [e.name for e in self.events if e.name != "done"]
        return names[-1] if names else ""


def _frame(raw: bytes, at_ns: int) -> Event | None:
    name, entry_id, data = "message", "", []
    for line in raw.split(b"\n"):
        if line.startswith(b":"):
            continue  # a keep-alive comment
        key, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if key == b"event":
            name = value.decode()
        elif key == b"data":
            data.append(value)
        elif key == b"id":
            entry_id = value.decode()
    if not data:
        return None
    return Event(at_ns, name, b"\n".join(data), entry_id)


STALE_CONNECTION = (
    BrokenPipeError,
    ConnectionResetError,
    http.client.RemoteDisconnected,
)


def stream(
    conn: http.client.HTTPConnection,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> Timeline:
    """POST ``body`` and read the SSE answer to its end."""
    payload = json.dumps(body).encode()
    all_headers = {**headers, "Content-Type": "application/json"}
    for attempt in (1, 2):
        sent_wall = time.time()
        sent_ns = time.monotonic_ns()
        try:
            conn.request("POST", path, body=payload, headers=all_headers)
            response = conn.getresponse()
            break
        except STALE_CONNECTION:
            # The server closed the kept-alive connection while it idled
            # (uvicorn after 5 s): reconnect once; the timer starts again.
            conn.close()
            if attempt == 2:
                raise
    if response.status != 200:
        raise BenchError(f"POST {path} answered {response.status}: {response.read()!r}")
    events: list[Event] = []
    buffer = b""
    while True:
        # read1 returns what one chunk of the chunked body holds so far: the
        # timestamp is when those bytes arrived, not when the stream ended.
        data = response.read1(65536)
        at_ns = time.monotonic_ns()
        if not data:
            break
        buffer += data
        while (end := buffer.find(b"\n\n")) >= 0:
            raw, buffer = buffer[:end], buffer[end + 2 :]
            event = _frame(raw, at_ns)
            if event is not None:
                events.append(event)
    return Timeline(sent_ns, sent_wall, events)


def engine_content_events(timeline: Timeline) -> list[int]:
    """Offsets of the engine's chunks that carry text (the first chunk only
    says ``role``; the platform does not forward it either)."""
    found = []
    for e in timeline.events:
        if e.data == b"[DONE]":
            continue
        choices = json.loads(e.data).get("choices") or []
        if choices and (choices[0].get("delta") or {}).get("content"):
            found.append(e.at_ns - timeline.sent_ns)
    return found


def engine_done(timeline: Timeline) -> int:
    for e in timeline.events:
        if e.data == b"[DONE]":
            return e.at_ns - timeline.sent_ns
    raise BenchError("the engine's stream had no [DONE]")


# --------------------------------------------------------------------------
# CPU per process: who paid for the runs


PARTIES = ("web", "worker", "postgres", "redis", "engine", "bench")


@dataclass
class Ticks:
    at: float
    busy: int
    steal: int
    parties: dict[str, dict[int, int]]


class CpuMeter:
    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids

    def snapshot(self) -> Ticks:
        with open("/proc/stat") as fh:
            # user nice system idle iowait irq softirq steal
            values = [int(v) for v in fh.readline().split()[1:9]]
        table = _process_table()
        parties: dict[str, dict[int, int]] = {}
        for name, pid in self.pids.items():
            if name == "bench":
                # Not its tree: every other party is its descendant.
                parties[name] = {pid: table[pid][1]} if pid in table else {}
            else:
                parties[name] = _tree(table, pid)
        return Ticks(
            at=time.monotonic(),
            busy=sum(values[:3]) + values[5] + values[6],
            steal=values[7],
            parties=parties,
        )


def cpu_between(a: Ticks, b: Ticks, runs: int) -> dict[str, Any]:
    """Cores each party kept busy, and its CPU milliseconds per run."""
    wall = max(b.at - a.at, 1e-6)
    cores: dict[str, float] = {}
    for name, after in b.parties.items():
        before = a.parties.get(name, {})
        ticks = sum(t - before.get(pid, 0) for pid, t in after.items())
        cores[name] = ticks / _CLK_TCK / wall
    machine = (b.busy - a.busy) / _CLK_TCK / wall
    cores["other"] = max(machine - sum(cores.values()), 0.0)
    return {
        "seconds": round(wall, 2),
        "machine_cores": round(machine, 2),
        "steal_cores": round((b.steal - a.steal) / _CLK_TCK / wall, 2),
        "cores": {k: round(v, 2) for k, v in cores.items()},
        "ms_per_run": {
            k: round(v * wall * 1000 / runs, 2) if runs else None
            for k, v in cores.items()
        },
    }


def print_cpu(label: str, cpu: dict[str, Any]) -> None:
    names = [*PARTIES, "other"]
    print(
        f"  {label}: {cpu['seconds']} s, machine {cpu['machine_cores']} cores, "
        f"steal {cpu['steal_cores']}"
    )
    print("    " + "".join(f"{n:>10}" for n in ["", *names]))
    print(
        "    " + f"{'cores':>10}" + "".join(f"{cpu['cores'][n]:>10.2f}" for n in names)
    )
    print(
        "    "
        + f"{'ms/run':>10}"
        + "".join(f"{cpu['ms_per_run'][n]:>10.2f}" for n in names)
    )


# --------------------------------------------------------------------------
# Statistics


def ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def pct(values: list[int], p: float) -> float:
    """Nearest-rank percentile of nanosecond values, in milliseconds."""
    return ms(_percentile(sorted(values), p))


@dataclass
class Row:
    scenario: str
    n: int
    p50_ms: float
    p95_ms: float
    base_p50_ms: float | None = None
    base_p95_ms: float | None = None

    @property
    def overhead_p50_ms(self) -> float | None:
        if self.base_p50_ms is None:
            return None
        return round(self.p50_ms - self.base_p50_ms, 3)

    @property
    def overhead_p95_ms(self) -> float | None:
        if self.base_p95_ms is None:
            return None
        return round(self.p95_ms - self.base_p95_ms, 3)

    @property
    def ratio(self) -> float | None:
        if not self.base_p50_ms:
            return None
        return round(self.p50_ms / self.base_p50_ms, 1)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "overhead_p50_ms": self.overhead_p50_ms,
            "overhead_p95_ms": self.overhead_p95_ms,
            "ratio_p50": self.ratio,
        }


def row(scenario: str, values: list[int], baseline: list[int] | None = None) -> Row:
    return Row(
        scenario=scenario,
        n=len(values),
        p50_ms=pct(values, 50),
        p95_ms=pct(values, 95),
        base_p50_ms=pct(baseline, 50) if baseline else None,
        base_p95_ms=pct(baseline, 95) if baseline else None,
    )


def _cell(value: float | None, width: int = 9) -> str:
    return f"{value:>{width}.2f}" if value is not None else f"{'-':>{width}}"


def print_table(rows: list[Row]) -> None:
    head = (
        f"{'scenario':<48} {'n':>5} {'p50':>9} {'p95':>9} {'base p50':>9} "
        f"{'base p95':>9} {'ovh p50':>9} {'ovh p95':>9} {'ratio':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ratio = f"{r.ratio:>6.1f}" if r.ratio is not None else f"{'-':>6}"
        print(
            f"{r.scenario:<48} {r.n:>5} {_cell(r.p50_ms)} {_cell(r.p95_ms)} "
            f"{_cell(r.base_p50_ms)} {_cell(r.base_p95_ms)} "
            f"{_cell(r.overhead_p50_ms)} {_cell(r.overhead_p95_ms)} {ratio}"
        )
    print(
        "(milliseconds; base = the engine called directly in the same loop; "
        "ovh = platform − base at that percentile; ratio = p50 / base p50)"
    )


# --------------------------------------------------------------------------
# Talking to the platform and the engine


class Clients:
    """Keep-alive connections to the API and to the engine, as an SDK keeps."""

    def __init__(self, web_port: int, engine_port: int, raw_key: str) -> None:
        self.web_port = web_port
        self.engine_port = engine_port
        self.headers = {
            "Authorization": f"Bearer {raw_key}",
            "OpenAI-Beta": "assistants=v2",
        }
        self.api = http.client.HTTPConnection(HOST, web_port, timeout=60)
        self.engine = http.client.HTTPConnection(HOST, engine_port, timeout=60)
        self.assistant_id = ""

    def close(self) -> None:
        self.api.close()
        self.engine.close()

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            status, answer = request(
                self.web_port,
                "POST",
                path,
                json.dumps(body).encode(),
                self.headers,
                self.api,
            )
        except STALE_CONNECTION:
            self.api.close()  # idled past uvicorn's keep-alive: once more
            status, answer = request(
                self.web_port,
                "POST",
                path,
                json.dumps(body).encode(),
                self.headers,
                self.api,
            )
        if status != 200 or not isinstance(answer, dict):
            raise BenchError(f"POST {path} answered {status}: {answer}")
        return answer

    def assistant_create(self) -> None:
        self.assistant_id = self.post(
            "/v1/assistants",
            {
                "model": MODEL_NAME,
                "name": "runs bench",
                "instructions": "You are a benchmark.",
            },
        )["id"]

    def threads_create(self, count: int) -> list[str]:
        body = {"messages": [{"role": "user", "content": PROMPT}]}
        return [self.post("/v1/threads", body)["id"] for _ in range(count)]

    def run_stream(self, thread_id: str) -> Timeline:
        return stream(
            self.api,
            f"/v1/threads/{thread_id}/runs",
            {"assistant_id": self.assistant_id, "stream": True},
            self.headers,
        )

    def engine_stream(self) -> Timeline:
        """The engine called directly, with the body the platform sends."""
        return stream(
            self.engine,
            "/v1/chat/completions",
            {
                "model": MODEL_NAME,
                "messages": [
                    {"role": "system", "content": "You are a benchmark."},
                    {"role": "user", "content": PROMPT},
                ],
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            {},
        )

    def script(self, reply: dict[str, Any]) -> None:
        status, answer = request(
            self.engine_port,
            "POST",
            "/__script",
            json.dumps([reply]).encode(),
            {},
            self.engine,
        )
        if status != 200:
            raise BenchError(f"scripting the engine answered {status}: {answer}")


def run_outcome(timeline: Timeline) -> str:
    """'completed', or what went wrong (the final event and its error)."""
    final = timeline.last_name()
    if final == "thread.run.completed":
        return "completed"
    detail = ""
    for e in timeline.events:
        if e.name == final:
            with contextlib.suppress(ValueError, AttributeError):
                detail = str(json.loads(e.data).get("last_error") or "")
    return f"{final or 'no events'} {detail}".strip()


# --------------------------------------------------------------------------
# Phases


@dataclass
class Pair:
    """One iteration: the engine alone, then a run through the platform."""

    engine: Timeline
    run: Timeline


def interleaved(
    clients: Clients,
    threads: list[str],
    *,
    warmup: int,
    label: str,
    reply: dict[str, Any] | None = None,
) -> tuple[list[Pair], dict[str, int]]:
    """Engine then platform, ``len(threads)`` times; the first ``warmup``
    pairs are discarded. Alternating makes load that comes and goes hit both
    sides alike."""
    pairs: list[Pair] = []
    failures: dict[str, int] = {}
    total = len(threads)
    step = max(total // 5, 1)
    for i, thread_id in enumerate(threads):
        if reply is not None:
            clients.script(reply)
        engine = clients.engine_stream()
        if reply is not None:
            clients.script(reply)
        run = clients.run_stream(thread_id)
        outcome = run_outcome(run)
        if outcome != "completed":
            failures[outcome] = failures.get(outcome, 0) + 1
            if i == 0:
                raise BenchError(f"the first run did not complete: {outcome}")
        elif i >= warmup:
            pairs.append(Pair(engine, run))
        if (i + 1) % step == 0 or i + 1 == total:
            log(f"  {label}: {i + 1}/{total} ({load_text()})")
    return pairs, failures


def db_times(run_ids: list[str]) -> dict[str, tuple[str, float, float, float]]:
    """run id → (status, created_at, started_at, completed_at) as Unix time."""
    from django.db import connection

    from assistants.models import Run

    rows = Run.objects.filter(id__in=run_ids).values_list(
        "id", "status", "created_at", "started_at", "completed_at"
    )
    found = {
        rid: (
            status,
            created.timestamp(),
            started.timestamp() if started else 0.0,
            completed.timestamp() if completed else 0.0,
        )
        for rid, status, created, started, completed in rows
    }
    connection.close()
    return found


def run_id_of(timeline: Timeline) -> str:
    for e in timeline.events:
        if e.name == "thread.run.created":
            return str(json.loads(e.data)["id"])
    raise BenchError("no thread.run.created event")


def latency_breakdown(pairs: list[Pair]) -> list[dict[str, Any]]:
    """Median arrival of each milestone, and the database's own timestamps,
    in ms after the request was sent: where a run's time goes."""
    times = db_times([run_id_of(p.run) for p in pairs])
    steps: list[dict[str, Any]] = []

    def add(label: str, values: list[int]) -> None:
        if values:
            steps.append(
                {"at": label, "p50_ms": pct(values, 50), "p95_ms": pct(values, 95)}
            )

    add(
        "db: Run() built in the view (created_at)",
        [int((times[run_id_of(p.run)][1] - p.run.sent_wall) * 1e9) for p in pairs],
    )
    for name in MILESTONES[:2]:
        add(f"client: {name}", [p.run.first(name) or 0 for p in pairs])
    add(
        "db: worker claimed it (started_at)",
        [int((times[run_id_of(p.run)][2] - p.run.sent_wall) * 1e9) for p in pairs],
    )
    for name in MILESTONES[2:4]:
        add(f"client: {name} (first)", [p.run.first(name) or 0 for p in pairs])
    add(
        "client: thread.message.delta (last)",
        [p.run.offsets("thread.message.delta")[-1] for p in pairs],
    )
    add(
        "db: run completed (completed_at)",
        [int((times[run_id_of(p.run)][3] - p.run.sent_wall) * 1e9) for p in pairs],
    )
    for name in MILESTONES[4:]:
        add(f"client: {name}", [p.run.first(name) or 0 for p in pairs])
    add(
        "engine alone: first content chunk",
        [engine_content_events(p.engine)[0] for p in pairs],
    )
    add("engine alone: [DONE]", [engine_done(p.engine) for p in pairs])
    return steps


def delivery_lag(pairs: list[Pair]) -> list[int]:
    """Redis entry time (ms resolution) → client arrival, for every delta:
    how long an event takes from the worker's XADD to the client."""
    lags: list[int] = []
    for p in pairs:
        offset = p.run.sent_wall * 1e9 - p.run.sent_ns  # monotonic → wall
        for e in p.run.events:
            if e.name == "thread.message.delta" and e.entry_id:
                entry_ms = int(e.entry_id.split("-")[0])
                lags.append(int(e.at_ns + offset - entry_ms * 1e6))
    return lags


@dataclass
class Throughput:
    concurrency: int
    runs: int
    senders: int
    completed: int = 0
    create_per_s: float = 0.0
    completed_per_s: float = 0.0
    end_to_end_per_s: float = 0.0
    queue_wait_p50_ms: float = 0.0
    queue_wait_p95_ms: float = 0.0
    executor_p50_ms: float = 0.0
    executor_p95_ms: float = 0.0
    gap_p50_ms: float = 0.0
    gap_p95_ms: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, Any] = field(default_factory=dict)
    load: str = ""


def fire(clients: Clients, threads: list[str], senders: int) -> tuple[float, float]:
    """Create a (non-streamed) run on each thread from ``senders`` connections
    at once; returns (first sent, last answered) as Unix time."""
    errors: list[str] = []

    def send(part: list[str]) -> float:
        conn = http.client.HTTPConnection(HOST, clients.web_port, timeout=60)
        body = json.dumps({"assistant_id": clients.assistant_id}).encode()
        try:
            for thread_id in part:
                status, answer = request(
                    clients.web_port,
                    "POST",
                    f"/v1/threads/{thread_id}/runs",
                    body,
                    clients.headers,
                    conn,
                )
                if status != 200:
                    errors.append(f"{status}: {answer}")
        finally:
            conn.close()
        return time.time()

    parts = [threads[i::senders] for i in range(senders)]
    started = time.time()
    with ThreadPoolExecutor(max_workers=senders) as pool:
        ended = max(pool.map(send, parts))
    if errors:
        raise BenchError(f"{len(errors)} run creates failed, e.g. {errors[0]}")
    return started, ended


def wait_terminal(thread_ids: list[str], timeout: float, worker: Child) -> None:
    """Poll PostgreSQL (one COUNT every 50 ms) until every run has ended."""
    from django.db import connection

    from assistants.models import Run

    deadline = time.monotonic() + timeout
    try:
        while True:
            done = Run.objects.filter(
                thread_id__in=thread_ids, status__in=TERMINAL
            ).count()
            if done >= len(thread_ids):
                return
            worker.check()
            if time.monotonic() > deadline:
                raise BenchError(
                    f"only {done}/{len(thread_ids)} runs ended in {timeout:.0f} s"
                )
            time.sleep(0.05)
    finally:
        connection.close()


def throughput(
    clients: Clients,
    worker: Child,
    meter: CpuMeter,
    *,
    concurrency: int,
    runs: int,
    senders: int,
) -> Throughput:
    from django.db import connection

    from assistants.models import Run

    result = Throughput(concurrency=concurrency, runs=runs, senders=senders)
    log(f"  creating {runs} threads (not measured)")
    threads = clients.threads_create(runs)
    log(f"  firing {runs} run creates from {senders} connections ({load_text()})")
    before = meter.snapshot()
    first_sent, last_answered = fire(clients, threads, senders)
    log(
        f"  {runs} creates answered in {last_answered - first_sent:.2f} s; "
        "waiting for the worker"
    )
    wait_terminal(threads, timeout=max(120.0, runs * 0.5), worker=worker)
    after = meter.snapshot()
    rows = list(
        Run.objects.filter(thread_id__in=threads).values_list(
            "status", "created_at", "started_at", "completed_at"
        )
    )
    connection.close()
    for status, *_ in rows:
        result.statuses[status] = result.statuses.get(status, 0) + 1
    done = sorted(
        (s.timestamp(), c.timestamp())
        for status, _, s, c in rows
        if status == "completed" and s and c
    )
    result.completed = len(done)
    result.cpu = cpu_between(before, after, len(rows))
    result.load = load_text()
    result.create_per_s = round(runs / max(last_answered - first_sent, 1e-9), 1)
    if len(done) >= 2:
        ends = sorted(c for _, c in done)
        # From the first completion to the last: the worker's sustained rate,
        # free of the time the first run spent reaching it.
        result.completed_per_s = round((len(ends) - 1) / (ends[-1] - ends[0]), 1)
        result.end_to_end_per_s = round(len(ends) / (ends[-1] - first_sent), 1)
        waits = [int((s - c0) * 1e9) for (s, _), c0 in _with_created(rows)]
        result.queue_wait_p50_ms = pct(waits, 50)
        result.queue_wait_p95_ms = pct(waits, 95)
        execs = [int((c - s) * 1e9) for s, c in done]
        result.executor_p50_ms = pct(execs, 50)
        result.executor_p95_ms = pct(execs, 95)
        if concurrency == 1:
            # One run at a time: the gap between a run's completed_at and
            # the next one's claim is the Celery hand-over (ack, fetch,
            # dispatch to the pool process, claim).
            gaps = [
                int((done[i + 1][0] - done[i][1]) * 1e9) for i in range(len(done) - 1)
            ]
            result.gap_p50_ms = pct(gaps, 50)
            result.gap_p95_ms = pct(gaps, 95)
    return result


def _with_created(rows: list[Any]) -> Iterator[tuple[tuple[float, float], float]]:
    for status, created, started, completed in rows:
        if status == "completed" and started and completed:
            yield (started.timestamp(), completed.timestamp()), created.timestamp()


def worker_warmup(clients: Clients, worker: Child, count: int) -> None:
    """Runs until the new worker answers, then ``count`` more (imports,
    connections, the first queries of each kind)."""
    threads = clients.threads_create(count)
    deadline = time.monotonic() + 90
    for i, thread_id in enumerate(threads):
        while True:
            worker.check()
            timeline = clients.run_stream(thread_id)
            if run_outcome(timeline) == "completed":
                break
            if i or time.monotonic() > deadline:
                raise BenchError(f"warm-up run failed: {run_outcome(timeline)}")
            time.sleep(0.5)


# --------------------------------------------------------------------------
# Profiling (--profile): py-spy on the web and worker processes


PROFILE_RATE = 250  # py-spy samples per second


class Profiler:
    """py-spy on the web and worker processes while a phase runs."""

    def __init__(
        self, stamp: str, children: Children, data_dir: Path, mode: str
    ) -> None:
        self.mode = mode
        self.stamp = stamp
        self.children = children
        self.data_dir = data_dir
        self.files: list[str] = []
        self.recorded: dict[str, list[tuple[str, Path]]] = {}

    def summary(self, phase: str, runs: int) -> list[str]:
        """Milliseconds per run spent in the frames that matter, from the
        samples of ``phase``: the executor's steps in the worker, the view
        and the SSE loop in the web process."""
        lines: list[str] = []
        for party, path in self.recorded.get(phase, []):
            anchors = (
                ["run_execute ("]
                if party == "worker"
                else ["APIView.dispatch (", "run_events ("]
            )
            for anchor in anchors:
                lines += _frames_under(path, anchor, runs, party)
        return lines

    @contextlib.contextmanager
    def record(self, phase: str, targets: dict[str, int]) -> Iterator[None]:
        spy = py_spy()
        if spy is None:
            yield
            return
        running: list[Child] = []
        self.recorded[phase] = []
        for party, pid in targets.items():
            name = f"runs-profile-{self.stamp}-{self.mode}-{phase}-{party}.txt"
            out = RESULTS_DIR / name
            child = self.children.add(
                Child(
                    f"py-spy {party}",
                    [
                        str(spy),
                        "record",
                        "--pid",
                        str(pid),
                        "--subprocesses",
                        "--format",
                        "raw",
                        "--rate",
                        str(PROFILE_RATE),
                        "--output",
                        str(out),
                        # cpu: only samples holding the GIL (where CPU goes);
                        # wall: every active thread, waits on PostgreSQL and
                        # Redis included (where a run's time goes).
                        *(["--gil"] if self.mode == "cpu" else []),
                        # Sampling without pausing the process: blocking
                        # mode slowed the worker several times over here.
                        "--nonblocking",
                    ],
                    dict(os.environ),
                    self.data_dir / "runs-bench-py-spy.log",
                )
            )
            child.start()
            running.append(child)
            self.recorded[phase].append((party, out))
            self.files.append(str(out.relative_to(BASE_DIR)))
        time.sleep(1.0)  # py-spy attaches before the measured work begins
        try:
            yield
        finally:
            for child in running:
                # SIGINT makes py-spy write its output and exit.
                if child.alive():
                    assert child.proc is not None
                    child.proc.send_signal(signal.SIGINT)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.proc.wait(timeout=20)
                self.children.remove(child)


def _frame_name(frame: str) -> str:
    # "run_execute (assistants/runs/executor.py:445)" → without the line, so
    # that one function's samples add up.
    head, _, _ = frame.rpartition(":")
    return head + ")" if head else frame


def _frames_under(path: Path, anchor: str, runs: int, party: str) -> list[str]:
    """``anchor`` and its children, two levels deep, in ms per run."""
    if not path.exists() or not runs:
        return []
    per: dict[tuple[str, ...], int] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        at = next((i for i, f in enumerate(frames) if f.startswith(anchor)), None)
        if at is None or not count.isdigit():
            continue
        path_ = tuple(_frame_name(f) for f in frames[at : at + 3])
        for depth in range(1, len(path_) + 1):
            key = path_[:depth]
            per[key] = per.get(key, 0) + int(count)
    if not per:
        return []
    root = max(per, key=lambda k: (len(k) == 1, per[k]))
    floor = per[root] * 0.03  # children under 3% of the root are noise here

    def ms_per_run(samples: int) -> float:
        return samples * 1000 / PROFILE_RATE / runs

    lines = [f"{party}: {ms_per_run(per[root]):7.2f}  {root[0]}"]
    for child in sorted(
        (k for k in per if len(k) == 2 and per[k] >= floor), key=lambda k: -per[k]
    ):
        lines.append(f"{party}: {ms_per_run(per[child]):7.2f}    {child[1]}")
        for grand in sorted(
            (k for k in per if len(k) == 3 and k[:2] == child and per[k] >= floor),
            key=lambda k: -per[k],
        ):
            lines.append(f"{party}: {ms_per_run(per[grand]):7.2f}      {grand[2]}")
    return lines


# --------------------------------------------------------------------------
# Report


def targets(
    latency: list[Row], tokens: dict[str, Any], rates: list[Throughput]
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, ok: bool | None) -> None:
        checks.append({"target": name, "value": value, "met": ok})

    total = next((r for r in latency if r.scenario.startswith("run create")), None)
    ttft = next((r for r in latency if r.scenario.startswith("time to first")), None)
    o50 = total.overhead_p50_ms if total else None
    o95 = total.overhead_p95_ms if total else None
    check(
        f"overhead p50 <= {OVERHEAD_P50_MS:g} ms per run step",
        o50,
        None if o50 is None else o50 <= OVERHEAD_P50_MS,
    )
    check(
        f"overhead p95 <= {OVERHEAD_P95_MS:g} ms per run step",
        o95,
        None if o95 is None else o95 <= OVERHEAD_P95_MS,
    )
    t95 = ttft.overhead_p95_ms if ttft else None
    check(
        f"added time to first token p95 <= {ADDED_TTFT_P95_MS:g} ms",
        t95,
        None if t95 is None else t95 <= ADDED_TTFT_P95_MS,
    )
    for r in rates:
        check(
            f">= {MIN_RUNS_PER_S:g} runs/s sustained (1 worker, concurrency "
            f"{r.concurrency})",
            r.completed_per_s,
            r.completed_per_s >= MIN_RUNS_PER_S,
        )
    per_token = tokens.get("added_ms_per_token")
    check(
        f"< {MAX_MS_PER_TOKEN:g} ms added per token",
        per_token,
        None if per_token is None else per_token < MAX_MS_PER_TOKEN,
    )
    return checks


def print_targets(checks: list[dict[str, Any]]) -> None:
    print("\ntargets (issue 3):")
    for c in checks:
        if c["met"] is None:
            print(f"  {c['target']:<58} not measured")
        else:
            verdict = "met" if c["met"] else "MISSED"
            print(f"  {c['target']:<58} {c['value']:>9.2f}  {verdict}")


# --------------------------------------------------------------------------
# Main


def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--runs", type=int, default=200, help="measured streamed runs (default 200)"
    )
    parser.add_argument(
        "--warmup", type=int, default=20, help="unmeasured runs first (default 20)"
    )
    parser.add_argument(
        "--chunks",
        type=int,
        default=200,
        help="chunks in the scripted answer of the per-token phase (default 200)",
    )
    parser.add_argument(
        "--token-runs",
        type=int,
        default=30,
        help="measured runs in the per-token phase (default 30)",
    )
    parser.add_argument(
        "--throughput-runs",
        type=int,
        default=300,
        help="runs fired at once in the throughput phase (default 300)",
    )
    parser.add_argument(
        "--senders",
        type=int,
        default=8,
        help="connections the throughput phase creates runs from (default 8)",
    )
    parser.add_argument(
        "--concurrency",
        type=_levels,
        default=[1, 2],
        help="worker concurrency levels for the throughput phase (default 1,2)",
    )
    parser.add_argument(
        "--phases",
        default="floors,latency,tokens,throughput",
        help="subset of floors,latency,tokens,throughput",
    )
    # A candidate change can be measured without editing the platform: put a
    # settings module that overrides the real one on PYTHONPATH.
    parser.add_argument(
        "--settings",
        default=SETTINGS_MODULE,
        help=f"settings module of the web and worker (default {SETTINGS_MODULE})",
    )
    parser.add_argument(
        "--pool",
        choices=["threads", "prefork"],
        default="threads",
        help="the worker's Celery pool (default threads, as make run's runs worker)",
    )
    parser.add_argument(
        "--profile",
        choices=["wall", "cpu"],
        default=None,
        help="record the web and worker processes with py-spy during the "
        "latency and first throughput phases (bench/results/runs-profile-*): "
        "wall = every active thread, cpu = samples holding the GIL",
    )
    args = parser.parse_args(argv)
    if min(args.runs, args.token_runs, args.throughput_runs, args.senders) < 1:
        parser.error("--runs, --token-runs, --throughput-runs, --senders must be >= 1")
    if args.chunks < 2 or args.warmup < 0 or min(args.concurrency) < 1:
        parser.error("need --chunks >= 2, --warmup >= 0, --concurrency >= 1")
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy (.venv/bin/pip install py-spy)")
    return args


@dataclass
class Stack:
    """The processes under test and the connections to them."""

    children: Children
    data_dir: Path
    settings: str
    pool: str
    engine: Child
    web: Child
    worker: Child
    clients: Clients
    meter: CpuMeter
    profiler: Profiler
    profile: bool


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    breakdown: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, Any] = field(default_factory=dict)
    rates: list[Throughput] = field(default_factory=list)
    cpu: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, dict[str, int]] = field(default_factory=dict)
    phase_load: dict[str, str] = field(default_factory=dict)
    profile_summary: dict[str, list[str]] = field(default_factory=dict)
    floors: list[dict[str, Any]] = field(default_factory=list)


def stack_start(
    children: Children, data_dir: Path, args: argparse.Namespace, raw_key: str
) -> Stack:
    import redis
    from django.conf import settings
    from django.db import connections

    from core.services.models import language_model_register

    engine, engine_port = start_engine(children, data_dir)
    language_model_register(
        name=MODEL_NAME, base_urls=[f"http://{HOST}:{engine_port}/v1"]
    )
    connections.close_all()  # the servers hold their own
    web, web_port = start_web(children, data_dir, args.settings)
    worker = start_worker(
        children, data_dir, args.concurrency[0], args.settings, args.pool
    )
    # The sync client's info() is typed as maybe-awaitable; it is a dict here.
    info: dict[str, Any] = redis.Redis.from_url(settings.REDIS_URL).info()  # type: ignore[assignment]
    redis_pid = int(info["process_id"])
    log(
        f"fake engine pid {engine.pid} port {engine_port}; uvicorn pid {web.pid} "
        f"port {web_port}; worker pid {worker.pid} (concurrency "
        f"{args.concurrency[0]}); redis pid {redis_pid}; "
        f"postgres pid {_postmaster_pid()}; settings {args.settings}"
    )
    clients = Clients(web_port, engine_port, raw_key)
    meter = CpuMeter(
        {
            "web": web.pid,
            "worker": worker.pid,
            "postgres": _postmaster_pid(),
            "redis": redis_pid,
            "engine": engine.pid,
            "bench": os.getpid(),
        }
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Stack(
        children=children,
        data_dir=data_dir,
        settings=args.settings,
        pool=args.pool,
        engine=engine,
        web=web,
        worker=worker,
        clients=clients,
        meter=meter,
        profiler=Profiler(stamp, children, data_dir, args.profile or "wall"),
        profile=bool(args.profile),
    )


def floors() -> list[dict[str, Any]]:
    """What one operation of a run's path costs on this machine right now,
    measured from the benchmark process: the unit prices the figures above
    are made of (a slow or busy machine raises all of them alike)."""
    import redis
    from django.conf import settings
    from django.db import connection

    from assistants.runs import events
    from core.models import LanguageModel

    url = settings.REDIS_URL
    shared = redis.Redis.from_url(url)

    def reconnect() -> None:
        connection.close()
        connection.cursor().execute("SELECT 1")

    def thread_start() -> None:
        t = threading.Thread(target=int)
        t.start()
        t.join()

    cases: list[tuple[str, Callable[[], object], int]] = [
        (
            "PostgreSQL SELECT 1 (cursor)",
            lambda: connection.cursor().execute("SELECT 1"),
            300,
        ),
        (
            "ORM .filter(pk=).first()",
            lambda: LanguageModel.objects.filter(pk=MODEL_NAME).first(),
            300,
        ),
        (
            "ORM .filter(pk=).update() (one commit)",
            lambda: LanguageModel.objects.filter(pk=MODEL_NAME).update(is_active=True),
            300,
        ),
        ("Django reconnect + SELECT 1", reconnect, 30),
        ("Redis PING", shared.ping, 300),
        (
            "events.publish (XADD + EXPIRE)",
            lambda: events.publish("runs-bench-floor", "ping", {}),
            300,
        ),
        ("new redis.Redis + PING", lambda: redis.Redis.from_url(url).ping(), 50),
        ("thread start + join", thread_start, 200),
    ]
    found = []
    for label, call, n in cases:
        call()  # connect, import, warm caches
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            call()
        cpu1, wall1 = time.process_time(), time.perf_counter()
        found.append(
            {
                "operation": label,
                "n": n,
                "wall_ms": round((wall1 - wall0) * 1000 / n, 3),
                "cpu_ms": round((cpu1 - cpu0) * 1000 / n, 3),
            }
        )
    shared.delete(events.stream_key("runs-bench-floor"))
    connection.close()
    return found


def phase_latency(st: Stack, args: argparse.Namespace, report: Report) -> None:
    total = args.warmup + args.runs
    log(
        f"latency: {total} streamed runs ({args.warmup} warm-up), each after the "
        f"engine alone; default reply ({load_text()})"
    )
    threads = st.clients.threads_create(total)
    profiling = (
        st.profiler.record("latency", {"web": st.web.pid, "worker": st.worker.pid})
        if st.profile
        else contextlib.nullcontext()
    )
    with profiling:
        before = st.meter.snapshot()
        pairs, report.failures["latency"] = interleaved(
            st.clients, threads, warmup=args.warmup, label="latency"
        )
        after = st.meter.snapshot()
    report.cpu["latency"] = cpu_between(before, after, total)
    report.phase_load["latency"] = load_text()
    if st.profile:
        report.profile_summary["latency"] = st.profiler.summary("latency", total)
    report.rows.append(
        row(
            "run create → thread.run.completed",
            [p.run.first("thread.run.completed") or 0 for p in pairs],
            [engine_done(p.engine) for p in pairs],
        )
    )
    report.rows.append(
        row(
            "time to first token (→ first message.delta)",
            [p.run.first("thread.message.delta") or 0 for p in pairs],
            [engine_content_events(p.engine)[0] for p in pairs],
        )
    )
    report.breakdown = latency_breakdown(pairs)


def phase_tokens(st: Stack, args: argparse.Namespace, report: Report) -> None:
    warm = min(5, args.warmup)
    total = warm + args.token_runs
    log(
        f"per token: {total} streamed runs of {args.chunks} chunks ({warm} "
        f"warm-up), each after the engine alone ({load_text()})"
    )
    reply = {"chunks": [f" t{i}" for i in range(args.chunks)]}
    threads = st.clients.threads_create(total)
    before = st.meter.snapshot()
    pairs, report.failures["tokens"] = interleaved(
        st.clients, threads, warmup=warm, label="per token", reply=reply
    )
    after = st.meter.snapshot()
    report.cpu["tokens"] = cpu_between(before, after, total)
    report.phase_load["tokens"] = load_text()
    run_spans, engine_spans, run_gaps, engine_gaps = [], [], [], []
    for p in pairs:
        deltas = p.run.offsets("thread.message.delta")
        content = engine_content_events(p.engine)
        if len(deltas) != args.chunks or len(content) != args.chunks:
            raise BenchError(
                f"expected {args.chunks} chunks, got {len(deltas)} deltas and "
                f"{len(content)} engine chunks"
            )
        run_spans.append(deltas[-1] - deltas[0])
        engine_spans.append(content[-1] - content[0])
        run_gaps += [b - a for a, b in zip(deltas, deltas[1:], strict=False)]
        engine_gaps += [b - a for a, b in zip(content, content[1:], strict=False)]
    span = row(
        f"{args.chunks}-chunk stream, first → last token", run_spans, engine_spans
    )
    report.rows += [
        row(
            f"{args.chunks}-chunk run → thread.run.completed",
            [p.run.first("thread.run.completed") or 0 for p in pairs],
            [engine_done(p.engine) for p in pairs],
        ),
        span,
        row("  gap between two tokens at the client", run_gaps, engine_gaps),
        row("  worker XADD → client, per delta (ms clock)", delivery_lag(pairs)),
    ]
    # Medians of whole streams, divided by the gaps between their tokens:
    # what each token costs on its way through worker, Redis and web.
    per_token = (span.p50_ms - (span.base_p50_ms or 0)) / (args.chunks - 1)
    report.tokens = {
        "chunks": args.chunks,
        "added_ms_per_token": round(per_token, 4),
        "run_span_p50_ms": span.p50_ms,
        "engine_span_p50_ms": span.base_p50_ms,
        "run_gap_max_ms": ms(max(run_gaps)),
        "engine_gap_max_ms": ms(max(engine_gaps)),
    }


def phase_throughput(st: Stack, args: argparse.Namespace, report: Report) -> None:
    for i, level in enumerate(args.concurrency):
        if level != worker_concurrency(st.worker):
            log(f"restarting the worker at concurrency {level}")
            st.children.remove(st.worker)
            st.worker = start_worker(
                st.children, st.data_dir, level, st.settings, st.pool
            )
            st.meter.pids["worker"] = st.worker.pid
            worker_warmup(st.clients, st.worker, 3)
        else:
            worker_warmup(st.clients, st.worker, 1)
        log(f"throughput: one worker at concurrency {level}")
        phase = f"throughput-c{level}"
        profiling = (
            st.profiler.record(phase, {"worker": st.worker.pid})
            if st.profile and i == 0
            else contextlib.nullcontext()
        )
        with profiling:
            rate = throughput(
                st.clients,
                st.worker,
                st.meter,
                concurrency=level,
                runs=args.throughput_runs,
                senders=args.senders,
            )
        if st.profile and i == 0:
            report.profile_summary[phase] = st.profiler.summary(
                phase, args.throughput_runs
            )
        report.rates.append(rate)
        log(
            f"  {rate.completed}/{rate.runs} completed: {rate.completed_per_s} "
            f"runs/s ({rate.load})"
        )


def print_report(report: Report) -> None:
    print(f"\n== runs through the platform vs the engine alone ({load_text()})")
    print_table(report.rows)
    for phase, counts in report.failures.items():
        for outcome, count in counts.items():
            print(f"warning: {phase}: {count} run(s) ended {outcome}")
    tokens = report.tokens
    if tokens:
        print(
            f"\nadded per token: ({tokens['run_span_p50_ms']:.2f} − "
            f"{tokens['engine_span_p50_ms']:.2f}) ms / {tokens['chunks'] - 1} gaps = "
            f"{tokens['added_ms_per_token']:.3f} ms; largest gap "
            f"{tokens['run_gap_max_ms']:.2f} ms (engine alone "
            f"{tokens['engine_gap_max_ms']:.2f} ms)"
        )
    if report.breakdown:
        print(
            "\nwhere a run's time goes (default reply; ms after the request was sent)"
        )
        for step in report.breakdown:
            print(
                f"  {step['at']:<52} p50 {step['p50_ms']:>8.2f}  "
                f"p95 {step['p95_ms']:>8.2f}"
            )
    if report.rates:
        print("\nthroughput: runs created at once on as many threads, one worker")
        head = (
            f"{'concurrency':>11} {'runs':>5} {'done':>5} {'creates/s':>9} "
            f"{'runs/s':>7} {'e2e/s':>7} {'queue p50':>9} {'exec p50':>8} "
            f"{'exec p95':>8} {'gap p50':>7} {'gap p95':>7}"
        )
        print(head)
        print("-" * len(head))
        for r in report.rates:
            print(
                f"{r.concurrency:>11} {r.runs:>5} {r.completed:>5} "
                f"{r.create_per_s:>9.1f} {r.completed_per_s:>7.1f} "
                f"{r.end_to_end_per_s:>7.1f} {r.queue_wait_p50_ms:>9.1f} "
                f"{r.executor_p50_ms:>8.2f} {r.executor_p95_ms:>8.2f} "
                f"{_cell(r.gap_p50_ms or None, 7)} {_cell(r.gap_p95_ms or None, 7)}"
            )
        print(
            "(runs/s: first to last completion; e2e/s: from the first create sent; "
            "exec: claim → completed in the worker; gap: one run's completion → "
            "the next claim, concurrency 1 only)"
        )
    if report.floors:
        print("\nunit prices on this machine now (one operation, from this process):")
        for f in report.floors:
            print(
                f"  {f['operation']:<42} wall {f['wall_ms']:>7.3f} ms  "
                f"cpu {f['cpu_ms']:>7.3f} ms"
            )
    print("\nCPU by process (cores busy, and CPU ms per run):")
    for phase, use in report.cpu.items():
        print_cpu(phase, use)
    for r in report.rates:
        print_cpu(f"throughput, concurrency {r.concurrency}", r.cpu)
    for phase, lines in report.profile_summary.items():
        print(f"\npy-spy, {phase} (ms per run in each frame, children indented):")
        for line in lines:
            print(f"  {line}")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    phases = set(args.phases.split(","))
    signal.signal(signal.SIGTERM, _raise_interrupt)
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    load_before = os.getloadavg()
    log(f"{load_text()} before, on {os.cpu_count()} cores")
    log("migrating")
    migrate(args.settings)
    raw_key = tenant_create(args.settings)  # Django is set up from here on
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)

    children = Children()
    report = Report()
    st: Stack | None = None
    if "floors" in phases:
        log(f"floors: single operations from this process ({load_text()})")
        report.floors = floors()
    try:
        st = stack_start(children, data_dir, args, raw_key)
        st.clients.assistant_create()
        log("waiting for the worker (warm-up runs)")
        worker_warmup(st.clients, st.worker, 3)
        if "latency" in phases:
            phase_latency(st, args, report)
        if "tokens" in phases:
            phase_tokens(st, args, report)
        if "throughput" in phases:
            phase_throughput(st, args, report)
    finally:
        if st is not None:
            st.clients.close()
        children.stop_all()
    load_after = os.getloadavg()

    print_report(report)
    checks = targets(report.rows, report.tokens, report.rates)
    print_targets(checks)
    print(
        f"\nload average before: {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}, after: {load_after[0]:.2f} {load_after[1]:.2f} "
        f"{load_after[2]:.2f} ({os.cpu_count()} cores, shared)"
    )
    files = st.profiler.files if st is not None else []
    if files:
        print("profiles (py-spy raw collapsed stacks):")
        for name in files:
            print(f"  {name}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS_DIR / f"runs-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "finished_at": stamp,
                "config": vars(args),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_before": load_before,
                    "load_after": load_after,
                    "load_after_phase": report.phase_load,
                },
                "versions": versions(),
                "scenarios": [r.to_json() for r in report.rows],
                "per_token": report.tokens,
                "breakdown": report.breakdown,
                "throughput": [asdict(r) for r in report.rates],
                "cpu": report.cpu,
                "failures": report.failures,
                "targets": checks,
                "profiles": files,
                "profile_summary": report.profile_summary,
                "floors": report.floors,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {out.relative_to(BASE_DIR)}")
    return 0


def worker_concurrency(worker: Child) -> int:
    return int(worker.argv[worker.argv.index("--concurrency") + 1])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
    except (BenchError, OSError, http.client.HTTPException) as exc:
        # Everything started has been stopped by now (main's finally).
        print(
            f"[runs-bench] error: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(1)
