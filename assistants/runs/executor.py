"""Execute one step of a run on its model engine.

Called by the Celery task with a run id. The worker claims the run with a
compare-and-swap (queued → in_progress), builds the prompt, streams the
engine's answer token by token into events, and ends the step in one of:
``completed``/``incomplete`` (an answer), ``requires_action`` (function
calls for the client), ``cancelled`` or ``failed``. No transaction is held
across the engine call.

Safe to run twice: steps are keyed by (run, turn), so a re-run after a lost
worker finds and reuses its step and message instead of adding new ones, and
the claim lets only one worker execute a run at a time. While it works, the
process's heartbeat thread stamps ``heartbeat_at`` (runs.heartbeat); the
reaper re-queues runs whose heartbeat stopped.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import close_old_connections
from django.utils import timezone
from jsonschema import Draft202012Validator

from assistants.api.v1.serializers import (
    message_to_wire,
    run_step_to_wire,
    run_to_wire,
)
from assistants.engine import ChatRequest, EngineError, ToolCallDelta, chat_stream
from assistants.models import Message, Run, RunStatus, RunStep
from assistants.runs import context, events, memory, runaway, tokens
from assistants.runs.annotations import MarkerFilter, annotate
from assistants.runs.heartbeat import heartbeats
from assistants.runs.prompt import call_as_made
from assistants.runs.state import claim, transition
from assistants.runs.tool_calls import (
    EngineTools,
    InputStream,
    ToolResults,
    engine_tools,
    execute_server_calls,
    publish_step_delta,
    publish_step_opened,
    run_tool_results,
    write_tool_step,
)
from core.db import (
    Statement,
    insert_together,
    release_connection,
    update_sql,
    write_together,
)
from core.errors import is_outage
from core.observability import metrics
from core.selectors import language_model_cached

logger = logging.getLogger(__name__)

REQUIRES_ACTION_TTL = timedelta(minutes=10)
# The model gets this many tries to produce valid JSON (strict functions,
# json_object / json_schema formats) before the run fails.
MAX_JSON_ATTEMPTS = 3
CANCEL_POLL_SECONDS = 0.25


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class RunCancelled(Exception):
    pass


class _CancelWatch:
    """``should_stop`` for the engine stream: polls the run's cancel flag."""

    def __init__(self, run_id: str, deadline: float | None = None) -> None:
        self.run_id = run_id
        # The first look is one interval in, not at the first token: the run
        # was claimed just now (a cancel before that made the claim fail),
        # and a Redis round trip before the first delta is latency.
        self.checked_at = time.monotonic()
        self.cancelled = False
        # RUN_MAX_SECONDS (runaway.deadline): past it the run stops like a
        # cancel, and run_execute ends it failed.
        self.deadline = deadline

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.cancelled and now - self.checked_at >= CANCEL_POLL_SECONDS:
            self.checked_at = now
            self.cancelled = events.cancel_requested(self.run_id)
            # The engine has been at it for a while (seconds or minutes to
            # come): a threads worker's connection goes back to its pool
            # meanwhile, and the next write takes one again. Not at once: an
            # engine that answers within the interval costs no pool round
            # trips.
            release_connection()
        if self.deadline is not None and now >= self.deadline:
            self.cancelled = True
        return self.cancelled


@dataclass
class _Outcome:
    text: str = ""
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    reported: bool = False  # usage came from the engine, not our estimate

    def add_call_delta(self, delta: ToolCallDelta) -> None:
        call = self.calls.setdefault(delta.index, {"name": "", "arguments": ""})
        if delta.name:
            call["name"] = delta.name
        call["arguments"] += delta.arguments


def _usage_dict(prompt: int, completion: int, cached: int | None) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _add_usage(total: dict[str, Any] | None, step: dict[str, Any]) -> dict[str, Any]:
    total = dict(total or {})
    cached = (total.get("prompt_tokens_details") or {}).get("cached_tokens")
    step_cached = (step.get("prompt_tokens_details") or {}).get("cached_tokens")
    merged = _usage_dict(
        int(total.get("prompt_tokens", 0)) + step["prompt_tokens"],
        int(total.get("completion_tokens", 0)) + step["completion_tokens"],
        None
        if cached is None and step_cached is None
        else (cached or 0) + (step_cached or 0),
    )
    return merged


def _message_creation(message: Message) -> dict[str, Any]:
    return {"type": "message_creation", "message_creation": {"message_id": message.id}}


class _MessageWriter:
    """The assistant message of one turn and its message_creation step.

    Created lazily at the first token; found again (not duplicated) when the
    turn is executed a second time. Citation markers of server tools' sources
    are filtered out of the streamed text and become annotations at close.
    """

    def __init__(self, run: Run, turn: int, results: ToolResults | None = None) -> None:
        self.run = run
        self.turn = turn
        self.key = f"{turn}:message"
        self.step: RunStep | None = None
        self.message: Message | None = None
        self.results = results or ToolResults()
        self.filter = MarkerFilter(self.results.sources)
        self.text = ""  # what the client has been sent so far
        # How the prompt was made (context.Context.step_metadata).
        self.step_metadata: dict[str, str] = {}
        # Writes for the next statement to carry (context.Context's
        # deferred_writes: the prompt's new token counts).
        self.deferred: list[Statement] = []

    def feed(self, raw: str) -> None:
        """The model's next text; the first opens the message (its events
        and the first delta then go out in one round trip)."""
        if self.message is None:
            self.open(first=raw)
        else:
            self.delta(raw)

    def open(self, first: str = "") -> None:
        """Create (or, on a run's later attempt, find) the message and its
        step, and announce them, with ``first`` as the first delta."""
        if self.message is not None:
            return
        run = self.run
        if self.step is None and run.attempts == 1:
            # The run's first claim: nothing of it can exist yet, so insert
            # without looking (one statement, no get-or-create round trips).
            self._create(first)
            return
        step = RunStep.objects.filter(run=run, key=self.key).first()
        message = None
        if step is not None:
            message_id = step.step_details.get("message_creation", {}).get("message_id")
            message = Message.objects.filter(pk=message_id).first()
            if message is not None:
                # A previous attempt died mid-answer: start the text again.
                Message.objects.filter(pk=message.pk).update(
                    content=[], status=Message.Status.IN_PROGRESS
                )
                message.content, message.status = [], Message.Status.IN_PROGRESS
        if message is None:
            message = self._new_message()
        details = _message_creation(message)
        if step is None:
            step, _ = RunStep.objects.get_or_create(
                run=run,
                key=self.key,
                defaults={
                    "thread_id": run.thread_id,
                    "assistant_id": run.assistant_id,
                    "type": RunStep.Type.MESSAGE_CREATION,
                    "step_details": details,
                    "metadata": self.step_metadata,
                },
            )
        else:
            RunStep.objects.filter(pk=step.pk).update(
                step_details=details, status=RunStep.Status.IN_PROGRESS
            )
            step.step_details, step.status = details, RunStep.Status.IN_PROGRESS
        self._opened(step, message, first)

    def _create(self, first: str) -> None:
        run = self.run
        message = self._message()
        step = RunStep(
            run=run,
            key=self.key,
            thread_id=run.thread_id,
            assistant_id=run.assistant_id,
            type=RunStep.Type.MESSAGE_CREATION,
            step_details=_message_creation(message),
            metadata=self.step_metadata,
        )
        # Both rows in one statement: one round trip where the ORM's
        # transaction took four, on the way to the first token. Not durable
        # (core.db): the step's end is, and a run whose rows a PostgreSQL
        # crash lost is retried by the reaper, which makes them again.
        insert_together(message, step, also=self._take_deferred(), durable=False)
        self._opened(step, message, first)

    def _take_deferred(self) -> list[Statement]:
        taken, self.deferred = self.deferred, []
        return taken

    def _new_message(self) -> Message:
        """The turn's assistant message, empty and in progress, saved."""
        message = self._message()
        message.save(force_insert=True)
        return message

    def _message(self) -> Message:
        run = self.run
        return Message(
            thread_id=run.thread_id,
            role=Message.Role.ASSISTANT,
            content=[],
            status=Message.Status.IN_PROGRESS,
            assistant_id=run.assistant_id,
            run_id=run.id,
        )

    def _opened(self, step: RunStep, message: Message, first: str) -> None:
        run = self.run
        self.step, self.message, self.text = step, message, ""
        self.filter = MarkerFilter(self.results.sources)
        opening: list[tuple[str, Any]] = [
            ("thread.run.step.created", run_step_to_wire(step)),
            ("thread.run.step.in_progress", run_step_to_wire(step)),
            ("thread.message.created", message_to_wire(message)),
            ("thread.message.in_progress", message_to_wire(message)),
        ]
        text = self.filter.feed(first) if first else ""
        if text:
            self.text += text
            opening.append(("thread.message.delta", self._delta(text)))
        events.publish_many(run.id, opening)

    def delta(self, raw: str) -> None:
        self._send(self.filter.feed(raw))

    def _send(self, text: str) -> None:
        assert self.message is not None
        if not text:
            return
        self.text += text
        events.publish(self.run.id, "thread.message.delta", self._delta(text))

    def _delta(self, text: str) -> dict[str, Any]:
        assert self.message is not None
        return {
            "id": self.message.id,
            "object": "thread.message.delta",
            "delta": {
                "content": [
                    {
                        "index": 0,
                        "type": "text",
                        "text": {"value": text, "annotations": []},
                    }
                ]
            },
        }

    def close(
        self,
        raw: str,
        *,
        usage: dict[str, Any],
        incomplete: dict[str, Any] | None = None,
        step_status: str = RunStep.Status.COMPLETED,
    ) -> None:
        """End the message with ``raw`` (the model's text, markers and all)."""
        writes, closing = self.closed(
            raw, usage=usage, incomplete=incomplete, step_status=step_status
        )
        write_together(writes[:-1], writes[-1])
        events.publish_many(self.run.id, closing)

    def closed(
        self,
        raw: str,
        *,
        usage: dict[str, Any],
        incomplete: dict[str, Any] | None = None,
        step_status: str = RunStep.Status.COMPLETED,
    ) -> tuple[list[Statement], list[tuple[str, Any]]]:
        """``close`` for a caller that writes more in the same statement:
        the writes that end the message and its step, and the events to
        publish once they are done (with the caller's, in one round trip)."""
        assert self.message is not None and self.step is not None
        self._send(self.filter.flush())
        now = timezone.now()
        message, step = self.message, self.step
        text, annotations = annotate(
            raw, sources=self.results.sources, files=self.results.files
        )
        message.content = [
            {"type": "text", "text": {"value": text, "annotations": annotations}}
        ] + [
            {"type": "image_file", "image_file": {"file_id": file_id, "detail": "auto"}}
            for file_id in self.results.images
        ]
        if incomplete:
            message.status = Message.Status.INCOMPLETE
            message.incomplete_at = now
            message.incomplete_details = incomplete
        else:
            message.status = Message.Status.COMPLETED
            message.completed_at = now
        step.status = step_status
        step.usage = usage
        if step_status == RunStep.Status.COMPLETED:
            step.completed_at = now
        elif step_status == RunStep.Status.CANCELLED:
            step.cancelled_at = now
        else:
            step.failed_at = now
        writes = [
            *self._take_deferred(),
            update_sql(
                Message,
                message.pk,
                {
                    "content": message.content,
                    "status": message.status,
                    "completed_at": message.completed_at,
                    "incomplete_at": message.incomplete_at,
                    "incomplete_details": message.incomplete_details,
                },
            ),
            update_sql(
                RunStep,
                step.pk,
                {
                    "status": step.status,
                    "usage": step.usage,
                    "completed_at": step.completed_at,
                    "cancelled_at": step.cancelled_at,
                    "failed_at": step.failed_at,
                },
            ),
        ]
        message_event = (
            "thread.message.incomplete" if incomplete else "thread.message.completed"
        )
        return writes, [
            (message_event, message_to_wire(message)),
            (f"thread.run.step.{step_status}", run_step_to_wire(step)),
        ]


def _wanted_tool(run: Run) -> str | None:
    """The function name a named ``tool_choice`` forces, if any
    (``{"type": "file_search"}`` names the server tool's function)."""
    choice = run.tool_choice
    if not isinstance(choice, dict):
        return None
    if choice.get("type") == "function":
        return str(choice["function"]["name"])
    return str(choice.get("type"))


def _engine_tool_choice(run: Run, engine: EngineTools) -> Any:
    choice = run.tool_choice if run.tool_choice is not None else "auto"
    if not engine.functions or choice == "none":
        return None
    wanted = _wanted_tool(run)
    if wanted is not None:
        if engine.definition(wanted) is None:
            return "auto"
        return {"type": "function", "function": {"name": wanted}}
    return choice


def _engine_response_format(run: Run) -> dict[str, Any] | None:
    fmt = run.response_format
    if not isinstance(fmt, dict) or fmt.get("type") == "text":
        return None
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    js = fmt.get("json_schema") or {}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": js.get("name"),
            "schema": js.get("schema") or {"type": "object"},
            "strict": bool(js.get("strict")),
        },
    }


def _estimate_tokens(messages: list[dict[str, Any]], model_id: str) -> int:
    """A prompt's size by the calibrated estimate (engines that report no
    usage on a stream)."""
    return tokens.estimate_chars(
        tokens.prompt_chars(messages), model_id
    ) + tokens.MESSAGE_OVERHEAD * len(messages)


def _json_problem(text: str, run: Run) -> str | None:
    fmt = run.response_format
    if not isinstance(fmt, dict) or fmt.get("type") not in (
        "json_object",
        "json_schema",
    ):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return "the model's answer is not valid JSON"
    if not isinstance(value, dict):
        return "the model's answer is not a JSON object"
    schema = (fmt.get("json_schema") or {}).get("schema")
    if fmt["type"] == "json_schema" and schema:
        error = next(Draft202012Validator(schema).iter_errors(value), None)
        if error is not None:
            return f"the model's answer does not match the schema: {error.message}"
    return None


def _calls_problem(
    calls: list[dict[str, str]], run: Run, engine: EngineTools
) -> str | None:
    by_name = {t["function"]["name"]: t["function"] for t in engine.functions}
    choice = run.tool_choice
    if choice == "required" and not calls:
        return "the model did not call a tool although tool_choice is 'required'"
    wanted = _wanted_tool(run)
    if wanted is not None and wanted in by_name:
        if not calls:
            return f"the model did not call '{wanted}' as tool_choice requires"
        if any(c["name"] != wanted for c in calls):
            return f"the model called another function than '{wanted}'"
    for call in calls:
        fn = by_name.get(call["name"])
        if fn is None:
            return f"the model called an unknown function '{call['name']}'"
        try:
            args = json.loads(call["arguments"] or "{}")
        except ValueError:
            return f"the model's arguments for '{call['name']}' are not valid JSON"
        if not isinstance(args, dict):
            return f"the model's arguments for '{call['name']}' are not an object"
        if fn.get("strict") and fn.get("parameters"):
            error = next(Draft202012Validator(fn["parameters"]).iter_errors(args), None)
            if error is not None:
                return (
                    f"the model's arguments for '{call['name']}' do not match "
                    f"its schema: {error.message}"
                )
    return None


def _stream_once(
    request: ChatRequest,
    writer: _MessageWriter,
    *,
    live_text: bool,
    watch: _CancelWatch,
    inputs: InputStream,
) -> _Outcome:
    out = _Outcome()
    # Without tools the answer can only be text: its message and step are
    # written (and announced) while the engine works towards the first
    # token, not after it. With tools the model may call them instead, and
    # a message_creation step must not appear before it has said anything.
    on_sent = writer.open if live_text and request.tools is None else None
    for chunk in chat_stream(request, should_stop=watch, on_sent=on_sent):
        if chunk.content:
            out.text += chunk.content
            if live_text:
                writer.feed(chunk.content)
        for delta in chunk.tool_calls:
            out.add_call_delta(delta)
            inputs.update(delta.index, out.calls)
        if chunk.finish_reason:
            out.finish_reason = chunk.finish_reason
        if chunk.usage is not None:
            out.prompt_tokens = chunk.usage.prompt_tokens
            out.completion_tokens = chunk.usage.completion_tokens
            out.cached_tokens = chunk.usage.cached_tokens
    if watch.cancelled:
        raise RunCancelled
    if not out.prompt_tokens and not out.completion_tokens:
        # Some engines (llama-cpp-python) never report usage on a stream:
        # estimate rather than report a run that cost nothing.
        out.prompt_tokens = _estimate_tokens(request.messages, request.model.id)
        produced = out.text + "".join(c["arguments"] for c in out.calls.values())
        out.completion_tokens = max(1, len(produced) // 4) if produced else 0
    else:
        out.reported = True
    metrics.engine_usage(
        request.model.id, out.prompt_tokens, out.completion_tokens, out.cached_tokens
    )
    return out


def run_execute(run_id: str) -> None:
    """Claim ``run_id`` if it is queued and execute its next step."""
    worker = worker_identity()
    close_old_connections()

    claimed = claim(run_id, worker=worker, reads=context.prefetch_reads(run_id))
    if claimed is None:
        return  # another worker has it, or it ended or was cancelled meanwhile
    run = claimed.run
    # Good for the first turn only: a later one follows writes of its own.
    prefetch: context.Prefetch | None = context.Prefetch(*claimed.reads)
    events.publish(run.id, "thread.run.in_progress", run_to_wire(run))
    heartbeats.hold(run.id, worker)
    writer: _MessageWriter | None = None
    try:
        turn = _turn_of(run)
        writer = _MessageWriter(run, turn, run_tool_results(run) if turn else None)
        while writer is not None:
            writer = _execute(run, writer, prefetch)
            prefetch = None
    except RunCancelled:
        if runaway.over_time(run):
            _fail(run, writer, runaway.time_exceeded_error().message)
        else:
            _finish_cancel(run, writer)
    except EngineError as exc:
        logger.warning("run %s: engine error: %s", run.id, exc.message)
        _fail(run, writer, exc.message, code=runaway.error_code(exc))
    except Exception as exc:
        if is_outage(exc):
            # PostgreSQL or Redis went away mid-run: not the run's fault, and
            # failing it would need the database anyway. Its heartbeat stops
            # with us, so the reaper re-queues it (the turn's step and
            # message are keyed, so the retry reuses them).
            logger.warning("run %s: dependency unavailable, left to the reaper", run.id)
            return
        logger.exception("run %s failed", run.id)
        _fail(run, writer, "The run failed because of an internal server error.")
    finally:
        heartbeats.release(run.id)


def _turn_of(run: Run) -> int:
    """Which turn of the run this is: how many rounds of tool outputs came
    back. None yet on a run's first claim, so no query then."""
    if run.attempts == 1:
        return 0
    return RunStep.objects.filter(
        run=run, type=RunStep.Type.TOOL_CALLS, status=RunStep.Status.COMPLETED
    ).count()


def _execute(
    run: Run, writer: _MessageWriter, prefetch: context.Prefetch | None = None
) -> _MessageWriter | None:
    """One engine call and what follows from it. Returns the writer of the
    next turn when server-side tools ran and the model must go on."""
    runaway.check_before_model_call(run)
    model = language_model_cached(run.model)
    if model is None:
        raise EngineError(
            f"The model '{run.model}' is no longer registered.", transient=False
        )
    used = run.usage or {}
    if (
        run.max_completion_tokens
        and used.get("completion_tokens", 0) >= run.max_completion_tokens
    ):
        _end_incomplete(run, "max_completion_tokens", usage=used)
        return None
    engine = engine_tools(run)
    tools = engine.functions
    window = context.assemble(
        run,
        model,
        tools=tools,
        used_prompt_tokens=int(used.get("prompt_tokens", 0)),
        vision=bool(model.capability("vision")),
        tool_steps=writer.turn > 0,
        prefetch=prefetch,
    )

    if window is None:
        _end_incomplete(run, "max_prompt_tokens", usage=used)
        return None
    writer.step_metadata = window.step_metadata()
    writer.deferred = window.deferred_writes
    messages = window.messages
    memory.summarize_if_due(run, model, window)
    tool_choice = _engine_tool_choice(run, engine)
    response_format = _engine_response_format(run)
    max_tokens = None
    if run.max_completion_tokens:
        max_tokens = run.max_completion_tokens - int(used.get("completion_tokens", 0))
    request = ChatRequest(
        model=model,
        messages=messages,
        tools=tools if tool_choice else None,
        tool_choice=tool_choice,
        parallel_tool_calls=run.parallel_tool_calls if tool_choice else None,
        response_format=response_format,
        max_tokens=max_tokens,
        temperature=run.temperature,
        top_p=run.top_p,
        seed=run.seed,
        request_id=run.request_id,
        route_key=run.thread_id,
    )
    watch = _CancelWatch(run.id, runaway.deadline(run))
    # JSON answers are held back until validated, then sent as one delta:
    # never stream text that might turn out to be invalid JSON.
    live_text = response_format is None
    step_usage = _usage_dict(0, 0, None)
    problem: str | None = "no attempt"
    outcome = _Outcome()
    inputs = InputStream(run, writer.turn, engine)
    for _attempt in range(MAX_JSON_ATTEMPTS):
        outcome = _stream_once(
            request, writer, live_text=live_text, watch=watch, inputs=inputs
        )
        if outcome.reported and not model.capability("tokenize", None):
            tokens.calibrate(
                model.id,
                estimated_chars=tokens.prompt_chars(messages)
                + (len(json.dumps(tools)) if tools else 0),
                reported_tokens=outcome.prompt_tokens
                - tokens.MESSAGE_OVERHEAD * len(messages),
            )
        step_usage = _add_usage(
            step_usage,
            _usage_dict(
                outcome.prompt_tokens, outcome.completion_tokens, outcome.cached_tokens
            ),
        )
        calls = [outcome.calls[i] for i in sorted(outcome.calls)]
        if tool_choice is None:
            calls = []
        if not run.parallel_tool_calls:
            calls = calls[:1]  # enforced here: some engines ignore the flag
        outcome.calls = dict(enumerate(calls))
        if calls or tool_choice in ("required",) or isinstance(tool_choice, dict):
            problem = _calls_problem(calls, run, engine)
        else:
            problem = None
        if problem is None and not calls:
            problem = _json_problem(outcome.text, run)
        if problem is None:
            break
        logger.info("run %s: retrying: %s", run.id, problem)
        if live_text and writer.message is not None:
            # A live answer that failed a tool check is superseded, not kept.
            writer.message = None
    total_usage = _add_usage(run.usage, step_usage)
    if problem is not None:
        raise EngineError(
            f"The model did not produce a valid answer after {MAX_JSON_ATTEMPTS} "
            f"attempts: {problem}.",
            transient=False,
        )
    if outcome.calls:
        runaway.check_tool_round(turn=writer.turn)
        if outcome.text.strip():
            if live_text:
                writer.open()
            else:
                writer.feed(outcome.text)
            writer.close(outcome.text, usage=_usage_dict(0, 0, None))
        calls = [outcome.calls[i] for i in sorted(outcome.calls)]
        step = write_tool_step(
            run,
            turn=writer.turn,
            calls=calls,
            engine=engine,
            step_usage=step_usage,
            step=inputs.step,
        )
        if inputs.step is None:
            publish_step_opened(run, step)
        if any(c["name"] in engine.server for c in calls):
            return _after_server_calls(
                run,
                writer,
                step,
                calls=calls,
                engine=engine,
                watch=watch,
                usage=total_usage,
            )
        _require_action(run, step, usage=total_usage)
        return None
    if live_text:
        writer.open()
    else:
        writer.feed(outcome.text)
    hit_limit = outcome.finish_reason == "length" and bool(run.max_completion_tokens)
    if hit_limit:
        writer.close(
            outcome.text, usage=step_usage, incomplete={"reason": "max_tokens"}
        )
        _end_incomplete(run, "max_completion_tokens", usage=total_usage)
        return None
    over_prompt = (
        run.max_prompt_tokens and total_usage["prompt_tokens"] > run.max_prompt_tokens
    )
    if over_prompt:
        writer.close(outcome.text, usage=step_usage)
        _end_incomplete(run, "max_prompt_tokens", usage=total_usage)
        return None
    now = timezone.now()
    # The message, its step and the run end in one statement (one round
    # trip, atomic), and their events go out in one round trip after it.
    writes, closing = writer.closed(outcome.text, usage=step_usage)
    completed = transition(
        run.id,
        source=[RunStatus.IN_PROGRESS],
        target=RunStatus.COMPLETED,
        now=now,
        usage=total_usage,
        together=writes,
    )
    if completed:
        # What the UPDATE wrote, applied in memory: no re-read to publish.
        run.status, run.completed_at, run.usage = RunStatus.COMPLETED, now, total_usage
        run.required_action = run.expires_at = None
        events.publish_many(
            run.id, [*closing, ("thread.run.completed", run_to_wire(run))]
        )
    else:
        events.publish_many(run.id, closing)
        _finish_cancel(run, None)
    return None


def _after_server_calls(
    run: Run,
    writer: _MessageWriter,
    step: RunStep,
    *,
    calls: list[dict[str, str]],
    engine: EngineTools,
    watch: _CancelWatch,
    usage: dict[str, Any],
) -> _MessageWriter | None:
    """Run the turn's server calls; then wait for the client's function
    outputs if the model also called functions, else go on to the next
    turn with the results."""
    results = writer.results
    execute_server_calls(
        run, step, calls=calls, engine=engine, results=results, should_stop=watch
    )
    if watch():
        raise RunCancelled
    if any(c["name"] not in engine.server for c in calls):
        _require_action(run, step, usage=usage)
        return None
    now = timezone.now()
    RunStep.objects.filter(pk=step.pk).update(
        status=RunStep.Status.COMPLETED, completed_at=now
    )
    step.status, step.completed_at = RunStep.Status.COMPLETED, now
    events.publish(run.id, "thread.run.step.completed", run_step_to_wire(step))
    Run.objects.filter(pk=run.id).update(usage=usage)
    run.usage = usage
    return _MessageWriter(run, writer.turn + 1, results)


def _require_action(run: Run, step: RunStep, *, usage: dict[str, Any]) -> None:
    """Hand the step's client function calls to the client."""
    tool_calls = step.step_details["tool_calls"]
    publish_step_delta(
        run,
        step,
        [(i, c) for i, c in enumerate(tool_calls) if c["type"] == "function"],
    )
    required = {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                call_as_made(c) for c in tool_calls if c["type"] == "function"
            ]
        },
    }
    if transition(
        run.id,
        source=[RunStatus.IN_PROGRESS],
        target=RunStatus.REQUIRES_ACTION,
        required_action=required,
        expires_at=timezone.now() + REQUIRES_ACTION_TTL,
        usage=usage,
    ):
        _publish_run(run.id, "thread.run.requires_action")
    else:
        _finish_cancel(run, None)


def _publish_run(run_id: str, event: str) -> None:
    events.publish(run_id, event, run_to_wire(Run.objects.get(pk=run_id)))


def _end_incomplete(run: Run, reason: str, *, usage: dict[str, Any]) -> None:
    if transition(
        run.id,
        source=[RunStatus.IN_PROGRESS],
        target=RunStatus.INCOMPLETE,
        incomplete_details={"reason": reason},
        usage=usage or None,
    ):
        _publish_run(run.id, "thread.run.incomplete")


def _finish_cancel(run: Run, writer: _MessageWriter | None) -> None:
    """The run was asked to stop: close what is open, end ``cancelled``."""
    if writer is not None and writer.message is not None and writer.step is not None:
        writer.close(
            writer.text,
            usage=_usage_dict(0, 0, None),
            incomplete={"reason": "run_cancelled"},
            step_status=RunStep.Status.CANCELLED,
        )
    now = timezone.now()
    RunStep.objects.filter(run=run, status=RunStep.Status.IN_PROGRESS).update(
        status=RunStep.Status.CANCELLED, cancelled_at=now
    )
    if transition(
        run.id,
        source=[RunStatus.CANCELLING, RunStatus.IN_PROGRESS],
        target=RunStatus.CANCELLED,
        now=now,
    ):
        _publish_run(run.id, "thread.run.cancelled")


def _fail(
    run: Run, writer: _MessageWriter | None, message: str, code: str = "server_error"
) -> None:
    now = timezone.now()
    if writer is not None and writer.message is not None and writer.step is not None:
        writer.close(
            writer.text,
            usage=_usage_dict(0, 0, None),
            incomplete={"reason": "run_failed"},
            step_status=RunStep.Status.FAILED,
        )
    error = {"code": code, "message": message}
    RunStep.objects.filter(run=run, status=RunStep.Status.IN_PROGRESS).update(
        status=RunStep.Status.FAILED, failed_at=now, last_error=error
    )
    if transition(
        run.id,
        source=[RunStatus.IN_PROGRESS, RunStatus.CANCELLING],
        target=RunStatus.FAILED,
        now=now,
        last_error=error,
    ):
        _publish_run(run.id, "thread.run.failed")
