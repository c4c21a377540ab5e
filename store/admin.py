from __future__ import annotations

from datetime import timedelta

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from store.models import (
    BuilderProfile,
    Conversation,
    Listing,
    Membership,
    Rating,
    Report,
)
from store.services.listing import listings_set_featured, listings_set_unlisted


@admin.register(Listing)
class ListingAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "assistant",
        "category",
        "visibility",
        "featured",
        "unlisted_by_operator",
        "open_reports",
        "conversations_7d",
        "updated_at",
    )
    list_filter = ("visibility", "category", "featured", "unlisted_by_operator")
    search_fields = ("slug", "assistant__name", "short_description")
    raw_id_fields = ("assistant", "builder")
    actions = ("unlist", "relist", "feature", "unfeature")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Listing]:
        return (
            super()
            .get_queryset(request)
            .select_related("assistant")
            .annotate(
                n_reports=Count("reports", distinct=True),
                n_recent=Count(
                    "conversations",
                    filter=Q(
                        conversations__created_at__gte=timezone.now()
                        - timedelta(days=7)
                    ),
                    distinct=True,
                ),
            )
        )

    @admin.display(description="Conversations (7 days)", ordering="n_recent")
    def conversations_7d(self, obj: Listing) -> int:
        return int(getattr(obj, "n_recent", 0))

    @admin.display(description="Reports", ordering="n_reports")
    def open_reports(self, obj: Listing) -> int:
        return int(getattr(obj, "n_reports", 0))

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
    list_display = ("listing", "reporter", "reason", "resolved", "created_at")
    list_filter = ("resolved",)
    raw_id_fields = ("listing", "reporter")


@admin.register(Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ("listing", "user", "stars", "review", "updated_at")
    raw_id_fields = ("listing", "user")


@admin.register(BuilderProfile)
class BuilderProfileAdmin(admin.ModelAdmin):
    list_display = ("display_name", "user", "created_at")
    search_fields = ("display_name", "user__username")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ("user", "project", "role", "created_at")
    raw_id_fields = ("user", "project")


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ("id", "listing", "thread", "user", "created_at")
    raw_id_fields = ("listing", "thread", "user")
