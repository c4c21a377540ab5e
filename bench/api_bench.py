"""API latency and throughput: message create and list against a bare view.

Run with ``make bench`` (the launcher provides PostgreSQL and Redis)::

    DATA_DIR=/tmp/agents-bench make bench BENCH_ARGS="--clients 1,8 --duration 10"

The benchmark starts its own uvicorn (``config.asgi:application`` under
``bench.settings``, which only adds ``/bench/baseline``), creates a fresh
organization, project and API key, then drives each scenario with N
keep-alive clients on loopback:

    baseline         GET  /bench/baseline  (Django view, constant JSON, no DB)
    auth floor       GET  /v1/assistants?limit=1 on an empty project
    message create   POST /v1/threads/{id}/messages
    message list     GET  /v1/threads/{id}/messages?limit=100 (100 messages)
    baseline again   to show drift caused by other load on the machine

It prints, per concurrency level, requests, req/s, p50/p95/p99 and the ratio
to the baseline's req/s; the CPU the server, PostgreSQL, the client and
everyone else used meanwhile (the machine is shared); and the issue's targets
as met or missed. It never fails on a missed target. Results also go to
``bench/results/api-<timestamp>.json``. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
# Run as a script, so sys.path[0] is bench/; the project root makes
# ``bench.settings`` and the apps importable (also in spawned clients).
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from core.stack.proc import die_with_parent, free_port  # noqa: E402

SETTINGS_MODULE = "bench.settings"
ASGI_APP = "config.asgi:application"
RESULTS_DIR = BASE_DIR / "bench" / "results"
WRK_SCRIPT = BASE_DIR / "bench" / "wrk_report.lua"
HOST = "127.0.0.1"
MODEL_NAME = "bench-model"
LIST_SIZE = 100
CREATE_BODY = b'{"role": "user", "content": "hello"}'

# The targets for this 2-core machine.
CREATE_P50_MS = 5.0
LIST_P50_MS = 10.0
MIN_THROUGHPUT_RATIO = 1 / 3


# --------------------------------------------------------------------------
# Scenarios and results


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    method: str
    path: str
    body: bytes | None = None
    authenticated: bool = True
    # More paths to spread the load over, e.g. one thread per client so that
    # message creates do not all queue on one thread's row lock.
    more_paths: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        return (self.path, *self.more_paths)


@dataclass
class CpuUse:
    """Cores busy during a measurement window (2.0 = both cores of this box)."""

    machine: float = 0.0
    server: float = 0.0
    postgres: float = 0.0
    client: float = 0.0
    other: float = 0.0
    steal: float = 0.0


@dataclass
class Result:
    key: str
    label: str
    method: str
    path: str
    client: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int]
    cpu: CpuUse = field(default_factory=CpuUse)
    clients: int = 0
    ratio: float | None = None

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def cpu_ms_per_request(self, cores: float) -> float:
        """CPU cost of one request; steadier than req/s when others load the box."""
        return cores * 1000 / self.rps if self.rps else 0.0


# --------------------------------------------------------------------------
# CPU accounting: who used the two cores while a scenario ran. Other
# people's test runs share this machine, so every figure comes with it.

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class CpuSnapshot:
    at: float
    busy: int
    steal: int
    server: dict[int, int]
    postgres: dict[int, int]
    client: dict[int, int]


def _process_table() -> dict[int, tuple[int, int, bytes]]:
    """pid → (parent pid, clock ticks, command name) for every live process.

    The ticks include reaped children's (cutime, cstime): PostgreSQL backends
    that live for one connection exit inside the window, and their CPU would
    otherwise vanish from the account.
    """
    table: dict[int, tuple[int, int, bytes]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue  # exited while we looked
        # The command name may hold spaces and parentheses: split after it.
        close = raw.rindex(b")")
        fields = raw[close + 2 :].split()
        ticks = sum(int(v) for v in fields[11:15])
        table[int(entry.name)] = (
            int(fields[1]),
            ticks,
            raw[raw.index(b"(") + 1 : close],
        )
    return table


def _tree(table: dict[int, tuple[int, int, bytes]], root: int) -> dict[int, int]:
    members = {root} if root in table else set()
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _ticks, _name) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                grew = True
    return {pid: table[pid][1] for pid in members}


def _postmaster_pid() -> int:
    """The launcher's embedded PostgreSQL, when it is the one we talk to."""
    pidfile = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data")) / "postgres"
    try:
        return int((pidfile / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def cpu_snapshot(server_pid: int) -> CpuSnapshot:
    with open("/proc/stat") as fh:
        # user nice system idle iowait irq softirq steal (guest is in user)
        values = [int(v) for v in fh.readline().split()[1:9]]
    table = _process_table()
    server = _tree(table, server_pid)
    # Clients are our own descendants (wrk, or the Python client processes);
    # the server is one too and is counted apart, and py-spy (--profile)
    # is left to "other" rather than mistaken for load generation.
    me = os.getpid()
    client = {
        pid: ticks
        for pid, ticks in _tree(table, me).items()
        if pid not in server and pid != me and table[pid][2] != b"py-spy"
    }
    return CpuSnapshot(
        at=time.monotonic(),
        busy=sum(values[:3]) + values[5] + values[6],
        steal=values[7],
        server=server,
        postgres=_tree(table, _postmaster_pid()),
        client=client,
    )


def _delta(a: dict[int, int], b: dict[int, int]) -> int:
    """Ticks used between two snapshots by the processes alive at the second."""
    return sum(ticks - a.get(pid, 0) for pid, ticks in b.items())


def cpu_use(a: CpuSnapshot, b: CpuSnapshot) -> CpuUse:
    wall = max(b.at - a.at, 1e-6)

    def cores(ticks: int) -> float:
        return round(ticks / _CLK_TCK / wall, 2)

    use = CpuUse(
        machine=cores(b.busy - a.busy),
        server=cores(_delta(a.server, b.server)),
        postgres=cores(_delta(a.postgres, b.postgres)),
        client=cores(_delta(a.client, b.client)),
        steal=cores(b.steal - a.steal),
    )
    use.other = round(max(use.machine - use.server - use.postgres - use.client, 0), 2)
    return use


# --------------------------------------------------------------------------
# The server under test


def django_env(settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings,
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        # The benchmarks measure the platform, not its per-key quotas: one key
        # sends far more than a tenant's default allowance. Set them in the
        # environment to measure with limits on.
        "RATE_LIMIT_REQUESTS_PER_MINUTE": os.environ.get(
            "RATE_LIMIT_REQUESTS_PER_MINUTE", "0"
        ),
        "RATE_LIMIT_RUNS_PER_MINUTE": os.environ.get("RATE_LIMIT_RUNS_PER_MINUTE", "0"),
    }


class Server:
    """uvicorn serving config.asgi exactly as ``make run`` does."""

    def __init__(
        self, *, workers: int, app: str, settings: str, log_path: Path
    ) -> None:
        self.workers = workers
        self.app = app
        self.settings = settings
        self.log_path = log_path
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    self.app,
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--lifespan",
                    "off",
                    "--no-access-log",
                    "--log-level",
                    "warning",
                    "--workers",
                    str(self.workers),
                ],
                cwd=BASE_DIR,
                env=django_env(self.settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C reaches us, and we stop it in order.
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited; see {self.log_path}")
            try:
                status, _ = request(self.port, "GET", "/bench/baseline")
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"uvicorn did not answer in 60s; see {self.log_path}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, Any]:
    """One request; the decoded JSON body (None when it is not JSON)."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        all_headers = dict(headers or {})
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        conn.request(method, path, body=body, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, None
    finally:
        if own:
            conn.close()


# --------------------------------------------------------------------------
# Fixtures: a fresh tenant per run, then threads made through the API


def migrate(settings: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        env=django_env(settings),
        check=True,
    )


def tenant_create(settings: str) -> str:
    """A new organization, project and key; returns the raw key.

    A fresh tenant per run keeps runs independent: the auth lookup, the
    empty assistants list and the threads belong to this run alone.
    """
    os.environ["DJANGO_SETTINGS_MODULE"] = settings
    import django

    django.setup()
    from django.db import connections

    from core.models import Organization
    from core.services.keys import api_key_create
    from core.services.models import language_model_register
    from core.services.tenancy import project_create

    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{os.getpid()}"
    organization = Organization.objects.create(name=f"bench {stamp}")
    project = project_create(organization=organization, name="bench")
    issued = api_key_create(project=project, name="api_bench")
    # Nothing here calls the model; the registry entry keeps the platform's
    # "a model is configured" checks satisfied.
    language_model_register(name=MODEL_NAME, base_urls=["http://127.0.0.1:9/v1"])
    # The server holds its own connections; ours would only idle meanwhile.
    connections.close_all()
    return issued.raw


@dataclass
class Fixtures:
    headers: dict[str, str]
    create_threads: list[str] = field(default_factory=list)
    list_thread: str | None = None
    missing: str = ""


def fixtures_create(port: int, raw_key: str, create_threads: int) -> Fixtures:
    """Threads made through the API: one holding 100 messages to list, and
    ``create_threads`` (default one) to post into.

    The API, not the ORM, creates them, so the benchmark depends only on the
    wire contract. When the message routes are not served yet, the missing
    part is reported and only the scenarios without them run.
    """
    headers = {"Authorization": f"Bearer {raw_key}", "OpenAI-Beta": "assistants=v2"}
    fx = Fixtures(headers=headers)
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        threads: list[str] = []
        for _ in range(create_threads + 1):
            status, body = request(port, "POST", "/v1/threads", b"{}", headers, conn)
            if status != 200 or not isinstance(body, dict) or "id" not in body:
                fx.missing = f"POST /v1/threads answered {status}: {body}"
                return fx
            threads.append(str(body["id"]))
        path = f"/v1/threads/{threads[0]}/messages"
        for _ in range(LIST_SIZE):
            status, body = request(port, "POST", path, CREATE_BODY, headers, conn)
            if status != 200:
                fx.missing = f"POST {path} answered {status}: {body}"
                return fx
        status, body = request(
            port, "GET", f"{path}?limit={LIST_SIZE}", None, headers, conn
        )
        count = len(body.get("data", [])) if isinstance(body, dict) else 0
        if status != 200 or count != LIST_SIZE:
            fx.missing = f"GET {path} answered {status} with {count} messages"
            return fx
    finally:
        conn.close()
    fx.list_thread, *fx.create_threads = threads
    return fx


def scenarios_for(fx: Fixtures, wanted: list[str]) -> list[Scenario]:
    all_: list[Scenario] = [
        Scenario(
            "baseline",
            "baseline GET /bench/baseline",
            "GET",
            "/bench/baseline",
            authenticated=False,
        ),
        Scenario(
            "floor",
            "auth floor GET /v1/assistants (empty)",
            "GET",
            "/v1/assistants?limit=1",
        ),
    ]
    if fx.create_threads and fx.list_thread:
        create_paths = [f"/v1/threads/{t}/messages" for t in fx.create_threads]
        spread = len(create_paths)
        all_ += [
            Scenario(
                "create",
                "message create" + (f" ({spread} threads)" if spread > 1 else ""),
                "POST",
                create_paths[0],
                CREATE_BODY,
                more_paths=tuple(create_paths[1:]),
            ),
            Scenario(
                "list",
                f"message list ({LIST_SIZE})",
                "GET",
                f"/v1/threads/{fx.list_thread}/messages?limit={LIST_SIZE}",
            ),
        ]
    # The baseline again at the end: a drop shows load that arrived mid-run.
    all_.append(
        Scenario(
            "baseline2", "baseline again", "GET", "/bench/baseline", authenticated=False
        )
    )
    return [
        s
        for s in all_
        if s.key in wanted or (s.key == "baseline2" and "baseline" in wanted)
    ]


# --------------------------------------------------------------------------
# Load generators


@dataclass
class RunConfig:
    port: int
    clients: int
    duration: int
    warmup: int
    wrk_threads: int
    headers: dict[str, str]
    server_pid: int
    profile_dir: Path | None = None
    profile_stamp: str = ""


def py_spy() -> Path | None:
    """py-spy from the venv (``make`` does not put it on PATH) or from PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return beside
    found = shutil.which("py-spy")
    return Path(found) if found else None


@contextlib.contextmanager
def profiled(cfg: RunConfig, key: str, seconds: float) -> Iterator[None]:
    """py-spy samples the server while the measured window runs (--profile)."""
    if cfg.profile_dir is None:
        yield
        return
    name = f"profile-{cfg.profile_stamp}-c{cfg.clients}-{key}.txt"
    out = cfg.profile_dir / name
    spy = subprocess.Popen(
        [
            str(py_spy()),
            "record",
            "--pid",
            str(cfg.server_pid),
            "--subprocesses",
            "--duration",
            str(max(int(seconds), 1)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.terminate()
            spy.wait()


def run_wrk(s: Scenario, cfg: RunConfig) -> Result:
    url = f"http://{HOST}:{cfg.port}{s.path}"
    env = {
        **os.environ,
        "BENCH_METHOD": s.method,
        "BENCH_BODY": (s.body or b"").decode(),
        "BENCH_PATHS": " ".join(s.paths) if s.more_paths else "",
    }
    header_args: list[str] = []
    if s.authenticated:
        for name, value in cfg.headers.items():
            header_args += ["-H", f"{name}: {value}"]
    threads = max(1, min(cfg.wrk_threads, cfg.clients))

    def wrk(seconds: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                "wrk",
                f"-t{threads}",
                f"-c{cfg.clients}",
                f"-d{seconds}s",
                "--timeout",
                "10s",
                "-s",
                str(WRK_SCRIPT),
                *header_args,
                url,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    if cfg.warmup > 0:
        warm = wrk(cfg.warmup)
        warm.communicate()
    started = time.monotonic()
    proc = wrk(cfg.duration)
    try:
        # Sample the CPU inside the window, clear of connection set-up and
        # of wrk's exit.
        time.sleep(min(0.3, cfg.duration / 10))
        before = cpu_snapshot(cfg.server_pid)
        with profiled(cfg, s.key, cfg.duration - 1):
            time.sleep(max(started + cfg.duration - 0.3 - time.monotonic(), 0))
            after = cpu_snapshot(cfg.server_pid)
        out, _ = proc.communicate(timeout=cfg.duration + 30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    line = next((ln for ln in out.splitlines() if ln.startswith("BENCH_RESULT ")), "")
    if not line:
        raise RuntimeError(f"wrk printed no result for {s.label}:\n{out}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    seconds = raw["duration_us"] / 1e6
    return Result(
        key=s.key,
        label=s.label,
        method=s.method,
        path=s.path,
        client="wrk",
        requests=raw["requests"],
        seconds=round(seconds, 3),
        rps=round(raw["requests"] / seconds, 1),
        p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        mean_ms=round(raw["mean_us"] / 1000, 3),
        max_ms=raw["max_us"] / 1000,
        errors={k: v for k, v in raw["errors"].items() if v},
        cpu=cpu_use(before, after),
    )


def _client_process(
    port: int,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    start_ns: int,
    end_ns: int,
    out: Any,
) -> None:
    """One keep-alive connection, requests back to back until ``end_ns``.

    Only requests that start and finish inside [start_ns, end_ns] count;
    the ones before are the warm-up. CLOCK_MONOTONIC is system-wide, so the
    window is the same in every client process.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    latencies = array("q")
    errors: dict[str, int] = {}
    while True:
        t0 = time.monotonic_ns()
        if t0 >= end_ns:
            break
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            name = type(exc).__name__
            errors[name] = errors.get(name, 0) + 1
            conn.close()
            conn = http.client.HTTPConnection(HOST, port, timeout=30)
            continue
        t1 = time.monotonic_ns()
        if t0 < start_ns or t1 > end_ns:
            continue
        if status >= 400:
            errors["status"] = errors.get("status", 0) + 1
        else:
            latencies.append(t1 - t0)
    conn.close()
    out.put((latencies.tobytes(), errors))


def _percentile(ordered: list[int], p: float) -> int:
    """Nearest rank, as wrk reports it."""
    if not ordered:
        return 0
    return ordered[min(len(ordered) - 1, max(math.ceil(p / 100 * len(ordered)) - 1, 0))]


def run_python(s: Scenario, cfg: RunConfig) -> Result:
    # spawn, not fork: the parent has set Django up and held a database
    # connection; a fresh interpreter per client inherits none of that.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    headers = dict(cfg.headers) if s.authenticated else {}
    if s.body is not None:
        headers["Content-Type"] = "application/json"
    # Time for the interpreters to start; they warm up until start_ns anyway.
    slack = 1.0 + 0.2 * cfg.clients
    start_ns = time.monotonic_ns() + int((slack + cfg.warmup) * 1e9)
    end_ns = start_ns + cfg.duration * 1_000_000_000
    procs = [
        ctx.Process(
            target=_client_process,
            args=(cfg.port, s.method, path, s.body, headers, start_ns, end_ns, queue),
            daemon=True,
        )
        # Client i keeps to one path, so with one thread per client no two
        # clients post into the same thread.
        for path in (s.paths[i % len(s.paths)] for i in range(cfg.clients))
    ]
    try:
        for p in procs:
            p.start()
        edge = min(0.3, cfg.duration / 10)
        time.sleep(max(start_ns / 1e9 + edge - time.monotonic(), 0))
        before = cpu_snapshot(cfg.server_pid)
        with profiled(cfg, s.key, cfg.duration - 1):
            time.sleep(max(end_ns / 1e9 - edge - time.monotonic(), 0))
            after = cpu_snapshot(cfg.server_pid)
        # Drain before join: a child blocks on exit until its data is read.
        latencies: list[int] = []
        errors: dict[str, int] = {}
        for _ in procs:
            raw, errs = queue.get(timeout=60)
            latencies.extend(array("q", raw))
            for k, v in errs.items():
                errors[k] = errors.get(k, 0) + v
        for p in procs:
            p.join(timeout=10)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    latencies.sort()
    seconds = cfg.duration
    mean = sum(latencies) / len(latencies) if latencies else 0.0
    return Result(
        key=s.key,
        label=s.label,
        method=s.method,
        path=s.path,
        client="python",
        requests=len(latencies),
        seconds=float(seconds),
        rps=round(len(latencies) / seconds, 1),
        p50_ms=_percentile(latencies, 50) / 1e6,
        p95_ms=_percentile(latencies, 95) / 1e6,
        p99_ms=_percentile(latencies, 99) / 1e6,
        mean_ms=round(mean / 1e6, 3),
        max_ms=(latencies[-1] if latencies else 0) / 1e6,
        errors=errors,
        cpu=cpu_use(before, after),
    )


# --------------------------------------------------------------------------
# Report


def targets(results: dict[str, Result], clients: int) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: float, below: bool) -> None:
        met = None
        if value is not None:
            met = value < limit if below else value >= limit
            value = round(value, 3)
        checks.append({"target": name, "clients": clients, "value": value, "met": met})

    create, listing = results.get("create"), results.get("list")
    check(
        f"message create p50 < {CREATE_P50_MS:g} ms",
        create.p50_ms if create else None,
        CREATE_P50_MS,
        below=True,
    )
    check(
        f"message list ({LIST_SIZE}) p50 < {LIST_P50_MS:g} ms",
        listing.p50_ms if listing else None,
        LIST_P50_MS,
        below=True,
    )
    check(
        "message create req/s >= 1/3 of baseline",
        create.ratio if create else None,
        MIN_THROUGHPUT_RATIO,
        below=False,
    )
    check(
        f"message list ({LIST_SIZE}) req/s >= 1/3 of baseline",
        listing.ratio if listing else None,
        MIN_THROUGHPUT_RATIO,
        below=False,
    )
    return checks


def print_report(
    results: list[Result], checks: list[dict[str, Any]], baseline_rps: float
) -> None:
    """One concurrency level: figures, where the CPU went, the targets."""
    print(f"\n== {results[0].clients} concurrent client(s)")
    head = (
        f"{'scenario':<40} {'requests':>9} {'req/s':>8} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'p99 ms':>7} {'vs base':>8} {'errors':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else "-"
        print(
            f"{r.label:<40} {r.requests:>9} {r.rps:>8.1f} {r.p50_ms:>7.2f} "
            f"{r.p95_ms:>7.2f} {r.p99_ms:>7.2f} {ratio:>8} {r.error_count:>6}"
        )
    print(f"(vs base = req/s / {baseline_rps:.1f}, the mean of the two baseline runs)")
    print()
    print(
        f"CPU in the measured window, in cores (this machine has {os.cpu_count()}); "
        "'other' is load that is not this benchmark's:"
    )
    print(
        f"{'scenario':<40} {'machine':>7} {'server':>7} {'postgres':>8} "
        f"{'client':>7} {'other':>7} {'steal':>6} {'srv ms/req':>10} {'pg ms/req':>9}"
    )
    for r in results:
        c = r.cpu
        print(
            f"{r.label:<40} {c.machine:>7.2f} {c.server:>7.2f} {c.postgres:>8.2f} "
            f"{c.client:>7.2f} {c.other:>7.2f} {c.steal:>6.2f} "
            f"{r.cpu_ms_per_request(c.server):>10.2f} "
            f"{r.cpu_ms_per_request(c.postgres):>9.2f}"
        )
    print()
    print(f"targets at {results[0].clients} client(s):")
    for check in checks:
        if check["met"] is None:
            print(f"  {check['target']:<44} not measured")
        else:
            verdict = "met" if check["met"] else "MISSED"
            print(f"  {check['target']:<44} {check['value']:>8}  {verdict}")
    for r in results:
        if r.error_count:
            print(f"warning: {r.label}: {r.errors} (non-2xx or transport errors)")


def scenario_json(r: Result) -> dict[str, Any]:
    return {
        **asdict(r),
        "server_cpu_ms_per_request": round(r.cpu_ms_per_request(r.cpu.server), 3),
        "postgres_cpu_ms_per_request": round(r.cpu_ms_per_request(r.cpu.postgres), 3),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {"python": sys.version.split()[0]}
    for name in (
        "django",
        "djangorestframework",
        "uvicorn",
        "uvloop",
        "httptools",
        "psycopg",
        "orjson",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


# --------------------------------------------------------------------------
# Main


def _levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--clients",
        type=_levels,
        default=[8],
        help="concurrent keep-alive connections; a list such as 1,8 runs every "
        "scenario at each level (default 8)",
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=10,
        help="measured seconds per scenario (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        help="unmeasured seconds before each scenario (default 2)",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (default 1)"
    )
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator; auto = wrk when installed",
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads; one keeps the client off the server's cores (default 1)",
    )
    parser.add_argument(
        "--scenarios",
        default="baseline,floor,create,list",
        help="comma-separated subset of baseline,floor,create,list",
    )
    parser.add_argument(
        "--create-threads",
        type=int,
        default=1,
        help="threads the create scenario posts into, round-robin; 1 (default) "
        "makes every client queue on one thread's row lock",
    )
    # A candidate change can be measured without editing the platform: point
    # these at a module that wraps or overrides the real one.
    parser.add_argument(
        "--settings",
        default=SETTINGS_MODULE,
        help=f"settings module; must route /bench/baseline (default {SETTINGS_MODULE})",
    )
    parser.add_argument(
        "--app", default=ASGI_APP, help=f"ASGI application (default {ASGI_APP})"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record each scenario's server stacks with py-spy "
        "(raw collapsed stacks in bench/results/)",
    )
    args = parser.parse_args(argv)
    if args.create_threads < 1:
        parser.error("need --create-threads >= 1")
    if (
        min(args.clients) < 1
        or args.duration < 2
        or args.warmup < 0
        or args.workers < 1
    ):
        parser.error(
            "need --clients >= 1, --duration >= 2, --warmup >= 0, --workers >= 1"
        )
    if args.client == "auto":
        args.client = "wrk" if shutil.which("wrk") else "python"
    if args.client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), use --client python")
    if args.profile and py_spy() is None:
        parser.error("--profile needs py-spy on PATH (pip install py-spy)")
    return args


def _raise_interrupt(signum: int, _frame: object) -> None:
    # The launcher stops us with SIGTERM: unwind so the server is stopped too.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    load_before = os.getloadavg()
    print(
        f"[bench] load average before: {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )
    print("[bench] migrating", flush=True)
    migrate(args.settings)
    raw_key = tenant_create(args.settings)
    server = Server(
        workers=args.workers,
        app=args.app,
        settings=args.settings,
        log_path=data_dir / "bench-server.log",
    )
    results: list[Result] = []
    try:
        server.start()
        print(
            f"[bench] uvicorn pid {server.pid} on port {server.port} ({args.app}, "
            f"{args.settings}), {args.workers} worker(s); client {args.client}, "
            f"{args.warmup}s warm-up + {args.duration}s per scenario",
            flush=True,
        )
        fx = fixtures_create(server.port, raw_key, args.create_threads)
        if fx.missing:
            print(f"[bench] message scenarios skipped: {fx.missing}", flush=True)
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        runner = run_wrk if args.client == "wrk" else run_python
        for clients in args.clients:
            cfg = RunConfig(
                port=server.port,
                clients=clients,
                duration=args.duration,
                warmup=args.warmup,
                wrk_threads=args.wrk_threads,
                headers=fx.headers,
                server_pid=server.pid,
                profile_dir=RESULTS_DIR if args.profile else None,
                profile_stamp=stamp,
            )
            for scenario in scenarios_for(fx, args.scenarios.split(",")):
                print(
                    f"[bench] {clients} client(s), {scenario.label}: "
                    f"{scenario.method} {scenario.path}",
                    flush=True,
                )
                result = runner(scenario, cfg)
                result.clients = clients
                results.append(result)
    finally:
        server.stop()
    load_after = os.getloadavg()

    checks: list[dict[str, Any]] = []
    baseline_by_level: dict[int, float] = {}
    for clients in args.clients:
        level = [r for r in results if r.clients == clients]
        if not level:
            continue
        # Against the mean of the runs before and after: load that comes and
        # goes during the run moves both sides of the ratio alike.
        baselines = [r.rps for r in level if r.key in ("baseline", "baseline2")]
        baseline_rps = sum(baselines) / len(baselines) if baselines else 0.0
        baseline_by_level[clients] = round(baseline_rps, 1)
        for r in level:
            if baseline_rps and r.key not in ("baseline", "baseline2"):
                r.ratio = round(r.rps / baseline_rps, 3)
        level_checks = targets({r.key: r for r in level}, clients)
        checks += level_checks
        print_report(level, level_checks, baseline_rps)
    print(
        f"\nload average before: {load_before[0]:.2f} {load_before[1]:.2f} "
        f"{load_before[2]:.2f}, after: {load_after[0]:.2f} {load_after[1]:.2f} "
        f"{load_after[2]:.2f}"
    )

    out = RESULTS_DIR / f"api-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "started_at": stamp,
                "config": {
                    "clients": args.clients,
                    "duration_s": args.duration,
                    "warmup_s": args.warmup,
                    "workers": args.workers,
                    "settings": args.settings,
                    "app": args.app,
                    "client": args.client,
                    "wrk_threads": args.wrk_threads,
                    "create_threads": args.create_threads,
                },
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_before": load_before,
                    "load_after": load_after,
                },
                "versions": versions(),
                "baseline_rps": baseline_by_level,
                "scenarios": [scenario_json(r) for r in results],
                "targets": checks,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {out.relative_to(BASE_DIR)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
