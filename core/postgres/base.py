"""Django's PostgreSQL backend, with a pool health check that costs no round
trip for a connection that is evidently alive.

With ``CONN_HEALTH_CHECKS`` Django gives its psycopg pool
``ConnectionPool.check_connection``: an empty query on every checkout, so
every request and every run claim paid one extra round trip to PostgreSQL
before its first real one (5 % of a web process's samples under the load
benchmark; each round trip also waits for a PostgreSQL backend to be
scheduled on a busy machine). ``quick_check`` asks the kernel instead: an
idle connection has nothing to read, while one whose server went away
(restart, ``pg_terminate_backend``, a crash) has its FATAL message or the
end of stream waiting on the socket. Only then is the empty query sent,
and it fails as before, so the pool replaces the connection. A connection
that died silently (a network path gone, no FIN) is caught by its first
real query instead, as it would be between the check and that query.
"""

from __future__ import annotations

import select
from typing import Any

from django.db.backends.postgresql import base
from psycopg import OperationalError
from psycopg_pool import ConnectionPool

_PENDING = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


def quick_check(conn: Any) -> None:
    """A pool check: quiet for a live idle connection, raises otherwise."""
    try:
        fd = conn.pgconn.socket
    except OperationalError:
        raise
    except Exception as exc:  # closed: psycopg raises its own errors here
        raise OperationalError(f"connection is closed: {exc}") from exc
    poller = select.poll()
    poller.register(fd, _PENDING)
    if poller.poll(0):
        # Something arrived on an idle connection: most likely the server's
        # goodbye. The real check decides (and raises if it is broken).
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    @property
    def pool(self) -> Any:
        pool = super().pool
        # Django passes ConnectionPool.check_connection when
        # CONN_HEALTH_CHECKS is on, None when off; only the former changes.
        if pool is not None and pool._check is ConnectionPool.check_connection:
            pool._check = quick_check
        return pool
