"""Documented request forms and response shapes (OpenAPI) for files and
uploads. Rendering is in serializers.py; validation in tools.services."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tools.services.file import ExpiresAfterInput


class FileObject(BaseModel):
    id: str
    object: Literal["file"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None
    expires_at: int | None


class FileList(BaseModel):
    object: Literal["list"]
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"]
    deleted: Literal[True]


class FileCreateForm(BaseModel):
    """multipart/form-data; ``expires_after`` is sent as
    ``expires_after[anchor]`` and ``expires_after[seconds]``."""

    file: bytes = Field(description="The file's bytes (at most MAX_UPLOAD_BYTES).")
    purpose: Literal["assistants", "vision", "user_data", "batch", "fine-tune", "evals"]
    expires_after: ExpiresAfterInput | None = None


class UploadObject(BaseModel):
    id: str
    object: Literal["upload"]
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["pending", "completed", "cancelled", "expired"]
    expires_at: int
    file: FileObject | None


class UploadPartForm(BaseModel):
    data: bytes = Field(description="The part's bytes (at most MAX_UPLOAD_PART_BYTES).")


class UploadPartObject(BaseModel):
    id: str
    object: Literal["upload.part"]
    created_at: int
    upload_id: str
