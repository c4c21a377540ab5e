"""Daily run quotas, counted in Redis so every web process shares them.

Anonymous visitors are counted per IP (overall and per listing), signed-in
visitors per user; a listing's ``daily_run_limit`` caps what the public may
start in total. The owner's own chats are never counted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings

from assistants.runs.events import client
from core.errors import RateLimitError
from store.models import Listing

DAY_SECONDS = 24 * 3600


def _day() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


def quota_consume(
    *, listing: Listing, user_id: int | None, ip: str, is_owner: bool
) -> None:
    """Count one run against every limit that applies, or raise
    RateLimitError (and count nothing) when one is exhausted."""
    if is_owner:
        return
    day = _day()
    limits: list[tuple[str, int]] = []
    if listing.daily_run_limit is not None:
        limits.append((f"store:q:{day}:listing:{listing.pk}", listing.daily_run_limit))
    if user_id is None:
        limits.append((f"store:q:{day}:ip:{ip}", settings.STORE_ANON_RUNS_PER_IP))
        limits.append(
            (
                f"store:q:{day}:ip:{ip}:listing:{listing.pk}",
                settings.STORE_ANON_RUNS_PER_IP_LISTING,
            )
        )
    else:
        limits.append(
            (f"store:q:{day}:user:{user_id}", settings.STORE_USER_RUNS_PER_DAY)
        )
    redis = client()
    pipe = redis.pipeline(transaction=False)
    for key, _ in limits:
        pipe.incr(key)
        # The key names the day, so re-arming the expiry only delays the
        # cleanup of a stale counter (EXPIRE NX needs Redis 7).
        pipe.expire(key, DAY_SECONDS)
    counts = pipe.execute()[0::2]
    if any(count > limit for count, (_, limit) in zip(counts, limits, strict=True)):
        # Give the unit back everywhere: a refused run consumes nothing.
        undo = redis.pipeline(transaction=False)
        for key, _ in limits:
            undo.decr(key)
        undo.execute()
        raise RateLimitError(
            "This assistant has reached its usage limit for today. "
            "Try again tomorrow, or sign in.",
            code="quota_exceeded",
        )
