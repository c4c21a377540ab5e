"""Bearer API keys → the caller's project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from core.models import ApiKey, Project, hash_key

# last_used_at is written at most this often per key: a write per request
# would turn every read into a row update.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class Principal:
    """Who is calling: a project, through one of its keys."""

    project: Project
    api_key: ApiKey
    is_authenticated: bool = True

    @property
    def project_id(self) -> str:
        return self.project.id


def redact(raw: str) -> str:
    if len(raw) <= 10:
        return "*" * len(raw)
    return f"{raw[:6]}...{raw[-4:]}"


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Principal, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, raw = header.partition(" ")
        raw = raw.strip()
        if scheme.lower() != "bearer" or not raw:
            raise AuthenticationFailed(
                "Invalid Authorization header. Expected 'Authorization: Bearer "
                "YOUR_KEY'."
            )
        key = (
            ApiKey.objects.select_related("project__organization")
            .filter(hashed_key=hash_key(raw), revoked_at__isnull=True)
            .first()
        )
        if key is None:
            raise AuthenticationFailed(f"Incorrect API key provided: {redact(raw)}.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return Principal(project=key.project, api_key=key), key

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class HasProject(BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, Principal)


def project_of(request: Request) -> Project:
    principal = request.user
    assert isinstance(principal, Principal)
    return principal.project
