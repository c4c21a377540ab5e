"""Per-key request rate limits: GCRA in Redis, answered like OpenAI.

Each API key has two buckets: run creation (creating a run, creating a
thread and run, submitting tool outputs: each of these starts a model call)
and everything else. A bucket of ``limit`` per minute admits a burst of
``limit`` requests and then one every ``60/limit`` seconds (the generic cell
rate algorithm: one Redis key per bucket holding the "theoretical arrival
time", updated by one Lua script, so one round trip per request and no
window-boundary double bursts).

Limits come from the key, then its project's ``ProjectLimits``, then the
settings; 0 means unlimited. They are cached per process for
``LIMITS_CACHE_SECONDS``, so an admin edit applies within that time.

Every limited response carries OpenAI's ``x-ratelimit-limit-requests``,
``x-ratelimit-remaining-requests`` and ``x-ratelimit-reset-requests``
headers; a refusal is a 429 with ``Retry-After`` (and ``retry-after-ms``,
which the openai SDK prefers). When Redis is unreachable the limiter lets
requests through and logs (at most once a minute): an outage of the
limiter must not become an outage of the API.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from core.auth import Principal
from core.errors import RequestRateLimitError
from core.models import ApiKey
from core.ttlcache import TtlCache

logger = logging.getLogger(__name__)

PERIOD_SECONDS = 60.0
LIMITS_CACHE_SECONDS = 5.0
# The request attribute the header middleware reads.
REQUEST_ATTR = "_agents_ratelimit"

# POST on these paths starts model work: the "runs" bucket.
_RUN_PATHS = re.compile(
    r"^/v1/threads/(?:runs|[^/]+/runs|[^/]+/runs/[^/]+/submit_tool_outputs)/?$"
)

# KEYS[1]: the bucket. ARGV: period (s), limit. Redis' own clock, so web
# processes on different hosts agree. Floats go back as strings (Lua
# numbers are truncated to integers on the way out).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local period = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, tostring(allow_at - now), tostring(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000))
local remaining = math.floor((now - allow_at) / interval + 1e-9)
return {1, remaining, '0', tostring(new_tat - now)}
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    retry_after: float  # seconds until one more request is admitted
    reset: float  # seconds until the bucket is full again

    def headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(self.limit),
            "x-ratelimit-remaining-requests": str(self.remaining),
            "x-ratelimit-reset-requests": format_duration(self.reset),
        }


def format_duration(seconds: float) -> str:
    """OpenAI's spelling of a reset time: ``120ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{seconds:.3g}s"
    minutes, rest = divmod(int(math.ceil(seconds)), 60)
    return f"{minutes}m{rest}s"


class _Script:
    """The GCRA script, registered once per Redis client."""

    def __init__(self) -> None:
        self._scripts: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, conn: redis.Redis, key: str, limit: int) -> list[Any]:
        script = self._scripts.get(id(conn))
        if script is None:
            with self._lock:
                script = self._scripts.setdefault(id(conn), conn.register_script(_GCRA))
        result: list[Any] = script(keys=[key], args=[PERIOD_SECONDS, limit])
        return result


_gcra = _Script()


def bucket_take(*, bucket: str, limit: int) -> Decision:
    """Take one request from ``bucket`` (``limit`` per minute, burst
    ``limit``). Raises redis errors to the caller."""
    from assistants.runs.events import client

    allowed, remaining, retry_after, reset = _gcra(client(), bucket, limit)
    return Decision(
        allowed=bool(allowed),
        limit=limit,
        remaining=int(remaining),
        retry_after=float(retry_after),
        reset=float(reset),
    )


# --- limits of a key --------------------------------------------------------

_limits: TtlCache[str, tuple[int | None, int | None]] = TtlCache(LIMITS_CACHE_SECONDS)


def _overrides(key_id: str) -> tuple[int | None, int | None]:
    """(requests, runs) per minute for the key: its own, else its project's."""
    value = _limits.get(key_id, lambda: _overrides_of(key_id))
    assert value is not None
    return value


def _overrides_of(key_id: str) -> tuple[int | None, int | None]:
    row = (
        ApiKey.objects.filter(pk=key_id)
        .values_list(
            "requests_per_minute",
            "runs_per_minute",
            "project__limits__requests_per_minute",
            "project__limits__runs_per_minute",
        )
        .first()
    )
    if row is None:
        return (None, None)
    key_requests, key_runs, project_requests, project_runs = row
    return (
        key_requests if key_requests is not None else project_requests,
        key_runs if key_runs is not None else project_runs,
    )


def limits_for(key_id: str) -> tuple[int, int]:
    """(requests, runs) per minute that apply to ``key_id``; 0 = unlimited."""
    requests, runs = _overrides(key_id)
    return (
        int(settings.RATE_LIMIT_REQUESTS_PER_MINUTE) if requests is None else requests,
        int(settings.RATE_LIMIT_RUNS_PER_MINUTE) if runs is None else runs,
    )


def limits_cache_clear() -> None:
    _limits.clear()


def is_run_start(method: str, path: str) -> bool:
    return method == "POST" and bool(_RUN_PATHS.match(path))


_last_outage_log = 0.0


def _log_outage(exc: Exception) -> None:
    global _last_outage_log
    now = time.monotonic()
    if now - _last_outage_log >= 60:
        _last_outage_log = now
        logger.warning("rate limiter unavailable, letting requests through: %s", exc)


class KeyRateThrottle(BaseThrottle):
    """DRF throttle: the caller's key against its bucket for this request.

    Runs after authentication and permissions, so only authenticated
    projects are counted (a 401 costs nothing).
    """

    def allow_request(self, request: Request, view: Any) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return True
        requests_limit, runs_limit = limits_for(principal.api_key.id)
        runs = is_run_start(request.method or "", request.path)
        limit = runs_limit if runs else requests_limit
        if limit <= 0:
            return True
        kind = "runs" if runs else "requests"
        try:
            decision = bucket_take(
                bucket=f"agents:rl:{kind}:{principal.api_key.id}", limit=limit
            )
        except redis.RedisError as exc:
            _log_outage(exc)
            return True
        setattr(request._request, REQUEST_ATTR, decision)
        if decision.allowed:
            return True
        wait = max(decision.retry_after, 0.001)
        what = "run creations" if runs else "requests"
        raise RequestRateLimitError(
            f"Rate limit reached for {what} per min (RPM) on this API key: "
            f"Limit {limit}, Used {limit}, Requested 1. Please try again in "
            f"{format_duration(wait)}.",
            headers={
                "Retry-After": str(max(1, math.ceil(wait))),
                "retry-after-ms": str(max(1, math.ceil(wait * 1000))),
            },
        )


def add_headers(request: HttpRequest, response: Any) -> None:
    """Copy the request's rate-limit decision onto its response."""
    decision = getattr(request, REQUEST_ATTR, None)
    if isinstance(decision, Decision):
        for name, value in decision.headers().items():
            response[name] = value
