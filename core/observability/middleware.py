"""Per-request latency metrics and the access log line."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from core.observability import metrics

logger = logging.getLogger("agents.access")

# Probes and scrapes come every few seconds: measured, never logged.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


class MetricsMiddleware:
    """Observes each request's latency under its URL pattern (``route``:
    ``v1/threads/<str:thread_id>/runs``, never the raw path, which would give
    one series per object) and logs one line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        match = request.resolver_match
        route = match.route if match is not None else "(unmatched)"
        metrics.http_request(request.method or "", route, response.status_code, seconds)
        if request.path not in _QUIET_PATHS:
            logger.info(
                "%s %s %s %.1f ms",
                request.method,
                request.path,
                response.status_code,
                seconds * 1000,
                extra={"route": route, "status": response.status_code},
            )
        return response
