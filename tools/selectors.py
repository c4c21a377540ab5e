from __future__ import annotations

from collections.abc import Sequence

from django.core.files import File as DjangoFile
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.errors import NotFoundError
from core.models import Project
from core.selectors import get_or_404, ids_require
from tools.models import (
    File,
    Upload,
    VectorStore,
    VectorStoreFile,
    VectorStoreFileBatch,
)


def files_of(*, project: Project) -> QuerySet[File]:
    """The project's files; an expired file is gone for clients at once, even
    before the sweep (``files_expire_due``) deletes it."""
    return File.objects.filter(project=project).exclude(expires_at__lte=timezone.now())


def file_get(*, project: Project, file_id: str) -> File:
    return get_or_404(files_of(project=project), file_id, "file")


def file_content_open(*, file: File) -> DjangoFile:
    """The file's stored bytes, open for reading; the caller closes it.

    Raises NotFoundError when the blob is gone (a delete committed between
    looking the row up and opening it).
    """
    name = file.content.name
    try:
        if not name:
            raise FileNotFoundError(file.id)
        return file.content.storage.open(name, "rb")
    except FileNotFoundError:
        raise NotFoundError.for_object("file", file.id) from None


def files_require(*, project: Project, file_ids: Sequence[str], param: str) -> None:
    """Every id names a file of ``project``; else 400 naming the first stranger."""
    ids_require(
        files_of(project=project),
        [(file_id, f"{param}[{i}]") for i, file_id in enumerate(file_ids)],
        "file",
    )


def uploads_of(*, project: Project) -> QuerySet[Upload]:
    return Upload.objects.filter(project=project)


def upload_get(*, project: Project, upload_id: str) -> Upload:
    return get_or_404(uploads_of(project=project), upload_id, "upload")


def vector_stores_of(*, project: Project) -> QuerySet[VectorStore]:
    return VectorStore.objects.filter(project=project)


def vector_stores_require(
    *, project: Project, vector_store_ids: Sequence[str], param: str
) -> None:
    """Every id names a vector store of ``project``; else 400 naming the first."""
    ids_require(
        vector_stores_of(project=project),
        [(vs_id, f"{param}[{i}]") for i, vs_id in enumerate(vector_store_ids)],
        "vector store",
    )


def _with_file_counts(queryset: QuerySet[VectorStore]) -> QuerySet[VectorStore]:
    """Counts and usage computed from the files on every read, never kept in
    a column: they cannot drift when a file is deleted, a batch cancelled
    or a worker dies."""

    def status(value: str) -> Count:
        return Count("files", filter=Q(files__status=value))

    return queryset.annotate(
        n_in_progress=status("in_progress"),
        n_completed=status("completed"),
        n_failed=status("failed"),
        n_cancelled=status("cancelled"),
        n_total=Count("files"),
        n_usage_bytes=Coalesce(Sum("files__usage_bytes"), 0),
    )


def vector_stores_with_counts(*, project: Project) -> QuerySet[VectorStore]:
    return _with_file_counts(vector_stores_of(project=project))


def vector_store_get(*, project: Project, vector_store_id: str) -> VectorStore:
    return get_or_404(
        vector_stores_with_counts(project=project), vector_store_id, "vector store"
    )


def vector_store_is_expired(store: VectorStore) -> bool:
    """Expired as soon as ``expires_at`` passes, before the sweep marks it."""
    return store.status == VectorStore.Status.EXPIRED or (
        store.expires_at is not None and store.expires_at <= timezone.now()
    )


def vector_store_files_of(
    *, vector_store: VectorStore, batch: VectorStoreFileBatch | None = None
) -> QuerySet[VectorStoreFile]:
    rows = VectorStoreFile.objects.filter(vector_store=vector_store)
    if batch is not None:
        rows = rows.filter(batch=batch)
    return rows.select_related("file")


def vector_store_file_get(
    *, vector_store: VectorStore, file_id: str
) -> VectorStoreFile:
    row = vector_store_files_of(vector_store=vector_store).filter(file_id=file_id)
    found = list(row[:1])
    if not found:
        raise NotFoundError(
            f"No file found with id '{file_id}' in vector store '{vector_store.id}'."
        )
    return found[0]


def file_batch_get(*, vector_store: VectorStore, batch_id: str) -> VectorStoreFileBatch:
    batches = VectorStoreFileBatch.objects.filter(vector_store=vector_store)
    return get_or_404(batches, batch_id, "vector store file batch")


def file_batch_counts(batch: VectorStoreFileBatch) -> dict[str, int]:
    counts = {s: 0 for s in ("in_progress", "completed", "failed", "cancelled")}
    for status, n in (
        VectorStoreFile.objects.filter(batch=batch)
        .values_list("status")
        .annotate(n=Count("id"))
    ):
        counts[status] = n
    counts["total"] = sum(counts.values())
    return counts
