"""The wire contract: model rows → the JSON objects clients read.

Plain functions, not DRF serializers: a list page renders 100 objects and
DRF's field machinery costs ~10x more per object. The documented shapes are
the pydantic models in ``schemas.py``; tests validate real responses against
the served OpenAPI schema so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from assistants.models import Assistant, Message, Run, RunStep, Thread
from core.models import unix_time


def assistant_to_wire(a: Assistant) -> dict[str, Any]:
    return {
        "id": a.id,
        "object": "assistant",
        "created_at": unix_time(a.created_at),
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
        "created_at": unix_time(t.created_at),
        "metadata": t.metadata or {},
        "tool_resources": t.tool_resources or {},
    }


def message_to_wire(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "object": "thread.message",
        "created_at": unix_time(m.created_at),
        "thread_id": m.thread_id,
        "status": m.status,
        "incomplete_details": m.incomplete_details,
        "completed_at": unix_time(m.completed_at),
        "incomplete_at": unix_time(m.incomplete_at),
        "role": m.role,
        "content": m.content or [],
        "assistant_id": m.assistant_id,
        "run_id": m.run_id,
        "attachments": m.attachments or [],
        "metadata": m.metadata or {},
    }


def run_to_wire(r: Run) -> dict[str, Any]:
    return {
        "id": r.id,
        "object": "thread.run",
        "created_at": unix_time(r.created_at),
        "assistant_id": r.assistant_id,
        "thread_id": r.thread_id,
        "status": r.status,
        "started_at": unix_time(r.started_at),
        "expires_at": unix_time(r.expires_at),
        "cancelled_at": unix_time(r.cancelled_at),
        "failed_at": unix_time(r.failed_at),
        "completed_at": unix_time(r.completed_at),
        "incomplete_at": unix_time(r.incomplete_at),
        "required_action": r.required_action,
        "last_error": r.last_error,
        "incomplete_details": r.incomplete_details,
        "model": r.model,
        "instructions": r.instructions,
        "tools": r.tools or [],
        "metadata": r.metadata or {},
        "usage": r.usage,
        "temperature": r.temperature if r.temperature is not None else 1.0,
        "top_p": r.top_p if r.top_p is not None else 1.0,
        "max_prompt_tokens": r.max_prompt_tokens,
        "max_completion_tokens": r.max_completion_tokens,
        "truncation_strategy": r.truncation_strategy
        or {"type": "auto", "last_messages": None},
        "response_format": r.response_format or "auto",
        "tool_choice": r.tool_choice if r.tool_choice is not None else "auto",
        "parallel_tool_calls": r.parallel_tool_calls,
    }


def run_step_to_wire(s: RunStep, *, include_content: bool = False) -> dict[str, Any]:
    details = s.step_details
    if not include_content and s.type == RunStep.Type.TOOL_CALLS:
        details = _without_result_content(details)
    return {
        "id": s.id,
        "object": "thread.run.step",
        "created_at": unix_time(s.created_at),
        "run_id": s.run_id,
        "assistant_id": s.assistant_id,
        "thread_id": s.thread_id,
        "type": s.type,
        "status": s.status,
        "step_details": details,
        "last_error": s.last_error,
        "usage": s.usage,
        "metadata": s.metadata or {},
        "cancelled_at": unix_time(s.cancelled_at),
        "failed_at": unix_time(s.failed_at),
        "completed_at": unix_time(s.completed_at),
        "expired_at": unix_time(s.expired_at),
    }


def _without_result_content(details: dict[str, Any]) -> dict[str, Any]:
    """file_search results carry chunk text only when the client asks with
    ``include[]=step_details.tool_calls[*].file_search.results[*].content``."""
    calls = details.get("tool_calls") or []
    if not any(c.get("type") == "file_search" for c in calls):
        return details
    out = []
    for call in calls:
        if call.get("type") == "file_search":
            fs = dict(call.get("file_search") or {})
            fs["results"] = [
                {k: v for k, v in r.items() if k != "content"}
                for r in fs.get("results") or []
            ]
            call = {**call, "file_search": fs}
        out.append(call)
    return {**details, "tool_calls": out}
