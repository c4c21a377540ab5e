"""Vector stores, their files and file batches: every write.

Ingestion itself (parse, chunk, embed, store) is ``tools.services.ingestion``
and runs in a worker; these services create the rows, then enqueue a file's
ingestion once the transaction that created it commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from pydantic import AfterValidator, Field, model_validator

from core.errors import InvalidRequestError
from core.models import Project
from core.validation import Id, Input, Metadata
from tools.models import Chunk, VectorStore, VectorStoreFile, VectorStoreFileBatch
from tools.selectors import files_require
from tools.services.filter_index import filter_indexes_drop

AUTO_CHUNKING = {
    "type": "static",
    "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
}


class StaticChunking(Input):
    max_chunk_size_tokens: Annotated[int, Field(ge=100, le=4096)]
    chunk_overlap_tokens: Annotated[int, Field(ge=0, le=2048)]

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> StaticChunking:
        if self.chunk_overlap_tokens * 2 > self.max_chunk_size_tokens:
            raise ValueError(
                "chunk_overlap_tokens must not exceed half of max_chunk_size_tokens"
            )
        return self


class AutoChunkingInput(Input):
    type: Literal["auto"]


class StaticChunkingInput(Input):
    type: Literal["static"]
    static: StaticChunking


ChunkingInput = Annotated[
    AutoChunkingInput | StaticChunkingInput, Field(discriminator="type")
]


def chunking_to_stored(strategy: ChunkingInput | None) -> dict[str, Any]:
    """The stored (and wire) strategy: ``auto`` is reported as the static
    800/400 it stands for, as OpenAI does."""
    if strategy is None or isinstance(strategy, AutoChunkingInput):
        return dict(AUTO_CHUNKING)
    return {"type": "static", "static": strategy.static.model_dump()}


AttributeValue = Annotated[str, Field(max_length=512)] | int | float | bool


def _check_attributes(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > 16:
        raise ValueError("attributes can have at most 16 keys")
    for key in value:
        if len(key) > 64:
            raise ValueError(f"attribute key '{key[:70]}' is longer than 64 chars")
    return value


Attributes = Annotated[dict[str, AttributeValue], AfterValidator(_check_attributes)]


class ExpiresAfter(Input):
    anchor: Literal["last_active_at"]
    days: Annotated[int, Field(ge=1, le=365)]


class VectorStoreFileSpec(Input):
    file_id: Id
    attributes: Attributes | None = None
    chunking_strategy: ChunkingInput | None = None


class VectorStoreCreateInput(Input):
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    file_ids: Annotated[list[Id], Field(max_length=500)] | None = None
    expires_after: ExpiresAfter | None = None
    chunking_strategy: ChunkingInput | None = None
    metadata: Metadata | None = None


class VectorStoreUpdateInput(Input):
    name: Annotated[str, Field(max_length=256)] | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None


class VectorStoreFileCreateInput(Input):
    file_id: Id
    attributes: Attributes | None = None
    chunking_strategy: ChunkingInput | None = None


class VectorStoreFileUpdateInput(Input):
    attributes: Attributes | None


class FileBatchCreateInput(Input):
    file_ids: Annotated[list[Id], Field(max_length=500)] | None = None
    files: Annotated[list[VectorStoreFileSpec], Field(max_length=500)] | None = None
    attributes: Attributes | None = None
    chunking_strategy: ChunkingInput | None = None


def _expiry(store: VectorStore, now: datetime) -> None:
    policy = store.expires_after
    store.expires_at = (
        now + timedelta(days=int(policy["days"])) if policy is not None else None
    )


# Files up to this size travel to the workers in groups (one task, one
# pipeline for all their chunks); larger files go alone. A group holds at
# most GROUP_FILES files and GROUP_BYTES bytes: big enough that the few
# seconds a task spends before its first embedding and after its last
# (reading its first files, storing its last batch) stay small beside its
# embedding time (with 128 one-chunk files per task and 128-chunk batches,
# ingestion ran at 0.76 of the raw embedding rate; with these groups and
# ingestion.EMBED_GROUP/FIRST_GROUP, 1.02 in bench/retrieval_bench.py on a
# shared machine), small enough that several workers share a large batch and a
# task stays far inside INGEST_TIME_LIMIT_SECONDS (2 MB of text is about
# 1,300 chunks of 800 tokens, ~1 minute of embedding on 2 CPU cores).
# Files are grouped smallest first: the model pads each of its batches to
# its longest text, and a task's pipeline embeds its chunks a few hundred
# at a time, so a group of files of mixed sizes pays for padding that files
# of similar sizes do not. Cranfield's 1,400 files embedded as three tasks'
# groups (32, then 256 at a time) took 43.3 s in upload order, 39.2 s with
# each task's files in size order, against 38.6-39.7 s for one call over
# all of them (2026-11-23).
SMALL_FILE_BYTES = 512 * 1024
GROUP_FILES = 512
GROUP_BYTES = 2 * 1024 * 1024


def _enqueue_ingestion(vsf_ids: Sequence[str]) -> None:
    """Wake the ingestion workers once the rows are committed; the row, not
    the message, is the job (a lost message leaves the file in_progress, and
    a second one finds it already done)."""
    if not vsf_ids:
        return
    pending = list(vsf_ids)

    def send() -> None:
        from tools.tasks import vector_store_files_ingest_task

        limit = int(settings.INGEST_TIME_LIMIT_SECONDS)
        sizes = dict(
            VectorStoreFile.objects.filter(pk__in=pending).values_list(
                "pk", "file__bytes"
            )
        )
        groups: list[list[str]] = []
        group: list[str] = []
        group_bytes = 0
        for i in sorted(pending, key=lambda i: sizes.get(i, 0)):
            size = sizes.get(i, 0)
            if size > SMALL_FILE_BYTES:
                groups.append([i])
                continue
            if group and (
                len(group) >= GROUP_FILES or group_bytes + size > GROUP_BYTES
            ):
                groups.append(group)
                group, group_bytes = [], 0
            group.append(i)
            group_bytes += size
        if group:
            groups.append(group)
        for group in groups:
            vector_store_files_ingest_task.apply_async(
                (group,), soft_time_limit=limit, time_limit=limit + 60
            )

    transaction.on_commit(send)


def vector_store_create(
    *, project: Project, data: VectorStoreCreateInput, param: str = "file_ids"
) -> VectorStore:
    """A store, with its first files queued for ingestion (on commit).

    Raises InvalidRequestError naming ``param[i]`` for a file that is not
    the project's.
    """
    file_ids = list(dict.fromkeys(data.file_ids or []))
    files_require(project=project, file_ids=file_ids, param=param)
    now = timezone.now()
    store = VectorStore(
        project=project,
        name=data.name or "",
        metadata=data.metadata or {},
        expires_after=data.expires_after.model_dump() if data.expires_after else None,
        last_active_at=now,
    )
    _expiry(store, now)
    strategy = chunking_to_stored(data.chunking_strategy)
    with transaction.atomic():
        store.save()
        rows = [
            VectorStoreFile(vector_store=store, file_id=fid, chunking_strategy=strategy)
            for fid in file_ids
        ]
        VectorStoreFile.objects.bulk_create(rows)
        _enqueue_ingestion([r.id for r in rows])
    return store


@transaction.atomic
def vector_store_update(
    *, vector_store: VectorStore, data: VectorStoreUpdateInput
) -> VectorStore:
    locked = VectorStore.objects.select_for_update().get(pk=vector_store.pk)
    sent = data.model_fields_set
    if "name" in sent:
        locked.name = data.name or ""
    if "metadata" in sent:
        locked.metadata = data.metadata or {}
    if "expires_after" in sent:
        locked.expires_after = (
            data.expires_after.model_dump() if data.expires_after else None
        )
        _expiry(locked, locked.last_active_at)
    locked.save(update_fields=["name", "metadata", "expires_after", "expires_at"])
    return locked


def vector_store_touch(*, vector_store: VectorStore) -> None:
    """Mark the store used now (searched, or used by a run): the
    ``last_active_at`` anchor of its expiry moves with it."""
    now = timezone.now()
    _expiry(vector_store, now)
    VectorStore.objects.filter(pk=vector_store.pk).exclude(
        status=VectorStore.Status.EXPIRED
    ).update(last_active_at=now, expires_at=vector_store.expires_at)
    vector_store.last_active_at = now


def vector_store_delete(*, vector_store: VectorStore) -> dict[str, Any]:
    # The database cascades to files (Django's collector: few rows) and to
    # chunks (ON DELETE CASCADE: no rows loaded).
    with transaction.atomic():
        filter_indexes_drop(vector_store_id=vector_store.pk)
        VectorStore.objects.filter(pk=vector_store.pk).delete()
    return {"id": vector_store.id, "object": "vector_store.deleted", "deleted": True}


def vector_stores_expire_due(*, now: datetime | None = None, batch: int = 100) -> int:
    """Mark stores past ``expires_at`` expired and free their chunks; returns
    how many. Reads already treat such a store as expired (see
    ``tools.selectors.vector_store_is_expired``): this only reclaims space."""
    moment = now or timezone.now()
    due = list(
        VectorStore.objects.filter(expires_at__lte=moment)
        .exclude(status=VectorStore.Status.EXPIRED)
        .values_list("pk", flat=True)[:batch]
    )
    for pk in due:
        with transaction.atomic():
            updated = VectorStore.objects.filter(pk=pk, expires_at__lte=moment).update(
                status=VectorStore.Status.EXPIRED
            )
            if updated:
                filter_indexes_drop(vector_store_id=pk)
                Chunk.objects.filter(vector_store_id=pk).delete()
    return len(due)


def _files_add(
    *,
    vector_store: VectorStore,
    wanted: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]],
    batch: VectorStoreFileBatch | None,
) -> tuple[list[VectorStoreFile], list[str]]:
    """The store's rows for ``wanted`` (file id → attributes, chunking), in
    its order, and the ids of those that need ingesting. New files go in
    with one INSERT (500 files took ~0.5 s as a SELECT FOR UPDATE and an
    INSERT each, time the ingestion of a batch's first files waited for);
    files the store has already are re-added (``_file_readd``). Caller
    holds a transaction."""
    # Locked in primary-key order, so two batches naming the same files
    # cannot deadlock.
    existing = {
        row.file_id: row
        for row in VectorStoreFile.objects.select_for_update()
        .filter(vector_store=vector_store, file_id__in=list(wanted))
        .order_by("pk")
    }
    fresh = VectorStoreFile.objects.bulk_create(
        [
            VectorStoreFile(
                vector_store=vector_store,
                file_id=fid,
                attributes=attributes or {},
                chunking_strategy=strategy,
                batch=batch,
            )
            for fid, (attributes, strategy) in wanted.items()
            if fid not in existing
        ]
    )
    queue = [row.id for row in fresh]
    for fid, row in existing.items():
        attributes, strategy = wanted[fid]
        if _file_readd(row, attributes=attributes, strategy=strategy, batch=batch):
            queue.append(row.id)
    by_file = {row.file_id: row for row in (*fresh, *existing.values())}
    return [by_file[fid] for fid in wanted], queue


def _file_readd(
    existing: VectorStoreFile,
    *,
    attributes: dict[str, Any] | None,
    strategy: dict[str, Any],
    batch: VectorStoreFileBatch | None,
) -> bool:
    """Re-adding a file is idempotent: the same (locked) row, re-ingested
    only if its last attempt did not complete. Whether it needs ingesting."""
    fields = []
    if attributes is not None and attributes != existing.attributes:
        existing.attributes = attributes
        Chunk.objects.filter(vector_store_file=existing).update(attributes=attributes)
        fields.append("attributes")
    if batch is not None:
        existing.batch = batch
        fields.append("batch")
    again = existing.status in (
        VectorStoreFile.Status.FAILED,
        VectorStoreFile.Status.CANCELLED,
    )
    if again:
        existing.status = VectorStoreFile.Status.IN_PROGRESS
        existing.last_error = None
        existing.attempts = 0
        existing.chunking_strategy = strategy
        fields += ["status", "last_error", "attempts", "chunking_strategy"]
    if fields:
        existing.save(update_fields=fields)
    return again


def vector_store_file_add(
    *, vector_store: VectorStore, data: VectorStoreFileCreateInput
) -> VectorStoreFile:
    """Add a file (idempotent) and queue its ingestion on commit.

    Raises InvalidRequestError (param ``file_id``) for another project's file.
    """
    files_require(
        project=vector_store.project, file_ids=[data.file_id], param="file_id"
    )
    with transaction.atomic():
        [row], queue = _files_add(
            vector_store=vector_store,
            wanted={
                data.file_id: (
                    data.attributes,
                    chunking_to_stored(data.chunking_strategy),
                )
            },
            batch=None,
        )
        _enqueue_ingestion(queue)
    return row


@transaction.atomic
def vector_store_file_update(
    *, vector_store_file: VectorStoreFile, data: VectorStoreFileUpdateInput
) -> VectorStoreFile:
    """New attributes for the file and (so filters see them) its chunks."""
    attributes = data.attributes or {}
    VectorStoreFile.objects.filter(pk=vector_store_file.pk).update(
        attributes=attributes
    )
    Chunk.objects.filter(vector_store_file=vector_store_file).update(
        attributes=attributes
    )
    vector_store_file.attributes = attributes
    return vector_store_file


def vector_store_file_delete(*, vector_store_file: VectorStoreFile) -> dict[str, Any]:
    """Take the file out of the store (its chunks go by ON DELETE CASCADE);
    the file itself stays."""
    VectorStoreFile.objects.filter(pk=vector_store_file.pk).delete()
    return {
        "id": vector_store_file.file_id,
        "object": "vector_store.file.deleted",
        "deleted": True,
    }


def file_batch_create(
    *, vector_store: VectorStore, data: FileBatchCreateInput
) -> VectorStoreFileBatch:
    """A batch of files added at once (each idempotently), queued on commit.

    Raises InvalidRequestError for neither or both of ``file_ids`` and
    ``files``, or for a file that is not the project's.
    """
    if (data.file_ids is None) == (data.files is None):
        raise InvalidRequestError(
            "Provide exactly one of 'file_ids' or 'files'.", param="file_ids"
        )
    default = chunking_to_stored(data.chunking_strategy)
    specs: list[tuple[str, dict[str, Any] | None, dict[str, Any]]] = []
    param = "file_ids"
    if data.file_ids is not None:
        specs = [(fid, data.attributes, default) for fid in data.file_ids]
    else:
        param = "files"
        for spec in data.files or []:
            strategy = (
                chunking_to_stored(spec.chunking_strategy)
                if spec.chunking_strategy
                else default
            )
            specs.append((spec.file_id, spec.attributes or data.attributes, strategy))
    if not specs:
        raise InvalidRequestError("The batch has no files.", param=param)
    files_require(
        project=vector_store.project,
        file_ids=[fid for fid, _, _ in specs],
        param=param,
    )
    # A file named twice: its first mention counts.
    wanted: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
    for fid, attributes, strategy in specs:
        wanted.setdefault(fid, (attributes, strategy))
    with transaction.atomic():
        batch = VectorStoreFileBatch.objects.create(vector_store=vector_store)
        _, queue = _files_add(vector_store=vector_store, wanted=wanted, batch=batch)
        _enqueue_ingestion(queue)
    return batch


@transaction.atomic
def file_batch_cancel(*, batch: VectorStoreFileBatch) -> VectorStoreFileBatch:
    """Cancel the batch's files still in progress (a worker mid-file sees the
    status when it is about to store chunks, and drops them)."""
    VectorStoreFileBatch.objects.filter(pk=batch.pk, cancelled_at__isnull=True).update(
        cancelled_at=timezone.now()
    )
    VectorStoreFile.objects.filter(
        batch=batch, status=VectorStoreFile.Status.IN_PROGRESS
    ).update(status=VectorStoreFile.Status.CANCELLED)
    batch.refresh_from_db()
    return batch
