"""Documentation-only pydantic shapes shared by every resource's schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class DeletedObject(BaseModel):
    id: str
    object: str
    deleted: Literal[True]


ERRORS = {
    400: ErrorResponse,
    401: ErrorResponse,
    404: ErrorResponse,
    413: ErrorResponse,
}
