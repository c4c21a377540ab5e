from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from core.errors import PayloadTooLargeError


class JSONParser(BaseParser):
    """Strict JSON with a size bound.

    DRF reads ``request.stream`` directly, which bypasses Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE check, so the bound is enforced here. orjson
    rejects NaN/Infinity and nesting deeper than 1024 levels.
    """

    media_type = "application/json"

    def parse(
        self,
        stream: Any,
        media_type: str | None = None,
        parser_context: dict[str, Any] | None = None,
    ) -> Any:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLargeError(
                f"The JSON body is larger than the limit of {limit} bytes."
            )
        if not raw.strip():
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(str(exc)) from exc
