"""Heartbeats of the runs a worker process holds: one thread, one UPDATE.

While a worker executes a run it stamps the run's ``heartbeat_at`` every
RUN_HEARTBEAT_SECONDS; the reaper re-queues runs whose stamp went stale (the
worker died). One thread per process stamps every run the process holds in
one statement. A thread per run cost a thread start on every run step and,
for any run longer than the interval, a new PostgreSQL connection (a new
backend process) for its first stamp.
"""

from __future__ import annotations

import logging
import os
import threading

from django.conf import settings
from django.db import connection
from django.utils import timezone

from assistants.models import Run, RunStatus

logger = logging.getLogger(__name__)


class _Heartbeats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, str] = {}  # run id → worker identity
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def hold(self, run_id: str, worker: str) -> None:
        """Stamp ``run_id`` for ``worker`` until ``release``. The claim has
        just stamped it, so the first stamp comes one interval later."""
        with self._lock:
            self._held[run_id] = worker
            if self._thread is None or self._pid != os.getpid():
                # First use in this process (or in a forked child, which
                # inherits the parent's object but not its thread).
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._loop, name="run-heartbeats", daemon=True
                )
                self._thread.start()

    def release(self, run_id: str) -> None:
        with self._lock:
            self._held.pop(run_id, None)

    def held(self) -> dict[str, str]:
        with self._lock:
            return dict(self._held)

    def _loop(self) -> None:
        while True:
            self._wake.wait(float(settings.RUN_HEARTBEAT_SECONDS))
            self._wake.clear()
            held = self.held()
            if not held:
                # An idle worker holds no PostgreSQL connection for this.
                connection.close()
                continue
            try:
                self.stamp(held)
            except Exception:  # never let a hiccup end the heartbeats
                logger.exception("run heartbeats failed")
                connection.close()

    @staticmethod
    def stamp(held: dict[str, str]) -> int:
        """One UPDATE for every held run still active under its worker."""
        now = timezone.now()
        stamped = 0
        for worker in set(held.values()):
            ids = [run_id for run_id, w in held.items() if w == worker]
            stamped += Run.objects.filter(
                pk__in=ids,
                worker=worker,
                status__in=[RunStatus.IN_PROGRESS, RunStatus.CANCELLING],
            ).update(heartbeat_at=now)
        return stamped


heartbeats = _Heartbeats()
