from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import User
from django.db import transaction

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
    embedding model fails. A rename through the API is picked up at the
    listing's next edit (the full-text vector follows at once)."""
    from tools.embeddings import embed

    listing = Listing.objects.select_related("assistant").filter(pk=listing_id).first()
    if listing is None:
        return
    text = listing_text(listing)
    [vector] = embed([text or listing.slug])
    Listing.objects.filter(pk=listing_id).update(embedding=vector)


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
