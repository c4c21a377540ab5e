"""Caps on runaway runs, checked by the executor.

A run may make at most ``RUN_MAX_TOOL_STEPS`` rounds of tool calls (server
tools and client function calls alike: a model that asks for tool outputs
round after round is stopped as surely as one that searches forever), may
stay at most ``RUN_MAX_SECONDS`` since it started (time spent waiting for
the client's tool outputs included), and may not start another model call
once its project's token budget is spent.

Over a cap the run ends ``failed`` with a ``last_error`` naming the limit,
as OpenAI ends runs it stops: ``incomplete`` is kept for the run's own
token limits (``max_prompt_tokens``/``max_completion_tokens``, the only
``incomplete_details.reason`` values the SDKs know), and ``last_error.code``
stays within OpenAI's values: ``rate_limit_exceeded`` for a spent budget,
``server_error`` for the other caps. A cap met in the middle of a model
call stops that call (time) or lets it finish (budget: usage is known only
afterwards).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from assistants.engine import EngineError

if TYPE_CHECKING:
    from assistants.models import Run


class RunLimitExceeded(EngineError):
    """A cap stopped the run; ``code`` goes into its ``last_error``."""

    def __init__(self, message: str, *, code: str = "server_error") -> None:
        super().__init__(message, transient=False)
        self.code = code

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.message, self.code))


def _rebuild(message: str, code: str) -> RunLimitExceeded:
    return RunLimitExceeded(message, code=code)


def error_code(exc: EngineError) -> str:
    """The ``last_error.code`` of a run that failed with ``exc``."""
    return exc.code if isinstance(exc, RunLimitExceeded) else "server_error"


def _time_message(limit: float) -> str:
    return (
        f"The run exceeded the maximum run time of {limit:g} seconds "
        "(RUN_MAX_SECONDS) and was stopped."
    )


def seconds_left(run: Run) -> float | None:
    """Wall-clock seconds the run may still take; None when unlimited."""
    limit = float(settings.RUN_MAX_SECONDS)
    if limit <= 0:
        return None
    started = run.started_at or run.created_at
    return limit - (timezone.now() - started).total_seconds()


def deadline(run: Run) -> float | None:
    """The run's deadline on this process' monotonic clock, or None."""
    left = seconds_left(run)
    return None if left is None else time.monotonic() + left


def over_time(run: Run) -> bool:
    left = seconds_left(run)
    return left is not None and left <= 0


def time_exceeded_error() -> RunLimitExceeded:
    return RunLimitExceeded(_time_message(float(settings.RUN_MAX_SECONDS)))


def check_before_model_call(run: Run) -> None:
    """Raise RunLimitExceeded when the run may not call the model again:
    out of time, or its project's token budget spent."""
    from core.services.quota import quota_exhausted

    if over_time(run):
        raise time_exceeded_error()
    problem = quota_exhausted(project_id=run.project_id)
    if problem is not None:
        raise RunLimitExceeded(problem, code="rate_limit_exceeded")


def check_tool_round(*, turn: int) -> None:
    """Raise RunLimitExceeded when the model asks for tool calls after
    ``turn`` rounds of them already, and that reaches the cap."""
    limit = int(settings.RUN_MAX_TOOL_STEPS)
    if limit > 0 and turn + 1 > limit:
        raise RunLimitExceeded(
            f"The run exceeded the maximum of {limit} tool-call steps "
            "(RUN_MAX_TOOL_STEPS): the model kept calling tools without "
            "answering."
        )
