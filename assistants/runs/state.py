"""The run state machine: the only code that writes ``Run.status``.

Every change is a compare-and-swap UPDATE (``WHERE id = … AND status IN …``):
zero rows updated means someone else moved the run first (a cancel racing a
completion, two workers claiming one run), and the caller backs off. No
status is ever read, decided on, and written back in separate steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from assistants.models import Run, RunStatus

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
    **fields: Any,
) -> bool:
    """Move ``run_id`` from any of ``source`` to ``target``; True if we did.

    Sets the matching timestamp (``started_at`` once, on the first claim;
    ``completed_at``/``failed_at``/… on the terminal ones) and clears
    ``expires_at`` and ``required_action`` when leaving ``requires_action``.
    Extra ``fields`` are written in the same UPDATE.
    """
    sources = tuple(source)
    for src in sources:
        if target not in TRANSITIONS[src]:
            raise IllegalTransition(f"{src} → {target}")
    now = now or timezone.now()
    values: dict[str, Any] = {"status": target, **fields}
    if target == S.IN_PROGRESS:
        values.setdefault("started_at", Coalesce(F("started_at"), now))
    if target in _TIMESTAMP_FOR:
        values.setdefault(_TIMESTAMP_FOR[target], now)
    if target != S.REQUIRES_ACTION:
        values.setdefault("required_action", None)
        values.setdefault("expires_at", None)
    updated = Run.objects.filter(pk=run_id, status__in=sources).update(**values)
    return updated == 1
