"""Files: store an uploaded blob with its size and digest, delete it again.

Blobs always go through the ``File.content`` FileField, so whatever Django
storage backend is configured (local directory, S3, ...) holds them; nothing
here knows a filesystem path.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import unicodedata
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import Storage
from django.db import transaction
from django.utils import timezone
from pydantic import AfterValidator, Field, WithJsonSchema

from core.errors import InvalidRequestError, PayloadTooLargeError
from core.models import Project
from core.validation import Input
from tools.models import FILE_PURPOSES, UPLOADABLE_PURPOSES, File

logger = logging.getLogger(__name__)

# Reads and hashes go 1 MB at a time: few calls even for 8 GB, and a
# bounded, small footprint in the web process.
CHUNK_SIZE = 1024 * 1024
MAX_FILENAME_CHARS = 512
FALLBACK_FILENAME = "file"
DEFAULT_MIME_TYPE = "application/octet-stream"


def _check_uploadable(value: str) -> str:
    if value not in UPLOADABLE_PURPOSES:
        allowed = ", ".join(f"'{p}'" for p in UPLOADABLE_PURPOSES)
        raise ValueError(f"'{value}' is not a supported purpose; use one of {allowed}")
    return value


# The enum documents the choices in the schema; the validator keeps the
# message that lists them.
UploadablePurpose = Annotated[
    str,
    AfterValidator(_check_uploadable),
    WithJsonSchema({"type": "string", "enum": list(UPLOADABLE_PURPOSES)}),
]


class ExpiresAfterInput(Input):
    """OpenAI's file expiration policy: ``seconds`` after the file's creation."""

    anchor: Literal["created_at"]
    seconds: Annotated[int, Field(ge=3600, le=2_592_000)]


class FileCreateInput(Input):
    """The form fields of ``POST /files`` besides the file itself."""

    purpose: UploadablePurpose
    expires_after: ExpiresAfterInput | None = None


def purpose_require(value: str, *, param: str = "purpose") -> str:
    """A list filter's purpose: any known purpose, else 400 naming ``param``."""
    if value not in FILE_PURPOSES:
        allowed = ", ".join(f"'{p}'" for p in FILE_PURPOSES)
        raise InvalidRequestError(
            f"Invalid '{param}': '{value}'. Expected one of {allowed}.", param=param
        )
    return value


def filename_sanitise(raw: str) -> str:
    """The name a client gave, reduced to something safe to store and echo.

    Only the last path component survives (either separator), control
    characters go, and at most 512 characters remain, keeping a short
    extension so the name still says what the file is. Never empty.
    """
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C").strip()
    if name in {"", ".", ".."}:
        return FALLBACK_FILENAME
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and stem and len(ext) <= 32:
            keep = MAX_FILENAME_CHARS - len(ext) - 1
            name = f"{stem[:keep]}.{ext}"
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def mime_type_clean(raw: str | None, *, filename: str) -> str:
    """A stored MIME type: the client's, if it is a plausible header value."""
    value = (raw or "").strip()
    if not value or len(value) > 255 or not value.isprintable():
        return mimetypes.guess_type(filename)[0] or DEFAULT_MIME_TYPE
    return value


def file_expiry(file: File, expires_after: ExpiresAfterInput | None) -> None:
    if expires_after is not None:
        file.expires_at = file.created_at + timedelta(seconds=expires_after.seconds)


def blobs_discard(storage: Storage, names: Iterable[str | None]) -> None:
    """Delete stored blobs, best effort.

    Called after the rows that named them are gone (on commit): a failure
    leaves an orphan blob, which costs disk but never serves stale data, so
    it is logged rather than raised into a request that already succeeded.
    """
    for name in names:
        if not name:
            continue
        try:
            storage.delete(name)
        except Exception:
            logger.exception("could not delete stored blob %s", name)


def blobs_discard_on_commit(storage: Storage, names: Iterable[str | None]) -> None:
    pending = list(names)
    transaction.on_commit(lambda: blobs_discard(storage, pending))


def _digest(content: DjangoFile) -> tuple[int, str]:
    """(size, sha256 hex) of ``content``, read once in chunks; rewinds it."""
    sha = hashlib.sha256()
    size = 0
    for chunk in content.chunks(CHUNK_SIZE):
        sha.update(chunk)
        size += len(chunk)
    content.seek(0)
    return size, sha.hexdigest()


def file_store(file: File, content: DjangoFile) -> None:
    """Write ``content`` to storage as ``file``'s blob (the row is not saved).

    A spooled upload (``temporary_file_path``) is moved, not copied, by the
    filesystem backend; other backends stream it in chunks. The storage name
    comes from the file's id, never from the client's filename.
    """
    try:
        file.content.save(file.filename, content, save=False)
    except BaseException:
        # A write that failed half-way may leave a partial blob under the
        # name the id determines (ids are random, so it is no one else's).
        intended = file.content.field.generate_filename(file, file.filename)
        blobs_discard(file.content.storage, [intended])
        raise


def file_row_save(file: File) -> None:
    """Insert ``file``'s row; if that fails, its blob must not linger."""
    try:
        file.save(force_insert=True)
    except BaseException:
        blobs_discard(file.content.storage, [file.content.name])
        raise


def file_create(
    *,
    project: Project,
    data: FileCreateInput,
    content: DjangoFile,
    filename: str,
    mime_type: str | None,
) -> File:
    """Store an uploaded file and record it.

    Raises PayloadTooLargeError when ``content`` is over MAX_UPLOAD_BYTES (the
    ASGI guard normally refuses such bodies before they are read; this is the
    check that holds for every caller) and InvalidRequestError (param
    ``file``) for an empty file, which OpenAI also refuses.
    """
    limit = int(settings.MAX_UPLOAD_BYTES)
    if content.size is not None and content.size > limit:
        raise PayloadTooLargeError(
            f"The file is {content.size} bytes; the limit is {limit} bytes.",
            param="file",
        )
    size, sha256 = _digest(content)
    if size > limit:
        raise PayloadTooLargeError(
            f"The file is {size} bytes; the limit is {limit} bytes.", param="file"
        )
    if size == 0:
        raise InvalidRequestError("File is empty.", param="file")
    name = filename_sanitise(filename)
    file = File(
        project=project,
        filename=name,
        purpose=data.purpose,
        bytes=size,
        sha256=sha256,
        mime_type=mime_type_clean(mime_type, filename=name),
    )
    file_expiry(file, data.expires_after)
    file_store(file, content)
    file_row_save(file)
    return file


def file_delete(*, file: File) -> dict[str, Any]:
    """Delete the row, then (once that commits) the blob.

    The blob goes only after commit so a rolled-back delete never leaves a
    row whose content is missing.
    """
    storage, name = file.content.storage, file.content.name
    with transaction.atomic():
        File.objects.filter(pk=file.pk).delete()
        blobs_discard_on_commit(storage, [name])
    return {"id": file.id, "object": "file", "deleted": True}


def files_expire_due(*, now: datetime | None = None, batch: int = 500) -> int:
    """Delete files past ``expires_at`` (rows, then blobs after commit);
    returns how many. Safe to run concurrently and repeatedly."""
    moment = now or timezone.now()
    due = list(File.objects.filter(expires_at__lte=moment)[:batch])
    for file in due:
        file_delete(file=file)
    return len(due)
