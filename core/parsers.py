from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from core.errors import InvalidRequestError, PayloadTooLargeError


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
        parser_context: Mapping[str, Any] | None = None,
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
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ParseError(str(exc)) from exc
        # PostgreSQL cannot store NUL in text or jsonb: refuse it here with a
        # 400 naming the field instead of failing the INSERT with a 500.
        if b"\\u0000" in raw:
            path = _nul_path(data, "")
            if path is not None:
                raise InvalidRequestError(
                    f"Invalid '{path or 'body'}': strings may not contain the NUL "
                    "character (\\u0000).",
                    param=path or None,
                )
        return data


def _nul_path(value: Any, path: str) -> str | None:
    """The request path of the first string (or key) holding a NUL, if any."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return sub
            found = _nul_path(item, sub)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_path(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None
