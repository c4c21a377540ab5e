from __future__ import annotations

from django.db.models import QuerySet

from assistants.models import (
    ACTIVE_RUN_STATUSES,
    Assistant,
    Message,
    Run,
    RunStep,
    Thread,
)
from core.db import Statement
from core.errors import NotFoundError
from core.models import Project
from core.selectors import get_by_or_404, get_or_404


def assistants_of(*, project: Project) -> QuerySet[Assistant]:
    return Assistant.objects.filter(project=project)


def assistant_get(*, project: Project, assistant_id: str) -> Assistant:
    return get_by_or_404(Assistant, assistant_id, "assistant", project_id=project.id)


def threads_of(*, project: Project) -> QuerySet[Thread]:
    return Thread.objects.filter(project=project)


def thread_get(*, project: Project, thread_id: str) -> Thread:
    return get_by_or_404(Thread, thread_id, "thread", project_id=project.id)


def message_get(*, project: Project, thread_id: str, message_id: str) -> Message:
    """A message of the project's thread ``thread_id``.

    Raises NotFoundError for the thread when it is not the project's, else
    for the message when it is not in that thread (a message id under
    another thread is not found, even in the same project).
    """
    message = Message.objects.filter(
        pk=message_id, thread_id=thread_id, thread__project=project
    ).first()
    if message is None:
        thread_get(project=project, thread_id=thread_id)
        raise NotFoundError.for_object("message", message_id)
    return message


def runs_of(*, thread: Thread) -> QuerySet[Run]:
    return Run.objects.filter(thread=thread)


def run_get(*, project: Project, thread_id: str, run_id: str) -> Run:
    """A run of the caller's thread; 404 for any other."""
    return get_by_or_404(Run, run_id, "run", thread_id=thread_id, project_id=project.id)


def active_run_of(*, thread: Thread) -> Run | None:
    return Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES).first()


def active_run_id_of(*, thread: Thread) -> str | None:
    """The id of the thread's active run, if any: on every message create, so
    one index probe for one column."""
    ids = list(
        Run.objects.filter(thread=thread, status__in=ACTIVE_RUN_STATUSES).values_list(
            "id", flat=True
        )[:1]
    )
    return ids[0] if ids else None


def thread_lock_scoped(*, project: Project, thread_id: str) -> Thread:
    """The project's thread ``thread_id`` under its row lock, in one query.

    For writes that start from a thread id (no separate ``thread_get``): call
    inside a transaction. Raises NotFoundError for another project's thread.
    """
    thread = get_or_404(
        Thread.objects.select_for_update(of=("self",)).filter(project=project),
        thread_id,
        "thread",
    )
    thread.project = project  # the caller's: no lazy load later
    return thread


def thread_row_sql(*, project: Project, thread_id: str) -> Statement:
    """The SELECT of the project's thread ``thread_id`` (its id alone), for
    a write that locks it in the same statement (``core.db.insert_under_lock``)."""
    return (
        f'SELECT id FROM "{Thread._meta.db_table}" WHERE id = %s AND project_id = %s',
        [thread_id, project.id],
    )


def active_run_sql(*, thread_id: str) -> Statement:
    """The SELECT that finds an active run of thread ``thread_id``, for a
    write that must not happen while one is (``core.db.insert_after_lock``)."""
    holes = ", ".join(["%s"] * len(ACTIVE_RUN_STATUSES))
    return (
        f'SELECT 1 FROM "{Run._meta.db_table}" '
        f"WHERE thread_id = %s AND status IN ({holes})",
        [thread_id, *ACTIVE_RUN_STATUSES],
    )


def messages_of_thread_id(
    *, project: Project, thread_id: str, run_id: str | None = None
) -> QuerySet[Message]:
    """The messages of the project's thread ``thread_id``, scoped in the same
    query (a join) rather than after a separate ``thread_get``. Empty for
    another project's thread: the caller tells "no messages" from "no such
    thread" only when the page comes back empty."""
    messages = Message.objects.filter(thread_id=thread_id, thread__project=project)
    if run_id is not None:
        messages = messages.filter(run_id=run_id)
    return messages


def run_steps_of(*, run: Run) -> QuerySet[RunStep]:
    return RunStep.objects.filter(run=run)


def run_step_get(*, run: Run, step_id: str) -> RunStep:
    return get_by_or_404(RunStep, step_id, "run step", run_id=run.id)
