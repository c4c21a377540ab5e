"""Versions of an assistant's instructions: who changed them, and revert.

The versions themselves are written by a trigger (migration 0004); a writer
only says who it is, in the same transaction, so that the trigger can
record it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction

from assistants.models import Assistant
from assistants.services.assistant import AssistantUpdateInput, assistant_update
from store.models import AssistantVersion


def _set(source: str, author: str) -> None:
    with connection.cursor() as cursor:
        # is_local=true: the setting ends with the transaction, so it can
        # never leak to a later writer on a pooled connection.
        cursor.execute(
            "SELECT set_config('agents.change_source', %s, true),"
            " set_config('agents.change_author', %s, true)",
            [source, author],
        )


@contextmanager
def change_source(*, source: str, author: str = "") -> Iterator[None]:
    """A transaction in which assistant changes are attributed to
    ``source`` ("admin", "store", "revert", ...) and ``author``."""
    with transaction.atomic():
        _set(source, author[:150])
        try:
            yield
        finally:
            # Inside a test's (or a caller's) outer transaction the setting
            # would outlive this block: clear it.
            _set("", "")


@transaction.atomic
def assistant_version_revert(
    *, version: AssistantVersion, author: str
) -> AssistantVersion | None:
    """Make ``version``'s instructions the assistant's current ones.

    A revert is itself a new version (source "revert"), so it can be
    reverted too. Returns the new version, or None when the instructions
    already are those of ``version`` (nothing changed, nothing recorded).
    """
    # The row lock orders this revert after any concurrent change.
    assistant = Assistant.objects.select_for_update().get(pk=version.assistant_id)
    before = _latest_number(assistant.pk)
    with change_source(source=f"revert to v{version.number}", author=author):
        assistant_update(
            assistant=assistant,
            data=AssistantUpdateInput(instructions=version.instructions),
        )
    latest = (
        AssistantVersion.objects.filter(assistant_id=assistant.pk)
        .order_by("-number")
        .first()
    )
    if latest is None or latest.number == before:
        return None
    return latest


def _latest_number(assistant_id: str) -> int:
    latest = (
        AssistantVersion.objects.filter(assistant_id=assistant_id)
        .order_by("-number")
        .values_list("number", flat=True)
        .first()
    )
    return latest or 0
