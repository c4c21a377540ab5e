"""The wire contract: model rows → the JSON objects clients read.

Plain functions, not DRF serializers: a list page renders 100 objects and
DRF's field machinery costs ~10x more per object. The documented shapes are
the pydantic models in ``schemas.py``; tests validate real responses against
the served OpenAPI schema so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from assistants.models import Assistant, Message, Thread


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


def thread_to_wire(t: Thread) -> dict[str, Any]:
    return {
        "id": t.id,
        "object": "thread",
        "created_at": _ts(t.created_at),
        "metadata": t.metadata or {},
        "tool_resources": t.tool_resources or {},
    }


def message_to_wire(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "thread.message",
        "created_at": _ts(m.created_at),
        "thread_id": m.thread_id,
        "status": m.status,
        "incomplete_details": m.incomplete_details,
        "completed_at": _ts(m.completed_at),
        "incomplete_at": _ts(m.incomplete_at),
        "role": m.role,
        "content": m.content or [],
        "assistant_id": m.assistant_id,
        "run_id": m.run_id,
        "attachments": m.attachments or [],
        "metadata": m.metadata or {},
    }
