"""The Uploads API: a large file sent as parts, assembled into a File.

Lifecycle: ``pending`` → ``completed`` | ``cancelled`` | ``expired``. Every
status change happens with the upload row locked (``select_for_update``) and
as a compare-and-swap on ``status=pending``, so two racing completions create
one File, and a part cannot land on an upload that is being finished.

Slow I/O (storing a 64 MB part, assembling 8 GB) happens outside any
transaction; only the short bookkeeping that follows holds the lock.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import IO, Annotated, Any, cast

from django.conf import settings
from django.core.files import File as DjangoFile
from django.core.files.storage import Storage
from django.db import transaction
from django.db.models import FileField, Sum
from django.db.models.fields.files import FieldFile
from django.utils import timezone
from pydantic import Field

from core.errors import InvalidRequestError, PayloadTooLargeError, ServerError
from core.models import Project
from core.validation import Id, Input, Integral
from tools.models import File, Upload, UploadPart
from tools.services.file import (
    CHUNK_SIZE,
    ExpiresAfterInput,
    UploadablePurpose,
    blobs_discard,
    blobs_discard_on_commit,
    file_expiry,
    file_row_save,
    file_store,
    filename_sanitise,
)

logger = logging.getLogger(__name__)

Status = Upload.Status


class UploadCreateInput(Input):
    filename: Annotated[str, Field(min_length=1, max_length=512)]
    purpose: UploadablePurpose
    bytes: Annotated[int, Field(ge=1, le=2**63 - 1), Integral]
    mime_type: Annotated[str, Field(min_length=1, max_length=255)]
    expires_after: ExpiresAfterInput | None = None


class UploadPartCreateInput(Input):
    """The form fields of ``POST /uploads/{id}/parts`` besides ``data``: none."""


class UploadCompleteInput(Input):
    part_ids: list[Id]
    md5: Annotated[str, Field(max_length=64)] | None = None


def upload_is_expired(upload: Upload, *, now: datetime | None = None) -> bool:
    """A pending upload past its deadline is expired even before a sweep says so."""
    return upload.status == Status.PENDING and upload.expires_at <= (
        now or timezone.now()
    )


def upload_status(upload: Upload) -> str:
    return Status.EXPIRED.value if upload_is_expired(upload) else str(upload.status)


def upload_create(*, project: Project, data: UploadCreateInput) -> Upload:
    """Open an upload that expires in an hour.

    Raises InvalidRequestError (param ``bytes``) above MAX_MULTIPART_UPLOAD_BYTES.
    """
    limit = int(settings.MAX_MULTIPART_UPLOAD_BYTES)
    if data.bytes > limit:
        raise InvalidRequestError(
            f"Invalid 'bytes': {data.bytes}. An upload can hold at most {limit} bytes.",
            param="bytes",
        )
    return Upload.objects.create(
        project=project,
        filename=filename_sanitise(data.filename),
        purpose=data.purpose,
        bytes=data.bytes,
        mime_type=data.mime_type,
        file_expires_after=(
            data.expires_after.seconds if data.expires_after is not None else None
        ),
    )


def _part_storage() -> Storage:
    return cast(FileField, UploadPart._meta.get_field("data")).storage


def _discard_parts(upload_id: str) -> None:
    """Drop every part row of an upload; blobs follow on commit.

    Caller holds the upload row lock (no part can be added concurrently).
    """
    parts = UploadPart.objects.filter(upload_id=upload_id)
    names = list(parts.values_list("data", flat=True))
    parts.delete()
    blobs_discard_on_commit(_part_storage(), names)


def _finish(upload_id: str, status: Status, **changes: Any) -> bool:
    """CAS ``pending`` → ``status`` and drop the parts; False if not pending.

    Caller holds the upload row lock; the status filter still guards the
    swap so the rule reads in one place.
    """
    swapped = Upload.objects.filter(pk=upload_id, status=Status.PENDING).update(
        status=status, **changes
    )
    if swapped:
        _discard_parts(upload_id)
    return bool(swapped)


def _expire(upload: Upload) -> None:
    """Record a pending upload's expiry; ``upload.status`` ends up current
    (a completion that won the race by a hair stays completed)."""
    with transaction.atomic():
        Upload.objects.select_for_update().filter(pk=upload.pk).first()
        _finish(upload.pk, Status.EXPIRED)
    upload.refresh_from_db(fields=["status"])


def _not_open(upload: Upload, action: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Cannot {action} upload '{upload.id}': its status is '{upload.status}'; "
        "only a pending upload accepts this.",
    )


def _expired(upload: Upload, action: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Cannot {action} upload '{upload.id}': it expired at "
        f"{int(upload.expires_at.timestamp())}. Create a new upload.",
    )


def _require_open(upload: Upload, action: str) -> None:
    """400 unless the upload is pending; a pending upload past its deadline is
    recorded as expired first (and its parts discarded)."""
    if upload_is_expired(upload):
        _expire(upload)
    if upload.status == Status.EXPIRED:
        raise _expired(upload, action)
    if upload.status != Status.PENDING:
        raise _not_open(upload, action)


def _locked_open(upload: Upload, action: str) -> Upload:
    """The upload row, locked and still pending. Call inside a transaction."""
    locked = Upload.objects.select_for_update().get(pk=upload.pk)
    if locked.status != Status.PENDING:
        raise _not_open(locked, action)
    if upload_is_expired(locked):
        # Raising rolls this transaction back; the sweep or the next call's
        # _require_open records the expiry.
        raise _expired(locked, action)
    return locked


def upload_part_create(*, upload: Upload, content: DjangoFile) -> UploadPart:
    """Store one part of a pending upload.

    Raises PayloadTooLargeError over MAX_UPLOAD_PART_BYTES; InvalidRequestError
    for an empty part, for an upload that is not pending or has expired, and
    when the stored parts would pass MAX_MULTIPART_UPLOAD_BYTES.
    """
    _require_open(upload, "add a part to")
    limit = int(settings.MAX_UPLOAD_PART_BYTES)
    size = content.size
    if size is None:
        raise InvalidRequestError("The part's size is unknown.", param="data")
    if size > limit:
        raise PayloadTooLargeError(
            f"The part is {size} bytes; a part can be at most {limit} bytes.",
            param="data",
        )
    if size == 0:
        raise InvalidRequestError("The part is empty.", param="data")
    part = UploadPart(upload=upload, bytes=size)
    # The name the id determines; ids are random, so a partial blob left
    # there by a failed write is no one else's.
    intended = part.data.field.generate_filename(part, part.id)
    try:
        # Store first, outside the lock: a 64 MB write must not hold the row.
        part.data.save(part.id, content, save=False)
        with transaction.atomic():
            _locked_open(upload, "add a part to")
            # Parts need not all be used, so a client may re-send one whose
            # response it lost; the bound is on what the upload may store.
            stored = (
                (
                    UploadPart.objects.filter(upload_id=upload.pk).aggregate(
                        total=Sum("bytes")
                    )["total"]
                )
                or 0
            )
            cap = int(settings.MAX_MULTIPART_UPLOAD_BYTES)
            if stored + size > cap:
                raise InvalidRequestError(
                    f"Upload '{upload.id}' already stores {stored} bytes of parts; "
                    f"another {size} would pass the limit of {cap} bytes.",
                    param="data",
                )
            part.save(force_insert=True)
    except BaseException:
        blobs_discard(_part_storage(), [part.data.name or intended])
        raise
    return part


def _parts_in_order(upload: Upload, part_ids: Sequence[str]) -> list[UploadPart]:
    """The named parts of ``upload`` in the given order; 400 names the first
    unknown, foreign or repeated id as ``part_ids[i]``."""
    found = {
        p.id: p for p in UploadPart.objects.filter(upload_id=upload.pk, pk__in=part_ids)
    }
    ordered: list[UploadPart] = []
    seen: set[str] = set()
    for i, part_id in enumerate(part_ids):
        if part_id in seen:
            raise InvalidRequestError(
                f"Part '{part_id}' appears more than once in part_ids.",
                param=f"part_ids[{i}]",
            )
        seen.add(part_id)
        part = found.get(part_id)
        if part is None:
            raise InvalidRequestError(
                f"No part found with id '{part_id}' in upload '{upload.id}'.",
                param=f"part_ids[{i}]",
            )
        ordered.append(part)
    return ordered


def _blob_name(field_file: FieldFile) -> str:
    if not field_file.name:
        raise ServerError(f"{field_file.instance} has no stored blob.")
    return field_file.name


class PartsReader(io.RawIOBase):
    """The parts' blobs as one seekable stream, hashed as it is read.

    Storage backends differ in how they consume a file (``chunks()``,
    ``read(n)``, seeks to measure it), so the digests are only trusted when
    the bytes were read front to back exactly once in total; ``digests()``
    says whether that happened.
    """

    def __init__(self, parts: Sequence[UploadPart]) -> None:
        super().__init__()
        self._parts = list(parts)
        self._starts: list[int] = []
        offset = 0
        for part in self._parts:
            self._starts.append(offset)
            offset += int(part.bytes)
        self.size = offset
        self._pos = 0
        self._index = -1
        self._handle: Any = None
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._hashed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        target = max(0, base + offset)
        if target != self._pos:
            self._close_part()
            self._pos = target
        return self._pos

    def _close_part(self) -> None:
        if self._handle is not None:
            self._handle.close()
        self._handle, self._index = None, -1

    def close(self) -> None:
        self._close_part()
        super().close()

    def _read_some(self, limit: int) -> bytes:
        """Up to ``limit`` bytes from the part under the cursor."""
        if self._pos >= self.size or limit <= 0:
            return b""
        index = bisect.bisect_right(self._starts, self._pos) - 1
        part = self._parts[index]
        if index != self._index:
            self._close_part()
            self._handle = part.data.storage.open(_blob_name(part.data), "rb")
            self._index = index
            within = self._pos - self._starts[index]
            if within:
                self._handle.seek(within)
        end = self._starts[index] + int(part.bytes)
        data = self._handle.read(min(limit, end - self._pos))
        if not data:
            raise ServerError(f"Stored part '{part.id}' is shorter than recorded.")
        if self._pos == self._hashed:
            self._sha256.update(data)
            self._md5.update(data)
            self._hashed += len(data)
        self._pos += len(data)
        if self._pos >= end:
            self._close_part()
        return data

    def read(self, size: int | None = -1) -> bytes:
        want = self.size - self._pos if size is None or size < 0 else size
        pieces: list[bytes] = []
        while want > 0:
            data = self._read_some(want)
            if not data:
                break
            pieces.append(data)
            want -= len(data)
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def digests(self) -> tuple[str, str] | None:
        """(sha256, md5) hex if every byte was hashed in order, else None."""
        if self._hashed != self.size:
            return None
        return self._sha256.hexdigest(), self._md5.hexdigest()


class _BigChunks(DjangoFile):
    # Storage backends copy with ``chunks()``, 64 KB at a time by default;
    # 1 MB means a sixteenth of the reads across part boundaries.
    DEFAULT_CHUNK_SIZE = CHUNK_SIZE


def _stored_digests(file: File) -> tuple[int, str, str]:
    """(size, sha256, md5) of a stored blob, read back in chunks."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with file.content.storage.open(_blob_name(file.content), "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest(), md5.hexdigest()


def _assemble(upload: Upload, parts: Sequence[UploadPart]) -> tuple[File, str]:
    """Stream the parts, in order, into a new (unsaved) File's blob.

    Returns the file and the md5 of its content.
    """
    file = File(
        project_id=upload.project_id,
        filename=upload.filename,
        purpose=upload.purpose,
        mime_type=upload.mime_type,
    )
    reader = PartsReader(parts)
    try:
        file_store(file, _BigChunks(cast(IO[bytes], reader), name=upload.filename))
    finally:
        reader.close()
    digests = reader.digests()
    if digests is not None:
        size, (sha256, md5) = reader.size, digests
    else:
        size, sha256, md5 = _stored_digests(file)
    if size != upload.bytes:
        blobs_discard(file.content.storage, [file.content.name])
        raise ServerError(
            f"Assembled {size} bytes for upload '{upload.id}', expected {upload.bytes}."
        )
    file.bytes, file.sha256 = size, sha256
    return file, md5


def upload_complete(*, upload: Upload, data: UploadCompleteInput) -> Upload:
    """Assemble the named parts, in order, into a new File; mark completed.

    Raises InvalidRequestError when the upload is not pending or has expired,
    for an unknown, foreign or repeated part id (``part_ids[i]``), when the
    parts do not add up to the declared ``bytes`` (``part_ids``), and when
    ``md5`` does not match the assembled content (``md5``). A completion that
    loses a race (another completion or a cancel won) stores nothing.
    """
    _require_open(upload, "complete")
    parts = _parts_in_order(upload, data.part_ids)
    total = sum(int(p.bytes) for p in parts)
    if total != upload.bytes:
        raise InvalidRequestError(
            f"The parts hold {total} bytes in total, but upload '{upload.id}' was "
            f"created with bytes={upload.bytes}.",
            param="part_ids",
        )
    try:
        file, md5 = _assemble(upload, parts)
    except OSError:
        # A cancel or expiry that won the race deletes the parts under us;
        # that is the client's 400, anything else is ours.
        upload.refresh_from_db()
        if upload.status != Status.PENDING:
            raise _not_open(upload, "complete") from None
        raise
    if data.md5 is not None and data.md5.lower() != md5:
        blobs_discard(file.content.storage, [file.content.name])
        raise InvalidRequestError(
            f"The md5 checksum '{data.md5}' does not match the uploaded content "
            f"('{md5}').",
            param="md5",
        )
    if upload.file_expires_after is not None:
        file_expiry(
            file,
            ExpiresAfterInput(anchor="created_at", seconds=upload.file_expires_after),
        )
    try:
        with transaction.atomic():
            _locked_open(upload, "complete")
            file_row_save(file)
            if not _finish(upload.pk, Status.COMPLETED, file=file):
                raise _not_open(upload, "complete")  # unreachable under the lock
    except BaseException:
        blobs_discard(file.content.storage, [file.content.name])
        raise
    return Upload.objects.select_related("file").get(pk=upload.pk)


def upload_cancel(*, upload: Upload) -> Upload:
    """Cancel a pending upload and discard its parts.

    Raises InvalidRequestError when the upload is not pending or has expired.
    """
    _require_open(upload, "cancel")
    with transaction.atomic():
        _locked_open(upload, "cancel")
        _finish(upload.pk, Status.CANCELLED)
    return Upload.objects.select_related("file").get(pk=upload.pk)


def upload_delete(*, upload: Upload) -> None:
    """Delete an upload row and its parts (the admin's delete); the File it
    produced, if any, stays."""
    with transaction.atomic():
        Upload.objects.select_for_update().filter(pk=upload.pk).first()
        _discard_parts(upload.pk)
        Upload.objects.filter(pk=upload.pk).delete()


def uploads_expire_due(*, now: datetime | None = None) -> int:
    """Mark every pending upload past its deadline expired and discard its
    parts; returns how many changed. Safe to run concurrently and repeatedly
    (for a periodic task)."""
    moment = now or timezone.now()
    due = list(
        Upload.objects.filter(
            status=Status.PENDING, expires_at__lte=moment
        ).values_list("pk", flat=True)
    )
    changed = 0
    for upload_id in due:
        with transaction.atomic():
            if Upload.objects.select_for_update().filter(pk=upload_id).exists():
                changed += _finish(upload_id, Status.EXPIRED)
    return changed
