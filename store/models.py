"""The public web store: listings of assistants, their builders, ratings,
reports, and the conversations visitors have with them.

The store runs the same Assistant/Thread/Run objects the API serves; a
listing only decides who may see and talk to an assistant.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone
from pgvector.django import HnswIndex, VectorField

from assistants.models import EMBEDDING_COLUMN_DIMENSIONS, Assistant, Thread
from core.models import Project


def new_conversation_id() -> str:
    # Unguessable: a conversation's page and stream are reachable by id, so
    # the id must not be enumerable (ownership is still checked).
    return "conv_" + secrets.token_urlsafe(18)


def new_share_token() -> str:
    return secrets.token_urlsafe(24)


class Membership(models.Model):
    """A web user's access to a project: what the user owns and may publish."""

    class Role(models.TextChoices):
        OWNER = "owner"
        MEMBER = "member"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.OWNER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "project"], name="membership_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} → {self.project}"


class BuilderProfile(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="builder"
    )
    display_name = models.CharField(max_length=80)
    bio = models.TextField(max_length=2000, blank=True, default="")
    # Plain http(s) URLs; rendered as rel="nofollow noopener" links.
    links = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    def __str__(self) -> str:
        return self.display_name


class Listing(models.Model):
    class Visibility(models.TextChoices):
        PRIVATE = "private", "Only me"
        LINK = "link", "Anyone with the link"
        PUBLIC = "public", "Public in the store"

    class Category(models.TextChoices):
        PRODUCTIVITY = "productivity", "Productivity"
        WRITING = "writing", "Writing"
        PROGRAMMING = "programming", "Programming"
        EDUCATION = "education", "Education"
        RESEARCH = "research", "Research & analysis"
        LIFESTYLE = "lifestyle", "Lifestyle"
        OTHER = "other", "Other"

    assistant = models.OneToOneField(
        Assistant, on_delete=models.CASCADE, related_name="listing"
    )
    slug = models.SlugField(max_length=80, unique=True)
    category = models.CharField(
        max_length=32, choices=Category.choices, default=Category.OTHER
    )
    short_description = models.CharField(max_length=300, blank=True, default="")
    # An emoji on a colour, unless the builder uploaded an image (stored
    # re-encoded as PNG by store.services.avatar, served by store.views).
    avatar_emoji = models.CharField(max_length=8, blank=True, default="🤖")
    avatar_color = models.CharField(max_length=7, default="#4f46e5")
    avatar_image = models.FileField(
        upload_to="store/avatars/", max_length=255, blank=True, default=""
    )
    starters = models.JSONField(default=list, blank=True)
    visibility = models.CharField(
        max_length=16, choices=Visibility.choices, default=Visibility.PRIVATE
    )
    show_instructions = models.BooleanField(default=False)
    # Copying an assistant copies its instructions, so only the owner can
    # allow it.
    allow_duplicate = models.BooleanField(default=False)
    featured = models.BooleanField(default=False)
    unlisted_by_operator = models.BooleanField(default=False)
    # Runs the public may start per UTC day (the owner's own chats do not
    # count); null means no limit beyond the per-visitor quotas.
    daily_run_limit = models.PositiveIntegerField(null=True, blank=True)
    builder = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="listings",
    )
    # Full-text search over the assistant's name and description and the
    # listing's short description. Kept by PostgreSQL triggers (migration
    # 0002) so that renaming the assistant through the API updates it too.
    search_vector = SearchVectorField(null=True, editable=False)
    # The same text's embedding, for semantic search (store.tasks computes
    # it after each publish or edit of the listing).
    embedding = VectorField(
        dimensions=EMBEDDING_COLUMN_DIMENSIONS, null=True, editable=False
    )
    # Set by a trigger (migration 0004) when the assistant's name or
    # description changes through any door; store.tasks re-embeds it.
    embedding_stale = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            GinIndex(fields=["search_vector"], name="listing_search"),
            HnswIndex(
                name="listing_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(
                fields=["visibility", "unlisted_by_operator", "featured"],
                name="listing_public",
            ),
            models.Index(fields=["category"], name="listing_category"),
        ]

    def __str__(self) -> str:
        return self.slug


class Rating(models.Model):
    listing = models.ForeignKey(
        Listing, on_delete=models.CASCADE, related_name="ratings"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ratings"
    )
    stars = models.PositiveSmallIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    review = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["listing", "user"], name="rating_one_per_user"
            ),
            models.CheckConstraint(
                condition=models.Q(stars__gte=1, stars__lte=5), name="rating_stars"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.stars}★ {self.listing_id} by {self.user_id}"


class Report(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"
        DISMISSED = "dismissed", "Dismissed"

    listing = models.ForeignKey(
        Listing, on_delete=models.CASCADE, related_name="reports"
    )
    reporter = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    reason = models.CharField(max_length=2000)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.OPEN
    )
    # Who closed the report and when: moderation is accountable.
    handled_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    handled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            models.Index(fields=["listing", "status"], name="report_listing_status"),
        ]

    def __str__(self) -> str:
        return f"Report on {self.listing_id}: {self.reason[:40]}"


class Conversation(models.Model):
    """A visitor's chat with a listing: one thread in the listing's project.

    Owned by a user, or for anonymous visitors by their session key.
    """

    id = models.CharField(
        primary_key=True, max_length=64, default=new_conversation_id, editable=False
    )
    listing = models.ForeignKey(
        Listing, on_delete=models.CASCADE, related_name="conversations"
    )
    thread = models.OneToOneField(
        Thread, on_delete=models.CASCADE, related_name="store_conversation"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    session_key = models.CharField(max_length=64, blank=True, default="")
    share_token = models.CharField(max_length=64, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        indexes = [
            # Trending: conversations per listing in the last seven days.
            models.Index(fields=["created_at", "listing"], name="conv_recent"),
        ]

    def __str__(self) -> str:
        return self.id


class AssistantVersion(models.Model):
    """One version of an assistant's instructions.

    Written by a PostgreSQL trigger (migration 0004) on every insert of an
    assistant and every update that changes its instructions, whichever door
    the change came through (API, admin, store, a shell). The writer may say
    who it is with ``store.services.versions.change_source`` in the same
    transaction; otherwise the version is attributed to the API.
    """

    assistant = models.ForeignKey(
        Assistant, on_delete=models.CASCADE, related_name="versions"
    )
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=256, null=True, blank=True)
    model = models.CharField(max_length=256, blank=True, default="")
    instructions = models.TextField(null=True, blank=True)
    source = models.CharField(max_length=32, default="api")
    author = models.CharField(max_length=150, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ("-number",)
        constraints = [
            models.UniqueConstraint(
                fields=["assistant", "number"], name="assistant_version_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.assistant_id} v{self.number}"
