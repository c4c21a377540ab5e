"""Messages: the turns of a thread, stored in the shape clients read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from django.db import transaction
from pydantic import AfterValidator, Discriminator, Field, Tag

from assistants.models import Message, Thread
from assistants.selectors import active_run_sql, thread_lock_scoped, thread_row_sql
from core.db import insert_after_lock
from core.models import Project
from core.net.fetch import literal_refusal
from core.selectors import ids_require
from core.validation import Id, Input, Metadata
from tools.code_interpreter.schema import CodeInterpreterTool
from tools.models import VectorStore
from tools.selectors import files_of
from tools.services.vector_store import (
    ExpiresAfter,
    VectorStoreCreateInput,
    VectorStoreFileCreateInput,
    vector_store_create,
    vector_store_file_add,
)

# OpenAI's limit on one message's text; it also keeps a single message well
# inside a model's context window.
MESSAGE_TEXT_MAX = 256_000

ImageDetail = Literal["auto", "low", "high"]


class TextPart(Input):
    type: Literal["text"]
    text: Annotated[str, Field(max_length=MESSAGE_TEXT_MAX)]


class ImageFileRef(Input):
    file_id: Id
    detail: ImageDetail | None = None


class ImageFilePart(Input):
    type: Literal["image_file"]
    image_file: ImageFileRef


def _check_image_url(url: str) -> str:
    # Only schemes an engine can fetch or decode itself: no file://, ftp://
    # or javascript: reaching the model server on a client's behalf.
    if url[:5].lower() == "data:":
        if "," not in url:
            raise ValueError("a data: URL needs a ',' before its data")
        return url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http(s) URL or a data: URL")
    # Early answer for the obvious cases; the worker's fetch (core.net)
    # checks every resolved address again, after each redirect too.
    refusal = literal_refusal(parts.hostname or "")
    if refusal is not None:
        raise ValueError(f"image URLs must point to a public host: {refusal}")
    return url


class ImageUrlRef(Input):
    # The pattern documents the accepted schemes in the schema; the validator
    # still does the real checks (and the public-host refusal).
    url: Annotated[
        str,
        Field(
            min_length=1,
            pattern=r"^([hH][tT][tT][pP][sS]?://[^/?#]|[dD][aA][tT][aA]:[^,]*,)",
        ),
        AfterValidator(_check_image_url),
    ]
    detail: ImageDetail | None = None


class ImageUrlPart(Input):
    type: Literal["image_url"]
    image_url: ImageUrlRef


PART_TYPES = ("text", "image_file", "image_url")


def _part_kind(value: Any) -> str | None:
    kind = (
        value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    )
    return f"{kind}_part" if kind in PART_TYPES else None


# Tagged by a callable rather than Field(discriminator="type"): pydantic puts
# the tag in an error's location, and a tag equal to a key of the part
# ("text" in {"type": "text", "text": ...}) would make core.validation walk
# into that key, naming `content[0].text` for an unknown `content[0].extra`.
ContentPartInput = Annotated[
    Annotated[TextPart, Tag("text_part")]
    | Annotated[ImageFilePart, Tag("image_file_part")]
    | Annotated[ImageUrlPart, Tag("image_url_part")],
    Discriminator(
        _part_kind,
        custom_error_type="content_part_type",
        custom_error_message=(
            "expected a content part with 'type' one of 'text', 'image_file' or "
            "'image_url'"
        ),
    ),
]


def _content_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "parts"
    return None


# Dispatch on the JSON type first: a plain union would report a bad parts
# array as "expected a string", since both members fail and the string
# member's error comes first.
ContentInput = Annotated[
    Annotated[Annotated[str, Field(max_length=MESSAGE_TEXT_MAX)], Tag("text")]
    | Annotated[Annotated[list[ContentPartInput], Field(min_length=1)], Tag("parts")],
    Discriminator(
        _content_kind,
        custom_error_type="content_type",
        custom_error_message="expected a string or an array of content parts",
    ),
]


class AttachmentFileSearchTool(Input):
    # Attachments name the tool only; its options live on the assistant/run.
    type: Literal["file_search"]


AttachmentToolInput = Annotated[
    CodeInterpreterTool | AttachmentFileSearchTool, Field(discriminator="type")
]


class AttachmentInput(Input):
    file_id: Id
    tools: list[AttachmentToolInput] | None = None


class MessageCreateInput(Input):
    role: Literal["user", "assistant"]
    content: ContentInput
    attachments: list[AttachmentInput] | None = None
    metadata: Metadata | None = None


class MessageUpdateInput(Input):
    metadata: Metadata | None = None


def _at(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _file_refs(data: MessageCreateInput, *, param: str) -> list[tuple[str, str]]:
    """(file id, request path) for every file the message refers to."""
    refs: list[tuple[str, str]] = []
    if isinstance(data.content, list):
        for i, part in enumerate(data.content):
            if isinstance(part, ImageFilePart):
                refs.append(
                    (
                        part.image_file.file_id,
                        _at(param, f"content[{i}].image_file.file_id"),
                    )
                )
    for i, attachment in enumerate(data.attachments or []):
        refs.append((attachment.file_id, _at(param, f"attachments[{i}].file_id")))
    return refs


def content_to_wire(content: str | list[Any]) -> list[dict[str, Any]]:
    """Request content → stored content parts (the wire shape)."""
    if isinstance(content, str):
        return [{"type": "text", "text": {"value": content, "annotations": []}}]
    out: list[dict[str, Any]] = []
    for part in content:
        if isinstance(part, TextPart):
            out.append(
                {"type": "text", "text": {"value": part.text, "annotations": []}}
            )
        elif isinstance(part, ImageFilePart):
            out.append(
                {
                    "type": "image_file",
                    "image_file": {
                        "file_id": part.image_file.file_id,
                        "detail": part.image_file.detail or "auto",
                    },
                }
            )
        else:
            assert isinstance(part, ImageUrlPart)
            out.append(
                {
                    "type": "image_url",
                    "image_url": {
                        "url": part.image_url.url,
                        "detail": part.image_url.detail or "auto",
                    },
                }
            )
    return out


def attachments_to_wire(attachments: Sequence[AttachmentInput]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for attachment in attachments:
        # Naming a tool twice means nothing more than naming it once.
        types = list(dict.fromkeys(tool.type for tool in attachment.tools or []))
        out.append(
            {"file_id": attachment.file_id, "tools": [{"type": t} for t in types]}
        )
    return out


def messages_build(
    *,
    project: Project,
    thread: Thread,
    inputs: Sequence[MessageCreateInput],
    param: str = "",
) -> list[Message]:
    """Unsaved messages for ``thread``, in request order, after checking that
    every referenced file belongs to ``project``.

    ``param`` is the request path of ``inputs`` (``"messages"`` on thread
    create; errors then read ``messages[3].attachments[0].file_id``); empty
    when ``inputs`` is the single message of the request body. Raises
    InvalidRequestError naming the field. Writes nothing.
    """
    refs: list[tuple[str, str]] = []
    for i, data in enumerate(inputs):
        refs.extend(_file_refs(data, param=f"{param}[{i}]" if param else ""))
    # A message's file ids sit at different depths (attachments[0].file_id),
    # so each carries its own path; one query for all of them.
    if refs:  # building the scoped queryset alone costs as much as a query
        ids_require(files_of(project=project), refs, "file")
    messages = []
    for data in inputs:
        message = Message(
            thread=thread,
            role=data.role,
            content=content_to_wire(data.content),
            attachments=attachments_to_wire(data.attachments or []),
            metadata=data.metadata or {},
            status=Message.Status.COMPLETED,
        )
        # A message a client writes is whole the moment it exists.
        message.completed_at = message.created_at
        messages.append(message)
    return messages


# As OpenAI does for a thread's own store: expires a week after last use.
THREAD_STORE_EXPIRY_DAYS = 7


def thread_attachments_index(*, thread: Thread, messages: Sequence[Message]) -> None:
    """Put files attached for ``file_search`` into the thread's vector store,
    created on first use and named in the thread's ``tool_resources``; they
    are ingested once the transaction commits.

    The caller holds the thread's row lock (or created the thread) inside a
    transaction. The files were checked to be the project's already.
    """
    file_ids = list(
        dict.fromkeys(
            item["file_id"]
            for message in messages
            for item in message.attachments or []
            if any(t.get("type") == "file_search" for t in item.get("tools") or [])
        )
    )
    if not file_ids:
        return
    resources = dict(thread.tool_resources or {})
    store_ids = list((resources.get("file_search") or {}).get("vector_store_ids") or [])
    store = (
        VectorStore.objects.filter(
            pk=store_ids[0], project_id=thread.project_id
        ).first()
        if store_ids
        else None
    )
    if store is not None:
        for file_id in file_ids:
            vector_store_file_add(
                vector_store=store, data=VectorStoreFileCreateInput(file_id=file_id)
            )
        return
    store = vector_store_create(
        project=thread.project,
        data=VectorStoreCreateInput(
            name=f"thread {thread.id}",
            file_ids=file_ids,
            expires_after=ExpiresAfter(
                anchor="last_active_at", days=THREAD_STORE_EXPIRY_DAYS
            ),
        ),
    )
    resources["file_search"] = {"vector_store_ids": [store.id]}
    thread.tool_resources = resources
    Thread.objects.filter(pk=thread.pk).update(tool_resources=resources)


def message_create(
    *, project: Project, thread_id: str, data: MessageCreateInput
) -> Message:
    """Append a client-written message to ``thread``.

    Holds the thread's row lock until commit: anything that must not
    interleave with a new message (a run starting on the thread, the thread
    being deleted) takes the same lock, and checks on the thread's state
    belong right after it. Raises NotFoundError if the thread is gone, and
    InvalidRequestError for a file that is not the project's.

    A message without attachments (the common case: nothing to check or
    index) goes in as one round trip (``insert_after_lock``: the same lock,
    the same active-run check); when that does not insert, the full path
    below finds out why and says so.
    """
    if not data.attachments:
        (message,) = messages_build(
            project=project, thread=Thread(id=thread_id, project=project), inputs=[data]
        )
        if insert_after_lock(
            message,
            thread_row_sql(project=project, thread_id=thread_id),
            active_run_sql(thread_id=thread_id),
        ):
            return message
    return _message_create_locked(project=project, thread_id=thread_id, data=data)


@transaction.atomic
def _message_create_locked(
    *, project: Project, thread_id: str, data: MessageCreateInput
) -> Message:
    locked = thread_lock_scoped(project=project, thread_id=thread_id)
    # Imported here: services.run imports this module for messages_build.
    from assistants.services.run import thread_assert_no_active_run

    thread_assert_no_active_run(thread=locked)
    (message,) = messages_build(project=locked.project, thread=locked, inputs=[data])
    message.save()
    thread_attachments_index(thread=locked, messages=[message])
    return message


def message_update(*, message: Message, data: MessageUpdateInput) -> Message:
    """Only metadata is client-writable on a message."""
    if "metadata" in data.model_fields_set:
        message.metadata = data.metadata or {}
        # One column, written as sent: no read-modify-write to protect.
        message.save(update_fields=["metadata"])
    return message


def message_delete(*, message: Message) -> dict[str, Any]:
    Message.objects.filter(pk=message.pk).delete()
    return {"id": message.id, "object": "thread.message.deleted", "deleted": True}
