"""Load: streaming runs plus CRUD traffic on 2 web processes and 2 workers.

Run with ``make bench-load`` (the launcher provides PostgreSQL and Redis; the
local llama.cpp engine is not started)::

    DATA_DIR=/tmp/agents-loadbench AGENTS_ENGINE=off \\
        .venv/bin/python -m core.stack exec -- .venv/bin/python bench/load_bench.py \\
        --duration 60

It starts the scripted engine (``tests/fake_engine.py``, answering at once),
``--webs`` uvicorn processes and ``--workers`` Celery workers exactly as
``make run`` starts them, creates a fresh tenant, and then, for
``--warmup`` + ``--duration`` seconds, drives them from two asyncio
processes (the run users in one; the CRUD users and the engine baseline in
the other, so that their latencies do not include the time the first spends
parsing 200 event streams):

- ``--run-users`` (200) concurrent users, each looping: create a streamed run
  on its own thread (``POST /v1/threads/{id}/runs``, ``stream: true``) and
  read the stream to ``done``; users alternate between the web processes;
- ``--crud-users`` (8) concurrent users, each looping over message create,
  message list, run list, assistant retrieve and thread create + retrieve.

Reported (measured window only, after the warm-up): error rate (HTTP errors,
transport errors, runs not ``completed``) over all requests; CRUD latency
p50/p95 per operation and overall; queued → in_progress (``started_at -
created_at`` of the runs, from PostgreSQL) p50/p95; the stream's first
token; runs/s; RSS of every web and worker process (pool children included)
at the end of the warm-up and at the end, and the growth. The issue's targets
are printed as met or missed; the benchmark never fails on them. The bare
engine's latency (the same SSE request sent straight to it, measured in the
same run) is the baseline the run figures are compared with. JSON goes to
``bench/results/load-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

import httpx  # noqa: E402

from bench.api_bench import (  # noqa: E402  (needs the project root on sys.path)
    HOST,
    RESULTS_DIR,
    _process_table,
    _raise_interrupt,
    _tree,
    django_env,
    migrate,
    versions,
)
from bench.runs_bench import Child, Children, start_engine  # noqa: E402
from core.stack.commands import (  # noqa: E402
    web_command,
    worker_command,
    worker_env,
)
from core.stack.proc import free_port  # noqa: E402

SETTINGS_MODULE = "config.settings.local"
MODEL_NAME = "load-engine"

# The targets.
MAX_ERROR_RATE = 0.001
CRUD_P95_MS = 300.0
QUEUE_WAIT_P95_MS = 2000.0
MAX_RSS_GROWTH = 0.10


def log(message: str) -> None:
    print(f"[load-bench] {message}", flush=True)


# --- processes ----------------------------------------------------------------


def start_webs(children: Children, data_dir: Path, count: int) -> list[Child]:
    webs = []
    for i in range(count):
        port = free_port()
        child = children.add(
            Child(
                f"web {i + 1}",
                web_command(port, host=HOST),
                django_env(SETTINGS_MODULE),
                data_dir / f"load-bench-web-{i + 1}.log",
            )
        )
        child.port = port  # type: ignore[attr-defined]
        child.start()
        webs.append(child)
    for child in webs:
        deadline = time.monotonic() + 90
        while True:
            child.check()
            try:
                url = f"http://{HOST}:{child.port}/healthz"  # type: ignore[attr-defined]
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not answer; see {child.log_path}")
            time.sleep(0.2)
    return webs


def start_workers(
    children: Children, data_dir: Path, count: int, concurrency: int, pool: str
) -> list[Child]:
    workers = []
    for i in range(count):
        child = children.add(
            Child(
                f"worker {i + 1}",
                worker_command(
                    concurrency=concurrency,
                    hostname=f"load-bench-{os.getpid()}-{i + 1}@%h",
                ),
                {
                    **django_env(SETTINGS_MODULE),
                    **worker_env(pool=pool, concurrency=concurrency),
                },
                data_dir / f"load-bench-worker-{i + 1}.log",
            )
        )
        start = child.log_path.stat().st_size if child.log_path.exists() else 0
        child.start()
        deadline = time.monotonic() + 90
        while b" ready." not in child.log_path.read_bytes()[start:]:
            child.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not start; see {child.log_path}")
            time.sleep(0.2)
        workers.append(child)
    return workers


def rss_kb(root: int) -> int:
    """Resident memory of ``root`` and its descendants (a worker's pool)."""
    total = 0
    for pid in _tree(_process_table(), root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except FileNotFoundError:
            continue
    return total


# --- load -----------------------------------------------------------------------


@dataclass
class Stats:
    measuring: bool = False
    requests: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    crud_ms: dict[str, list[float]] = field(default_factory=dict)
    first_token_ms: list[float] = field(default_factory=list)
    run_ms: list[float] = field(default_factory=list)
    engine_ms: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)

    def count(self, error: str | None) -> None:
        if not self.measuring:
            return
        self.requests += 1
        if error is not None:
            self.errors += 1
            self.error_kinds[error] = self.error_kinds.get(error, 0) + 1


async def run_user(
    client: httpx.AsyncClient,
    thread_id: str,
    assistant_id: str,
    stats: Stats,
    stop: asyncio.Event,
) -> None:
    body = {"assistant_id": assistant_id, "stream": True}
    while not stop.is_set():
        started = time.perf_counter()
        first: float | None = None
        run_id = ""
        outcome = ""
        error: str | None = None
        try:
            async with client.stream(
                "POST", f"/v1/threads/{thread_id}/runs", json=body
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    error = f"run create HTTP {response.status_code}"
                else:
                    event = ""
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            if event == "thread.run.created":
                                run_id = json.loads(line[5:])["id"]
                            elif event == "thread.message.delta" and first is None:
                                first = time.perf_counter()
                            elif event.startswith("thread.run.") and event in (
                                "thread.run.completed",
                                "thread.run.failed",
                                "thread.run.cancelled",
                                "thread.run.expired",
                                "thread.run.incomplete",
                            ):
                                outcome = event.rsplit(".", 1)[1]
                            elif event == "done":
                                break
                    if outcome != "completed":
                        error = f"run {outcome or 'stream ended early'}"
        except httpx.HTTPError as exc:
            error = f"run {type(exc).__name__}"
        measuring = stats.measuring
        stats.count(error)
        if measuring and error is None:
            stats.run_ms.append((time.perf_counter() - started) * 1000)
            if first is not None:
                stats.first_token_ms.append((first - started) * 1000)
            stats.run_ids.append(run_id)
        if error is not None:
            await asyncio.sleep(0.5)  # no hot loop against a failing server


async def _timed(
    stats: Stats, op: str, call: Any, expect: tuple[int, ...] = (200,)
) -> httpx.Response | None:
    started = time.perf_counter()
    try:
        response = await call
    except httpx.HTTPError as exc:
        stats.count(f"{op} {type(exc).__name__}")
        return None
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code not in expect:
        stats.count(f"{op} HTTP {response.status_code}")
        return None
    if stats.measuring:
        stats.crud_ms.setdefault(op, []).append(elapsed)
    stats.count(None)
    return response


async def crud_user(
    client: httpx.AsyncClient,
    thread_id: str,
    assistant_id: str,
    stats: Stats,
    stop: asyncio.Event,
) -> None:
    message = {"role": "user", "content": "a message from the CRUD traffic"}
    while not stop.is_set():
        await _timed(
            stats,
            "message create",
            client.post(f"/v1/threads/{thread_id}/messages", json=message),
        )
        await _timed(
            stats,
            "message list (20)",
            client.get(f"/v1/threads/{thread_id}/messages?limit=20"),
        )
        await _timed(stats, "run list", client.get(f"/v1/threads/{thread_id}/runs"))
        await _timed(
            stats, "assistant retrieve", client.get(f"/v1/assistants/{assistant_id}")
        )
        created = await _timed(stats, "thread create", client.post("/v1/threads"))
        if created is not None:
            await _timed(
                stats,
                "thread retrieve",
                client.get(f"/v1/threads/{created.json()['id']}"),
            )


async def engine_user(engine_url: str, stats: Stats, stop: asyncio.Event) -> None:
    """The baseline: the same streamed request straight to the engine."""
    body = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
    }
    async with httpx.AsyncClient(timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            async with client.stream(
                "POST", f"{engine_url}/chat/completions", json=body
            ) as response:
                async for _ in response.aiter_lines():
                    pass
            if stats.measuring:
                stats.engine_ms.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.2)


async def _measure(
    args: argparse.Namespace,
    stats: Stats,
    stop: asyncio.Event,
    tasks: list[asyncio.Task[None]],
    on_warm: Any = None,
) -> None:
    """Warm up, count for ``--duration``, then stop the users: each finishes
    the request in hand, not counted any more."""
    await asyncio.sleep(args.warmup)
    if on_warm is not None:
        on_warm()
    stats.measuring = True
    await asyncio.sleep(args.duration)
    stats.measuring = False
    stop.set()
    await asyncio.wait(tasks, timeout=60)
    for task in tasks:
        task.cancel()


def _probe_process(
    args: argparse.Namespace,
    urls: list[str],
    engine_url: str,
    headers: dict[str, str],
    threads: list[str],
    assistant: str,
    results: Any,
) -> None:
    """The CRUD users and the engine baseline, in a process of their own: in
    the run users' event loop, their latencies would include the time the
    loop spends parsing 200 event streams, not only the server's.

    It asks for a higher CPU priority (``--probe-nice``; root only): on the
    2 shared cores the system under test keeps every core busy, and a
    measuring client waiting for a core adds that wait to every latency it
    records. Clients are on other machines in a real deployment. The run
    users keep the normal priority (they are the load, not the measure);
    the engine baseline, measured here too, shows what waiting remains."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, args.probe_nice)
    except OSError as exc:
        log(f"probes stay at nice {os.getpriority(os.PRIO_PROCESS, 0)}: {exc}")
    else:
        log(f"probes at nice {args.probe_nice}")

    async def probe() -> Stats:
        stats = Stats()
        stop = asyncio.Event()
        limits = httpx.Limits(max_connections=args.crud_users + 8)
        clients = [
            httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits)
            for url in urls
        ]
        try:
            tasks = [
                asyncio.create_task(
                    crud_user(
                        clients[i % len(clients)], threads[i], assistant, stats, stop
                    )
                )
                for i in range(args.crud_users)
            ]
            tasks.append(asyncio.create_task(engine_user(engine_url, stats, stop)))
            await _measure(args, stats, stop, tasks)
        finally:
            for client in clients:
                await client.aclose()
        return stats

    results.send(asdict(asyncio.run(probe())))
    results.close()


async def drive(
    args: argparse.Namespace,
    urls: list[str],
    engine_url: str,
    raw_key: str,
    on_warm: Any,
) -> Stats:
    headers = {
        "Authorization": f"Bearer {raw_key}",
        "OpenAI-Beta": "assistants=v2",
    }
    limits = httpx.Limits(
        max_connections=args.run_users + 16,
        max_keepalive_connections=args.run_users + 16,
    )
    clients = [
        httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits)
        for url in urls
    ]
    stats = Stats()
    stop = asyncio.Event()
    try:
        setup = clients[0]
        assistant = (
            await setup.post("/v1/assistants", json={"model": MODEL_NAME})
        ).json()["id"]
        log(f"creating {args.run_users + args.crud_users} threads")
        threads = []
        for _ in range(args.run_users + args.crud_users):
            body = {"messages": [{"role": "user", "content": "hello"}]}
            threads.append((await setup.post("/v1/threads", json=body)).json()["id"])
        context = multiprocessing.get_context("spawn")
        receive, send = context.Pipe(duplex=False)
        prober = context.Process(
            target=_probe_process,
            args=(
                args,
                urls,
                engine_url,
                headers,
                threads[args.run_users :],
                assistant,
                send,
            ),
            name="load-bench-probes",
        )
        prober.start()
        send.close()
        tasks = [
            asyncio.create_task(
                run_user(clients[i % len(clients)], threads[i], assistant, stats, stop)
            )
            for i in range(args.run_users)
        ]
        log(f"warming up for {args.warmup:.0f} s")

        def warm() -> None:
            on_warm()
            log(f"measuring for {args.duration:.0f} s")

        await _measure(args, stats, stop, tasks, on_warm=warm)
        probed = await asyncio.to_thread(receive.recv)
        await asyncio.to_thread(prober.join, 60)
        stats.requests += probed["requests"]
        stats.errors += probed["errors"]
        for kind, n in probed["error_kinds"].items():
            stats.error_kinds[kind] = stats.error_kinds.get(kind, 0) + n
        stats.crud_ms = probed["crud_ms"]
        stats.engine_ms = probed["engine_ms"]
    finally:
        for client in clients:
            await client.aclose()
    return stats


# --- figures --------------------------------------------------------------------


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def queue_waits_ms(run_ids: list[str]) -> list[float]:
    from django.db import connections

    from assistants.models import Run

    waits: list[float] = []
    for start in range(0, len(run_ids), 1000):
        rows = Run.objects.filter(
            pk__in=run_ids[start : start + 1000], started_at__isnull=False
        ).values_list("created_at", "started_at")
        waits += [(s - c).total_seconds() * 1000 for c, s in rows if s is not None]
    connections.close_all()
    return waits


def setup_tenant(engine_port: int) -> str:
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    import django

    django.setup()
    import logging

    from django.db import connections

    from core.models import Organization

    # Not a line per request of the load generator.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from core.services.keys import api_key_create
    from core.services.models import language_model_register
    from core.services.tenancy import project_create

    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    organization = Organization.objects.create(name=f"load bench {stamp}")
    project = project_create(organization=organization, name="load bench")
    issued = api_key_create(project=project, name="load_bench")
    language_model_register(
        name=MODEL_NAME, base_urls=[f"http://{HOST}:{engine_port}/v1"]
    )
    connections.close_all()
    return issued.raw


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(
    args: argparse.Namespace,
    stats: Stats,
    waits: list[float],
    rss: dict[str, tuple[int, int]],
    load: tuple[float, float, float],
) -> dict[str, Any]:
    all_crud = [v for values in stats.crud_ms.values() for v in values]
    error_rate = stats.errors / stats.requests if stats.requests else None
    growth = {
        name: (end - warm) / warm if warm else None for name, (warm, end) in rss.items()
    }
    print()
    print(
        f"{args.run_users} streaming-run users + {args.crud_users} CRUD users, "
        f"{args.webs} web processes, {args.workers} workers x {args.concurrency} "
        f"({args.pool}), "
        f"{args.duration:.0f} s after {args.warmup:.0f} s warm-up "
        f"(load {load[0]:.2f} at the end, {os.cpu_count()} cores)"
    )
    print(
        f"requests {stats.requests}, errors {stats.errors} "
        f"({(error_rate or 0) * 100:.3f} %) {stats.error_kinds or ''}"
    )
    runs_per_s = len(stats.run_ids) / args.duration
    print(f"runs completed {len(stats.run_ids)} ({runs_per_s:.1f}/s)")
    print(f"{'operation':<24}{'n':>8}{'p50 ms':>10}{'p95 ms':>10}")
    rows = [(op, values) for op, values in sorted(stats.crud_ms.items())]
    rows += [
        ("CRUD (all)", all_crud),
        ("queued→in_progress", waits),
        ("run first token", stats.first_token_ms),
        ("run create→done", stats.run_ms),
        ("engine alone (baseline)", stats.engine_ms),
    ]
    for op, values in rows:
        p50, p95 = _fmt(pct(values, 50)), _fmt(pct(values, 95))
        print(f"{op:<24}{len(values):>8}{p50:>10}{p95:>10}")
    engine_p50 = pct(stats.engine_ms, 50)
    run_p50 = pct(stats.run_ms, 50)
    if engine_p50 and run_p50:
        print(f"run create→done p50 / engine alone p50: {run_p50 / engine_p50:.1f}x")
    print(f"{'process':<12}{'RSS warm MB':>12}{'RSS end MB':>12}{'growth':>9}")
    for name, (warm, end) in rss.items():
        g = growth[name]
        shown = "-" if g is None else f"{g * 100:+.1f} %"
        print(f"{name:<12}{warm / 1024:>12.1f}{end / 1024:>12.1f}{shown:>9}")
    crud_p95 = pct(all_crud, 95)
    wait_p95 = pct(waits, 95)
    max_growth = max((g for g in growth.values() if g is not None), default=None)
    checks = [
        ("error rate < 0.1 %", error_rate is not None and error_rate < MAX_ERROR_RATE),
        ("CRUD p95 < 300 ms", crud_p95 is not None and crud_p95 < CRUD_P95_MS),
        (
            "queued→in_progress p95 < 2 s",
            wait_p95 is not None and wait_p95 < QUEUE_WAIT_P95_MS,
        ),
        ("RSS growth < 10 %", max_growth is not None and max_growth < MAX_RSS_GROWTH),
    ]
    print("targets:")
    for label, met in checks:
        print(f"  {'met   ' if met else 'MISSED'} {label}")
    return {
        "config": vars(args),
        "cores": os.cpu_count(),
        "load_at_end": load,
        "requests": stats.requests,
        "errors": stats.errors,
        "error_kinds": stats.error_kinds,
        "error_rate": error_rate,
        "runs_completed": len(stats.run_ids),
        "runs_per_s": len(stats.run_ids) / args.duration,
        "crud_ms": {
            op: {"n": len(v), "p50": pct(v, 50), "p95": pct(v, 95)}
            for op, v in stats.crud_ms.items()
        },
        "crud_p50_ms": pct(all_crud, 50),
        "crud_p95_ms": crud_p95,
        "queue_wait_p50_ms": pct(waits, 50),
        "queue_wait_p95_ms": wait_p95,
        "first_token_p50_ms": pct(stats.first_token_ms, 50),
        "first_token_p95_ms": pct(stats.first_token_ms, 95),
        "run_p50_ms": run_p50,
        "run_p95_ms": pct(stats.run_ms, 95),
        "engine_p50_ms": engine_p50,
        "engine_p95_ms": pct(stats.engine_ms, 95),
        "rss_kb": {name: {"warm": w, "end": e} for name, (w, e) in rss.items()},
        "rss_growth": growth,
        "targets": {label: met for label, met in checks},
        "versions": versions(),
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--warmup", type=float, default=30.0)
    parser.add_argument("--run-users", type=int, default=200)
    parser.add_argument("--crud-users", type=int, default=8)
    parser.add_argument("--webs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=0,
        help="runs at once per worker (threads, as make run's runs worker); "
        "default: the run users spread over the workers",
    )
    parser.add_argument(
        "--pool",
        choices=["threads", "prefork"],
        default="threads",
        help="the workers' Celery pool (default threads, as make run)",
    )
    parser.add_argument(
        "--probe-nice",
        type=int,
        default=-5,
        help="CPU priority of the CRUD users and the engine baseline "
        "(default -5: needs root, else they keep the normal priority)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.concurrency <= 0:
        args.concurrency = max(1, -(-args.run_users // args.workers))
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    random.seed(args.seed)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    children = Children()
    try:
        log("migrating")
        migrate(SETTINGS_MODULE)
        _engine, engine_port = start_engine(children, data_dir)
        raw_key = setup_tenant(engine_port)
        webs = start_webs(children, data_dir, args.webs)
        workers = start_workers(
            children, data_dir, args.workers, args.concurrency, args.pool
        )
        processes = {c.name: c.pid for c in webs + workers}
        warm_rss: dict[str, int] = {}

        def on_warm() -> None:
            warm_rss.update({name: rss_kb(pid) for name, pid in processes.items()})

        urls = [f"http://{HOST}:{c.port}" for c in webs]  # type: ignore[attr-defined]
        stats = asyncio.run(
            drive(args, urls, f"http://{HOST}:{engine_port}/v1", raw_key, on_warm)
        )
        end_rss = {name: rss_kb(pid) for name, pid in processes.items()}
        for child in webs + workers:
            child.check()
        waits = queue_waits_ms(stats.run_ids)
        result = report(
            args,
            stats,
            waits,
            {name: (warm_rss[name], end_rss[name]) for name in processes},
            os.getloadavg(),
        )
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        children.stop_all()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"load-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
