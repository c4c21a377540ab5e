"""The wire contract for vector stores, their files and file batches."""

from __future__ import annotations

from typing import Any

from core.models import unix_time
from tools.file_search.search import Hit
from tools.models import VectorStore, VectorStoreFile, VectorStoreFileBatch
from tools.selectors import file_batch_counts, vector_store_is_expired


def _counts(store: VectorStore) -> dict[str, int]:
    # Annotated by tools.selectors.vector_stores_with_counts.
    return {
        "in_progress": int(getattr(store, "n_in_progress", 0)),
        "completed": int(getattr(store, "n_completed", 0)),
        "failed": int(getattr(store, "n_failed", 0)),
        "cancelled": int(getattr(store, "n_cancelled", 0)),
        "total": int(getattr(store, "n_total", 0)),
    }


def vector_store_to_wire(store: VectorStore) -> dict[str, Any]:
    counts = _counts(store)
    if vector_store_is_expired(store):
        status = "expired"
    elif counts["in_progress"]:
        status = "in_progress"
    else:
        status = "completed"
    return {
        "id": store.id,
        "object": "vector_store",
        "created_at": unix_time(store.created_at),
        "name": store.name,
        "usage_bytes": int(getattr(store, "n_usage_bytes", 0)),
        "file_counts": counts,
        "status": status,
        "expires_after": store.expires_after,
        "expires_at": unix_time(store.expires_at),
        "last_active_at": unix_time(store.last_active_at),
        "metadata": store.metadata or {},
    }


def vector_store_file_to_wire(row: VectorStoreFile) -> dict[str, Any]:
    return {
        "id": row.file_id,
        "object": "vector_store.file",
        "usage_bytes": row.usage_bytes,
        "created_at": unix_time(row.created_at),
        "vector_store_id": row.vector_store_id,
        "status": row.status,
        "last_error": row.last_error,
        "chunking_strategy": row.chunking_strategy,
        "attributes": row.attributes or {},
    }


def file_batch_to_wire(batch: VectorStoreFileBatch) -> dict[str, Any]:
    counts = file_batch_counts(batch)
    if counts["in_progress"]:
        status = "in_progress"
    elif batch.cancelled_at is not None:
        status = "cancelled"
    elif counts["failed"] and not counts["completed"]:
        status = "failed"
    else:
        status = "completed"
    return {
        "id": batch.id,
        "object": "vector_store.files_batch",
        "created_at": unix_time(batch.created_at),
        "vector_store_id": batch.vector_store_id,
        "status": status,
        "file_counts": counts,
    }


def search_result_to_wire(hit: Hit) -> dict[str, Any]:
    return {
        "file_id": hit.file_id,
        "filename": hit.filename,
        "score": hit.score,
        "attributes": hit.attributes,
        "content": [{"type": "text", "text": hit.text}],
    }
