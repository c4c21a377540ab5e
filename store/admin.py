"""Operators' admin for the store, and the store's view of assistants.

The assistant page here replaces the generic one (assistants.admin) with
what operators manage the store with: the listing, versions of the
instructions (diff and revert), usage, the runs and threads, the files and
vector stores. The assistants app knows nothing of the store, so the store
re-registers the assistant admin (the store app is installed after it).
"""

from __future__ import annotations

import difflib
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import (
    Count,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.functions import Coalesce
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from assistants.models import Assistant, Run, Thread
from store.models import (
    AssistantVersion,
    BuilderProfile,
    Conversation,
    Listing,
    Membership,
    Rating,
    Report,
)
from store.selectors import assistant_usage
from store.services.listing import (
    listings_set_featured,
    listings_set_unlisted,
    reports_handle,
)
from store.services.versions import assistant_version_revert, change_source

PREVIEW_CHARS = 90
INLINE_VERSIONS = 20


def _admin_url(obj: Any, view: str = "change") -> str:
    meta = obj._meta
    # Quoted as the admin does: unquoting reads "_XX" as a hex escape, and
    # our ids are "asst_3Fab...".
    return reverse(
        f"admin:{meta.app_label}_{meta.model_name}_{view}", args=[quote(obj.pk)]
    )


def _changelist(model: type[Any], **query: Any) -> str:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    return f"{url}?{urlencode(query)}" if query else url


def _link(url: str, text: Any) -> SafeString:
    return format_html('<a href="{}">{}</a>', url, text)


def _preview(text: str | None) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 1] + "…"


def _runs_since(days: int) -> Coalesce:
    """Runs of the row's assistant in the last ``days`` days (a correlated
    count on the (assistant_id, created_at) index, migration 0004)."""
    runs = (
        Run.objects.filter(
            assistant_id=OuterRef("pk"),
            created_at__gte=timezone.now() - timedelta(days=days),
        )
        .order_by()
        .values("assistant_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(runs, output_field=IntegerField()), 0)


# --- Assistants: versions, usage, links ----------------------------------------


class AssistantVersionInline(admin.TabularInline):
    model = AssistantVersion
    extra = 0
    can_delete = False
    fields = ("number", "created_at", "source", "author", "preview", "compare")
    readonly_fields = fields
    ordering = ("-number",)
    verbose_name_plural = f"versions of the instructions (the newest {INLINE_VERSIONS})"

    class Media:
        css = {"all": ("store/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[AssistantVersion]:
        queryset = super().get_queryset(request)
        newest = queryset.order_by("-number").values("pk")[:INLINE_VERSIONS]
        return queryset.filter(pk__in=Subquery(newest))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="instructions")
    def preview(self, version: AssistantVersion) -> str:
        return _preview(version.instructions) or "–"

    @admin.display(description="")
    def compare(self, version: AssistantVersion) -> SafeString:
        url = reverse(
            "admin:assistants_assistant_version",
            args=[quote(version.assistant_id), version.number],
        )
        return _link(url, "diff · revert")


class HasListingFilter(admin.SimpleListFilter):
    title = "store listing"
    parameter_name = "listed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("public", "Public in the store"),
            ("link", "Link only"),
            ("private", "Private"),
            ("unlisted", "Unlisted by an operator"),
            ("none", "Not published"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        value = self.value()
        if value == "none":
            return queryset.filter(listing__isnull=True)
        if value == "unlisted":
            return queryset.filter(listing__unlisted_by_operator=True)
        if value in Listing.Visibility.values:
            return queryset.filter(listing__visibility=value)
        return queryset


class StoreAssistantAdmin(admin.ModelAdmin):
    """Replaces assistants.admin.AssistantAdmin (same list, more on the page)."""

    ordering = ("-seq",)
    list_display = (
        "name_or_id",
        "id",
        "model",
        "project",
        "listing_column",
        "runs_7d",
        "created_at",
    )
    list_filter = (HasListingFilter, "model", "project__organization", "project")
    list_select_related = ("project__organization", "listing")
    search_fields = ("id", "name", "listing__slug")
    readonly_fields = (
        "id",
        "seq",
        "created_at",
        "listing_view",
        "activity_view",
        "usage_view",
        "resources_view",
    )
    fieldsets = (
        (None, {"fields": ("id", "project", "name", "description", "model")}),
        ("Instructions", {"fields": ("instructions",)}),
        ("In the store", {"fields": ("listing_view",)}),
        ("Usage", {"fields": ("usage_view", "activity_view")}),
        ("Files and vector stores", {"fields": ("resources_view",)}),
        (
            "Configuration",
            {
                "classes": ("collapse",),
                "fields": (
                    "tools",
                    "tool_resources",
                    "metadata",
                    "temperature",
                    "top_p",
                    "response_format",
                    "seq",
                    "created_at",
                ),
            },
        ),
    )
    inlines = [AssistantVersionInline]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None:
            return fieldsets
        # An unsaved assistant has no seq (the database assigns it on
        # insert): the add page was a 500, formatting the pending default
        # as a number (found by the authz matrix, issue #9).
        return [
            (title, {**opts, "fields": [f for f in opts["fields"] if f != "seq"]})
            for title, opts in fieldsets
        ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Assistant]:
        return super().get_queryset(request).annotate(n_runs_7d=_runs_since(7))

    @admin.display(description="name", ordering="name")
    def name_or_id(self, obj: Assistant) -> str:
        return obj.name or "(untitled)"

    @admin.display(description="runs (7 days)", ordering="n_runs_7d")
    def runs_7d(self, obj: Assistant) -> SafeString:
        return _link(
            _changelist(Run, assistant_id=obj.pk), getattr(obj, "n_runs_7d", 0)
        )

    @admin.display(description="listing")
    def listing_column(self, obj: Assistant) -> SafeString | str:
        listing = getattr(obj, "listing", None)
        if listing is None:
            return "–"
        flags = listing.get_visibility_display()
        if listing.unlisted_by_operator:
            flags = "unlisted"
        elif listing.featured:
            flags += " ★"
        return format_html(
            '<a href="{}">{}</a> <small>({})</small>',
            _admin_url(listing),
            listing.slug,
            flags,
        )

    @admin.display(description="listing")
    def listing_view(self, obj: Assistant) -> SafeString | str:
        listing = Listing.objects.filter(assistant_id=obj.pk).first()
        if listing is None:
            return "Not published in the store."
        open_reports = listing.reports.filter(status=Report.Status.OPEN).count()
        return format_html(
            '<a href="{}">{}</a> — {}{}{} · <a href="{}">view in the store</a>'
            ' · <a href="{}">{} open report(s)</a>',
            _admin_url(listing),
            listing.slug,
            listing.get_visibility_display(),
            ", featured" if listing.featured else "",
            ", UNLISTED by an operator" if listing.unlisted_by_operator else "",
            reverse("store:listing", args=[listing.slug]),
            _changelist(Report, listing__id__exact=listing.pk, status__exact="open"),
            open_reports,
        )

    @admin.display(description="runs and threads")
    def activity_view(self, obj: Assistant) -> SafeString:
        return format_html(
            '<a href="{}">every run</a> · <a href="{}">failed runs</a>'
            ' · <a href="{}">threads it ran on</a>',
            _changelist(Run, assistant_id=obj.pk),
            _changelist(Run, assistant_id=obj.pk, status__exact="failed"),
            _changelist(Thread, assistant=obj.pk),
        )

    @admin.display(description="usage (from the run table)")
    def usage_view(self, obj: Assistant) -> SafeString | str:
        if obj.pk is None:
            return "–"
        windows = assistant_usage(assistant_id=obj.pk)
        rows = format_html_join(
            "",
            "<tr><th>last {} days</th><td>{}</td><td>{}</td><td>{}</td>"
            "<td>{}</td></tr>",
            (
                (
                    w.days,
                    w.runs,
                    ", ".join(f"{n} {s}" for s, n in sorted(w.by_status.items()))
                    or "–",
                    f"{w.prompt_tokens:,}",
                    f"{w.completion_tokens:,}",
                )
                for w in windows
            ),
        )
        return format_html(
            '<table class="usage"><thead><tr><th></th><th>runs</th>'
            "<th>by status</th><th>tokens in</th><th>tokens out</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="used by the assistant")
    def resources_view(self, obj: Assistant) -> SafeString | str:
        from tools.models import File, VectorStore

        resources = obj.tool_resources or {}
        file_ids = (resources.get("code_interpreter") or {}).get("file_ids") or []
        store_ids = (resources.get("file_search") or {}).get("vector_store_ids") or []
        files = {f.pk: f for f in File.objects.filter(pk__in=file_ids)}
        stores = {s.pk: s for s in VectorStore.objects.filter(pk__in=store_ids)}
        items: list[tuple[str, str, str]] = []
        for file_id in file_ids:
            file = files.get(file_id)
            items.append(
                ("code_interpreter file", _admin_url(file), file.filename)
                if file
                else ("code_interpreter file", "#", f"{file_id} (deleted)")
            )
        for store_id in store_ids:
            store = stores.get(store_id)
            items.append(
                ("file_search store", _admin_url(store), store.name or store.pk)
                if store
                else ("file_search store", "#", f"{store_id} (deleted)")
            )
        if not items:
            return "None."
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", '<li>{}: <a href="{}">{}</a></li>', iter(items)),
        )

    def save_model(
        self, request: HttpRequest, obj: Assistant, form: Any, change: bool
    ) -> None:
        # The version trigger records who changed the instructions.
        with change_source(source="admin", author=request.user.get_username()):
            super().save_model(request, obj, form, change)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<path:object_id>/versions/<int:number>/",
                self.admin_site.admin_view(self.version_view),
                name="assistants_assistant_version",
            ),
            *super().get_urls(),
        ]

    def version_view(
        self, request: HttpRequest, object_id: str, number: int
    ) -> HttpResponse:
        """A version against the one before it (or ``?against=current``),
        as a line diff; POST reverts to it (a new version)."""
        assistant = self.get_object(request, unquote(object_id))
        if assistant is None or not self.has_view_permission(request, assistant):
            raise Http404("No such assistant")
        version = AssistantVersion.objects.filter(
            assistant_id=assistant.pk, number=number
        ).first()
        if version is None:
            raise Http404("No such version")
        if request.method == "POST":
            if not self.has_change_permission(request, assistant):
                raise PermissionDenied
            made = assistant_version_revert(
                version=version, author=request.user.get_username()
            )
            if made is None:
                self.message_user(
                    request,
                    f"The instructions already are those of version {number}.",
                    messages.INFO,
                )
            else:
                self.message_user(
                    request,
                    f"Reverted to version {number}: saved as version {made.number}.",
                    messages.SUCCESS,
                )
            return redirect(_admin_url(assistant))
        against_current = request.GET.get("against") == "current"
        if against_current:
            old_label = f"v{number}"
            new_label = "current"
            old_text = version.instructions or ""
            new_text = assistant.instructions or ""
        else:
            previous = (
                AssistantVersion.objects.filter(
                    assistant_id=assistant.pk, number__lt=number
                )
                .order_by("-number")
                .first()
            )
            old_label = f"v{previous.number}" if previous else "(nothing)"
            new_label = f"v{number}"
            old_text = (previous.instructions or "") if previous else ""
            new_text = version.instructions or ""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{assistant}: version {number}",
            "assistant": assistant,
            "version": version,
            "old_label": old_label,
            "new_label": new_label,
            "diff": _diff_rows(old_text, new_text),
            "against_current": against_current,
            "is_current": (assistant.instructions or "")
            == (version.instructions or ""),
            "assistant_url": _admin_url(assistant),
            "versions": AssistantVersion.objects.filter(
                assistant_id=assistant.pk
            ).order_by("-number")[:50],
            "can_revert": self.has_change_permission(request, assistant),
        }
        return TemplateResponse(request, "admin/store/assistant_version.html", context)


def _diff_rows(old: str, new: str) -> list[tuple[str, str]]:
    """(kind, line) pairs of a unified line diff with all the context:
    kind is "add", "del", "hunk" or "same"."""
    rows: list[tuple[str, str]] = []
    lines = difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=3)
    for line in lines:
        if line.startswith(("---", "+++")):
            continue
        if line.startswith("@@"):
            rows.append(("hunk", line))
        elif line.startswith("+"):
            rows.append(("add", line[1:]))
        elif line.startswith("-"):
            rows.append(("del", line[1:]))
        else:
            rows.append(("same", line[1:]))
    return rows


admin.site.unregister(Assistant)
admin.site.register(Assistant, StoreAssistantAdmin)


# --- Listings, reports and the rest of the store --------------------------------


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "assistant_link",
        "status_column",
        "category",
        "open_reports",
        "conversations_7d",
        "runs_7d",
        "updated_at",
    )
    list_display_links = ("slug",)
    list_filter = (
        "visibility",
        "category",
        "featured",
        "unlisted_by_operator",
        "embedding_stale",
    )
    list_select_related = ("assistant", "builder")
    search_fields = ("slug", "assistant__name", "assistant__id", "short_description")
    raw_id_fields = ("assistant", "builder")
    readonly_fields = ("links_view", "created_at", "updated_at")
    actions = ("unlist", "relist", "feature", "unfeature")
    date_hierarchy = "created_at"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Listing]:
        since = timezone.now() - timedelta(days=7)
        conversations = (
            Conversation.objects.filter(listing=OuterRef("pk"), created_at__gte=since)
            .order_by()
            .values("listing")
            .annotate(n=Count("pk"))
            .values("n")
        )
        runs = (
            Run.objects.filter(
                assistant_id=OuterRef("assistant_id"), created_at__gte=since
            )
            .order_by()
            .values("assistant_id")
            .annotate(n=Count("pk"))
            .values("n")
        )
        # Correlated counts, not joins: joining reports and conversations
        # multiplied the rows before grouping.
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_reports=Count("reports", filter=Q(reports__status="open")),
                n_recent=Coalesce(
                    Subquery(conversations, output_field=IntegerField()), 0
                ),
                n_runs=Coalesce(Subquery(runs, output_field=IntegerField()), 0),
            )
        )

    @admin.display(description="status", ordering="visibility")
    def status_column(self, obj: Listing) -> SafeString:
        # One column for what the public sees: narrower than three booleans.
        return format_html(
            "{}{}{}",
            obj.get_visibility_display(),
            format_html(' <strong title="featured">★</strong>') if obj.featured else "",
            format_html(' <strong style="color:#b91c1c">unlisted</strong>')
            if obj.unlisted_by_operator
            else "",
        )

    @admin.display(description="assistant", ordering="assistant__name")
    def assistant_link(self, obj: Listing) -> SafeString:
        return _link(_admin_url(obj.assistant), obj.assistant.name or obj.assistant_id)

    @admin.display(description="chats 7d", ordering="n_recent")
    def conversations_7d(self, obj: Listing) -> SafeString:
        return _link(
            _changelist(Conversation, listing__id__exact=obj.pk),
            int(getattr(obj, "n_recent", 0)),
        )

    @admin.display(description="runs 7d", ordering="n_runs")
    def runs_7d(self, obj: Listing) -> SafeString:
        return _link(
            _changelist(Run, assistant_id=obj.assistant_id),
            int(getattr(obj, "n_runs", 0)),
        )

    @admin.display(description="reports", ordering="n_reports")
    def open_reports(self, obj: Listing) -> SafeString | int:
        n = int(getattr(obj, "n_reports", 0))
        if not n:
            return 0
        return format_html(
            '<a href="{}"><strong style="color:#b91c1c">{}</strong></a>',
            _changelist(Report, listing__id__exact=obj.pk, status__exact="open"),
            n,
        )

    @admin.display(description="links")
    def links_view(self, obj: Listing) -> SafeString | str:
        if obj.pk is None:
            return "–"
        return format_html(
            '<a href="{}">the assistant</a> · <a href="{}">in the store</a>'
            ' · <a href="{}">runs</a> · <a href="{}">conversations</a>'
            ' · <a href="{}">reports</a>',
            _admin_url(obj.assistant),
            reverse("store:listing", args=[obj.slug]),
            _changelist(Run, assistant_id=obj.assistant_id),
            _changelist(Conversation, listing__id__exact=obj.pk),
            _changelist(Report, listing__id__exact=obj.pk),
        )

    def _bulk(self, request: HttpRequest, changed: int, what: str) -> None:
        self.message_user(request, f"{changed} listing(s) {what}.", messages.SUCCESS)

    @admin.action(description="Unlist selected listings")
    def unlist(self, request: HttpRequest, queryset: QuerySet[Listing]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._bulk(
            request, listings_set_unlisted(listing_ids=ids, unlisted=True), "unlisted"
        )

    @admin.action(description="Relist selected listings")
    def relist(self, request: HttpRequest, queryset: QuerySet[Listing]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._bulk(
            request, listings_set_unlisted(listing_ids=ids, unlisted=False), "relisted"
        )

    @admin.action(description="Feature selected listings")
    def feature(self, request: HttpRequest, queryset: QuerySet[Listing]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._bulk(
            request, listings_set_featured(listing_ids=ids, featured=True), "featured"
        )

    @admin.action(description="Stop featuring selected listings")
    def unfeature(self, request: HttpRequest, queryset: QuerySet[Listing]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        self._bulk(
            request,
            listings_set_featured(listing_ids=ids, featured=False),
            "unfeatured",
        )


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """The moderation queue: open reports first; closing one records the
    operator and the time."""

    list_display = (
        "created_at",
        "listing_link",
        "reason_preview",
        "reporter",
        "status",
        "handled_by",
        "handled_at",
    )
    list_filter = ("status", "created_at")
    list_select_related = ("listing", "reporter", "handled_by")
    search_fields = ("reason", "listing__slug")
    raw_id_fields = ("listing", "reporter")
    readonly_fields = ("status", "handled_by", "handled_at", "created_at")
    actions = ("resolve", "dismiss", "resolve_and_unlist", "reopen")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Report]:
        # Open reports on top, oldest first: a queue.
        return (
            super()
            .get_queryset(request)
            .order_by(F("handled_at").desc(nulls_first=True), "created_at")
        )

    @admin.display(description="listing", ordering="listing__slug")
    def listing_link(self, obj: Report) -> SafeString:
        return _link(_admin_url(obj.listing), obj.listing.slug)

    @admin.display(description="reason")
    def reason_preview(self, obj: Report) -> str:
        return _preview(obj.reason)

    def _handle(
        self, request: HttpRequest, queryset: QuerySet[Report], status: str
    ) -> int:
        assert isinstance(request.user, User)
        changed = reports_handle(
            report_ids=list(queryset.values_list("pk", flat=True)),
            status=status,
            operator=request.user,
        )
        self.message_user(request, f"{changed} report(s) marked {status}.")
        return changed

    @admin.action(description="Resolve selected reports")
    def resolve(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._handle(request, queryset, Report.Status.RESOLVED)

    @admin.action(description="Dismiss selected reports")
    def dismiss(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._handle(request, queryset, Report.Status.DISMISSED)

    @admin.action(description="Unlist the listings and resolve the reports")
    def resolve_and_unlist(
        self, request: HttpRequest, queryset: QuerySet[Report]
    ) -> None:
        listing_ids = sorted(set(queryset.values_list("listing_id", flat=True)))
        listings_set_unlisted(listing_ids=listing_ids, unlisted=True)
        self._handle(request, queryset, Report.Status.RESOLVED)

    @admin.action(description="Reopen selected reports")
    def reopen(self, request: HttpRequest, queryset: QuerySet[Report]) -> None:
        self._handle(request, queryset, Report.Status.OPEN)


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ("listing", "user", "stars", "review", "updated_at")
    list_filter = ("stars",)
    search_fields = ("listing__slug", "user__username", "review")
    raw_id_fields = ("listing", "user")


@admin.register(BuilderProfile)
class BuilderProfileAdmin(admin.ModelAdmin):
    list_display = ("display_name", "user", "created_at")
    search_fields = ("display_name", "user__username")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "project", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("user__username", "project__name", "project__id")
    raw_id_fields = ("user", "project")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "listing", "thread_link", "user", "shared", "created_at")
    list_filter = ("created_at",)
    list_select_related = ("listing", "user")
    search_fields = ("id", "listing__slug", "thread__id", "user__username")
    raw_id_fields = ("listing", "thread", "user")
    date_hierarchy = "created_at"

    @admin.display(description="thread", ordering="thread_id")
    def thread_link(self, obj: Conversation) -> SafeString:
        return _link(
            reverse("admin:assistants_thread_change", args=[quote(obj.thread_id)]),
            obj.thread_id,
        )

    @admin.display(description="shared", boolean=True)
    def shared(self, obj: Conversation) -> bool:
        return bool(obj.share_token)
