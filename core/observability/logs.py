"""Log records with the request id and run id, as JSON lines or text.

``LOG_FORMAT=json``: one JSON object per line (``ts``, ``level``, ``logger``,
``msg``, ``request_id`` and ``run_id`` when known, ``pid``, ``exc`` with the
traceback, and any ``extra=`` fields). ``text``: the same fields in a
human-readable line. Both read the ids from ``core.observability.context``,
set by the request middleware and by the Celery task hooks.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

from core.observability import context

# Attributes every LogRecord has; anything else came through ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()
    | {"message", "asctime", "request_id", "run_id", "taskName"}
)


class ContextFilter(logging.Filter):
    """Stamps ``request_id`` and ``run_id`` on each record (a handler filter:
    it runs on the thread that logs, where the context variables are)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", ""):
            record.request_id = context.request_id.get()
        if not getattr(record, "run_id", ""):
            record.run_id = context.run_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", "")
        if request_id:
            entry["request_id"] = request_id
        run_id = getattr(record, "run_id", "")
        if run_id:
            entry["run_id"] = run_id
        entry["pid"] = record.process
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-11-22 09:00:00,000 INFO logger [request_id run_id] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(ids)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            i
            for i in (getattr(record, "request_id", ""), getattr(record, "run_id", ""))
            if i
        )
        record.ids = f"[{ids}] " if ids else ""
        return super().format(record)


def logging_config(*, level: str, fmt: str) -> dict[str, Any]:
    """The ``LOGGING`` dict for ``fmt`` ("json" or "text") at ``level``."""
    if fmt not in ("json", "text"):
        raise ValueError(f"LOG_FORMAT must be json or text, not {fmt!r}")
    handler = {
        "class": "logging.StreamHandler",
        "formatter": fmt,
        "filters": ["context"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "core.observability.logs.ContextFilter"}},
        "formatters": {
            "json": {"()": "core.observability.logs.JsonFormatter"},
            "text": {"()": "core.observability.logs.TextFormatter"},
        },
        "handlers": {"console": handler},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "WARNING"},
            # uvicorn configures its own handlers before Django starts; these
            # take them over so that its lines have the same format.
            "uvicorn": {"handlers": ["console"], "level": level, "propagate": False},
            "uvicorn.access": {"level": "WARNING"},
        },
    }
