from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from assistants.models import Assistant
from assistants.services.assistant import AssistantCreateInput, assistant_create
from core.models import Project
from store.models import Listing, Rating, Report


@dataclass(frozen=True)
class ListingFields:
    slug: str
    category: str = Listing.Category.OTHER
    short_description: str = ""
    avatar_emoji: str = "🤖"
    avatar_color: str = "#4f46e5"
    starters: list[str] = field(default_factory=list)
    visibility: str = Listing.Visibility.PRIVATE
    show_instructions: bool = False
    allow_duplicate: bool = False
    daily_run_limit: int | None = None


def _apply(listing: Listing, data: ListingFields) -> None:
    listing.slug = data.slug
    listing.category = data.category
    listing.short_description = data.short_description
    listing.avatar_emoji = data.avatar_emoji
    listing.avatar_color = data.avatar_color
    listing.starters = [s for s in data.starters if s.strip()][:4]
    listing.visibility = data.visibility
    listing.show_instructions = data.show_instructions
    listing.allow_duplicate = data.allow_duplicate
    listing.daily_run_limit = data.daily_run_limit


def _embed_on_commit(listing: Listing) -> None:
    from store.tasks import listing_embed_task

    listing_embed_task.delay_on_commit(listing.pk)


def listing_create(*, user: User, assistant: Assistant, data: ListingFields) -> Listing:
    """Publish ``assistant``. The caller has checked that ``user`` is a
    member of the assistant's project and that the slug is free."""
    listing = Listing(assistant=assistant, builder=user)
    _apply(listing, data)
    listing.save()
    _embed_on_commit(listing)
    return listing


def listing_update(*, listing: Listing, data: ListingFields) -> Listing:
    _apply(listing, data)
    listing.save()
    _embed_on_commit(listing)
    return listing


def listing_text(listing: Listing) -> str:
    """What semantic search compares a query with."""
    a = listing.assistant
    parts = [a.name or "", listing.short_description, a.description or ""]
    return ". ".join(p.strip() for p in parts if p and p.strip())


def listing_embed(*, listing_id: int) -> None:
    """(Re)compute the listing's embedding. Raises EmbeddingError when the
    embedding model fails."""
    from tools.embeddings import embed

    listing = Listing.objects.select_related("assistant").filter(pk=listing_id).first()
    if listing is None:
        return
    text = listing_text(listing)
    [vector] = embed([text or listing.slug])
    # Clears the flag only if no rename came in while embedding: a rename
    # after the text was read sets it again and is re-embedded next sweep.
    Listing.objects.filter(pk=listing_id).update(embedding=vector)
    Listing.objects.filter(
        pk=listing_id,
        embedding_stale=True,
        assistant__name=listing.assistant.name,
        assistant__description=listing.assistant.description,
    ).update(embedding_stale=False)


STALE_BATCH = 200


def listings_reembed_stale(*, limit: int = STALE_BATCH) -> int:
    """Re-embed listings whose assistant was renamed or redescribed since
    their embedding (a trigger sets ``embedding_stale``, migration 0004,
    whichever door the change came through). Returns how many were done."""
    ids = list(
        Listing.objects.filter(embedding_stale=True)
        .order_by("updated_at")
        .values_list("pk", flat=True)[:limit]
    )
    for listing_id in ids:
        listing_embed(listing_id=listing_id)
    return len(ids)


def listings_set_unlisted(*, listing_ids: list[int], unlisted: bool) -> int:
    """Operators' moderation switch; returns how many listings changed."""
    return Listing.objects.filter(pk__in=listing_ids).update(
        unlisted_by_operator=unlisted
    )


def listings_set_featured(*, listing_ids: list[int], featured: bool) -> int:
    return Listing.objects.filter(pk__in=listing_ids).update(featured=featured)


@transaction.atomic
def rating_upsert(*, listing: Listing, user: User, stars: int, review: str) -> Rating:
    """One rating per user and listing: a second one replaces the first."""
    rating, _ = Rating.objects.update_or_create(
        listing=listing, user=user, defaults={"stars": stars, "review": review}
    )
    return rating


def report_create(*, listing: Listing, reporter: User | None, reason: str) -> Report:
    return Report.objects.create(listing=listing, reporter=reporter, reason=reason)


def reports_handle(*, report_ids: list[int], status: str, operator: User) -> int:
    """Close (resolved or dismissed) or reopen reports, recording who did it
    and when. Returns how many reports changed status."""
    if status not in Report.Status.values:
        raise ValueError(f"unknown report status {status!r}")
    reopen = status == Report.Status.OPEN
    return (
        Report.objects.filter(pk__in=report_ids)
        .exclude(status=status)
        .update(
            status=status,
            handled_by=None if reopen else operator,
            handled_at=None if reopen else timezone.now(),
        )
    )


def listing_duplicate(*, listing: Listing, project: Project) -> Assistant:
    """A copy of the listing's assistant in ``project``: model, name,
    description, instructions and tools. Tool resources (files, vector
    stores) belong to the source project and are not copied.

    The caller has checked that the listing allows duplication and that the
    user is a member of ``project``.
    """
    source = listing.assistant
    data = AssistantCreateInput.model_validate(
        {
            "model": source.model,
            "name": f"{source.name or listing.slug} (copy)"[:256],
            "description": source.description,
            "instructions": source.instructions,
            "tools": source.tools,
            "metadata": {"store_duplicated_from": listing.slug},
        }
    )
    return assistant_create(project=project, data=data)
