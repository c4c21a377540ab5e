from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.contrib.postgres.search import SearchQuery, SearchRank
from django.db.models import Avg, Count, F, IntegerField, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.http import Http404
from django.utils import timezone
from pgvector.django import CosineDistance

from assistants.models import Assistant, Message, Run, RunStatus
from core.models import ApiKey, Project
from store.models import Conversation, Listing, Rating

TRENDING_DAYS = 7
# Cosine distance under which a listing counts as a semantic match (for
# all-MiniLM-L6-v2: related topics sit around 0.4-0.6, unrelated ones
# above 0.8).
SEMANTIC_MAX_DISTANCE = 0.65
logger = logging.getLogger(__name__)
AnyUser = AbstractBaseUser | AnonymousUser


def projects_of(*, user: AnyUser) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(memberships__user_id=user.pk)


def current_project(*, user: AnyUser, chosen: str | None) -> Project | None:
    """The project the signed-in user works in: the one they switched to
    (``chosen``, kept in their session) if they are still a member, else
    their first."""
    projects = projects_of(user=user).order_by("created_at", "pk")
    if chosen:
        project = projects.filter(pk=chosen).first()
        if project is not None:
            return project
    return projects.first()


def api_keys_of(*, project: Project) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(project=project).order_by("-created_at")


def assistants_of_user(*, user: AnyUser) -> QuerySet[Assistant]:
    return Assistant.objects.filter(project__in=projects_of(user=user)).order_by("-seq")


def is_owner(*, listing: Listing, user: AnyUser) -> bool:
    return (
        user.is_authenticated
        and projects_of(user=user).filter(pk=listing.assistant.project_id).exists()
    )


def listings_public() -> QuerySet[Listing]:
    """What the store shows to everyone: public, not unlisted."""
    return Listing.objects.filter(
        visibility=Listing.Visibility.PUBLIC, unlisted_by_operator=False
    ).select_related("assistant", "builder__builder")


def listings_public_for_sitemap() -> list[tuple[str, datetime]]:
    """(slug, updated_at) of every public listing. Slugs are [-a-zA-Z0-9_]
    (SlugField), so they need no escaping in a URL."""
    return list(
        Listing.objects.filter(
            visibility=Listing.Visibility.PUBLIC, unlisted_by_operator=False
        )
        .order_by("pk")
        .values_list("slug", "updated_at")
    )


def with_ratings(listings: list[Listing]) -> list[Listing]:
    """Set ``rating_avg`` and ``rating_count`` on a page of listings, in one
    query (aggregating in the listing query itself grouped every matching
    row before the page was cut: 10x slower at 10,000 listings)."""
    stats = {
        row["listing"]: row
        for row in Rating.objects.filter(listing__in=[x.pk for x in listings])
        .values("listing")
        .annotate(avg=Avg("stars"), n=Count("id"))
    }
    for listing in listings:
        row = stats.get(listing.pk)
        listing.rating_avg = row["avg"] if row else None  # type: ignore[attr-defined]
        listing.rating_count = row["n"] if row else 0  # type: ignore[attr-defined]
    return listings


def listing_for_viewer(*, slug: str, user: AnyUser) -> Listing:
    """The listing at ``slug`` if ``user`` may see it, else Http404 (a
    private listing is indistinguishable from a missing one)."""
    listing = (
        Listing.objects.select_related("assistant", "builder__builder")
        .filter(slug=slug)
        .first()
    )
    if listing is None:
        raise Http404("No such listing")
    if is_owner(listing=listing, user=user):
        return listing
    if listing.visibility == Listing.Visibility.PRIVATE or listing.unlisted_by_operator:
        raise Http404("No such listing")
    return listing


@dataclass(frozen=True)
class ListingStats:
    rating_avg: float | None
    rating_count: int
    conversations: int


def listing_stats(*, listing: Listing) -> ListingStats:
    ratings = listing.ratings.aggregate(avg=Avg("stars"), n=Count("id"))
    return ListingStats(
        rating_avg=ratings["avg"],
        rating_count=ratings["n"],
        conversations=listing.conversations.count(),
    )


def listings_featured(*, limit: int = 8) -> list[Listing]:
    return with_ratings(
        list(listings_public().filter(featured=True).order_by("-updated_at")[:limit])
    )


def listings_trending(*, limit: int = 8) -> list[Listing]:
    """Most runs started in the last seven days, through the store or the
    API (a conversation is a thread; each message in it is a run, so an
    assistant people keep talking to trends, not one opened once).

    Counted from the runs' (created_at, assistant_id) index (migration
    0004): an index-only range scan of the week, then one group by.
    """
    since = timezone.now() - timedelta(days=TRENDING_DAYS)
    public = Listing.objects.filter(
        visibility=Listing.Visibility.PUBLIC, unlisted_by_operator=False
    ).values("assistant_id")
    counts = list(
        Run.objects.filter(created_at__gte=since, assistant_id__in=public)
        .values("assistant_id")
        .annotate(n=Count("pk"))
        .order_by("-n", "-assistant_id")[:limit]
    )
    by_assistant = {
        x.assistant_id: x
        for x in listings_public().filter(
            assistant_id__in=[c["assistant_id"] for c in counts]
        )
    }
    return with_ratings(
        [
            by_assistant[c["assistant_id"]]
            for c in counts
            if c["assistant_id"] in by_assistant
        ]
    )


def listings_by_category(*, category: str, limit: int = 48) -> list[Listing]:
    return with_ratings(
        list(listings_public().filter(category=category).order_by("-pk")[:limit])
    )


def listings_search(
    *, query: str, category: str = "", limit: int = 48
) -> list[Listing]:
    """PostgreSQL full-text search over names and descriptions, ranked."""
    qs = listings_public()
    if category:
        qs = qs.filter(category=category)
    if not query.strip():
        return with_ratings(list(qs.order_by("-pk")[:limit]))
    search = SearchQuery(query, search_type="websearch", config="english")
    found: list[Listing] = list(
        qs.filter(search_vector=search)
        .annotate(rank=SearchRank(F("search_vector"), search))
        .order_by("-rank", "-pk")[:limit]
    )
    if len(found) < limit:
        # Words in common first, then listings that mean the same thing.
        found += _semantic_neighbours(
            qs.exclude(pk__in=[x.pk for x in found]), query, limit - len(found)
        )
    return with_ratings(found)


def _semantic_neighbours(
    qs: QuerySet[Listing], query: str, limit: int
) -> list[Listing]:
    from tools.embeddings import embed

    try:
        [vector] = embed([query])
    except Exception:
        # Search still answers with its full-text results.
        logger.warning("store search: embedding the query failed", exc_info=True)
        return []
    return list(
        qs.filter(embedding__isnull=False)
        .annotate(distance=CosineDistance("embedding", vector))
        .filter(distance__lt=SEMANTIC_MAX_DISTANCE)
        .order_by("distance")[:limit]
    )


def listings_of_builder(*, user: User) -> list[Listing]:
    qs = listings_public().filter(builder=user)
    return with_ratings(list(qs.order_by("-pk")[:100]))


def conversation_for_visitor(
    *, conversation_id: str, user: AnyUser, session_key: str | None
) -> Conversation:
    """The visitor's own conversation, else Http404."""
    conv = (
        Conversation.objects.select_related("listing__assistant")
        .filter(pk=conversation_id)
        .first()
    )
    if conv is None:
        raise Http404("No such conversation")
    if user.is_authenticated and conv.user_id == user.pk:
        return conv
    if conv.user_id is None and session_key and conv.session_key == session_key:
        return conv
    raise Http404("No such conversation")


def conversation_messages(*, conversation: Conversation) -> list[Message]:
    return list(
        Message.objects.filter(thread_id=conversation.thread_id).order_by("seq")
    )


def conversation_run(*, conversation: Conversation, run_id: str) -> Run:
    run = Run.objects.filter(pk=run_id, thread_id=conversation.thread_id).first()
    if run is None:
        raise Http404("No such run")
    return run


USAGE_WINDOWS = (7, 30)


@dataclass(frozen=True)
class UsageWindow:
    days: int
    runs: int
    by_status: dict[str, int]
    prompt_tokens: int
    completion_tokens: int


def assistant_usage(*, assistant_id: str) -> list[UsageWindow]:
    """Runs by status and tokens in/out over the last 7 and 30 days.

    One aggregate query over the runs of the last 30 days, found through
    the (assistant_id, created_at) index (migration 0004); each figure is a
    filtered aggregate, so the rows are read once.
    """
    now = timezone.now()
    since = {days: now - timedelta(days=days) for days in USAGE_WINDOWS}
    aggregates: dict[str, Any] = {}
    for days, start in since.items():
        recent = Q(created_at__gte=start)
        aggregates[f"runs_{days}"] = Count("pk", filter=recent)
        for status in RunStatus.values:
            aggregates[f"{status}_{days}"] = Count(
                "pk", filter=recent & Q(status=status)
            )
        for kind in ("prompt_tokens", "completion_tokens"):
            aggregates[f"{kind}_{days}"] = Sum(
                Cast(KT(f"usage__{kind}"), IntegerField()), filter=recent
            )
    row = Run.objects.filter(
        assistant_id=assistant_id, created_at__gte=min(since.values())
    ).aggregate(**aggregates)
    return [
        UsageWindow(
            days=days,
            runs=row[f"runs_{days}"],
            by_status={
                status: row[f"{status}_{days}"]
                for status in RunStatus.values
                if row[f"{status}_{days}"]
            },
            prompt_tokens=row[f"prompt_tokens_{days}"] or 0,
            completion_tokens=row[f"completion_tokens_{days}"] or 0,
        )
        for days in USAGE_WINDOWS
    ]


def file_names(*, project_id: str, file_ids: set[str]) -> dict[str, str]:
    """Names of the project's files among ``file_ids`` (a citation's file
    is named only if it is the listing's project's own)."""
    from tools.models import File

    if not file_ids:
        return {}
    return dict(
        File.objects.filter(project_id=project_id, pk__in=file_ids).values_list(
            "pk", "filename"
        )
    )
