"""Several writes in one statement: one round trip, one implicit transaction.

A run step writes two or three rows at a time (the answer's message, its
step, the run's status). Through the ORM that was BEGIN, a statement per
row and COMMIT: four or five round trips, each about 0.5 ms of latency and
CPU on both sides. PostgreSQL runs data-modifying statements in ``WITH`` as
part of one statement, atomically, so the same writes go in one.

The SQL of each write comes from Django's own compilers (``insert_sql``,
``update_sql``), so field preparation (defaults, ``auto_now``, JSON
adaptation, expressions such as ``F()``) is exactly what ``save()`` and
``update()`` do. Post-save signals are not sent; none of the models written
this way has receivers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections, router
from django.db.models import Model, QuerySet
from django.db.models.sql import InsertQuery, UpdateQuery

Statement = tuple[str, Sequence[Any]]


def insert_sql(obj: Model) -> Statement:
    """The INSERT of ``obj`` (all concrete fields, its pk set already)."""
    model = type(obj)
    using = router.db_for_write(model, instance=obj)
    fields = [f for f in model._meta.local_concrete_fields if not f.generated]
    query = InsertQuery(model)
    query.insert_values(fields, [obj])
    [(sql, params)] = query.get_compiler(using=using).as_sql()
    return sql, params


def update_sql(queryset: QuerySet[Any], values: dict[str, Any]) -> Statement:
    """The UPDATE that ``queryset.update(**values)`` would run."""
    query = queryset.query.chain(UpdateQuery)
    assert isinstance(query, UpdateQuery)
    query.add_update_values(values)
    compiler = query.get_compiler(queryset.db)
    compiler.pre_sql_setup()
    sql, params = compiler.as_sql()
    return sql, params


def write_together(
    first: Sequence[Statement], last: Statement, *, using: str = "default"
) -> int:
    """Run ``first`` and ``last`` as one statement (``first`` as WITH parts);
    all or none of them take effect. Returns ``last``'s row count, as
    ``QuerySet.update`` does, so a compare-and-swap in ``last`` still tells
    whether it matched."""
    sql = last[0]
    if first:
        parts = ", ".join(f"w{i} AS ({part})" for i, (part, _) in enumerate(first))
        sql = f"WITH {parts} {sql}"
    params: list[Any] = [p for _, ps in (*first, last) for p in ps]
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def insert_together(*objs: Model, using: str = "default") -> None:
    """INSERT ``objs`` in one statement, in order (foreign keys between them
    are checked at the end of the statement, so a later row may point at an
    earlier one only when the constraint is deferrable, as Django makes
    them)."""
    statements = [insert_sql(obj) for obj in objs]
    write_together(statements[:-1], statements[-1], using=using)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = using


def columns(model: type[Model], alias: str = "") -> str:
    """The SELECT list of ``model``'s concrete fields, in ``from_row`` order."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{f.column}"' for f in model._meta.concrete_fields)


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
