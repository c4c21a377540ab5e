"""Server-Sent Events for a run, read from its Redis stream.

Frames are ``event: <name>\\ndata: <json>\\n\\n``; the response ends after a
final event (a terminal status, or ``requires_action``) with
``event: done\\ndata: [DONE]``. Each frame carries its stream id, so a client
that reconnects with ``Last-Event-ID`` resumes where it stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import StreamingHttpResponse

from assistants.api.v1.serializers import run_to_wire
from assistants.models import Run, RunStatus
from assistants.runs.events import FINAL_EVENTS, stream_key

KEEPALIVE_MS = 15_000
DONE = b"event: done\ndata: [DONE]\n\n"


def frame(event: str, data: bytes, entry_id: str | None = None) -> bytes:
    head = f"id: {entry_id}\n" if entry_id else ""
    return f"{head}event: {event}\ndata: ".encode() + data + b"\n\n"


def _ended_run(run_id: str) -> dict[str, Any] | None:
    run = Run.objects.filter(pk=run_id).first()
    if run is None or run.status in (
        RunStatus.QUEUED,
        RunStatus.IN_PROGRESS,
        RunStatus.CANCELLING,
    ):
        return None
    return run_to_wire(run)


async def run_events(
    run_id: str,
    *,
    after: str = "0-0",
    prelude: list[tuple[str, dict[str, Any]]] | None = None,
) -> AsyncIterator[bytes]:
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    try:
        for event, data in prelude or []:
            yield frame(event, orjson.dumps(data))
        last = after
        key = stream_key(run_id)
        while True:
            reply = await client.xread({key: last}, block=KEEPALIVE_MS, count=256)
            if not reply:
                # Quiet for a while: if the run ended and its stream is gone
                # (expired, or Redis restarted), answer from PostgreSQL.
                ended = await sync_to_async(_ended_run)(run_id)
                if ended is not None:
                    yield frame(f"thread.run.{ended['status']}", orjson.dumps(ended))
                    yield DONE
                    return
                yield b": keep-alive\n\n"
                continue
            for raw_id, fields in reply[0][1]:
                last = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                event = fields[b"event"].decode()
                yield frame(event, fields[b"data"], last)
                if event in FINAL_EVENTS:
                    yield DONE
                    return
    finally:
        await client.aclose()


def sse_response(stream: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    return response
