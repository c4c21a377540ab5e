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
        _check_shape(raw, data)
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


def _check_shape(raw: bytes, data: Any) -> None:
    """Refuse absurd shapes before any validator walks them: nesting deeper
    than MAX_JSON_DEPTH (orjson allows 1024) and arrays longer than
    MAX_JSON_ARRAY_ITEMS (a 100,000-message body costs pydantic seconds to
    refuse for its 100-item cap; this answers in microseconds)."""
    max_depth = int(settings.MAX_JSON_DEPTH)
    max_items = int(settings.MAX_JSON_ARRAY_ITEMS)
    # C-speed counts first: a body with few brackets cannot nest deep, and
    # one with few commas holds no long array; most bodies stop here.
    brackets = raw.count(b"{") + raw.count(b"[")
    if brackets <= max_depth and raw.count(b",") < max_items:
        return
    problem = _shape_problem(data, max_depth, max_items)
    if problem is None:
        return
    kind, path, size = problem
    if kind == "depth":
        # The top-level field it happened under: the full path is as absurd
        # as the body.
        top = path.split(".", 1)[0].split("[", 1)[0]
        raise InvalidRequestError(
            f"The JSON body is nested more than {max_depth} levels deep.",
            param=top or None,
            code="json_too_deep",
        )
    raise InvalidRequestError(
        f"Invalid '{path or 'body'}': array too long. Expected an array with "
        f"maximum length {max_items}, but got an array with length {size} "
        "instead.",
        param=path or None,
        code="array_above_max_length",
    )


_Parent = tuple[Any, Any] | None


def _path_of(parent: _Parent, key: Any) -> str:
    parts: list[Any] = []
    node: tuple[Any, Any] | None = (parent, key)
    while node is not None and node[1] is not None:
        parts.append(node[1])
        node = node[0]
    path = ""
    for part in reversed(parts):
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _shape_problem(
    value: Any, max_depth: int, max_items: int
) -> tuple[str, str, int] | None:
    """("depth" | "items", request path, length) of the first container
    over a limit, or None. Iterative: a deep body must not cost a deep
    Python stack; paths are built only for the offender."""
    stack: list[tuple[Any, int, _Parent, Any]] = [(value, 1, None, None)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth, parent, key = pop()
        if depth > max_depth:
            return "depth", _path_of(parent, key), depth
        if isinstance(item, dict):
            for name, child in item.items():
                if isinstance(child, (dict, list)):
                    push((child, depth + 1, (parent, key), name))
        else:
            if len(item) > max_items:
                return "items", _path_of(parent, key), len(item)
            for i, child in enumerate(item):
                if isinstance(child, (dict, list)):
                    push((child, depth + 1, (parent, key), i))
    return None
