"""Operators' view of assistants, threads and messages.

Threads and messages are created through the API only: its services check
file ownership and store content in the wire shape, which a free-form admin
form would not. Here they can be inspected, their metadata corrected, and
they can be deleted.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.db.models import QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from assistants.models import (
    Assistant,
    Message,
    Run,
    RunStep,
    Thread,
    ThreadSummary,
)

PREVIEW_CHARS = 80
INLINE_MESSAGES = 50


def message_preview(message: Message) -> str:
    """The first text part, shortened: enough to recognise a message."""
    for part in message.content or []:
        if isinstance(part, dict) and part.get("type") == "text":
            value = str((part.get("text") or {}).get("value", ""))
            if len(value) > PREVIEW_CHARS:
                return value[: PREVIEW_CHARS - 1] + "…"
            return value
        if isinstance(part, dict) and part.get("type"):
            return f"[{part['type']}]"
    return ""


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "model", "project", "created_at")
    list_filter = ("model", "project__organization", "project")
    list_select_related = ("project__organization",)
    search_fields = ("id", "name")
    readonly_fields = ("id", "seq", "created_at")
    ordering = ("-seq",)


class ReadOnlyInline(admin.TabularInline):
    """A thread's history and memory are shown as written: an inline never
    adds, edits or deletes (a message's own page can change its metadata)."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MessageInline(ReadOnlyInline):
    model = Message
    extra = 0
    fields = ("id", "role", "status", "preview", "run_id", "created_at")
    readonly_fields = fields
    ordering = ("seq",)
    show_change_link = True
    can_delete = False
    verbose_name_plural = f"messages (the newest {INLINE_MESSAGES})"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Message]:
        # A thread may hold millions of messages: show the newest few (the
        # Messages page searches by thread id for the rest).
        queryset = super().get_queryset(request)
        newest = queryset.order_by("-seq").values("pk")[:INLINE_MESSAGES]
        return queryset.filter(pk__in=Subquery(newest))

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        return message_preview(obj)


class ThreadSummaryInline(ReadOnlyInline):
    """The thread's memory (assistants/runs/memory.py): read-only."""

    model = ThreadSummary
    extra = 0
    fields = ("level", "from_seq", "until_seq", "message_count", "token_count", "text")
    readonly_fields = fields
    ordering = ("from_seq", "level")
    can_delete = False


@admin.register(ThreadSummary)
class ThreadSummaryAdmin(admin.ModelAdmin):
    list_display = (
        "thread",
        "level",
        "from_seq",
        "until_seq",
        "message_count",
        "token_count",
        "model",
        "created_at",
    )
    list_filter = ("level",)
    search_fields = ("thread__id",)
    readonly_fields = (
        "thread",
        "from_seq",
        "until_seq",
        "level",
        "message_count",
        "token_count",
        "model",
        "created_at",
    )
    fields = (*readonly_fields, "text")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class ThreadAssistantFilter(admin.SimpleListFilter):
    """Threads an assistant ran on (``?assistant=asst_...``, linked from the
    assistant's page): threads have no assistant, their runs do."""

    title = "assistant"
    parameter_name = "assistant"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, value)] if value else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        value = self.value()
        if not value:
            return queryset
        ran = Run.objects.filter(assistant_id=value).values("thread_id")
        return queryset.filter(pk__in=ran)


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "runs_link", "created_at")
    list_filter = (ThreadAssistantFilter, "project__organization", "project")
    list_select_related = ("project__organization",)
    search_fields = ("id", "project__name")
    fields = (
        "id",
        "project",
        "created_at",
        "metadata",
        "tool_resources",
        "context_boundary_seq",
    )
    # tool_resources ids are ownership-checked by the API; not editable here.
    readonly_fields = (
        "id",
        "project",
        "created_at",
        "tool_resources",
        "context_boundary_seq",
    )
    ordering = ("-seq",)
    inlines = [ThreadSummaryInline, MessageInline]

    @admin.display(description="runs")
    def runs_link(self, obj: Thread) -> str:
        url = reverse("admin:assistants_run_changelist")
        return format_html('<a href="{}?thread__id__exact={}">runs</a>', url, obj.pk)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "thread", "role", "status", "preview", "run_id", "created_at")
    list_filter = ("role", "status")
    # Ids are the useful handles: a client reports a message, thread or run id.
    search_fields = ("id", "thread__id", "run_id", "assistant_id")
    fields = (
        "id",
        "thread",
        "role",
        "status",
        "content",
        "attachments",
        "incomplete_details",
        "assistant_id",
        "run_id",
        "created_at",
        "completed_at",
        "incomplete_at",
        "metadata",
    )
    readonly_fields = tuple(f for f in fields if f != "metadata")
    ordering = ("-seq",)

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        return message_preview(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


def _pretty(value: Any) -> str:
    return format_html(
        "<pre style='white-space:pre-wrap;max-width:60em'>{}</pre>",
        json.dumps(value, indent=2, ensure_ascii=False),
    )


def _seconds(start: Any, end: Any) -> str:
    if start is None or end is None:
        return "–"
    return f"{(end - start).total_seconds():.2f} s"


class RunStepInline(admin.StackedInline):
    """Every step of the run on its page: tool calls with their arguments and
    outputs, token counts and how long each step took."""

    model = RunStep
    extra = 0
    can_delete = False
    ordering = ("seq",)
    fields = (
        "id",
        "type",
        "status",
        "created_at",
        "duration",
        "usage_view",
        "details_view",
        "last_error",
    )
    readonly_fields = fields

    @admin.display(description="duration")
    def duration(self, step: RunStep) -> str:
        end = (
            step.completed_at or step.failed_at or step.cancelled_at or step.expired_at
        )
        return _seconds(step.created_at, end)

    @admin.display(description="usage")
    def usage_view(self, step: RunStep) -> str:
        return _pretty(step.usage) if step.usage else "–"

    @admin.display(description="details (tool calls and outputs)")
    def details_view(self, step: RunStep) -> str:
        return _pretty(step.step_details)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    """The run inspector: status, timings, tokens and every step."""

    list_display = (
        "id",
        "status",
        "thread_link",
        "assistant_link",
        "model",
        "created_at",
        "total_tokens",
        "attempts",
    )
    list_filter = ("status", "model", "project")
    search_fields = ("id", "thread__id", "assistant_id")
    date_hierarchy = "created_at"
    inlines = [RunStepInline]
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "id",
                    "status",
                    "project",
                    "thread",
                    "assistant_id",
                    "model",
                    "metadata",
                )
            },
        ),
        (
            "Timings",
            {
                "fields": (
                    "created_at",
                    "started_at",
                    "completed_at",
                    "failed_at",
                    "cancelled_at",
                    "expires_at",
                    "queue_wait",
                    "run_time",
                )
            },
        ),
        (
            "Tokens",
            {"fields": ("usage_view", "max_prompt_tokens", "max_completion_tokens")},
        ),
        (
            "Outcome",
            {"fields": ("required_action_view", "last_error", "incomplete_details")},
        ),
        (
            "Configuration",
            {
                "classes": ("collapse",),
                "fields": (
                    "instructions",
                    "tools_view",
                    "tool_choice",
                    "parallel_tool_calls",
                    "response_format",
                    "truncation_strategy",
                    "temperature",
                    "top_p",
                    "seed",
                ),
            },
        ),
        (
            "Execution",
            {
                "classes": ("collapse",),
                "fields": ("attempts", "worker", "heartbeat_at", "request_id"),
            },
        ),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Everything: a run changes through its state machine, never a form.
        names: list[str] = []
        for _title, options in self.fieldsets:
            names.extend(str(name) for name in options["fields"])
        return names

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="thread", ordering="thread_id")
    def thread_link(self, run: Run) -> str:
        url = reverse("admin:assistants_thread_change", args=[quote(run.thread_id)])
        return format_html('<a href="{}">{}</a>', url, run.thread_id)

    @admin.display(description="assistant", ordering="assistant_id")
    def assistant_link(self, run: Run) -> str:
        # A plain id, not a foreign key: the assistant may have been deleted
        # since, and the link then says so with a 404 page.
        url = reverse(
            "admin:assistants_assistant_change", args=[quote(run.assistant_id)]
        )
        return format_html('<a href="{}">{}</a>', url, run.assistant_id)

    @admin.display(description="total tokens")
    def total_tokens(self, run: Run) -> Any:
        return (run.usage or {}).get("total_tokens", "–")

    @admin.display(description="waited in queue")
    def queue_wait(self, run: Run) -> str:
        return _seconds(run.created_at, run.started_at)

    @admin.display(description="run time")
    def run_time(self, run: Run) -> str:
        end = run.completed_at or run.failed_at or run.cancelled_at or run.incomplete_at
        return _seconds(run.started_at, end)

    @admin.display(description="usage")
    def usage_view(self, run: Run) -> str:
        return _pretty(run.usage) if run.usage else "–"

    @admin.display(description="required action")
    def required_action_view(self, run: Run) -> str:
        return _pretty(run.required_action) if run.required_action else "–"

    @admin.display(description="tools")
    def tools_view(self, run: Run) -> str:
        return _pretty(run.tools)
