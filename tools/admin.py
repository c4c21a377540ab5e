"""Operators' view of files, uploads and vector stores.

Files and uploads are written only through the API (which stores, hashes and
sizes them), so here they are read-only; deletes go through the services so
the stored blobs go with the rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from tools.models import File, Upload, UploadPart, VectorStore
from tools.services.file import file_delete
from tools.services.upload import upload_delete


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


@admin.register(VectorStore)
class VectorStoreAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "status", "usage_bytes", "project", "created_at")
    list_filter = ("status", "project")
    search_fields = ("id", "name", "project__name")
    list_select_related = ("project",)
    readonly_fields = ("id", "created_at", "usage_bytes", "last_active_at")
