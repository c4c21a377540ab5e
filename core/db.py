"""Several writes in one statement: one round trip, one implicit transaction.

A run step writes two or three rows at a time (the answer's message, its
step, the run's status). Through the ORM that was BEGIN, a statement per
row and COMMIT: four or five round trips, each about 0.5 ms of latency and
CPU on both sides. PostgreSQL runs data-modifying statements in ``WITH`` as
part of one statement, atomically, so the same writes go in one.

The statements are written here rather than compiled by Django's query
machinery, which cost 150-300 us of CPU per statement on this hot path
(more than PostgreSQL spent executing it). Values are prepared by each
field exactly as ``save()`` and ``update()`` prepare them
(``pre_save``, ``get_db_prep_save``: defaults, ``auto_now``, JSON
adaptation); a column with a database default and no value is left to the
database. Signals are not sent; none of the models written this way has
receivers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connections
from django.db.models import Model
from django.db.models.expressions import DatabaseDefault

Statement = tuple[str, Sequence[Any]]


@dataclass(frozen=True)
class Sql:
    """A value written as SQL: ``{col}`` stands for the column itself
    (``Sql("{col} + 1")``, ``Sql("COALESCE({col}, %s)", (now,))``)."""

    template: str
    params: tuple[Any, ...] = ()


def _quote(name: str) -> str:
    return f'"{name}"'


def _column(field: Any) -> str:
    """A concrete field's quoted column."""
    column = field.column
    if not column:
        raise ValueError(f"{field} has no column")
    return _quote(column)


def insert_sql(obj: Model, *, using: str = "default") -> Statement:
    """The INSERT of ``obj`` (its concrete fields; its pk set already)."""
    connection = connections[using]
    meta = obj._meta
    names: list[str] = []
    params: list[Any] = []
    for field in meta.local_concrete_fields:
        if field.generated:
            continue
        value = field.pre_save(obj, add=True)
        if isinstance(value, DatabaseDefault):
            continue  # the column's DEFAULT (a sequence, for seq)
        names.append(_column(field))
        params.append(field.get_db_prep_save(value, connection=connection))
    holes = ", ".join(["%s"] * len(names))
    return (
        f"INSERT INTO {_quote(meta.db_table)} ({', '.join(names)}) VALUES ({holes})",
        params,
    )


def update_sql(
    model: type[Model],
    pk: Any,
    values: dict[str, Any],
    *,
    where_in: tuple[str, Sequence[Any]] | None = None,
    using: str = "default",
) -> Statement:
    """``UPDATE`` the row ``pk`` of ``model`` with ``values`` (field names to
    values or ``Sql``), only if field ``where_in[0]`` is one of
    ``where_in[1]`` when given (a compare-and-swap)."""
    connection = connections[using]
    meta = model._meta
    sets: list[str] = []
    params: list[Any] = []
    for name, value in values.items():
        field: Any = meta.get_field(name)
        column = _column(field)
        if isinstance(value, Sql):
            sets.append(f"{column} = " + value.template.format(col=column))
            params.extend(value.params)
        else:
            sets.append(f"{column} = %s")
            params.append(field.get_db_prep_save(value, connection=connection))
    where = f"{_column(meta.pk)} = %s"
    params.append(pk)
    if where_in is not None:
        name, allowed = where_in
        holes = ", ".join(["%s"] * len(allowed))
        # ``IS TRUE``: the same test for a NOT NULL column, but not one the
        # planner can match to an index. With a plain ``IN`` it picked a
        # partial index on the status (the runs' reaper index: estimated one
        # row, smaller than the primary key) and walked every active run,
        # dead index entries included, to find this one: 0.4 ms and ~570
        # buffers for a claim on the runs benchmark's table, growing with the
        # runs in flight, against 0.05 ms and 4 buffers by primary key.
        where += f" AND ({_column(meta.get_field(name))} IN ({holes})) IS TRUE"
        params.extend(allowed)
    return f"UPDATE {_quote(meta.db_table)} SET {', '.join(sets)} WHERE {where}", params


# Prefixed to a write whose loss in a PostgreSQL crash costs nothing but a
# retry: its commit does not wait for the WAL to reach the disk (0.35 ms at
# the median here, 4 ms at the 95th percentile). A later durable commit on
# the same server flushes it too, so it is lost only if PostgreSQL itself
# crashes within the WAL writer's delay (about 0.2-0.6 s) of it. The two
# statements form one implicit transaction, so SET LOCAL covers the write.
_NOT_DURABLE = "SET LOCAL synchronous_commit = off; "


def execute(
    sql: str, params: Sequence[Any], *, durable: bool = True, using: str = "default"
) -> Any:
    """Run one statement on a new cursor, returned positioned on its result
    (close it after use). ``durable=False``: see ``_NOT_DURABLE``."""
    cursor = connections[using].cursor()
    if durable:
        cursor.execute(sql, params)
    else:
        cursor.execute(_NOT_DURABLE + sql, params)
        cursor.nextset()  # past SET's result, to the write's
    return cursor


def write_together(
    first: Sequence[Statement],
    last: Statement,
    *,
    durable: bool = True,
    using: str = "default",
) -> int:
    """Run ``first`` and ``last`` as one statement (``first`` as WITH parts);
    all or none of them take effect. Returns ``last``'s row count, as
    ``QuerySet.update`` does, so a compare-and-swap in ``last`` still tells
    whether it matched. ``durable=False`` for writes a retry recovers (see
    ``_NOT_DURABLE``)."""
    sql = last[0]
    if first:
        parts = ", ".join(f"w{i} AS ({part})" for i, (part, _) in enumerate(first))
        sql = f"WITH {parts} {sql}"
    params: list[Any] = [p for _, ps in (*first, last) for p in ps]
    with execute(sql, params, durable=durable, using=using) as cursor:
        return int(cursor.rowcount)


def _insert_select(obj: Model, *, using: str) -> Statement:
    """``insert_sql`` as ``INSERT … SELECT <values>``, for the FROM or WHERE
    that decides whether the row goes in."""
    sql, params = insert_sql(obj, using=using)
    head, _, values = sql.partition(" VALUES ")
    return f"{head} SELECT {values[1:-1]}", params


def insert_under_lock(obj: Model, lock: Statement, *, using: str = "default") -> bool:
    """INSERT ``obj`` only if ``lock`` (a SELECT of one row) finds its row,
    holding that row's lock (``FOR UPDATE``) for the statement: one round
    trip and one implicit transaction where BEGIN, SELECT … FOR UPDATE,
    INSERT and COMMIT took four. False when the row was not found (nothing
    inserted)."""
    insert, params = _insert_select(obj, using=using)
    with execute(
        f"WITH lock AS ({lock[0]} FOR UPDATE) {insert} FROM lock",
        [*lock[1], *params],
        using=using,
    ) as cursor:
        inserted = int(cursor.rowcount) == 1
    if inserted:
        _inserted(obj, using)
    return inserted


def insert_after_lock(
    obj: Model, lock: Statement, unless: Statement, *, using: str = "default"
) -> bool | None:
    """INSERT ``obj`` under the row lock of ``lock`` (a SELECT of one row)
    unless ``unless`` (a SELECT) finds a row, as one transaction sent in one
    round trip: ``BEGIN; lock FOR UPDATE; INSERT … WHERE EXISTS (lock) AND
    NOT EXISTS (unless); COMMIT`` (the ORM's BEGIN, lock, check, INSERT and
    COMMIT took five).

    Two statements, not one with the lock in a CTE: in READ COMMITTED a
    statement reads with the snapshot it began with, so a check in the
    statement that waited for the lock would not see what the lock's
    previous holder committed (a run started on the thread meanwhile). The
    INSERT begins once the lock is held: its snapshot has it.

    True when inserted; False when not (the row is missing or ``unless``
    found one: the caller asks which); None, having done nothing, inside a
    transaction (BEGIN and COMMIT would be the caller's).
    """
    connection = connections[using]
    if connection.in_atomic_block or not connection.get_autocommit():
        return None
    insert, params = _insert_select(obj, using=using)
    text = (
        f"BEGIN; {lock[0]} FOR UPDATE; {insert} "
        f"WHERE EXISTS ({lock[0]}) AND NOT EXISTS ({unless[0]}); COMMIT"
    )
    cursor = connection.cursor()
    try:
        cursor.execute(text, [*lock[1], *params, *lock[1], *unless[1]])
        cursor.nextset()  # past BEGIN's result, to the lock's
        cursor.nextset()  # to the INSERT's
        inserted = int(cursor.rowcount) == 1
    except BaseException:
        # The statements after a failed one were skipped: the transaction
        # is still open (aborted) on the server. End it before the
        # connection serves anyone else (a connection that broke cannot,
        # and is discarded anyway).
        with contextlib.suppress(Exception):
            cursor.execute("ROLLBACK")
        cursor.close()
        raise
    cursor.close()
    if inserted:
        _inserted(obj, using)
    return inserted


def insert_together(
    *objs: Model,
    also: Sequence[Statement] = (),
    durable: bool = True,
    using: str = "default",
) -> None:
    """INSERT ``objs`` in one statement (with the writes ``also``, whose
    results are not read). PostgreSQL runs its parts in no set order, so
    values drawn from a sequence (``seq``) do not follow the argument
    order. (Foreign keys are checked at commit: Django makes them
    deferrable, so a row may point at another of the same statement.)"""
    statements = [insert_sql(obj, using=using) for obj in objs]
    write_together(
        [*also, *statements[:-1]], statements[-1], durable=durable, using=using
    )
    for obj in objs:
        _inserted(obj, using)


def _inserted(obj: Model, using: str) -> None:
    obj._state.adding = False
    obj._state.db = using
    # Values the database chose are not known here: deferred, so that
    # reading one loads it and a later save() does not overwrite it.
    for field in obj._meta.concrete_fields:
        if isinstance(obj.__dict__.get(field.attname), DatabaseDefault):
            del obj.__dict__[field.attname]


def columns(model: type[Model], alias: str = "") -> str:
    """The SELECT list of ``model``'s concrete fields, in ``from_row`` order."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{_column(f)}" for f in model._meta.concrete_fields)


def from_row(
    models: Sequence[type[Model]], row: Sequence[Any], *, using: str = "default"
) -> list[Model]:
    """Instances of ``models`` from one raw row holding each model's
    ``columns`` in turn, with the fields' database converters (JSON
    decoding) applied as a query would."""
    connection = connections[using]
    found: list[Model] = []
    at = 0
    for model in models:
        fields = model._meta.concrete_fields
        values = []
        for field, value in zip(fields, row[at : at + len(fields)], strict=True):
            for convert in field.get_db_converters(connection):
                value = convert(value, field, connection)
            values.append(value)
        at += len(fields)
        found.append(model.from_db(using, [f.attname for f in fields], values))
    return found


_SELECT_ONE: dict[tuple[type[Model], tuple[str, ...]], str] = {}


def select_one(
    model: type[Model], *, using: str = "default", **equals: Any
) -> Model | None:
    """The row of ``model`` whose columns equal ``equals`` (attnames:
    ``project_id``, not ``project``), or None: ``.filter(**equals)[:1]``
    for the lookups every retrieve starts with, without the ORM's query
    compilation (~0.7 ms of CPU here per lookup, five times PostgreSQL's
    own time for it). The statement text is built once per model and
    set of columns."""
    keys = tuple(sorted(equals))
    sql = _SELECT_ONE.get((model, keys))
    if sql is None:
        by_attname = {f.attname: f for f in model._meta.concrete_fields}
        where = " AND ".join(f"{_column(by_attname[k])} = %s" for k in keys)
        sql = (
            f"SELECT {columns(model)} FROM {_quote(model._meta.db_table)} "
            f"WHERE {where} LIMIT 1"
        )
        _SELECT_ONE[(model, keys)] = sql
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [equals[k] for k in keys])
        row = cursor.fetchone()
    return None if row is None else from_row([model], row, using=using)[0]


def prepared_cursor(using: str = "default") -> Any:
    """A cursor whose statements PostgreSQL plans once per connection
    (``core.postgres``; a plain cursor with ``DB_PREPARED_STATEMENTS`` off).
    For single statements of fixed text run on every request: each distinct
    text takes one of the 100 places psycopg keeps per connection."""
    connection = connections[using]
    prepared = getattr(connection, "prepared_cursor", None)
    return prepared() if prepared is not None else connection.cursor()


def release_connection(using: str = "default") -> None:
    """Give the thread's database connection back to the pool while it will
    not be needed for a while (a stream to a client, an engine call); the
    next query takes one again. Only a pooled connection is given back
    (closing a persistent one would just cost a reconnect), and never inside
    a transaction."""
    connection = connections[using]
    if connection.settings_dict.get("OPTIONS", {}).get("pool") and not (
        connection.in_atomic_block
    ):
        connection.close()
