"""``/healthz``, ``/readyz`` and ``/metrics``: plain Django views, no API key.

Outside ``/v1`` on purpose: probes and scrapers are not API clients, and
these must answer even when the API's authentication cannot (database down).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import httpx
import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

# Every check is bounded: a probe must answer before the orchestrator's own
# timeout (Kubernetes' default is 1 s; compose/Helm here use 5 s).
CHECK_TIMEOUT_SECONDS = 2.0
# At most this many engine URLs are probed per readiness check.
MAX_ENGINE_URLS = 8
# Checks run on their own threads, so one that hangs past its timeout still
# lets the answer go out; a fixed pool bounds what hung checks can hold.
_checks = ThreadPoolExecutor(max_workers=8, thread_name_prefix="readyz")


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """The process is alive and serving: no dependency is consulted, so a
    database outage never makes an orchestrator restart every web process."""
    return JsonResponse({"status": "ok"})


def _database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        # The check ran on a pool thread: give its connection back.
        connection.close()
    return "ok"


def _redis() -> str:
    urls = {settings.REDIS_URL, settings.CELERY_BROKER_URL}
    for url in sorted(urls):
        client = redis.Redis.from_url(
            url,
            socket_timeout=CHECK_TIMEOUT_SECONDS,
            socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        )
        try:
            client.ping()
        finally:
            client.close()
    return "ok"


def _engine() -> dict[str, Any]:
    """Ready when at least one registered engine URL answers (any HTTP status
    below 500: a 401 is an engine that is up). No model registered is ready:
    the API serves without one."""
    from core.models import LanguageModel

    try:
        urls: list[str] = []
        for base_urls in LanguageModel.objects.filter(is_active=True).values_list(
            "base_urls", flat=True
        ):
            for url in base_urls or []:
                if isinstance(url, str) and url not in urls:
                    urls.append(url.rstrip("/"))
    finally:
        connection.close()
    urls = urls[:MAX_ENGINE_URLS]
    if not urls:
        return {"ok": True, "detail": "no engine registered"}
    replicas: dict[str, Any] = {}
    with httpx.Client(timeout=CHECK_TIMEOUT_SECONDS) as client:
        for url in urls:
            started = time.perf_counter()
            try:
                status = client.get(f"{url}/models").status_code
                ok, detail = status < 500, f"HTTP {status}"
            except httpx.HTTPError as exc:
                ok, detail = False, type(exc).__name__
            replicas[url] = {
                "ok": ok,
                "detail": detail,
                "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            }
    return {"ok": any(r["ok"] for r in replicas.values()), "replicas": replicas}


def _timed(check: Callable[[], Any]) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            outcome = check()
            result = outcome if isinstance(outcome, dict) else {"ok": True}
        except Exception as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return result

    return run


CHECKS: dict[str, Callable[[], Any]] = {
    "database": _database,
    "redis": _redis,
    "engine": _engine,
}


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Database, Redis and a model engine reachable: 200, else 503. The body
    has each check's outcome and latency."""
    futures = {name: _checks.submit(_timed(check)) for name, check in CHECKS.items()}
    deadline = time.monotonic() + CHECK_TIMEOUT_SECONDS + 0.5
    results: dict[str, Any] = {}
    for name, future in futures.items():
        try:
            results[name] = future.result(timeout=max(deadline - time.monotonic(), 0))
        except FutureTimeout:
            results[name] = {
                "ok": False,
                "error": f"no answer within {CHECK_TIMEOUT_SECONDS:.0f} s",
            }
    ready = all(r["ok"] for r in results.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": results},
        status=200 if ready else 503,
    )


def _allowed(request: HttpRequest) -> bool:
    """METRICS_TOKEN (a bearer token) and METRICS_ALLOWED_IPS (addresses or
    networks); either one admits a scraper. Neither set: open, for a
    loopback or cluster-internal port."""
    from core.observability.exporter import allowed

    return allowed(
        request.META.get("HTTP_AUTHORIZATION", ""),
        request.META.get("REMOTE_ADDR", ""),
    )


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    from prometheus_client import CONTENT_TYPE_LATEST

    from core.observability.collectors import render

    if not _allowed(request):
        if getattr(settings, "METRICS_TOKEN", ""):
            response = HttpResponse(
                "a valid bearer token is required\n",
                status=401,
                content_type="text/plain",
            )
            response["WWW-Authenticate"] = "Bearer"
            return response
        return HttpResponse("forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(render(), content_type=CONTENT_TYPE_LATEST)
