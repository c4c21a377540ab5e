"""Refuse oversize bodies before Django reads them.

Django's ASGI handler spools the whole body to a temporary file before any
view runs, so a view cannot refuse a 10 GB upload in time. This wrapper
answers 413 from the ``Content-Length`` header, or, for chunked bodies,
as soon as the running count passes the limit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from django.conf import settings

from core.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UPLOAD_PART = re.compile(r"^/v1/uploads/[^/]+/parts/?$")
_FILE_UPLOAD = re.compile(r"^/v1/files/?$")
# Room for the multipart envelope around the file itself.
_MULTIPART_OVERHEAD = 64 * 1024


def limit_for(path: str) -> int:
    if _FILE_UPLOAD.match(path):
        return int(settings.MAX_UPLOAD_BYTES) + _MULTIPART_OVERHEAD
    if _UPLOAD_PART.match(path):
        return int(settings.MAX_UPLOAD_PART_BYTES) + _MULTIPART_OVERHEAD
    # Admin forms and JSON bodies.
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE) + _MULTIPART_OVERHEAD


async def _send_413(send: Send, limit: int) -> None:
    body = orjson.dumps(
        error_body(
            f"The request body is larger than the limit of {limit} bytes for this "
            "endpoint.",
            code="payload_too_large",
        )
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope.get("path", ""))
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await _send_413(send, limit)
                    return
        received = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit and not refused:
                    refused = True
                    await _send_413(send, limit)
                    # Django sees a client that went away and stops quietly.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)
