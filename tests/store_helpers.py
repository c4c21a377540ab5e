"""Builders shared by the store tests: users with a personal project, and
their assistants published as listings."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from assistants.models import Assistant
from store.models import Listing
from store.selectors import projects_of
from store.services.account import account_signup
from store.services.listing import ListingFields, listing_create

SECRET = "SECRET-INSTRUCTIONS-never-shown-7f3a"
PASSWORD = "correct horse battery"

_n = 0


def make_user(name: str | None = None) -> User:
    global _n
    _n += 1
    return account_signup(
        username=name or f"user{_n}x{id(object())}", password=PASSWORD
    )


def make_listing(
    owner: User,
    *,
    model: str,
    slug: str | None = None,
    name: str = "Helper",
    description: str = "Helps with things",
    **fields: Any,
) -> Listing:
    global _n
    _n += 1
    project = projects_of(user=owner).get()
    assistant = Assistant.objects.create(
        project=project,
        model=model,
        name=name,
        description=description,
        instructions=SECRET,
    )
    return listing_create(
        user=owner,
        assistant=assistant,
        data=ListingFields(slug=slug or f"listing-{_n}-{id(assistant)}", **fields),
    )


def clear_quotas() -> None:
    from assistants.runs.events import client

    redis = client()
    for pattern in ("store:q:*", "store:t:*"):  # quotas, sign-up/log-in throttles
        for key in redis.scan_iter(pattern):
            redis.delete(key)
