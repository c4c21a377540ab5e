"""The store's background work: embeddings of listings for semantic search."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.db import connection

from store.services.listing import listing_embed, listings_reembed_stale

logger = logging.getLogger(__name__)

# How often each worker looks for listings whose assistant was renamed
# (through the API, which knows nothing of the store): a renamed listing is
# found by its new name's meaning within about this many seconds.
REEMBED_INTERVAL_SECONDS = 15.0


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


class _ReembedThread(threading.Thread):
    """Re-embeds stale listings inside each worker, like the runs reaper
    (assistants.tasks): no beat process to forget. Two workers sweeping at
    once embed a listing twice, which is harmless (same text, same vector).
    """

    def __init__(self) -> None:
        super().__init__(name="store-reembed", daemon=True)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(REEMBED_INTERVAL_SECONDS):
            try:
                done = listings_reembed_stale()
                if done:
                    logger.info("store: re-embedded %d renamed listing(s)", done)
            except Exception:
                logger.exception("store re-embed sweep failed")
            finally:
                connection.close()


_sweeper: _ReembedThread | None = None


@worker_ready.connect
def _start_sweeper(**_kwargs: Any) -> None:
    global _sweeper
    if _sweeper is None:
        _sweeper = _ReembedThread()
        _sweeper.start()


@worker_shutdown.connect
def _stop_sweeper(**_kwargs: Any) -> None:
    if _sweeper is not None:
        _sweeper.stopped.set()
