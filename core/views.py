"""Django-level error pages for /v1 paths no view matched."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from core.errors import error_body


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(
        error_body(f"Invalid URL ({request.method} {request.path})"), status=404
    )


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
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
