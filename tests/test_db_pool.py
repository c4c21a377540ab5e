"""core.postgres: the pool's health check costs no round trip for a live
idle connection and still catches one whose server went away."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from django.db import connection, connections
from psycopg_pool import ConnectionPool

from core.postgres.base import DatabaseWrapper, quick_check

pytestmark = pytest.mark.django_db(transaction=True)


def _params() -> dict[str, Any]:
    params = dict(connection.get_connection_params())
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real = ConnectionPool.check_connection

    def counted(conn: Any) -> None:
        calls.append(conn)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(counted))
    return calls


def test_a_live_idle_connection_passes_without_a_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting(monkeypatch)
    with psycopg.connect(**_params(), autocommit=True) as conn:
        conn.execute("SELECT 1").fetchall()
        quick_check(conn)
        assert calls == []  # no round trip


def test_a_terminated_connection_fails_the_check_and_the_pool_replaces_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = _counting(monkeypatch)
    pool = ConnectionPool(
        kwargs={**_params(), "autocommit": True},
        min_size=1,
        max_size=1,
        check=quick_check,
        open=True,
    )
    try:
        with pool.connection() as conn:
            victim = conn.info.backend_pid
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [victim])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the FATAL reaches the socket
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [victim]
                )
                if cursor.fetchone()[0] == 0:
                    break
            time.sleep(0.05)
        with pool.connection() as conn:
            # A new connection, working; the dead one failed the real check.
            assert conn.execute("SELECT 1").fetchone() == (1,)
            assert conn.info.backend_pid != victim
        assert calls, "the dead connection was checked with a query"
        with pytest.raises(psycopg.OperationalError):
            ConnectionPool.check_connection(calls[0])
    finally:
        pool.close()


def test_djangos_pool_gets_the_quick_check() -> None:
    settings = {
        **connection.settings_dict,
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            **connection.settings_dict.get("OPTIONS", {}),
            "pool": {"min_size": 1, "max_size": 2},
        },
    }
    wrapper = DatabaseWrapper(settings, alias="quick_check_test")
    try:
        assert wrapper.pool._check is quick_check
    finally:
        wrapper.close_pool()
    assert type(connections["default"]) is DatabaseWrapper
