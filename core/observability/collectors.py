"""What ``/metrics`` computes when it is scraped.

Per-process series come from the multi-process files (or this process's
registry when multi-process mode is off); the rest is read at scrape time
from PostgreSQL and Redis, so the hot paths pay nothing for it: runs by
status (non-terminal only: terminal ones only grow, their rate is in
``agents_run_transitions_total``), Celery queue depths, the ingestion
backlog, and the prompt-cache hit ratio derived from the token counters.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import redis
from django.conf import settings
from django.db.models import Count
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from assistants.models import ACTIVE_RUN_STATUSES, Run
from tools.models import VectorStoreFile

logger = logging.getLogger(__name__)

# Scrapes must stay fast when a dependency is not: short socket timeouts.
REDIS_TIMEOUT_SECONDS = 1.0
# kombu's Redis transport keeps a queue's messages of priority p in the list
# ``<queue>`` (p = 0) or ``<queue>\x06\x16<p>`` (default steps 3, 6, 9).
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


class _DerivedRatio:
    """The prompt-cache hit ratio per model, from the two token counters."""

    @staticmethod
    def from_families(families: list[Metric]) -> GaugeMetricFamily:
        cached: dict[str, float] = {}
        reported: dict[str, float] = {}
        for family in families:
            if family.name == "agents_engine_cached_prompt_tokens":
                target = cached
            elif family.name == "agents_engine_cache_reported_prompt_tokens":
                target = reported
            else:
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    model = sample.labels.get("model", "")
                    target[model] = target.get(model, 0.0) + sample.value
        gauge = GaugeMetricFamily(
            "agents_prompt_cache_hit_ratio",
            "Cached prompt tokens / prompt tokens, over the engine calls that "
            "reported cached tokens (vLLM does), since the processes started.",
            labels=["model"],
        )
        for model, total in sorted(reported.items()):
            if total > 0:
                gauge.add_metric([model], cached.get(model, 0.0) / total)
        return gauge


class ScrapeCollector(Collector):
    """Multi-process series plus the values read at scrape time."""

    def __init__(self, *, shared: bool = True) -> None:
        # ``shared``: also the series read from PostgreSQL and Redis, which
        # are the same whichever process is scraped (a web process serves
        # them; a worker's own endpoint leaves them out).
        self.shared = shared
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
        self.source: Collector | None = (
            MultiProcessCollector(None, path=directory) if directory else None
        )

    def collect(self) -> Iterator[Metric]:
        families = list(
            self.source.collect() if self.source is not None else REGISTRY.collect()
        )
        yield from families
        yield _DerivedRatio.from_families(families)
        if not self.shared:
            return
        error = GaugeMetricFamily(
            "agents_scrape_error",
            "1 when a scrape-time source could not be read.",
            labels=["source"],
        )
        for source, make in (("database", _database_gauges), ("redis", _queue_gauges)):
            # A failing dependency costs its own series, never the whole
            # scrape: the other series still help diagnose it.
            try:
                computed = list(make())
            except Exception as exc:
                logger.warning("metrics: reading %s failed: %s", source, exc)
                error.add_metric([source], 1)
                continue
            error.add_metric([source], 0)
            yield from computed
        yield error


def _database_gauges() -> Iterator[Metric]:
    runs = GaugeMetricFamily(
        "agents_runs",
        "Runs not yet in a final status, by status (at scrape time).",
        labels=["status"],
    )
    # The partial index run_active_heartbeat covers exactly these statuses.
    counts: dict[str, int] = {str(status): 0 for status in ACTIVE_RUN_STATUSES}
    for row in _count_by_status():
        counts[row[0]] = row[1]
    for status, count in counts.items():
        runs.add_metric([str(status)], count)
    yield runs
    backlog = GaugeMetricFamily(
        "agents_ingestion_backlog",
        "Vector-store files waiting for or in ingestion (status in_progress).",
    )
    backlog.add_metric(
        [],
        VectorStoreFile.objects.filter(
            status=VectorStoreFile.Status.IN_PROGRESS
        ).count(),
    )
    yield backlog


def _count_by_status() -> list[tuple[str, int]]:
    rows = (
        Run.objects.filter(status__in=ACTIVE_RUN_STATUSES)
        .values_list("status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return [(str(status), int(n)) for status, n in rows]


def _queue_gauges() -> Iterator[Metric]:
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
    )
    try:
        queues = [q.name for q in settings.CELERY_TASK_QUEUES]
        pipe = client.pipeline(transaction=False)
        for name in queues:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(name + suffix)
        # Delivered to a worker but not yet acknowledged (acks_late: until the
        # task ends), over all queues.
        pipe.hlen("unacked")
        lengths = pipe.execute()
    finally:
        client.close()
    depth = GaugeMetricFamily(
        "agents_queue_depth",
        "Celery messages waiting in each queue (Redis LLEN, at scrape time).",
        labels=["queue"],
    )
    step = len(_PRIORITY_SUFFIXES)
    for i, name in enumerate(queues):
        depth.add_metric([name], sum(lengths[i * step : (i + 1) * step]))
    yield depth
    unacked = GaugeMetricFamily(
        "agents_queue_unacked",
        "Celery messages taken by a worker and not yet acknowledged.",
    )
    unacked.add_metric([], lengths[-1])
    yield unacked


def registry(*, shared: bool = True) -> CollectorRegistry:
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(ScrapeCollector(shared=shared))
    return scrape


def render() -> bytes:
    """The Prometheus text exposition of everything above."""
    return generate_latest(registry())
