from __future__ import annotations

import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from core.errors import error_body
from core.observability import context as log_context
from core.ratelimit import add_headers as add_ratelimit_headers


class RequestIdMiddleware:
    """Tag each request with an id (``x-request-id``) that logs can follow."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get("HTTP_X_REQUEST_ID", "")
        # A canonical UUID: engines that check the header (llama.cpp's server)
        # accept it, and it passes unchanged from API to worker to engine.
        request_id = incoming if 0 < len(incoming) <= 128 else str(uuid.uuid4())
        request.META["REQUEST_ID"] = request_id
        # Every log line of the request carries the id, and so does the
        # Celery message it enqueues (core/observability/celery.py).
        with log_context.bound(request=request_id):
            response = self.get_response(request)
        response["x-request-id"] = request_id
        # The key's rate-limit state, if the throttle looked (core.ratelimit).
        add_ratelimit_headers(request, response)
        return response


class RejectNulMiddleware:
    """Answer 400 to a NUL character in the path or the query string.

    PostgreSQL cannot hold NUL in text: an id like ``asst_%00`` used to reach
    the lookup and fail it with a 500 (found by schemathesis, issue #9). JSON
    bodies are checked by ``core.parsers``; this covers the URL, for the API,
    the store and the admin alike.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "%00" in query or "\x00" in query:
            return JsonResponse(
                error_body("Invalid URL: it may not contain the NUL character."),
                status=400,
            )
        return self.get_response(request)
