from __future__ import annotations

from collections.abc import Sequence

from django.core.files import File as DjangoFile
from django.db.models import QuerySet
from django.utils import timezone

from core.errors import NotFoundError
from core.models import Project
from core.selectors import get_or_404, ids_require
from tools.models import File, Upload, VectorStore


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
