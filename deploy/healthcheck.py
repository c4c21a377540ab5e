"""Container health checks: ``entrypoint.sh healthcheck ROLE``.

Exit 0 when healthy, 1 otherwise, printing why. Cheap on purpose (Docker runs
them every few seconds): none imports Django.

web                 GET /readyz on the local port (database, Redis, engine)
worker              the local Celery node answers a ping over the broker
broker              Redis (CELERY_BROKER_URL / REDIS_URL) answers PING (beat)
postgres / redis    the local services of compose.local.yaml accept queries
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request

TIMEOUT = float(os.environ.get("HEALTHCHECK_TIMEOUT", "4"))


def web() -> str:
    port = os.environ.get("PORT", "8000")
    path = sys.argv[2] if len(sys.argv) > 2 else "/readyz"
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=TIMEOUT
        ) as response:
            return f"{path}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"{path}: HTTP {exc.code} {exc.read()[:500]!r}") from exc


def _broker_url() -> str:
    return os.environ.get("CELERY_BROKER_URL") or os.environ.get(
        "REDIS_URL", "redis://127.0.0.1:6379/0"
    )


def worker() -> str:
    # The node names entrypoint.sh gives: runs@<hostname>, ingestion@<hostname>.
    # A bare Celery app on the broker, not `celery -A config inspect`: that
    # would import Django and every app (tens of seconds on a busy host) for
    # a ping the worker answers over the broker anyway.
    from celery import Celery

    node = f"{sys.argv[2] if len(sys.argv) > 2 else 'runs'}@{socket.gethostname()}"
    app = Celery("healthcheck", broker=_broker_url())
    try:
        replies = app.control.ping(destination=[node], timeout=TIMEOUT)
    finally:
        app.close()
    if not any(node in reply for reply in replies):
        raise SystemExit(f"{node}: no pong within {TIMEOUT:.0f}s ({replies})")
    return f"{node}: pong"


def broker() -> str:
    import redis

    redis.Redis.from_url(_broker_url(), socket_timeout=TIMEOUT).ping()
    return "broker: PONG"


def postgres() -> str:
    import psycopg

    password = os.environ.get("POSTGRES_PASSWORD", "")
    user = os.environ.get("POSTGRES_USER", "agents")
    with psycopg.connect(
        host="127.0.0.1",
        user=user,
        password=password,
        dbname=os.environ.get("POSTGRES_DB", "agents"),
        connect_timeout=int(TIMEOUT),
    ) as connection:
        connection.execute("SELECT 1")
    return "postgres: ok"


def redis_server() -> str:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, socket_timeout=TIMEOUT).ping()
    return "redis: PONG"


CHECKS = {
    "web": web,
    "worker": worker,
    "broker": broker,
    "postgres": postgres,
    "redis": redis_server,
}

if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else "web"
    if role not in CHECKS:
        raise SystemExit(f"unknown check {role!r}; one of {sorted(CHECKS)}")
    try:
        print(CHECKS[role]())
    except SystemExit:
        raise
    except Exception as exc:
        raise SystemExit(f"{role}: {type(exc).__name__}: {exc}") from exc
