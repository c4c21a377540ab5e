"""Django-level error pages for /v1 paths no view matched."""

from __future__ import annotations

import sys
from typing import Any

from django.http import HttpRequest, JsonResponse

from core.errors import error_body, outage_error


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        error_body(f"Invalid URL ({request.method} {request.path})"), status=404
    )


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    # Django calls handler500 inside its ``except`` block: a dependency that
    # went away under a middleware or a non-DRF view (sessions, the store) is
    # still a 503 with Retry-After, not a 500.
    outage = outage_error(sys.exc_info()[1])
    if outage is not None:
        response = JsonResponse(outage.body(), status=outage.status_code)
        for name, value in outage.headers().items():
            response[name] = value
        return response
    return JsonResponse(
        error_body(
            "The server had an error while processing your request.", "server_error"
        ),
        status=500,
    )


def bad_request(
    request: HttpRequest, exception: Exception | None = None
) -> JsonResponse:
    return JsonResponse(error_body("Bad request."), status=400)
