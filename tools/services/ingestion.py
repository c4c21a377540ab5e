"""Ingestion of one vector store file: parse → chunk → embed → store.

Runs in a worker (``tools.tasks``), outside any transaction until the very
end: the chunks of a file are written, and its status set, in one short
transaction that first checks the file is still wanted (not cancelled, not
deleted, not already done by a twin of this task). Running it twice is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F

from tools import embeddings
from tools.file_search.parsers import Limits, ParseError, extract_text
from tools.models import Chunk, VectorStoreFile
from tools.selectors import file_content_open

logger = logging.getLogger(__name__)

# A worker that dies mid-file (OOM, hard time limit) hands the message back
# (acks_late); the file fails for good after this many starts.
MAX_ATTEMPTS = 5
# Embed and check for cancellation this many chunks at a time.
EMBED_GROUP = 256


@dataclass(frozen=True)
class ChunkText:
    text: str
    tokens: int


def limits() -> Limits:
    return Limits(
        max_bytes=int(settings.INGEST_MAX_FILE_BYTES),
        max_chars=int(settings.INGEST_MAX_TEXT_CHARS),
        max_unzipped=int(settings.INGEST_MAX_UNZIPPED_BYTES),
    )


def chunks_split(text: str, strategy: dict[str, Any]) -> list[ChunkText]:
    """The ``static`` strategy: windows of ``max_chunk_size_tokens`` tokens
    overlapping by ``chunk_overlap_tokens``, counted by the embedding model's
    tokenizer."""
    static = strategy.get("static") or {}
    size = int(static.get("max_chunk_size_tokens", 800))
    overlap = int(static.get("chunk_overlap_tokens", 400))
    out = []
    for w in embeddings.token_windows(text, max_tokens=size, overlap=overlap):
        piece = text[w.start : w.end].strip()
        if piece:
            out.append(ChunkText(text=piece, tokens=w.tokens))
    return out


def vector_store_file_fail(*, vsf_id: str, code: str, message: str) -> bool:
    """Mark an in-progress file failed; False if it was no longer in progress."""
    return bool(
        VectorStoreFile.objects.filter(
            pk=vsf_id, status=VectorStoreFile.Status.IN_PROGRESS
        ).update(
            status=VectorStoreFile.Status.FAILED,
            last_error={"code": code, "message": message[:1000]},
        )
    )


def _still_wanted(vsf_id: str) -> bool:
    return VectorStoreFile.objects.filter(
        pk=vsf_id, status=VectorStoreFile.Status.IN_PROGRESS
    ).exists()


@dataclass
class Progress:
    """Where a group's ingestion is: the file being parsed (a time limit
    hitting then is that file's fault, not its neighbours')."""

    parsing: str | None = None


def _prepare(
    vsf_id: str, progress: Progress
) -> tuple[VectorStoreFile, list[ChunkText]] | str:
    """Claim, read, parse and split one file: (row, chunks), or the final
    status when it ends here (``failed`` with its reason, or ``skipped``)."""
    # Count the attempt before any work, so a file that kills its worker
    # is seen on redelivery.
    started = VectorStoreFile.objects.filter(
        pk=vsf_id, status=VectorStoreFile.Status.IN_PROGRESS
    ).update(attempts=F("attempts") + 1)
    if not started:
        return "skipped"
    vsf = VectorStoreFile.objects.select_related("file").get(pk=vsf_id)
    if vsf.attempts > MAX_ATTEMPTS:
        vector_store_file_fail(
            vsf_id=vsf_id,
            code="invalid_file",
            message="The file could not be processed (its worker stopped "
            f"{MAX_ATTEMPTS} times).",
        )
        return "failed"
    bounds = limits()
    file = vsf.file
    if file.bytes > bounds.max_bytes:
        # Refused before a byte is read: a 2 GB file costs nothing.
        vector_store_file_fail(
            vsf_id=vsf_id,
            code="invalid_file",
            message=f"The file is {file.bytes} bytes; retrieval reads files of "
            f"at most {bounds.max_bytes} bytes.",
        )
        return "failed"
    progress.parsing = vsf_id
    try:
        with file_content_open(file=file) as blob:
            text = extract_text(
                blob, filename=file.filename, mime_type=file.mime_type, limits=bounds
            )
        pieces = chunks_split(text, vsf.chunking_strategy or {})
    except ParseError as exc:
        vector_store_file_fail(vsf_id=vsf_id, code=exc.code, message=exc.message)
        return "failed"
    finally:
        progress.parsing = None
    if not pieces:
        vector_store_file_fail(
            vsf_id=vsf_id, code="invalid_file", message="The file contains no text."
        )
        return "failed"
    return vsf, pieces


def vector_store_file_ingest(*, vsf_id: str) -> str:
    """Ingest one file; returns its final status (or ``skipped`` when there
    was nothing to do)."""
    return vector_store_files_ingest(vsf_ids=[vsf_id])[vsf_id]


def vector_store_files_ingest(
    *, vsf_ids: Sequence[str], progress: Progress | None = None
) -> dict[str, str]:
    """Ingest a group of files; returns each one's final status (``skipped``
    when there was nothing to do).

    Files are parsed one by one, then the chunks of the whole group are
    embedded together (sentence-transformers sorts one call's texts by
    length, so many small files cost far less padding, and far fewer calls,
    than one call each), then each file's chunks are stored in its own
    transaction. Parse errors end in ``failed`` with ``invalid_file`` or
    ``unsupported_file``; anything unexpected propagates (the task marks
    the files failed with ``server_error``).
    """
    progress = progress or Progress()
    results: dict[str, str] = {}
    prepared: list[tuple[VectorStoreFile, list[ChunkText]]] = []
    for vsf_id in vsf_ids:
        outcome = _prepare(vsf_id, progress)
        if isinstance(outcome, str):
            results[vsf_id] = outcome
        else:
            prepared.append(outcome)
    texts = [p.text for _, pieces in prepared for p in pieces]
    vectors: list[list[float]] = []
    for i in range(0, len(texts), EMBED_GROUP):
        if i and not any(_still_wanted(vsf.pk) for vsf, _ in prepared):
            break  # every file was cancelled or deleted meanwhile
        vectors.extend(embeddings.embed(texts[i : i + EMBED_GROUP]))
    offset = 0
    for vsf, pieces in prepared:
        mine = vectors[offset : offset + len(pieces)]
        offset += len(pieces)
        if len(mine) < len(pieces):
            results[vsf.pk] = "skipped"
            continue
        results[vsf.pk] = _chunks_store(vsf=vsf, pieces=pieces, vectors=mine)
    return results


def _chunks_store(
    *, vsf: VectorStoreFile, pieces: list[ChunkText], vectors: list[list[float]]
) -> str:
    with transaction.atomic():
        locked = (
            VectorStoreFile.objects.select_for_update()
            .filter(pk=vsf.pk, status=VectorStoreFile.Status.IN_PROGRESS)
            .first()
        )
        if locked is None:
            return "skipped"  # cancelled, deleted or done meanwhile
        # A twin of this task may have stored some before dying: replace.
        Chunk.objects.filter(vector_store_file_id=vsf.pk).delete()
        Chunk.objects.bulk_create(
            [
                Chunk(
                    vector_store_id=locked.vector_store_id,
                    vector_store_file_id=locked.pk,
                    file_id=locked.file_id,
                    position=n,
                    text=piece.text,
                    tokens=piece.tokens,
                    attributes=locked.attributes or {},
                    embedding=vector,
                )
                for n, (piece, vector) in enumerate(zip(pieces, vectors, strict=True))
            ],
            batch_size=500,
        )
        # What the store holds for this file: its text and its vectors.
        usage = sum(len(p.text.encode()) for p in pieces) + len(vectors) * (
            4 * embeddings.embedding_dimensions()
        )
        locked.status = VectorStoreFile.Status.COMPLETED
        locked.last_error = None
        locked.usage_bytes = usage
        locked.chunk_count = len(pieces)
        locked.save(
            update_fields=["status", "last_error", "usage_bytes", "chunk_count"]
        )
    return "completed"
