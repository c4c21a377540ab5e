"""Celery tasks: they take ids and orchestrate; the work is in assistants.runs.

Both are safe to run twice: the executor claims with a compare-and-swap and
the reaper's every move is one.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import connection

from assistants.engine import EngineError
from assistants.runs.executor import run_execute
from assistants.runs.memory import thread_summarize
from assistants.runs.reaper import runs_reap
from tools.services.file import files_expire_due
from tools.services.upload import uploads_expire_due
from tools.services.vector_store import vector_stores_expire_due

logger = logging.getLogger(__name__)


@shared_task(
    name="runs.execute",
    queue="runs",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,  # the outcome is the run row, not a task result
    # No autoretry: a run's retries are the reaper's, after a heartbeat stops.
    soft_time_limit=1800,
    time_limit=1860,
)
def run_execute_task(run_id: str) -> None:
    run_execute(run_id)


@shared_task(
    name="threads.summarize",
    queue="celery",
    ignore_result=True,
    # Summaries are an optimisation: a failure is logged, never retried in a
    # loop, and the next due run asks again.
    soft_time_limit=600,
    time_limit=660,
)
def thread_summarize_task(thread_id: str, model_id: str, budget: int) -> None:
    try:
        thread_summarize(thread_id=thread_id, model_id=model_id, budget=budget)
    except EngineError as exc:
        logger.warning("summarizing thread %s failed: %s", thread_id, exc.message)


@shared_task(name="runs.reap", queue="runs", ignore_result=True, time_limit=120)
def runs_reap_task() -> dict[str, int]:
    return vars(runs_reap())


class _ReaperThread(threading.Thread):
    """Runs the reaper every REAPER_INTERVAL_SECONDS inside each worker.

    In the worker, not in a separate beat process: a deployment cannot forget
    to run it, and with several workers every move is still a compare-and-
    swap, so sweeping twice is harmless.
    """

    def __init__(self) -> None:
        super().__init__(name="runs-reaper", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = float(settings.REAPER_INTERVAL_SECONDS)
        while not self.stopped.wait(interval):
            try:
                report = runs_reap()
                if any(vars(report).values()):
                    logger.info("reaper: %s", vars(report))
                # Expired uploads, files and vector stores: the same sweep,
                # the same safety (each move is a conditional UPDATE).
                uploads_expire_due()
                files_expire_due()
                vector_stores_expire_due()
            except Exception:
                logger.exception("reaper sweep failed")
            finally:
                connection.close()


_reaper: _ReaperThread | None = None


@worker_ready.connect
def _start_reaper(**_kwargs: Any) -> None:
    global _reaper
    if _reaper is None:
        _reaper = _ReaperThread()
        _reaper.start()


@worker_shutdown.connect
def _stop_reaper(**_kwargs: Any) -> None:
    if _reaper is not None:
        _reaper.stopped.set()
