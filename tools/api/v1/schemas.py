"""Documented request forms and response shapes (OpenAPI) for files and
uploads. Rendering is in serializers.py; validation in tools.services."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema


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

    # Both halves of expires_after or neither; no other field is accepted.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "dependentRequired": {
                "expires_after[anchor]": ["expires_after[seconds]"],
                "expires_after[seconds]": ["expires_after[anchor]"],
            }
        },
    )

    file: bytes = Field(description="The file's bytes (at most MAX_UPLOAD_BYTES).")
    purpose: Literal["assistants", "vision", "user_data", "batch", "fine-tune", "evals"]
    # Flat form fields, as the SDKs send them: a form field holding a JSON
    # object is refused, so documenting `expires_after` as one object was a
    # lie a fuzzer found (issue #9).
    # Optional, but never null: a form field cannot be null.
    expires_after_anchor: Annotated[
        Literal["created_at"] | None,
        WithJsonSchema({"type": "string", "enum": ["created_at"]}),
    ] = Field(None, alias="expires_after[anchor]")
    expires_after_seconds: Annotated[
        int | None,
        WithJsonSchema({"type": "integer", "minimum": 3600, "maximum": 2_592_000}),
    ] = Field(None, alias="expires_after[seconds]")


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
    model_config = ConfigDict(extra="forbid")

    data: bytes = Field(description="The part's bytes (at most MAX_UPLOAD_PART_BYTES).")


class UploadPartObject(BaseModel):
    id: str
    object: Literal["upload.part"]
    created_at: int
    upload_id: str
