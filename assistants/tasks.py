"""Celery tasks: they take ids and orchestrate; the work is in assistants.runs.

Both are safe to run twice: the executor claims with a compare-and-swap and
the reaper's every move is one.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import kombu.exceptions
import redis.exceptions
from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import connection

from assistants.engine import EngineError
from assistants.runs import events
from assistants.runs.executor import run_execute
from assistants.runs.memory import thread_summarize
from assistants.runs.reaper import runs_reap
from core import taskqueue
from core.errors import is_outage
from tools.services.file import files_expire_due
from tools.services.filter_index import (
    filter_indexes_build_due,
    filter_indexes_drop_idle,
)
from tools.services.upload import uploads_expire_due
from tools.services.vector_store import vector_stores_expire_due
from tools.tasks import preload_in_background

logger = logging.getLogger(__name__)


@shared_task(
    name="runs.execute",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,  # the outcome is the run row, not a task result
    # No autoretry: a run's retries are the reaper's, after a heartbeat stops.
    soft_time_limit=1800,
    time_limit=1860,
)
def run_execute_task(run_id: str) -> None:
    try:
        run_execute(run_id)
    except Exception as exc:
        if not is_outage(exc):
            raise
        # PostgreSQL went away before the claim (or Redis under it): the run
        # is still queued or has a stale heartbeat, and the reaper takes it up.
        logger.warning("run %s: left to the reaper, %s", run_id, exc)


def run_wake(run_id: str, *, announce: list[tuple[str, Any]] | None = None) -> bool:
    """Send ``run_id``'s wake-up to a worker, after the run's ``announce``
    events; False if the broker is away.

    Callers have already committed the queued run: PostgreSQL is the source
    of truth, so an unreachable broker does not fail the request. The reaper
    re-sends the wake-up of a run still queued after
    RUN_REQUEUE_AFTER_SECONDS, which covers a wake-up never sent as well as
    one Redis lost in a restart.

    With the default broker (the events' Redis) the events and the task's
    message go in one round trip (``core.taskqueue``).
    """
    if taskqueue.direct_possible():
        if events.publish_many(
            run_id,
            announce or [],
            also=lambda pipe: taskqueue.push(pipe, run_execute_task, (run_id,)),
        ):
            return True
        # Redis refused the round trip (or is known to be away): the events
        # are dropped; try the broker once more through Celery below.
    elif announce:
        events.publish_many(run_id, announce)
    try:
        run_execute_task.delay(run_id)
    except (kombu.exceptions.OperationalError, redis.exceptions.RedisError) as exc:
        logger.warning("run %s: wake-up not sent, broker unavailable: %s", run_id, exc)
        return False
    return True


@shared_task(
    name="threads.summarize",
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


@shared_task(name="runs.reap", ignore_result=True, time_limit=120)
def runs_reap_task() -> dict[str, int]:
    return vars(runs_reap())


class _ReaperThread(threading.Thread):
    """Runs the reaper every REAPER_INTERVAL_SECONDS inside each worker.

    In the worker, not in a separate beat process: a deployment cannot forget
    to run it, and with several workers every move is still a compare-and-
    swap, so sweeping twice is harmless.
    """

    # How often the idle filter indexes are looked for: a rule of days
    # needs no check every sweep.
    IDLE_CHECK_SECONDS = 3600.0

    def __init__(self) -> None:
        super().__init__(name="runs-reaper", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        interval = float(settings.REAPER_INTERVAL_SECONDS)
        idle_checked = -math.inf
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
                # Filter index builds whose task died or was never sent,
                # and automatic ones no search uses any more.
                filter_indexes_build_due()
                if time.monotonic() - idle_checked >= self.IDLE_CHECK_SECONDS:
                    filter_indexes_drop_idle()
                    idle_checked = time.monotonic()
            except Exception as exc:
                if is_outage(exc):
                    # PostgreSQL or Redis is restarting: the next sweep
                    # catches up; a traceback every second would bury the log.
                    logger.warning("reaper sweep skipped: %s", exc)
                else:
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


@worker_ready.connect
def _preload_embeddings(sender: Any = None, **_kwargs: Any) -> None:
    """The embedding model, loaded in the background where tasks run in this
    process (a prefork pool's children each load their own as they start:
    tools.tasks)."""
    pool = getattr(sender, "pool", None)
    in_process = type(pool).__module__ in (
        "celery.concurrency.thread",
        "celery.concurrency.solo",
    )
    if in_process:
        preload_in_background()


@worker_shutdown.connect
def _stop_reaper(**_kwargs: Any) -> None:
    if _reaper is not None:
        _reaper.stopped.set()
