"""The wire contract: model rows → the JSON objects clients read.

Plain functions, not DRF serializers: a list page renders 100 objects and
DRF's field machinery costs ~10x more per object. The documented shapes are
the pydantic models in ``schemas.py``; tests validate real responses against
the served OpenAPI schema so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from assistants.models import Assistant


def _ts(value: Any) -> int | None:
    return int(value.timestamp()) if value is not None else None


def assistant_to_wire(a: Assistant) -> dict[str, Any]:
    return {
        "id": a.id,
        "object": "assistant",
        "created_at": _ts(a.created_at),
        "name": a.name,
        "description": a.description,
        "model": a.model,
        "instructions": a.instructions,
        "tools": a.tools or [],
        "tool_resources": a.tool_resources or {},
        "metadata": a.metadata or {},
        "temperature": a.temperature if a.temperature is not None else 1.0,
        "top_p": a.top_p if a.top_p is not None else 1.0,
        "response_format": a.response_format or "auto",
    }
