"""Operators' view of files, uploads and vector stores.

Files and uploads are written only through the API (which stores, hashes and
sizes them), so here they are read-only; deletes go through the services so
the stored blobs go with the rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest

from tools.models import (
    File,
    FilterIndex,
    Upload,
    UploadPart,
    VectorStore,
    VectorStoreFile,
)
from tools.services.file import file_delete
from tools.services.filter_index import filter_index_drop
from tools.services.upload import upload_delete
from tools.services.vector_store import (
    vector_store_delete,
    vector_store_file_delete,
)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(File)
class FileAdmin(ReadOnlyAdmin):
    list_display = ("id", "filename", "purpose", "bytes", "project", "created_at")
    list_filter = ("purpose", "project")
    search_fields = ("id", "filename", "sha256", "project__name")
    list_select_related = ("project",)
    date_hierarchy = "created_at"

    def delete_model(self, request: HttpRequest, obj: File) -> None:
        file_delete(file=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[File]) -> None:
        for file in queryset:
            file_delete(file=file)


class UploadPartInline(admin.TabularInline):
    model = UploadPart
    extra = 0
    fields = ("id", "bytes", "created_at")
    readonly_fields = fields
    can_delete = False
    ordering = ("seq",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Upload)
class UploadAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "filename",
        "purpose",
        "bytes",
        "status",
        "project",
        "created_at",
        "expires_at",
    )
    list_filter = ("status", "purpose", "project")
    search_fields = ("id", "filename", "project__name")
    list_select_related = ("project",)
    inlines = [UploadPartInline]

    def delete_model(self, request: HttpRequest, obj: Upload) -> None:
        upload_delete(upload=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Upload]) -> None:
        for upload in queryset:
            upload_delete(upload=upload)


class VectorStoreFileInline(admin.TabularInline):
    model = VectorStoreFile
    extra = 0
    fields = ("file", "status", "chunk_count", "usage_bytes", "last_error")
    readonly_fields = fields
    can_delete = False
    ordering = ("seq",)
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(VectorStore)
class VectorStoreAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "name",
        "project",
        "files",
        "failed",
        "chunks",
        "expires_at",
        "created_at",
    )
    list_filter = ("status", "project")
    search_fields = ("id", "name", "project__name")
    list_select_related = ("project",)
    readonly_fields = ("id", "created_at", "usage_bytes", "last_active_at")
    inlines = [VectorStoreFileInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[VectorStore]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_files=Count("files", distinct=True),
                n_failed=Count(
                    "files", filter=Q(files__status="failed"), distinct=True
                ),
                n_chunks=Coalesce(Sum("files__chunk_count"), 0),
            )
        )

    @admin.display(ordering="n_files")
    def files(self, obj: Any) -> int:
        return int(obj.n_files)

    @admin.display(ordering="n_failed")
    def failed(self, obj: Any) -> int:
        return int(obj.n_failed)

    @admin.display(ordering="n_chunks")
    def chunks(self, obj: Any) -> int:
        return int(obj.n_chunks)

    def delete_model(self, request: HttpRequest, obj: VectorStore) -> None:
        vector_store_delete(vector_store=obj)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[VectorStore]
    ) -> None:
        for store in queryset:
            vector_store_delete(vector_store=store)


@admin.register(VectorStoreFile)
class VectorStoreFileAdmin(ReadOnlyAdmin):
    """Ingestion status per file; filter on ``failed`` for the failures and
    their reasons."""

    list_display = (
        "file",
        "vector_store",
        "status",
        "error_code",
        "chunk_count",
        "usage_bytes",
        "attempts",
        "created_at",
    )
    list_filter = ("status",)
    search_fields = ("file__id", "file__filename", "vector_store__id")
    list_select_related = ("file", "vector_store")

    @admin.display(description="error")
    def error_code(self, obj: VectorStoreFile) -> str:
        error = obj.last_error or {}
        return f"{error.get('code', '')}: {error.get('message', '')}" if error else ""

    def delete_model(self, request: HttpRequest, obj: VectorStoreFile) -> None:
        vector_store_file_delete(vector_store_file=obj)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[VectorStoreFile]
    ) -> None:
        for row in queryset:
            vector_store_file_delete(vector_store_file=row)


@admin.register(FilterIndex)
class FilterIndexAdmin(ReadOnlyAdmin):
    """Filter indexes (``manage.py filter_index`` declares and builds them:
    a build takes minutes on a large table and shows its progress there),
    and the ones searches proposed (``automatic``; ``proposed`` until
    enough searches its filter made costly came, then built by a task); a
    failed build's error is here. Deleting one drops the index."""

    list_display = (
        "name",
        "vector_store",
        "filters",
        "status",
        "automatic",
        "searches",
        "rows",
        "build_seconds",
        "created_at",
    )
    list_filter = ("status", "automatic")
    search_fields = ("name", "vector_store__id", "vector_store__name")
    list_select_related = ("vector_store",)

    def delete_model(self, request: HttpRequest, obj: FilterIndex) -> None:
        filter_index_drop(filter_index=obj)

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[FilterIndex]
    ) -> None:
        for index in queryset:
            filter_index_drop(filter_index=index)
