"""Operators' view of assistants, threads and messages.

Threads and messages are created through the API only: its services check
file ownership and store content in the wire shape, which a free-form admin
form would not. Here they can be inspected, their metadata corrected, and
they can be deleted.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from assistants.models import Assistant, Message, Thread

PREVIEW_CHARS = 80


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


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("id", "role", "status", "preview", "run_id", "created_at")
    readonly_fields = fields
    ordering = ("seq",)
    show_change_link = True
    can_delete = False

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        return message_preview(obj)

    # A thread's history is shown as written: the inline never adds, edits
    # or deletes (the message's own page can change its metadata).
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Thread)
class ThreadAdmin(admin.ModelAdmin):
    list_display = ("id", "project", "created_at")
    list_filter = ("project__organization", "project")
    list_select_related = ("project__organization",)
    search_fields = ("id", "project__name")
    fields = ("id", "project", "created_at", "metadata", "tool_resources")
    # tool_resources ids are ownership-checked by the API; not editable here.
    readonly_fields = ("id", "project", "created_at", "tool_resources")
    ordering = ("-seq",)
    inlines = [MessageInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "thread", "role", "status", "preview", "run_id",
                    "created_at")
    list_filter = ("role", "status")
    # Ids are the useful handles: a client reports a message, thread or run id.
    search_fields = ("id", "thread__id", "run_id", "assistant_id")
    fields = ("id", "thread", "role", "status", "content", "attachments",
              "incomplete_details", "assistant_id", "run_id", "created_at",
              "completed_at", "incomplete_at", "metadata")
    readonly_fields = tuple(f for f in fields if f != "metadata")
    ordering = ("-seq",)

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        return message_preview(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
