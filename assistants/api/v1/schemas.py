"""Documented response shapes (OpenAPI). Rendering is in serializers.py."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field


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


class ThreadObject(BaseModel):
    id: str
    object: Literal["thread"]
    created_at: int
    metadata: dict[str, str]
    tool_resources: dict[str, Any]


ImageDetail = Literal["auto", "low", "high"]


class TextValue(BaseModel):
    value: str
    # file_citation / file_path annotations, written by runs.
    annotations: list[dict[str, Any]]


class TextContent(BaseModel):
    type: Literal["text"]
    text: TextValue


class ImageFileValue(BaseModel):
    file_id: str
    detail: ImageDetail | None


class ImageFileContent(BaseModel):
    type: Literal["image_file"]
    image_file: ImageFileValue


class ImageUrlValue(BaseModel):
    url: str
    detail: ImageDetail | None


class ImageUrlContent(BaseModel):
    type: Literal["image_url"]
    image_url: ImageUrlValue


class RefusalContent(BaseModel):
    type: Literal["refusal"]
    refusal: str


MessageContent = Annotated[
    TextContent | ImageFileContent | ImageUrlContent | RefusalContent,
    Field(discriminator="type"),
]


class AttachmentTool(BaseModel):
    type: Literal["code_interpreter", "file_search"]


class Attachment(BaseModel):
    file_id: str
    tools: list[AttachmentTool]


class IncompleteDetails(BaseModel):
    reason: Literal[
        "content_filter", "max_tokens", "run_cancelled", "run_expired", "run_failed"
    ]


class MessageObject(BaseModel):
    id: str
    object: Literal["thread.message"]
    created_at: int
    thread_id: str
    status: Literal["in_progress", "incomplete", "completed"]
    incomplete_details: IncompleteDetails | None
    completed_at: int | None
    incomplete_at: int | None
    role: Literal["user", "assistant"]
    content: list[MessageContent]
    assistant_id: str | None
    run_id: str | None
    attachments: list[Attachment]
    metadata: dict[str, str]


class MessageList(BaseModel):
    object: Literal["list"]
    data: list[MessageObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class RunObject(BaseModel):
    id: str
    object: Literal["thread.run"]
    created_at: int
    assistant_id: str
    thread_id: str
    status: Literal[
        "queued",
        "in_progress",
        "requires_action",
        "cancelling",
        "cancelled",
        "failed",
        "completed",
        "incomplete",
        "expired",
    ]
    started_at: int | None
    expires_at: int | None
    cancelled_at: int | None
    failed_at: int | None
    completed_at: int | None
    incomplete_at: int | None
    required_action: dict[str, Any] | None
    last_error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    model: str
    instructions: str
    tools: list[dict[str, Any]]
    metadata: dict[str, str]
    usage: dict[str, Any] | None
    temperature: float | None
    top_p: float | None
    max_prompt_tokens: int | None
    max_completion_tokens: int | None
    truncation_strategy: dict[str, Any]
    response_format: Any
    tool_choice: Any
    parallel_tool_calls: bool


class RunList(BaseModel):
    object: Literal["list"]
    data: list[RunObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class RunStepObject(BaseModel):
    id: str
    object: Literal["thread.run.step"]
    created_at: int
    run_id: str
    assistant_id: str
    thread_id: str
    type: Literal["message_creation", "tool_calls"]
    status: Literal["in_progress", "cancelled", "failed", "completed", "expired"]
    step_details: dict[str, Any]
    last_error: dict[str, Any] | None
    usage: dict[str, Any] | None
    metadata: dict[str, str]
    cancelled_at: int | None
    failed_at: int | None
    completed_at: int | None
    expired_at: int | None


class RunStepList(BaseModel):
    object: Literal["list"]
    data: list[RunStepObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
