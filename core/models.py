"""Tenancy (organization → project → API keys), the model registry, and the
base class every public API object derives from."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from django.db import models
from django.utils import timezone

from core import ids

# One PostgreSQL sequence numbers every public object (migration 0001 creates
# it). Lists page by it: it is strictly increasing per insert, unlike
# created_at (one-second resolution on the wire, and clocks differ between
# hosts), so `after=<id>` keyset pages are exact and use an index.
OBJECT_SEQUENCE = "agents_object_seq"


def next_seq() -> models.Func:
    return models.Func(
        models.Value(OBJECT_SEQUENCE),
        function="nextval",
        output_field=models.BigIntegerField(),
    )


class PublicObject(models.Model):
    """An object the API exposes: string id, creation time, list position."""

    seq = models.BigIntegerField(db_default=next_seq(), unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        abstract = True


class Organization(models.Model):
    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_org_id, editable=False
    )
    name = models.CharField(max_length=256, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.name


class Project(models.Model):
    """The tenant boundary: every API object belongs to exactly one project."""

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_project_id, editable=False
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="projects"
    )
    name = models.CharField(max_length=256)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="project_name_unique_in_org"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.organization.name} / {self.name}"


def hash_key(raw: str) -> str:
    # Keys are 140+ bits of randomness, so a fast unsalted hash is enough:
    # no dictionary attack applies, and lookups stay one indexed equality.
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKey(models.Model):
    """A project's secret key. Only its SHA-256 is stored; the key is shown once."""

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_key_id, editable=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=256, blank=True)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    redacted = models.CharField(
        max_length=32,
        editable=False,
        help_text="First and last characters, for display.",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Per-key overrides of the request rate limits (core.ratelimit): empty
    # takes the project's, then the installation's default; 0 = unlimited.
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Empty: the project's limit (or the default). 0: unlimited.",
    )
    runs_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Run creations and tool-output submissions per minute. "
        "Empty: the project's limit (or the default). 0: unlimited.",
    )

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name or self.id} ({self.redacted})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ProjectLimits(models.Model):
    """A project's rate limits and token budgets, set by an operator in admin.

    No row means the installation's defaults and no budget. Budgets count
    prompt + completion tokens of the project's runs, by the UTC day and
    month the run was created in (core.services.quota).
    """

    project = models.OneToOneField(
        Project, primary_key=True, on_delete=models.CASCADE, related_name="limits"
    )
    requests_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Per API key. Empty: RATE_LIMIT_REQUESTS_PER_MINUTE. 0: unlimited.",
    )
    runs_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Per API key. Empty: RATE_LIMIT_RUNS_PER_MINUTE. 0: unlimited.",
    )
    daily_token_budget = models.PositiveBigIntegerField(
        default=0, help_text="Tokens per UTC day. 0: unlimited."
    )
    monthly_token_budget = models.PositiveBigIntegerField(
        default=0, help_text="Tokens per UTC calendar month. 0: unlimited."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "project limits"
        verbose_name_plural = "project limits"

    def __str__(self) -> str:
        return f"limits of {self.project_id}"


class LanguageModel(models.Model):
    """A model the platform can run, served by one or more OpenAI-compatible
    engines (replicas). Global to the installation; operators manage it."""

    id = models.CharField(
        primary_key=True, max_length=256, help_text="The name clients pass as `model`."
    )
    served_name = models.CharField(
        max_length=256,
        blank=True,
        help_text="The name the engine knows it by, when it differs from the id.",
    )
    base_urls = models.JSONField(
        default=list, help_text='Engine base URLs, e.g. ["http://vllm:8000/v1"].'
    )
    api_key = models.CharField(max_length=512, blank=True)
    context_window = models.PositiveIntegerField(default=8192)
    capabilities = models.JSONField(
        default=dict,
        blank=True,
        help_text='e.g. {"tools": true, "json_schema": true, "vision": false}',
    )
    owned_by = models.CharField(max_length=256, default="agents")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.id

    def capability(self, name: str, default: Any = False) -> Any:
        return (self.capabilities or {}).get(name, default)


def unix_time(value: datetime | None) -> int | None:
    """A timestamp as the wire carries it: Unix seconds, or null."""
    return int(value.timestamp()) if value is not None else None
