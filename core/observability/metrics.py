"""Prometheus metrics and the hooks that move them.

Every hook is a few dictionary operations and an mmap write: no I/O, no
query, safe on the hot path. Values that need a query (runs by status,
queue depth, ingestion backlog) are computed at scrape time instead
(``collectors``).

Multi-process mode: web processes and Celery worker processes each write
their own files under ``PROMETHEUS_MULTIPROC_DIR`` (set by the settings
before this module is imported, since prometheus_client reads it at import
time) and ``/metrics`` sums them. The directory must be emptied when the
deployment starts (a fresh ``emptyDir``/tmpfs; ``core.stack`` does it).
"""

from __future__ import annotations

import os
import threading
import time

# The directory must exist before the first metric is created below.
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if _MULTIPROC_DIR:
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

from prometheus_client import Counter, Gauge, Histogram  # noqa: E402

HTTP_REQUEST_SECONDS = Histogram(
    "agents_http_request_duration_seconds",
    "Time to the response (its headers, for a stream), by URL pattern.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RUN_TRANSITIONS = Counter(
    "agents_run_transitions_total",
    "Run status changes made, by the status entered.",
    ["status"],
)
RUN_SECONDS = Histogram(
    "agents_run_duration_seconds",
    "From a worker's claim of a run to the end of that execution (a final "
    "status, or requires_action), by the status it ended in.",
    ["status"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
)
PROMPT_TOKENS = Counter(
    "agents_engine_prompt_tokens_total",
    "Prompt tokens sent to the engine (reported, or estimated when not).",
    ["model"],
)
COMPLETION_TOKENS = Counter(
    "agents_engine_completion_tokens_total",
    "Tokens the engine generated (reported, or estimated when not).",
    ["model"],
)
CACHE_REPORTED_PROMPT_TOKENS = Counter(
    "agents_engine_cache_reported_prompt_tokens_total",
    "Prompt tokens of engine calls that reported their cached tokens (the "
    "denominator of the prompt-cache hit ratio).",
    ["model"],
)
CACHED_PROMPT_TOKENS = Counter(
    "agents_engine_cached_prompt_tokens_total",
    "Prompt tokens the engine served from its prefix cache.",
    ["model"],
)
VECTOR_SEARCHES = Counter(
    "agents_vector_searches_total",
    "Vector rankings by the plan that answered them: exact, hnsw, or "
    "hnsw+resume / hnsw+exact when the graph walk came back short (a filter "
    "that follows the content: a filter index serves it).",
    ["plan"],
)
SANDBOX_SESSIONS = Gauge(
    "agents_sandbox_sessions",
    "Code-interpreter sessions held by worker processes: active (serving a "
    "thread) or pooled (started ahead of use).",
    ["state"],
    # Summed over live processes: a stopped worker's sessions drop out.
    multiprocess_mode="livesum",
)

# Statuses that end an execution stretch on a worker (the run leaves
# in_progress for good, or waits for tool outputs).
_STRETCH_ENDS = frozenset(
    {"completed", "failed", "cancelled", "incomplete", "expired", "requires_action"}
)
# Claims are remembered per process until the stretch ends; a run that ends
# in another process (the reaper's) leaves its entry, hence the bound.
_MAX_CLAIMS = 10_000
_claims: dict[str, float] = {}
_claims_lock = threading.Lock()


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_REQUEST_SECONDS.labels(method, route, str(status)).observe(seconds)


def run_transition(run_id: str, target: str, *, moved: bool) -> None:
    """After a compare-and-swap on a run's status (``moved``: it won)."""
    if moved:
        RUN_TRANSITIONS.labels(target).inc()
    if target == "in_progress":
        if moved:
            with _claims_lock:
                if len(_claims) >= _MAX_CLAIMS:
                    _claims.clear()
                _claims[run_id] = time.monotonic()
        return
    if target in _STRETCH_ENDS:
        with _claims_lock:
            started = _claims.pop(run_id, None)
        if moved and started is not None:
            RUN_SECONDS.labels(target).observe(time.monotonic() - started)


def vector_search(plan: str) -> None:
    VECTOR_SEARCHES.labels(plan).inc()


def engine_usage(
    model: str, prompt_tokens: int, completion_tokens: int, cached: int | None
) -> None:
    """One engine call's usage; ``cached`` None when the engine did not say."""
    PROMPT_TOKENS.labels(model).inc(max(prompt_tokens, 0))
    COMPLETION_TOKENS.labels(model).inc(max(completion_tokens, 0))
    if cached is not None:
        CACHE_REPORTED_PROMPT_TOKENS.labels(model).inc(max(prompt_tokens, 0))
        CACHED_PROMPT_TOKENS.labels(model).inc(max(cached, 0))


def sandbox_sessions(active: int, pooled: int) -> None:
    """The sandbox manager's callback after its sessions or pool change."""
    SANDBOX_SESSIONS.labels("active").set(active)
    SANDBOX_SESSIONS.labels("pooled").set(pooled)


def process_exited(pid: int | None = None) -> None:
    """Drop a stopped process's live gauges (its counters stay counted)."""
    if not _MULTIPROC_DIR:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid(), _MULTIPROC_DIR)
