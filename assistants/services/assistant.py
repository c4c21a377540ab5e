from __future__ import annotations

from typing import Annotated, Any

from django.db import transaction
from pydantic import Field

from assistants.inputs import (
    ResponseFormatInput,
    Temperature,
    TopP,
    response_format_to_wire,
)
from assistants.models import Assistant
from core.models import Project
from core.selectors import language_model_require
from core.validation import Input, Metadata
from tools.registry import ToolsInput, tools_to_wire
from tools.resources import ToolResourcesInput, tool_resources_resolve


class AssistantFields(Input):
    name: Annotated[str, Field(max_length=256)] | None = None
    description: Annotated[str, Field(max_length=512)] | None = None
    instructions: Annotated[str, Field(max_length=256_000)] | None = None
    tools: ToolsInput | None = None
    tool_resources: ToolResourcesInput | None = None
    metadata: Metadata | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    response_format: ResponseFormatInput | None = None
    reasoning_effort: str | None = None


class AssistantCreateInput(AssistantFields):
    model: Annotated[str, Field(min_length=1, max_length=256)]


class AssistantUpdateInput(AssistantFields):
    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None


def _apply(assistant: Assistant, data: AssistantFields, *, project: Project) -> None:
    """Copy the fields the client sent (explicit nulls clear them)."""
    sent = data.model_fields_set
    for name in ("name", "description", "instructions", "temperature", "top_p"):
        if name in sent:
            setattr(assistant, name, getattr(data, name))
    if "tools" in sent:
        assistant.tools = tools_to_wire(data.tools or [])
    if "tool_resources" in sent:
        assistant.tool_resources = tool_resources_resolve(
            project=project, resources=data.tool_resources
        )
    if "metadata" in sent:
        assistant.metadata = data.metadata or {}
    if "response_format" in sent:
        assistant.response_format = response_format_to_wire(data.response_format)


@transaction.atomic
def assistant_create(*, project: Project, data: AssistantCreateInput) -> Assistant:
    """One transaction: inline vector stores in ``tool_resources`` are
    created with the assistant or not at all."""
    language_model_require(model_id=data.model)
    assistant = Assistant(project=project, model=data.model)
    _apply(assistant, data, project=project)
    assistant.save()
    return assistant


@transaction.atomic
def assistant_update(*, assistant: Assistant, data: AssistantUpdateInput) -> Assistant:
    project = assistant.project
    locked = Assistant.objects.select_for_update().get(pk=assistant.pk)
    if data.model is not None:
        language_model_require(model_id=data.model)
        locked.model = data.model
    _apply(locked, data, project=project)
    locked.save()
    return locked


def assistant_delete(*, assistant: Assistant) -> dict[str, Any]:
    Assistant.objects.filter(pk=assistant.pk).delete()
    return {"id": assistant.id, "object": "assistant.deleted", "deleted": True}
