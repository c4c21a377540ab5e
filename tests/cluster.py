"""Several web processes and Celery workers on loopback, for the scale-out,
observability and load tests: each started exactly as ``make run`` starts
it (uvicorn ``config.asgi:application``; ``celery -A config worker``),
against the test database and Redis, in a process group of its own so a
test can SIGKILL a whole worker (main process and pool children at once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from core.stack.commands import web_command, worker_command, worker_env
from core.stack.proc import free_port

BASE_DIR = Path(__file__).resolve().parent.parent


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    log_start: int
    port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What this process wrote since it started."""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode("utf-8", "replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to the whole process group (a worker's pool children too)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
        self.popen.wait(timeout=30)


@dataclass
class Cluster:
    env: dict[str, str]
    log_dir: Path
    procs: list[Proc] = field(default_factory=list)

    def _spawn(
        self,
        name: str,
        argv: list[str],
        port: int = 0,
        extra_env: dict[str, str] | None = None,
    ) -> Proc:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        start = log_path.stat().st_size if log_path.exists() else 0
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv,
                cwd=BASE_DIR,
                env={**self.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path, start, port, dict(extra_env or {}))
        self.procs.append(proc)
        return proc

    def web(self, name: str) -> Proc:
        port = free_port()
        proc = self._spawn(
            name,
            web_command(port),
            port,
        )
        deadline = time.monotonic() + 90
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{name} exited; see {proc.log_path}")
            try:
                if httpx.get(f"{proc.url}/healthz", timeout=2).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer; see {proc.log_path}")
            time.sleep(0.2)

    def worker(
        self,
        name: str,
        *,
        concurrency: int = 1,
        pool: str = "prefork",
        extra_env: dict[str, str] | None = None,
    ) -> Proc:
        proc = self._spawn(
            name,
            worker_command(
                concurrency=concurrency, hostname=f"{name}-{os.getpid()}@%h"
            ),
            extra_env={
                **worker_env(pool=pool, concurrency=concurrency),
                **(extra_env or {}),
            },
        )
        deadline = time.monotonic() + 90
        while " ready." not in proc.log():
            if proc.popen.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{name} did not start; see {proc.log_path}")
            time.sleep(0.2)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                os.killpg(proc.popen.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _session_workers() -> list[int]:
    """Celery workers this pytest process started (the suite's session-wide
    ``live_worker``), with their pool children."""
    table: dict[int, tuple[int, bytes]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        table[int(entry)] = (ppid, cmdline)
    mains = [
        pid
        for pid, (ppid, cmd) in table.items()
        if ppid == os.getpid() and b"celery" in cmd and b"worker" in cmd
    ]
    children = [pid for pid, (ppid, _) in table.items() if ppid in mains]
    return mains + children


@contextmanager
def other_workers_paused() -> Iterator[None]:
    """SIGSTOP the suite's other workers meanwhile (SIGCONT after): they
    consume the same queues and their reapers re-send the same runs'
    wake-ups, so a test that asserts which worker ran what must be alone."""
    paused = _session_workers()
    for pid in paused:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in paused:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
