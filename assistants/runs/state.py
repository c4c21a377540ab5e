"""The run state machine: the only code that writes ``Run.status``.

Every change is a compare-and-swap UPDATE (``WHERE id = … AND status IN …``):
zero rows updated means someone else moved the run first (a cancel racing a
completion, two workers claiming one run), and the caller backs off. No
status is ever read, decided on, and written back in separate steps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from assistants.models import Run, RunStatus
from core.db import (
    Sql,
    Statement,
    columns,
    execute,
    from_row,
    update_sql,
    write_together,
)
from core.observability import metrics

S = RunStatus

# Which statuses each status may move to. The reaper's re-queue of a run
# whose worker died is IN_PROGRESS → QUEUED; submitting tool outputs is
# REQUIRES_ACTION → QUEUED.
TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.IN_PROGRESS, S.CANCELLED, S.FAILED, S.EXPIRED}),
    S.IN_PROGRESS: frozenset(
        {S.REQUIRES_ACTION, S.CANCELLING, S.COMPLETED, S.FAILED, S.INCOMPLETE, S.QUEUED}
    ),
    S.REQUIRES_ACTION: frozenset({S.QUEUED, S.CANCELLED, S.EXPIRED, S.FAILED}),
    S.CANCELLING: frozenset({S.CANCELLED, S.FAILED}),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
    S.COMPLETED: frozenset(),
    S.INCOMPLETE: frozenset(),
    S.EXPIRED: frozenset(),
}

_TIMESTAMP_FOR: dict[str, str] = {
    S.CANCELLED: "cancelled_at",
    S.FAILED: "failed_at",
    S.COMPLETED: "completed_at",
    S.INCOMPLETE: "incomplete_at",
}


class IllegalTransition(Exception):
    pass


def transition(
    run_id: str,
    *,
    source: Iterable[str],
    target: str,
    now: datetime | None = None,
    together: Sequence[Statement] = (),
    **fields: Any,
) -> bool:
    """Move ``run_id`` from any of ``source`` to ``target``; True if we did.

    Sets the matching timestamp (``started_at`` once, on the first claim;
    ``completed_at``/``failed_at``/… on the terminal ones) and clears
    ``expires_at`` and ``required_action`` when leaving ``requires_action``.
    Extra ``fields`` are written in the same UPDATE; the writes in
    ``together`` (``core.db`` statements: the step's message and step rows)
    go in the same statement, so they happen whether or not the run moved,
    atomically with it, in one round trip.
    """
    update = _update(run_id, source=source, target=target, now=now, fields=fields)
    updated = write_together(together, update)
    metrics.run_transition(run_id, target, moved=updated == 1)
    return updated == 1


@dataclass
class Claim:
    run: Run
    # The rows of each of ``claim``'s ``reads``, in order.
    reads: list[list[tuple[Any, ...]]]


def claim(run_id: str, *, worker: str, reads: Sequence[Statement] = ()) -> Claim | None:
    """queued → in_progress for ``worker``, returning the claimed run.

    The same compare-and-swap as ``transition``, with ``RETURNING`` so that
    the worker gets the row from the UPDATE itself instead of reading it
    again: one statement fewer on every run step. ``reads`` (SELECTs) go in
    the same round trip, after the UPDATE and in its transaction, so they
    see the claimed run (``context.prefetch_reads``). None when the run was
    not queued (another worker has it, or it ended or was cancelled
    meanwhile).
    """
    now = timezone.now()
    sql, params = _update(
        run_id,
        source=[S.QUEUED],
        target=S.IN_PROGRESS,
        now=now,
        fields={"worker": worker, "heartbeat_at": now, "attempts": Sql("{col} + 1")},
    )
    sql = f"{sql} RETURNING {columns(Run)}"
    params = list(params)
    for read_sql, read_params in reads:
        sql += f"; {read_sql}"
        params.extend(read_params)
    # Not durable: a claim lost in a PostgreSQL crash leaves the run queued,
    # and the reaper sends its wake-up again.
    with execute(sql, params, durable=False) as cursor:
        row = cursor.fetchone()
        rows: list[list[tuple[Any, ...]]] = []
        for _read in reads:
            cursor.nextset()
            rows.append(cursor.fetchall())
    metrics.run_transition(run_id, S.IN_PROGRESS, moved=row is not None)
    if row is None:
        return None
    [run] = from_row([Run], row)
    assert isinstance(run, Run)
    return Claim(run=run, reads=rows)


def _update(
    run_id: str,
    *,
    source: Iterable[str],
    target: str,
    now: datetime | None,
    fields: dict[str, Any],
) -> Statement:
    """The compare-and-swap UPDATE of one transition."""
    sources = tuple(source)
    for src in sources:
        if target not in TRANSITIONS[src]:
            raise IllegalTransition(f"{src} → {target}")
    now = now or timezone.now()
    values: dict[str, Any] = {"status": target, **fields}
    if target == S.IN_PROGRESS:
        values.setdefault("started_at", Sql("COALESCE({col}, %s)", (now,)))
    if target in _TIMESTAMP_FOR:
        values.setdefault(_TIMESTAMP_FOR[target], now)
    if target != S.REQUIRES_ACTION:
        values.setdefault("required_action", None)
        values.setdefault("expires_at", None)
    return update_sql(Run, run_id, values, where_in=("status", sources))
