from __future__ import annotations

from typing import Annotated, Any

from django.db import transaction
from pydantic import Field

from assistants.models import Message, Thread
from assistants.selectors import thread_lock_scoped
from assistants.services.message import (
    MessageCreateInput,
    messages_build,
    thread_attachments_index,
)
from core.models import Project
from core.validation import Input, Metadata
from tools.resources import ToolResourcesInput, tool_resources_resolve

# OpenAI's cap on the messages a thread may be created with.
THREAD_CREATE_MESSAGES_MAX = 100


class ThreadCreateInput(Input):
    messages: (
        Annotated[
            list[MessageCreateInput], Field(max_length=THREAD_CREATE_MESSAGES_MAX)
        ]
        | None
    ) = None
    tool_resources: ToolResourcesInput | None = None
    metadata: Metadata | None = None


class ThreadUpdateInput(Input):
    tool_resources: ToolResourcesInput | None = None
    metadata: Metadata | None = None


def thread_create(*, project: Project, data: ThreadCreateInput) -> Thread:
    """A thread with its initial messages, in request order.

    Everything happens in one transaction: a bad ``messages[3]`` leaves
    neither the thread, nor ``messages[0..2]``, nor an inline vector store of
    its ``tool_resources`` behind. Raises InvalidRequestError naming the
    field.
    """
    thread = Thread(project=project, metadata=data.metadata or {})
    if not data.messages and data.tool_resources is None:
        # One INSERT is a transaction of its own: one round trip where
        # BEGIN, INSERT and COMMIT took three.
        thread.save()
        return thread
    with transaction.atomic():
        # Inline vector stores are created here: inside the transaction.
        thread.tool_resources = tool_resources_resolve(
            project=project, resources=data.tool_resources
        )
        messages = messages_build(
            project=project,
            thread=thread,
            inputs=data.messages or [],
            param="messages",
        )
        thread.save()
        # One multi-row INSERT: PostgreSQL draws `seq` for the rows in VALUES
        # order, so the list order is the order the client sent.
        Message.objects.bulk_create(messages)
        thread_attachments_index(thread=thread, messages=messages)
    return thread


@transaction.atomic
def thread_update(
    *, project: Project, thread_id: str, data: ThreadUpdateInput
) -> Thread:
    """Replace what the client sent (explicit nulls clear it).

    Raises NotFoundError for another project's thread.
    """
    locked = thread_lock_scoped(project=project, thread_id=thread_id)
    sent = data.model_fields_set
    if "metadata" in sent:
        locked.metadata = data.metadata or {}
    if "tool_resources" in sent:
        locked.tool_resources = tool_resources_resolve(
            project=locked.project, resources=data.tool_resources
        )
    locked.save(update_fields=["metadata", "tool_resources"])
    return locked


def thread_delete(*, thread: Thread) -> dict[str, Any]:
    # The messages go with it (ON DELETE CASCADE via Django's collector,
    # which deletes them in one statement: nothing references a message).
    Thread.objects.filter(pk=thread.pk).delete()
    return {"id": thread.id, "object": "thread.deleted", "deleted": True}
