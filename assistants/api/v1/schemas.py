"""Documented response shapes (OpenAPI). Rendering is in serializers.py."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class AssistantObject(BaseModel):
    id: str
    object: Literal["assistant"]
    created_at: int
    name: str | None
    description: str | None
    model: str
    instructions: str | None
    tools: list[dict[str, Any]]
    tool_resources: dict[str, Any]
    metadata: dict[str, str]
    temperature: float | None
    top_p: float | None
    response_format: Any


class AssistantList(BaseModel):
    object: Literal["list"]
    data: list[AssistantObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
