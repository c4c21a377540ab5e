"""Django's PostgreSQL backend, with a pool health check that costs no round
trip for a connection that is evidently alive, and prepared statements for
the few hot queries that ask for them (``prepared_cursor``).

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

from django.conf import settings
from django.db.backends.postgresql import base, operations
from django.utils.asyncio import async_unsafe
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


class PreparedCursor(base.ServerBindingCursor):  # type: ignore[name-defined,misc]
    """Server-side binding, and every statement prepared: PostgreSQL plans it
    once per connection, and psycopg then sends only its name and values
    (psycopg keeps 100 per connection, least recently used first out)."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("prepare", True)
        return super().execute(query, params, **kwargs)  # type: ignore[misc]


class DatabaseOperations(operations.DatabaseOperations):
    def last_executed_query(self, cursor: Any, sql: str, params: Any) -> str:
        # A statement run prepared has no text on the cursor (psycopg sends
        # the prepared statement's name): the query log (assertNumQueries,
        # CaptureQueriesContext, DEBUG's logging) shows it as written.
        return str(super().last_executed_query(cursor, sql, params) or sql)


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

    @property
    def pool(self) -> Any:
        pool = super().pool
        # Django passes ConnectionPool.check_connection when
        # CONN_HEALTH_CHECKS is on, None when off; only the former changes.
        if pool is not None and pool._check is ConnectionPool.check_connection:
            pool._check = quick_check
        return pool

    @async_unsafe
    def prepared_cursor(self) -> Any:
        """A cursor (Django's wrapper: its errors, its query log) whose
        statements are prepared. For a query run on every request with the
        same text: PostgreSQL spent longer planning the API key lookup
        (0.34 ms) than running it (0.06 ms; pg_stat_statements over the runs
        benchmark). Django disables psycopg's automatic preparing for the
        sake of transaction-mode poolers (PgBouncer before 1.21 loses a
        prepared statement when the next transaction lands on another
        server connection); ``DB_PREPARED_STATEMENTS=false`` turns this off
        for them, and the cursor is a plain one."""
        if not getattr(settings, "DB_PREPARED_STATEMENTS", True):
            return self.cursor()
        self.close_if_health_check_failed()
        self.ensure_connection()
        with self.wrap_database_errors:
            cursor = PreparedCursor(self.connection)  # type: ignore[call-arg]
            return self._prepare_cursor(cursor)  # type: ignore[attr-defined]
