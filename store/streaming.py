"""The visitor's view of a run's event stream.

The API's SSE stream carries whole run objects, instructions included; a
store visitor must never see those. This re-frames the same Redis stream
(assistants.runs.streaming.run_batches) into three small events:

``delta``   ``{"text": "..."}`` text as it is generated,
``message`` ``{"id", "html"}`` a completed assistant message, rendered safely,
``status``  ``{"status", "error"}`` when the run ends,

then ``done``. Frame ids are the stream's, so Last-Event-ID resumes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from assistants.runs.streaming import DONE, KEEPALIVE, frame, run_batches
from store.markdown import cited_file_ids, render_content


async def _file_names(project_id: str, ids: set[str]) -> dict[str, str]:
    """Names of the cited files, only among the project's own files."""
    from tools.models import File

    if not ids:
        return {}
    rows = File.objects.filter(project_id=project_id, pk__in=ids).values_list(
        "pk", "filename"
    )
    return {pk: name async for pk, name in rows}


def _visitor_frame(
    event: str,
    payload: Any,
    file_url: str,
    file_names: dict[str, str] | None = None,
) -> tuple[str, Any] | None:
    if event == "thread.message.delta":
        parts = (payload.get("delta") or {}).get("content") or []
        text = "".join(
            str((p.get("text") or {}).get("value") or "")
            for p in parts
            if p.get("type") == "text"
        )
        return ("delta", {"text": text}) if text else None
    if event == "thread.message.completed" and payload.get("role") == "assistant":
        html = str(
            render_content(
                payload.get("content") or [],
                file_url=file_url,
                file_names=file_names,
            )
        )
        return "message", {"id": payload.get("id"), "html": html}
    if event.startswith("thread.run.") and event.count(".") == 2:
        status = event.rsplit(".", 1)[1]
        if status in {"completed", "failed", "cancelled", "expired", "incomplete"}:
            error = (payload.get("last_error") or {}).get("message")
            return "status", {"status": status, "error": error}
        if status == "requires_action":
            # The store cannot answer function calls for the visitor.
            return "status", {
                "status": status,
                "error": "This assistant needs a tool the store cannot run.",
            }
    if event == "error":
        return "status", {"status": "failed", "error": "The run failed."}
    return None


async def visitor_events(
    run_id: str, *, after: str = "0-0", file_url: str, project_id: str
) -> AsyncIterator[bytes]:
    async for batch, final in run_batches(run_id, after=after):
        if not batch:
            yield KEEPALIVE
            continue
        frames: list[bytes] = []
        for entry_id, event, data in batch:
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(payload, dict):
                continue
            names = None
            if event == "thread.message.completed":
                names = await _file_names(
                    project_id, cited_file_ids(payload.get("content") or [])
                )
            out = _visitor_frame(event, payload, file_url, names)
            if out is not None:
                frames.append(frame(out[0], orjson.dumps(out[1]), entry_id))
        if final:
            frames.append(DONE)
        if frames:
            yield b"".join(frames)
