from __future__ import annotations

from django.db import transaction

from core.models import Organization, Project

DEFAULT_ORGANIZATION = "Default organization"
DEFAULT_PROJECT = "Default project"


@transaction.atomic
def default_project_ensure() -> Project:
    """The organization and project that ``make run`` and bootstrap keys use."""
    org, _ = Organization.objects.get_or_create(name=DEFAULT_ORGANIZATION)
    project, _ = Project.objects.get_or_create(organization=org, name=DEFAULT_PROJECT)
    return project


def project_create(*, organization: Organization, name: str) -> Project:
    return Project.objects.create(organization=organization, name=name)
