"""The platform's process command lines, in one place.

``make run`` starts these, and so do the tests and benchmarks that run web
processes and Celery workers of their own (the live server, the scale-out
cluster, the restart drill, the load and runs benchmarks): a change of
flags reaches all of them at once.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

ASGI_APP = "config.asgi:application"


def web_command(
    port: int | str,
    *,
    host: str = "127.0.0.1",
    app: str = ASGI_APP,
    workers: int | str | None = None,
    access_log: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """uvicorn serving the ASGI application (no lifespan: Django has none)."""
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        host,
        "--port",
        str(port),
        "--lifespan",
        "off",
    ]
    if not access_log:
        argv.append("--no-access-log")
    if workers is not None:
        argv += ["--workers", str(workers)]
    return [*argv, *extra]


def worker_command(
    *,
    concurrency: int | str,
    hostname: str,
    loglevel: str = "INFO",
    queues: Sequence[str] = (),
    extra: Sequence[str] = (),
) -> list[str]:
    """A Celery worker of the ``config`` app.

    Without mingle and gossip: the platform uses neither revokes nor worker
    events (PostgreSQL holds a run's state), and both cost broker traffic and
    start-up time on every worker.
    """
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--loglevel",
        loglevel,
        "--concurrency",
        str(concurrency),
        "--without-mingle",
        "--without-gossip",
        "--hostname",
        hostname,
    ]
    if queues:
        argv += ["-Q", ",".join(queues)]
    return [*argv, *extra]


def worker_env(*, pool: str, concurrency: int | str) -> dict[str, str]:
    """The environment a worker started with ``worker_command`` needs for
    ``pool`` (``prefork`` or ``threads``): the settings size its database
    pool from these (config/settings/base.py), and Celery takes its pool
    from WORKER_POOL."""
    return {"WORKER_POOL": pool, "WORKER_CONCURRENCY": str(concurrency)}
