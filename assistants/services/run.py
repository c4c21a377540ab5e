"""Writes on runs: create, create-thread-and-run, update, cancel, and the
client's half of function calling (``tool_outputs_submit``).

Runs are executed by a Celery worker (``assistants.runs.executor``); these
services only write rows, publish the events they cause, and enqueue the
run once their transaction has committed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from django.db import IntegrityError, transaction
from django.utils import timezone
from pydantic import Field

from assistants.api.v1.serializers import run_step_to_wire, run_to_wire
from assistants.inputs import (
    ResponseFormatInput,
    Temperature,
    TopP,
    response_format_to_wire,
)
from assistants.models import Assistant, Message, Run, RunStatus, RunStep, Thread
from assistants.runs import events
from assistants.runs.state import transition
from assistants.selectors import (
    active_run_id_of,
    active_run_of,
    assistant_get,
    thread_lock_scoped,
    thread_row_sql,
)
from assistants.services.message import (
    MessageCreateInput,
    messages_build,
    thread_attachments_index,
)
from assistants.services.thread import ThreadCreateInput, thread_create
from core.db import insert_together, insert_under_lock
from core.errors import InvalidRequestError, NotFoundError
from core.models import Project
from core.selectors import language_model_require
from core.services.quota import quota_require
from core.validation import Count, Id, Input, Int64, Metadata
from tools.registry import ToolsInput, tools_to_wire
from tools.resources import ToolResourcesInput


class TruncationStrategyInput(Input):
    type: Literal["auto", "last_messages"]
    last_messages: Count | None = None


class FunctionName(Input):
    name: Annotated[str, Field(min_length=1, max_length=64)]


class NamedFunctionChoice(Input):
    type: Literal["function"]
    function: FunctionName


class NamedToolChoice(Input):
    type: Literal["file_search", "code_interpreter"]


ToolChoiceInput = (
    Literal["none", "auto", "required"]
    | Annotated[NamedFunctionChoice | NamedToolChoice, Field(discriminator="type")]
)


class RunOptions(Input):
    """What a run may override on its assistant (create and create-and-run)."""

    assistant_id: Id
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    tools: ToolsInput | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    # An extension (OpenAI's runs have no seed): passed through to the engine.
    seed: Int64 | None = None
    stream: bool | None = None
    max_prompt_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    truncation_strategy: TruncationStrategyInput | None = None
    tool_choice: ToolChoiceInput | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatInput | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None


class RunCreateInput(RunOptions):
    additional_instructions: Annotated[str, Field(max_length=256_000)] | None = None
    additional_messages: (
        Annotated[list[MessageCreateInput], Field(max_length=100)] | None
    ) = None


class ThreadAndRunInput(RunOptions):
    thread: ThreadCreateInput | None = None
    tool_resources: ToolResourcesInput | None = None


class RunUpdateInput(Input):
    metadata: Metadata | None = None


class ToolOutputInput(Input):
    tool_call_id: Id
    output: Annotated[str, Field(max_length=512_000)] = ""


class ToolOutputsInput(Input):
    tool_outputs: Annotated[list[ToolOutputInput], Field(max_length=128)]
    stream: bool | None = None


def _tool_choice_to_wire(choice: Any, tools: list[dict[str, Any]]) -> Any:
    """Check a named choice against the run's tools; return the stored form."""
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        if choice == "required" and not tools:
            raise InvalidRequestError(
                "tool_choice 'required' needs at least one tool.", param="tool_choice"
            )
        return choice
    if isinstance(choice, NamedFunctionChoice):
        names = {t["function"]["name"] for t in tools if t["type"] == "function"}
        if choice.function.name not in names:
            raise InvalidRequestError(
                f"tool_choice names the function '{choice.function.name}', which is "
                "not among the run's tools.",
                param="tool_choice.function.name",
            )
        return {"type": "function", "function": {"name": choice.function.name}}
    if not any(t["type"] == choice.type for t in tools):
        raise InvalidRequestError(
            f"tool_choice names the {choice.type} tool, which is not among the "
            "run's tools.",
            param="tool_choice.type",
        )
    return {"type": choice.type}


def _build_run(
    *,
    project: Project,
    thread_id: str,
    assistant: Assistant,
    data: RunOptions,
    additional_instructions: str | None = None,
    request_id: str = "",
) -> Run:
    """An unsaved run: the assistant's settings with the request's overrides."""
    sent = data.model_fields_set
    model = data.model or assistant.model
    language_model_require(model_id=model)
    tools = tools_to_wire(data.tools or []) if "tools" in sent else assistant.tools
    instructions = (
        data.instructions
        if data.instructions is not None
        else assistant.instructions or ""
    )
    if additional_instructions:
        instructions = f"{instructions}\n\n{additional_instructions}".strip()
    strategy = (
        data.truncation_strategy.model_dump()
        if data.truncation_strategy
        else {"type": "auto", "last_messages": None}
    )
    return Run(
        project=project,
        thread_id=thread_id,
        assistant_id=assistant.id,
        model=model,
        instructions=instructions,
        tools=tools,
        tool_choice=_tool_choice_to_wire(data.tool_choice, tools),
        parallel_tool_calls=(
            data.parallel_tool_calls if data.parallel_tool_calls is not None else True
        ),
        response_format=(
            response_format_to_wire(data.response_format)
            if "response_format" in sent
            else assistant.response_format or "auto"
        ),
        truncation_strategy=strategy,
        max_prompt_tokens=data.max_prompt_tokens,
        max_completion_tokens=data.max_completion_tokens,
        temperature=(
            data.temperature if data.temperature is not None else assistant.temperature
        ),
        top_p=data.top_p if data.top_p is not None else assistant.top_p,
        seed=data.seed,
        metadata=data.metadata or {},
        request_id=request_id[:128],
    )


def _insert_run(run: Run) -> None:
    """INSERT the run; the partial unique index decides the race.

    Raises IntegrityError when the thread already has an active run, which
    is what 49 of 50 concurrent creates get: it aborts the caller's
    transaction, and ``_one_active_run`` turns it into a 400 once that has
    rolled back. No savepoint: two round trips fewer on every run create.
    """
    insert_together(run)


@contextmanager
def _one_active_run(thread_id: str) -> Iterator[None]:
    """Around a transaction that inserts a run: a second active run on the
    thread becomes InvalidRequestError (400), after the rollback."""
    try:
        yield
    except IntegrityError as exc:
        if "one_active_run_per_thread" not in str(exc):
            raise
        active = active_run_of(thread=Thread(id=thread_id))
        active_id = active.id if active else "another run"
        raise InvalidRequestError(
            f"Thread {thread_id} already has an active run {active_id}."
        ) from None


def _announce_and_enqueue(run: Run) -> None:
    """After commit: the run's first events, then the wake-up for a worker.

    Neither raises when Redis is away: the run is committed, so the request
    succeeds and the reaper sends the wake-up later (see ``run_wake``).
    """
    from assistants.tasks import run_wake

    def after_commit() -> None:
        wire = run_to_wire(run)
        run_wake(
            run.id, announce=[("thread.run.created", wire), ("thread.run.queued", wire)]
        )

    transaction.on_commit(after_commit)


def run_create(
    *, project: Project, thread_id: str, data: RunCreateInput, request_id: str = ""
) -> Run:
    """Create a queued run on the project's thread ``thread_id`` (with any
    additional messages).

    Raises NotFoundError for a thread or an assistant of another project,
    InvalidRequestError for an unknown model, a bad tool choice, or a thread
    that already has an active run, InsufficientQuotaError when the
    project's token budget is spent. Nothing is written when it raises.
    """
    quota_require(project_id=project.id)
    assistant = _assistant_for(project=project, assistant_id=data.assistant_id)
    run = _build_run(
        project=project,
        thread_id=thread_id,
        assistant=assistant,
        data=data,
        additional_instructions=data.additional_instructions,
        request_id=request_id,
    )
    run.heartbeat_at = timezone.now()  # when it was last enqueued
    with _one_active_run(thread_id):
        if data.additional_messages:
            # The messages and the run in one transaction, under the
            # thread's lock.
            with transaction.atomic():
                locked = thread_lock_scoped(project=project, thread_id=thread_id)
                messages = messages_build(
                    project=project,
                    thread=locked,
                    inputs=data.additional_messages,
                    param="additional_messages",
                )
                Message.objects.bulk_create(messages)
                thread_attachments_index(thread=locked, messages=messages)
                _insert_run(run)
        # Otherwise the thread's row lock (what message creates take) and
        # the INSERT in one statement. The partial unique index decides the
        # race with another run either way, the lock the one with a message.
        elif not insert_under_lock(
            run, thread_row_sql(project=project, thread_id=thread_id)
        ):
            raise NotFoundError.for_object("thread", thread_id)
    _announce_and_enqueue(run)
    return run


def thread_and_run_create(
    *, project: Project, data: ThreadAndRunInput, request_id: str = ""
) -> Run:
    """Create a thread (with its messages and tool resources) and run it, in
    one transaction."""
    quota_require(project_id=project.id)
    assistant = _assistant_for(project=project, assistant_id=data.assistant_id)
    thread_input = data.thread or ThreadCreateInput()
    if data.tool_resources is not None and thread_input.tool_resources is None:
        thread_input = thread_input.model_copy(
            update={"tool_resources": data.tool_resources}
        )
    with transaction.atomic():
        thread = thread_create(project=project, data=thread_input)
        run = _build_run(
            project=project,
            thread_id=thread.id,
            assistant=assistant,
            data=data,
            request_id=request_id,
        )
        run.thread = thread  # the view answers with it (thread.created)
        run.heartbeat_at = timezone.now()
        _insert_run(run)
        _announce_and_enqueue(run)
    return run


def _assistant_for(*, project: Project, assistant_id: str) -> Assistant:
    try:
        return assistant_get(project=project, assistant_id=assistant_id)
    except NotFoundError as exc:
        exc.param = "assistant_id"
        raise


def run_update(*, run: Run, data: RunUpdateInput) -> Run:
    if "metadata" in data.model_fields_set:
        Run.objects.filter(pk=run.pk).update(metadata=data.metadata or {})
        run.refresh_from_db()
    return run


def run_cancel(*, run: Run) -> Run:
    """Cancel ``run``: at once when no worker holds it, otherwise by asking the
    worker (``cancelling``), which stops the engine request and finishes the
    cancel within seconds. The reaper finishes it if that worker is gone.

    Raises InvalidRequestError for a run that has already ended.
    """
    now = timezone.now()
    if transition(
        run.id,
        source=[RunStatus.QUEUED, RunStatus.REQUIRES_ACTION],
        target=RunStatus.CANCELLED,
        now=now,
    ):
        RunStep.objects.filter(run=run, status=RunStep.Status.IN_PROGRESS).update(
            status=RunStep.Status.CANCELLED, cancelled_at=now
        )
        run.refresh_from_db()
        events.publish(run.id, "thread.run.cancelled", run_to_wire(run))
        return run
    if transition(
        run.id, source=[RunStatus.IN_PROGRESS], target=RunStatus.CANCELLING, now=now
    ):
        events.request_cancel(run.id)
        run.refresh_from_db()
        events.publish(run.id, "thread.run.cancelling", run_to_wire(run))
        return run
    run.refresh_from_db()
    if run.status == RunStatus.CANCELLING:
        return run
    raise InvalidRequestError(f"Cannot cancel run with status '{run.status}'.")


@dataclass(frozen=True)
class SubmittedOutputs:
    run: Run
    stream_after: str  # the event id a new SSE stream starts after


def tool_outputs_submit(*, run: Run, data: ToolOutputsInput) -> SubmittedOutputs:
    """Record the client's outputs for every pending call and re-queue the run.

    All pending calls must be answered at once, each exactly once. Raises
    InvalidRequestError otherwise, or when the run is not waiting for them.
    """
    with transaction.atomic():
        locked = Run.objects.select_for_update().get(pk=run.pk)
        if locked.status != RunStatus.REQUIRES_ACTION:
            raise InvalidRequestError(
                f'Runs in status "{locked.status}" do not accept tool outputs.'
            )
        if locked.expires_at and locked.expires_at <= timezone.now():
            raise InvalidRequestError(
                "This run expired waiting for tool outputs.", code="run_expired"
            )
        pending = [
            c["id"]
            for c in (locked.required_action or {})
            .get("submit_tool_outputs", {})
            .get("tool_calls", [])
        ]
        outputs: dict[str, str] = {}
        for i, item in enumerate(data.tool_outputs):
            if item.tool_call_id not in pending:
                raise InvalidRequestError(
                    f"No tool call '{item.tool_call_id}' is waiting for output in "
                    f"this run.",
                    param=f"tool_outputs[{i}].tool_call_id",
                )
            if item.tool_call_id in outputs:
                raise InvalidRequestError(
                    f"Duplicate output for tool call '{item.tool_call_id}'.",
                    param=f"tool_outputs[{i}].tool_call_id",
                )
            outputs[item.tool_call_id] = item.output
        missing = [call_id for call_id in pending if call_id not in outputs]
        if missing:
            raise InvalidRequestError(
                f"Expected tool outputs for call_ids {pending}, got "
                f"{list(outputs)}; missing {missing}.",
                param="tool_outputs",
            )
        now = timezone.now()
        step = (
            RunStep.objects.select_for_update()
            .filter(
                run=locked,
                type=RunStep.Type.TOOL_CALLS,
                status=RunStep.Status.IN_PROGRESS,
            )
            .order_by("-seq")
            .first()
        )
        if step is not None:
            details = dict(step.step_details)
            details["tool_calls"] = [
                {
                    **call,
                    "function": {**call["function"], "output": outputs.get(call["id"])},
                }
                if call.get("type") == "function"
                else call
                for call in details.get("tool_calls", [])
            ]
            step.step_details = details
            step.status = RunStep.Status.COMPLETED
            step.completed_at = now
            step.save(update_fields=["step_details", "status", "completed_at"])
        stream_after = events.last_id(locked.id)
        transition(
            locked.id,
            source=[RunStatus.REQUIRES_ACTION],
            target=RunStatus.QUEUED,
            now=now,
            heartbeat_at=now,
        )
        locked.refresh_from_db()
        fresh_step = step

        def after_commit() -> None:
            from assistants.tasks import run_wake

            batch: list[tuple[str, Any]] = []
            if fresh_step is not None:
                batch.append(
                    ("thread.run.step.completed", run_step_to_wire(fresh_step))
                )
            batch.append(("thread.run.queued", run_to_wire(locked)))
            events.publish_many(locked.id, batch)
            run_wake(locked.id)

        transaction.on_commit(after_commit)
    return SubmittedOutputs(run=locked, stream_after=stream_after)


def thread_assert_no_active_run(*, thread: Thread) -> None:
    """Messages cannot be added while a run is active (OpenAI's rule).

    Call with the thread's row lock held (``thread_lock_scoped``), so a run cannot
    start between this check and the caller's write.
    """
    active_id = active_run_id_of(thread=thread)
    if active_id is not None:
        raise InvalidRequestError(
            f"Can't add messages to {thread.id} while a run {active_id} is active."
        )
