"""``python -m core.stack run|test|exec``: the platform in the foreground.

run    embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL are set)
       and the local model engine (unless MODEL_BASE_URL is set), migrations
       and bootstrap, then the ASGI server and a Celery worker.
test   the same services, then pytest with the given arguments.
exec   the same services, then any command (benchmarks, manage.py shells).

Ctrl-C or SIGTERM stops every child in order: web, worker, the local engine,
Redis, PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.stack.commands import web_command, worker_command, worker_env
from core.stack.engine import (
    CAPABILITIES,
    DEFAULT_ALIAS,
    EmbeddedEngine,
    engine_disabled,
    unavailable_reason,
)
from core.stack.postgres import EmbeddedPostgres
from core.stack.proc import die_with_parent, log
from core.stack.redis import EmbeddedRedis

BASE_DIR = Path(__file__).resolve().parent.parent.parent


class Stack:
    def __init__(self) -> None:
        self.data_dir = Path(
            os.environ.get("DATA_DIR", str(BASE_DIR / ".data"))
        ).resolve()
        self.postgres: EmbeddedPostgres | None = None
        self.redis: EmbeddedRedis | None = None
        self.engine: EmbeddedEngine | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = dict(os.environ)
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
        self.env["DATA_DIR"] = str(self.data_dir)
        self.stopping = False

    def start_services(self, *, tests: bool = False) -> None:
        """PostgreSQL, Redis and the local engine (started meanwhile).

        ``tests``: the engine is announced to pytest as AGENTS_ENGINE_* only,
        so that no test depends on an ambient MODEL_BASE_URL; and with
        AGENTS_REQUIRE_REAL_SERVICES=1 a missing engine is an error.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.clear_metrics()
        self.launch_engine(required=tests and _require_real_services(self.env))
        if not self.env.get("DATABASE_URL"):
            self.postgres = EmbeddedPostgres(self.data_dir)
            self.postgres.start()
            self.env["DATABASE_URL"] = self.postgres.url()
        else:
            log("using DATABASE_URL")
        if not self.env.get("REDIS_URL"):
            self.redis = EmbeddedRedis(self.data_dir)
            self.redis.start()
            self.env["REDIS_URL"] = self.redis.url
        else:
            log("using REDIS_URL")
        self.announce_engine(tests=tests)

    def clear_metrics(self) -> None:
        """Empty the Prometheus multi-process directory: files left by the
        processes of an earlier start would be summed into this one's
        (core/observability/metrics.py)."""
        directory = Path(
            self.env.get("PROMETHEUS_MULTIPROC_DIR")
            or self.data_dir / "prometheus" / socket.gethostname()
        )
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)

    def launch_engine(self, *, required: bool) -> None:
        """Start the local engine's process unless MODEL_BASE_URL names one.

        Without llama-cpp-python the platform still serves (runs then fail
        saying there is no engine) unless ``required``: then RuntimeError.
        """
        if self.env.get("MODEL_BASE_URL"):
            log("using MODEL_BASE_URL")
            return
        if engine_disabled(self.env):
            log("no local engine (AGENTS_ENGINE=off)")
            return
        reason = unavailable_reason()
        if reason is not None:
            if required:
                raise RuntimeError(f"no local engine: {reason}")
            log(
                f"WARNING: no local engine: {reason}. The API serves, but runs "
                "fail until a model engine is configured (MODEL_BASE_URL)."
            )
            return
        self.engine = EmbeddedEngine(
            self.data_dir,
            alias=self.env.get("DEFAULT_MODEL") or DEFAULT_ALIAS,
            context_window=int(self.env.get("MODEL_CONTEXT_WINDOW") or 8192),
        )
        if self.env.get("ENGINE_THREADS"):
            self.engine.threads = int(self.env["ENGINE_THREADS"])
        self.engine.launch()

    def announce_engine(self, *, tests: bool) -> None:
        """Wait for the local engine and tell the children where it is.

        Every command sees AGENTS_ENGINE_URL / AGENTS_ENGINE_CAPABILITIES /
        AGENTS_ENGINE_API_KEY (the real engine the tests exercise: the local
        one, or the first MODEL_BASE_URL). Outside tests the local engine is
        also registered as DEFAULT_MODEL through MODEL_BASE_URL and
        MODEL_CAPABILITIES.
        """
        if self.engine is not None:
            self.engine.wait_ready()
            exports = self.engine.exports()
            self.env["DEFAULT_MODEL"] = exports["DEFAULT_MODEL"]
            self.env["AGENTS_ENGINE_URL"] = exports["MODEL_BASE_URL"]
            self.env["AGENTS_ENGINE_CAPABILITIES"] = json.dumps(CAPABILITIES)
            self.env.pop("AGENTS_ENGINE_API_KEY", None)
            if not tests:
                self.env.update(exports)
        elif self.env.get("MODEL_BASE_URL"):
            first = self.env["MODEL_BASE_URL"].split(",")[0].strip()
            self.env.setdefault("AGENTS_ENGINE_URL", first)
            self.env.setdefault(
                "AGENTS_ENGINE_CAPABILITIES", self.env.get("MODEL_CAPABILITIES", "")
            )
            self.env.setdefault(
                "AGENTS_ENGINE_API_KEY", self.env.get("MODEL_API_KEY", "")
            )

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        own_session: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        log(f"starting {name}")
        proc = subprocess.Popen(
            argv,
            env={**self.env, **(env or {})},
            cwd=BASE_DIR,
            start_new_session=own_session,
            preexec_fn=die_with_parent(),
        )
        self.children.append((name, proc))

    def manage(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "manage.py", *args],
            env=self.env,
            cwd=BASE_DIR,
            check=True,
        )

    def stop(self) -> None:
        # A second SIGTERM (make forwards the one it got to us) or Ctrl-C must
        # not cut the shutdown short and leave PostgreSQL running; every step
        # below has its own timeout.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.stopping = True
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                log(f"stopping {name}")
                proc.terminate()
        for name, proc in reversed(self.children):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"{name} did not stop in 20s; killing it")
                proc.kill()
                proc.wait()
        # After web and worker (no run is mid-request any more), before the
        # stores.
        if self.engine:
            self.engine.stop()
        if self.redis:
            self.redis.stop()
        if self.postgres:
            self.postgres.stop()

    def wait_any(self) -> int:
        """Block until a child exits; return its code."""
        while True:
            for name, proc in self.children:
                code = proc.poll()
                if code is not None:
                    if not self.stopping:
                        log(f"{name} exited with {code}")
                    return code
            time.sleep(0.2)


def _install_signal_handlers() -> None:
    def handler(signum: int, _frame: object) -> None:
        # Ignore every later signal from here on, not only once stop() runs:
        # make forwards the SIGTERM it got, and a second KeyboardInterrupt
        # landing before stop() would cut the shutdown short and leave
        # PostgreSQL and Redis running. stop() bounds every step itself.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run(stack: Stack) -> int:
    host = stack.env.get("HOST", "127.0.0.1")
    port = stack.env.get("PORT", "8000")
    stack.start_services()
    stack.manage("bootstrap")
    stack.spawn(
        "web",
        web_command(port, host=host, workers=stack.env.get("WEB_CONCURRENCY", "1")),
    )
    # Runs (and summaries, the reaper) on threads: a run waits on the engine
    # most of its time, so one process holds many. Ingestion (parsing and
    # embeddings, CPU-bound) in processes of its own, as in deploy/.
    for role, queues, pool, variable, default in (
        ("runs", ["runs", "celery"], "threads", "WORKER_CONCURRENCY", "16"),
        ("ingestion", ["ingestion"], "prefork", "INGESTION_CONCURRENCY", "1"),
    ):
        count = stack.env.get(variable, default)
        stack.spawn(
            f"{role} worker",
            worker_command(
                concurrency=count,
                hostname=f"{role}-{os.getpid()}@%h",
                loglevel=stack.env.get("LOG_LEVEL", "INFO").upper(),
                queues=queues,
            ),
            env=worker_env(pool=pool, concurrency=count),
        )
    log(f"API at http://{host}:{port}/v1  (docs: http://{host}:{port}/docs/)")
    return stack.wait_any()


def _require_real_services(env: dict[str, str]) -> bool:
    return env.get("AGENTS_REQUIRE_REAL_SERVICES") == "1"


def execute(stack: Stack, argv: list[str], *, tests: bool = False) -> int:
    stack.start_services(tests=tests)
    # Same process group as us: Ctrl-C reaches pytest directly, and we clean
    # up the services once it has finished.
    stack.spawn("command", argv, own_session=False)
    return stack.wait_any()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"run", "test", "exec"}:
        print(__doc__, file=sys.stderr)
        return 2
    _install_signal_handlers()
    stack = Stack()
    try:
        if argv[0] == "run":
            return run(stack)
        if argv[0] == "test":
            stack.env["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
            return execute(
                stack, [sys.executable, "-m", "pytest", *argv[1:]], tests=True
            )
        rest = argv[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return execute(stack, rest)
    except KeyboardInterrupt:
        return 0 if argv[0] == "run" else 130
    except subprocess.CalledProcessError as exc:
        log(f"{' '.join(map(str, exc.cmd))} failed with {exc.returncode}")
        return exc.returncode or 1
    except RuntimeError as exc:
        log(f"cannot start: {exc}")
        return 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
