from __future__ import annotations

from django.db.models import QuerySet

from assistants.models import Assistant
from core.errors import NotFoundError
from core.models import Project


def assistants_of(*, project: Project) -> QuerySet[Assistant]:
    return Assistant.objects.filter(project=project)


def assistant_get(*, project: Project, assistant_id: str) -> Assistant:
    assistant = assistants_of(project=project).filter(pk=assistant_id).first()
    if assistant is None:
        raise NotFoundError.for_object("assistant", assistant_id)
    return assistant
