"""Per-project token budgets (daily and monthly), set in admin.

The database is the truth: a project's usage is the sum of its runs'
``usage.total_tokens`` (prompt + completion) over the runs created in the
current UTC day or month. That sum is cached in Redis for
``QUOTA_USAGE_CACHE_SECONDS`` so that a busy project costs one query per
few seconds, not one per run; with Redis down it is read from the database
every time. Nothing is counted twice and nothing is lost on a restart,
since the runs themselves hold the usage.

Budgets are checked where model work starts: at run creation (a 429
``insufficient_quota`` before anything is written or enqueued) and by the
worker before each model call of a run (the run then fails with
``last_error.code = "rate_limit_exceeded"``). A run that crosses the budget
during a model call finishes that call: usage is only known afterwards.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import redis
from django.conf import settings
from django.db.models import BigIntegerField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from core.errors import InsufficientQuotaError
from core.models import ProjectLimits
from core.ttlcache import TtlCache

logger = logging.getLogger(__name__)

BUDGETS_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Budgets:
    daily: int  # tokens; 0 = unlimited
    monthly: int

    @property
    def unlimited(self) -> bool:
        return self.daily <= 0 and self.monthly <= 0


_budgets: TtlCache[str, Budgets] = TtlCache(BUDGETS_CACHE_SECONDS)


def budgets_of(project_id: str) -> Budgets:
    """The project's budgets, cached per process for a few seconds."""

    def load() -> Budgets:
        row = (
            ProjectLimits.objects.filter(project_id=project_id)
            .values_list("daily_token_budget", "monthly_token_budget")
            .first()
        )
        return Budgets(*(row or (0, 0)))

    budgets = _budgets.get(project_id, load)
    assert budgets is not None
    return budgets


def budgets_cache_clear() -> None:
    _budgets.clear()


def _period_starts(now: datetime) -> tuple[datetime, datetime]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day.replace(day=1)


def tokens_used_since(*, project_id: str, since: datetime) -> int:
    """Prompt + completion tokens of the project's runs created since
    ``since``, from the database."""
    from assistants.models import Run

    total = (
        Run.objects.filter(project_id=project_id, created_at__gte=since)
        .exclude(usage__isnull=True)
        .aggregate(
            tokens=Sum(Cast(KT("usage__total_tokens"), output_field=BigIntegerField()))
        )["tokens"]
    )
    return int(total or 0)


def _cached_usage(*, project_id: str, since: datetime, label: str) -> int:
    from assistants.runs.events import client

    key = f"agents:quota:{project_id}:{label}"
    ttl = float(settings.QUOTA_USAGE_CACHE_SECONDS)
    try:
        cached = client().get(key) if ttl > 0 else None
    except redis.RedisError as exc:
        logger.warning("quota cache unavailable: %s", exc)
        return tokens_used_since(project_id=project_id, since=since)
    if cached is not None:
        return int(cast(bytes, cached))
    used = tokens_used_since(project_id=project_id, since=since)
    if ttl > 0:
        try:
            client().set(key, used, px=max(1, int(ttl * 1000)))
        except redis.RedisError as exc:
            logger.warning("quota cache unavailable: %s", exc)
    return used


def quota_exhausted(*, project_id: str) -> str | None:
    """Why the project may not start model work now, or None.

    Free when the project has no budget (one cached lookup)."""
    budgets = budgets_of(project_id)
    if budgets.unlimited:
        return None
    now = datetime.now(UTC)
    day, month = _period_starts(now)
    checks = (
        (budgets.daily, day, f"d{day:%Y%m%d}", "daily"),
        (budgets.monthly, month, f"m{month:%Y%m}", "monthly"),
    )
    for budget, since, label, name in checks:
        if budget <= 0:
            continue
        used = _cached_usage(project_id=project_id, since=since, label=label)
        if used >= budget:
            return (
                f"You exceeded your project's {name} token budget ({used} of "
                f"{budget} tokens used). Ask an administrator to raise it, or "
                f"wait until the {name} budget resets (UTC)."
            )
    return None


def quota_require(*, project_id: str) -> None:
    """Raise InsufficientQuotaError (429) when a budget is spent."""
    problem = quota_exhausted(project_id=project_id)
    if problem is not None:
        raise InsufficientQuotaError(problem)
