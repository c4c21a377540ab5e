"""Documentation-only pydantic shapes shared by every resource's schema."""

from __future__ import annotations

import re
from typing import Any, Literal

from drf_spectacular.utils import OpenApiParameter
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: Literal[True]


# Every operation can answer these: bad input, no or bad key, unknown object,
# oversize body, the key's rate limit (core.ratelimit) and a dependency
# outage (core.errors.outage_error). All carry the OpenAI error body.
ERRORS = {
    400: ErrorResponse,
    401: ErrorResponse,
    404: ErrorResponse,
    413: ErrorResponse,
    429: ErrorResponse,
    503: ErrorResponse,
}


# The cursor parameters of every list. The bounds are in the schema, not only
# in prose, so clients and fuzzers know `limit=0` is invalid. A cursor must
# name an object of the same list; any other id is a 400 (param `after` or
# `before`), which no schema can express.
PAGE_PARAMS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": 100},
        description="1 to 100, default 20",
    ),
    OpenApiParameter("order", str, enum=["asc", "desc"]),
    OpenApiParameter(
        "after", str, description="An object id of this list: the page after it"
    ),
    OpenApiParameter(
        "before", str, description="An object id of this list: the page before it"
    ),
]


def add_create_links(
    result: dict[str, Any], generator: Any, request: Any, public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: OpenAPI links from each create
    to the operations on what it created.

    ``POST /v1/assistants`` answers an object whose ``id`` is the
    ``{assistant_id}`` of every operation under ``/v1/assistants/{...}``; the
    other path parameters of such an operation are the create's own (the
    ``{thread_id}`` of ``POST /v1/threads/{thread_id}/messages``). Clients
    and stateful fuzzers (schemathesis) follow these links.
    """
    paths: dict[str, Any] = result.get("paths", {})
    for parent, parent_ops in paths.items():
        create = parent_ops.get("post")
        ok = (create or {}).get("responses", {}).get("200")
        if ok is None:
            continue
        parent_params = set(re.findall(r"{(\w+)}", parent))
        links: dict[str, Any] = {}
        for path, operations in paths.items():
            match = re.fullmatch(re.escape(parent) + r"/{(\w+)}(/.*)?", path)
            if match is None:
                continue
            new_param = match.group(1)
            if set(re.findall(r"{(\w+)}", path)) - parent_params - {new_param}:
                continue
            for operation in operations.values():
                target = operation.get("operationId")
                if not target:
                    continue
                parameters = {new_param: "$response.body#/id"}
                parameters.update({p: f"$request.path.{p}" for p in parent_params})
                links[target] = {"operationId": target, "parameters": parameters}
        if links:
            ok["links"] = links
    return result
