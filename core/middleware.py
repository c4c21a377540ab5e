from __future__ import annotations

import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


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
        response = self.get_response(request)
        response["x-request-id"] = request_id
        return response
