"""The baseline: the cheapest Django view the same server can serve."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

BASELINE_BODY = {"object": "bench.baseline", "ok": True}


def baseline(request: HttpRequest) -> JsonResponse:
    """A constant JSON body: no DRF, no authentication, no database.

    It still passes through the same ASGI server, middleware stack and sync
    executor hop as the API, so the platform's ratio to it is the cost of
    DRF, auth, validation, queries and rendering alone.
    """
    return JsonResponse(BASELINE_BODY)
