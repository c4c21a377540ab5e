"""Celery hooks: the request id travels in the task message's headers.

``before_task_publish`` (in the process that enqueues: a web request's
thread, on commit) copies the current request id into the message;
``task_prerun`` (in the worker process) binds it, and the run id of a
``runs.execute`` task, for every log line the task writes; the executor
then sends the run's request id to the engine as ``X-Request-Id``.
``setup_logging`` gives the worker the same log format as the web.

Imported by ``config.celery`` before Django is set up: Django is imported
lazily inside the handlers.
"""

from __future__ import annotations

import logging
import logging.config
from typing import Any

from celery.signals import (
    before_task_publish,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
)

from core.observability import context

logger = logging.getLogger("agents.tasks")

HEADER = "agents_request_id"
# Tasks whose first argument is a run id.
_RUN_TASKS = frozenset({"runs.execute"})


@before_task_publish.connect
def _add_request_id(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = context.request_id.get()
    if request_id and headers is not None and HEADER not in headers:
        headers[HEADER] = request_id


@task_prerun.connect
def _bind(task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    if task is None:
        return
    request_id = str(task.request.get(HEADER) or "")
    run_id = ""
    if task.name in _RUN_TASKS:
        if args:
            run_id = str(args[0])
        elif kwargs:
            run_id = str(kwargs.get("run_id") or "")
    # One task at a time per worker process (or thread): set, and cleared
    # after the task, rather than a token kept across two signals.
    context.request_id.set(request_id)
    context.run_id.set(run_id)
    logger.info("task %s[%s] started", task.name, task.request.id)


@task_postrun.connect
def _unbind(task: Any = None, state: str | None = None, **_: Any) -> None:
    if task is not None:
        logger.info("task %s[%s] ended: %s", task.name, task.request.id, state)
    context.request_id.set("")
    context.run_id.set("")


@setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """The web's LOGGING, at the worker's ``--loglevel``; connecting at all
    stops Celery from replacing the root logger's handlers with its own."""
    from django.conf import settings

    from core.observability.logs import logging_config

    level = (
        logging.getLevelName(loglevel)
        if isinstance(loglevel, int)
        else str(loglevel or settings.LOG_LEVEL).upper()
    )
    logging.config.dictConfig(
        logging_config(level=level, fmt=getattr(settings, "LOG_FORMAT", "text"))
    )


@worker_init.connect
def _serve_metrics(**_: Any) -> None:
    """With METRICS_PORT set, the worker's main process serves its processes'
    series at ``http://METRICS_ADDR:METRICS_PORT/metrics`` (a worker pod has
    no web process to scrape). Started before the pool forks: the thread
    stays in the main process."""
    from django.conf import settings

    port = int(getattr(settings, "METRICS_PORT", 0) or 0)
    if port:
        from core.observability.exporter import serve

        addr = str(getattr(settings, "METRICS_ADDR", "127.0.0.1"))
        serve(addr=addr, port=port)
        logger.info("metrics at http://%s:%s/metrics", addr, port)


@worker_process_shutdown.connect
def _forget_process(pid: int | None = None, **_: Any) -> None:
    from core.observability import metrics

    metrics.process_exited(pid)
