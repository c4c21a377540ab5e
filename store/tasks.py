from __future__ import annotations

from celery import shared_task

from store.services.listing import listing_embed


@shared_task(
    name="store.listing_embed",
    acks_late=True,
    ignore_result=True,
    soft_time_limit=120,
    time_limit=150,
)
def listing_embed_task(listing_id: int) -> None:
    """Idempotent: it recomputes the embedding from the current text."""
    listing_embed(listing_id=listing_id)
