from __future__ import annotations

from django.db import transaction

from assistants.models import Run
from assistants.services.message import MessageCreateInput
from assistants.services.run import (
    RunCreateInput,
    ThreadAndRunInput,
    run_create,
    thread_and_run_create,
)
from assistants.services.thread import ThreadCreateInput
from store.models import Conversation, Listing, new_share_token

# What a visitor may type in one message (the API allows far more).
MESSAGE_MAX_CHARS = 8000


def conversation_start(
    *, listing: Listing, user_id: int | None, session_key: str, text: str
) -> tuple[Conversation, Run]:
    """A new thread in the listing's project with the visitor's first
    message, and a run of the listing's assistant on it.

    The caller has checked that the visitor may see the listing and has
    consumed a quota unit. Raises the run services' errors (e.g. an unknown
    model) with nothing written.
    """
    assistant = listing.assistant
    data = ThreadAndRunInput(
        assistant_id=assistant.id,
        thread=ThreadCreateInput(
            messages=[MessageCreateInput(role="user", content=text)],
            metadata={"store_listing": listing.slug},
        ),
    )
    # One transaction: the run's wake-up is sent on commit, after the
    # conversation that lets the visitor read its stream exists.
    with transaction.atomic():
        run = thread_and_run_create(project=assistant.project, data=data)
        conversation = Conversation.objects.create(
            listing=listing,
            thread_id=run.thread_id,
            user_id=user_id,
            session_key="" if user_id is not None else session_key,
        )
    return conversation, run


def conversation_reply(*, conversation: Conversation, text: str) -> Run:
    """The visitor's next message and a run answering it. Raises
    InvalidRequestError while the previous answer is still running."""
    assistant = conversation.listing.assistant
    return run_create(
        project=assistant.project,
        thread_id=conversation.thread_id,
        data=RunCreateInput(
            assistant_id=assistant.id,
            additional_messages=[MessageCreateInput(role="user", content=text)],
        ),
    )


def conversation_share(*, conversation: Conversation) -> str:
    """The conversation's read-only share token (made once, then kept)."""
    if not conversation.share_token:
        Conversation.objects.filter(
            pk=conversation.pk, share_token__isnull=True
        ).update(share_token=new_share_token())
        conversation.refresh_from_db(fields=["share_token"])
    assert conversation.share_token is not None
    return conversation.share_token
