from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from core.auth import redact
from core.models import (
    ApiKey,
    LanguageModel,
    Organization,
    Project,
    ProjectLimits,
    hash_key,
)
from core.services.keys import api_key_generate_raw


class ProjectInline(admin.TabularInline):
    model = Project
    extra = 0
    fields = ("id", "name", "created_at")
    readonly_fields = ("id", "created_at")


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name", "id")
    readonly_fields = ("id", "created_at")
    inlines = [ProjectInline]


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    extra = 0
    fields = ("name", "redacted", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("redacted", "created_at", "last_used_at")
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # keys are created on the API key page, which shows them once


class ProjectLimitsInline(admin.StackedInline):
    """Rate limits and token budgets (core.ratelimit, core.services.quota);
    edits apply within a few seconds (the per-process caches)."""

    model = ProjectLimits
    extra = 1  # shown ready to fill; an untouched form saves no row
    max_num = 1
    can_delete = True
    fields = (
        "requests_per_minute",
        "runs_per_minute",
        "daily_token_budget",
        "monthly_token_budget",
        "updated_at",
    )
    readonly_fields = ("updated_at",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "id", "created_at")
    list_filter = ("organization",)
    search_fields = ("name", "id", "organization__name")
    readonly_fields = ("id", "created_at")
    inlines = [ProjectLimitsInline, ApiKeyInline]


@admin.action(description="Revoke selected keys")
def revoke_keys(modeladmin: Any, request: HttpRequest, queryset: Any) -> None:
    count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
    messages.success(request, f"Revoked {count} key(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "redacted",
        "project",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("project__organization", "project", "revoked_at")
    search_fields = ("name", "id", "redacted", "project__name")
    readonly_fields = ("id", "redacted", "created_at", "last_used_at")
    fields = (
        "id",
        "project",
        "name",
        "redacted",
        "created_at",
        "last_used_at",
        "revoked_at",
        "requests_per_minute",
        "runs_per_minute",
    )
    actions = [revoke_keys]

    def save_model(
        self, request: HttpRequest, obj: ApiKey, form: Any, change: bool
    ) -> None:
        if not change:
            # The admin is a front for the same rule as the service: the raw key
            # exists only in this response.
            raw = api_key_generate_raw()
            obj.hashed_key = hash_key(raw)
            obj.redacted = redact(raw)
            super().save_model(request, obj, form, change)
            messages.warning(
                request,
                f"New API key (copy it now, it will not be shown again): {raw}",
            )
            return
        super().save_model(request, obj, form, change)


@admin.register(LanguageModel)
class LanguageModelAdmin(admin.ModelAdmin):
    list_display = ("id", "served_name", "context_window", "is_active", "created_at")
    list_filter = ("is_active",)
    search_fields = ("id", "served_name")
