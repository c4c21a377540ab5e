"""The request id and run id of the work in progress, for logs.

Context variables, so that each web request (its own thread or task) and
each Celery task sees its own values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")
run_id: ContextVar[str] = ContextVar("run_id", default="")


@contextmanager
def bound(*, request: str = "", run: str = "") -> Iterator[None]:
    """Tag every log line inside the block with ``request`` and ``run``."""
    request_token = request_id.set(request)
    run_token = run_id.set(run)
    try:
        yield
    finally:
        run_id.reset(run_token)
        request_id.reset(request_token)
