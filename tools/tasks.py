"""Celery tasks for retrieval: they take ids and orchestrate; the work is in
``tools.services.ingestion``.

Ingestion has its own queue (``ingestion``) so that a burst of uploads never
delays runs; a worker started without ``-Q`` consumes it too. One message
carries a group of small files or one large file (see
``tools.services.vector_store._enqueue_ingestion``). Time limits are given
per message by the enqueuer (INGEST_TIME_LIMIT_SECONDS); the ones here are
the fallback for a message sent without them.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from django.conf import settings

from tools import embeddings
from tools.embeddings import EmbeddingError
from tools.models import VectorStoreFile
from tools.services.filter_index import filter_index_build
from tools.services.ingestion import (
    Progress,
    vector_store_file_fail,
    vector_store_files_ingest,
)

logger = logging.getLogger(__name__)


@worker_process_init.connect
def _preload_embeddings(**_: Any) -> None:
    """A prefork child (the ingestion worker's) loads the embedding model
    and starts its batch threads as it starts (Celery gives a child's
    start-up a few seconds, hence in the background), instead of during
    its first file; a task arriving meanwhile waits for them in ``embed``."""
    preload_in_background()


def preload_in_background() -> None:
    """``embeddings.preload`` on a thread of its own, when
    EMBEDDINGS_PRELOAD; a failure is logged, and the model is then loaded
    on demand, where a failure fails only what needed it."""
    if settings.EMBEDDINGS_PRELOAD:
        threading.Thread(
            target=_preload_quietly, name="embeddings-preload", daemon=True
        ).start()


def _preload_quietly() -> None:
    try:
        embeddings.preload()
    except Exception:
        logger.exception("preloading the embedding model failed")


def _pending(vsf_ids: list[str]) -> list[str]:
    return list(
        VectorStoreFile.objects.filter(
            pk__in=vsf_ids, status=VectorStoreFile.Status.IN_PROGRESS
        ).values_list("pk", flat=True)
    )


@shared_task(
    name="retrieval.ingest_files",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=1800,
    time_limit=1860,
    bind=True,
    max_retries=3,
)
def vector_store_files_ingest_task(self: Task, vsf_ids: list[str]) -> None:
    progress = Progress()
    try:
        vector_store_files_ingest(vsf_ids=vsf_ids, progress=progress)
    except SoftTimeLimitExceeded:
        culprit = progress.parsing
        if culprit is not None:
            # Stuck parsing one file: that file fails, the others of the
            # group go back to the queue on their own.
            vector_store_file_fail(
                vsf_id=culprit,
                code="invalid_file",
                message="The file took too long to process.",
            )
            rest = [i for i in _pending(vsf_ids) if i != culprit]
            if rest:
                vector_store_files_ingest_task.delay(rest)
            return
        for vsf_id in _pending(vsf_ids):
            vector_store_file_fail(
                vsf_id=vsf_id,
                code="server_error",
                message="Ingestion took longer than its time limit.",
            )
    except EmbeddingError as exc:
        # Only a remote embedding endpoint's hiccup is worth another try;
        # the task is idempotent (the row's status guards every write).
        if self.request.retries < self.max_retries:
            raise self.retry(exc=exc, countdown=5 * 2**self.request.retries) from exc
        for vsf_id in _pending(vsf_ids):
            vector_store_file_fail(vsf_id=vsf_id, code="server_error", message=str(exc))
    except Exception as exc:
        logger.exception("ingestion of %s failed", vsf_ids)
        for vsf_id in _pending(vsf_ids):
            vector_store_file_fail(
                vsf_id=vsf_id, code="server_error", message=f"Ingestion failed: {exc}"
            )


@shared_task(
    name="retrieval.build_filter_index",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    soft_time_limit=3600,
    time_limit=3660,
)
def filter_index_build_task(filter_index_id: int) -> None:
    """Build a filter index searches proposed (or one whose build died).
    On the ingestion queue: a build reads the whole chunks table, minutes
    at millions of chunks, and must not hold a runs worker. Safe to run
    twice: the build lock lets one build, the status makes the rest no-ops;
    a build killed with its worker leaves the row ``building``, and the
    redelivered message (or the reaper) builds it again."""
    index = filter_index_build(filter_index_id=filter_index_id)
    if index is not None and index.status == index.Status.FAILED:
        logger.warning(
            "filter index %s (%s) failed: %s",
            index.name,
            index.vector_store_id,
            index.last_error,
        )
