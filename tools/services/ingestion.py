"""Ingestion of one vector store file: parse → chunk → embed → store.

Runs in a worker (``tools.tasks``), outside any transaction except for short
writes: a batch's chunks are written, and its files' status set, in one
transaction that first checks each file is still wanted (not cancelled, not
deleted, not already done by a twin of this task). Running it twice is safe.
Parsing, embedding and writing overlap (``vector_store_files_ingest``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from core.db import Sql, columns, execute, from_row, update_sql
from tools import embeddings
from tools.file_search.parsers import Limits, ParseError, extract_text
from tools.models import CHUNK_VECTOR_BYTES_PER_DIMENSION, File, VectorStoreFile
from tools.selectors import file_content_open

logger = logging.getLogger(__name__)

# A worker that dies mid-file (OOM, hard time limit) hands the message back
# (acks_late); the file fails for good after this many starts.
MAX_ATTEMPTS = 5
# Chunks per pipeline batch (embedded in one call, stored in one
# transaction): several of the model's batches (EMBEDDING_BATCH_SIZE),
# because sentence-transformers sorts a call's texts by length and pads each
# of its batches to the longest: on Cranfield's 1,400 one-chunk files, calls
# of 128 chunks computed 12 % more (padded) tokens than one call over all of
# them, calls of 256 5 %. Storing the previous batch and preparing the next
# one hide behind it.
EMBED_GROUP = 256
# The first batch of a call is smaller, so the model starts after a few
# files are read rather than after EMBED_GROUP chunks' worth of them (with
# one-chunk files, the model waited for 128 files to be read at the start
# of every task).
FIRST_GROUP = 32


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


def _claim(vsf_id: str) -> VectorStoreFile | None:
    """Count an attempt at an in-progress file and read it with its file,
    in one statement (None: not in progress any more). The attempt is
    counted before any work, so a file that kills its worker is seen on
    redelivery. Written out rather than an ORM update and a get: on
    Cranfield's 1,400 one-chunk files the ingesting thread's CPU went from
    2.4 to 1.6 s (CPU the embedding's two cores lose)."""
    update, params = update_sql(
        VectorStoreFile,
        vsf_id,
        {"attempts": Sql("{col} + 1")},
        where_in=("status", [VectorStoreFile.Status.IN_PROGRESS.value]),
    )
    sql = (
        f"WITH c AS ({update} RETURNING *) "
        f"SELECT {columns(VectorStoreFile, 'c')}, {columns(File, 'f')} "
        f'FROM c JOIN "{File._meta.db_table}" f ON f.id = c.file_id'
    )
    # Not durable: a PostgreSQL crash can lose only an attempt's count (the
    # file is still in progress and its message not acknowledged). One
    # commit per file, each waiting for the WAL to reach the disk, had
    # Cranfield's 1,400 files ingest in 44.2 s; without the wait, 41.6 s.
    with execute(sql, params, durable=False) as cursor:
        row = cursor.fetchone()
    if row is None:
        return None
    vsf, file = from_row([VectorStoreFile, File], row)
    assert isinstance(vsf, VectorStoreFile) and isinstance(file, File)
    vsf.file = file
    return vsf


def _prepare(
    vsf_id: str, progress: Progress
) -> tuple[VectorStoreFile, list[ChunkText]] | str:
    """Claim, read, parse and split one file: (row, chunks), or the final
    status when it ends here (``failed`` with its reason, or ``skipped``)."""
    vsf = _claim(vsf_id)
    if vsf is None:
        return "skipped"
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

    A pipeline of three stages, so that the model never waits for Python or
    the database: this thread parses and splits files into batches of about
    EMBED_GROUP chunks (the first smaller), background threads embed them
    (torch releases the GIL while it computes), and while they embed
    batch k this thread stores batch k-1 (one transaction, COPY) and
    prepares batch k+1. The background threads never touch the database:
    every read and write is on this thread's connection (and, in tests,
    inside its transaction).
    Within a batch, sentence-transformers sorts texts by length, so many
    small files cost little padding. Parse errors end in ``failed`` with
    ``invalid_file`` or ``unsupported_file``; anything unexpected propagates
    (the task marks the files failed with ``server_error``).
    """
    progress = progress or Progress()
    results: dict[str, str] = {}
    inflight: tuple[list[Prepared], Future[list[list[float]]]] | None = None
    # Two callers where embed calls queue their work (the local model's
    # batch threads, a remote endpoint): the next batch's call is made while
    # the previous one still runs, so its texts queue behind that one's
    # instead of waiting for its last text while a batch thread idles.
    callers = 2 if embeddings.calls_overlap() else 1
    with ThreadPoolExecutor(callers, thread_name_prefix="embed") as pool:
        try:
            for batch in _batches(vsf_ids, progress, results):
                batch = _wanted(batch, results)
                future = pool.submit(
                    embeddings.embed, [p.text for _, pieces in batch for p in pieces]
                )
                if inflight is not None:
                    results.update(_chunks_store(*_resolved(inflight)))
                inflight = (batch, future)
            if inflight is not None:
                results.update(_chunks_store(*_resolved(inflight)))
                inflight = None
        finally:
            if inflight is not None:
                inflight[1].cancel()
    return results


Prepared = tuple[VectorStoreFile, list[ChunkText]]


def _batches(
    vsf_ids: Sequence[str], progress: Progress, results: dict[str, str]
) -> Iterator[list[Prepared]]:
    """The prepared files, in batches of at least EMBED_GROUP chunks (a
    file's chunks are never split); files that end here go to ``results``.
    The first batch is FIRST_GROUP chunks, and so are the last FIRST_GROUP
    files: the last batch's COPY and index inserts are the one store
    nothing hides, while the embedding threads idle (~0.3 s for 200
    chunks here)."""
    batch: list[Prepared] = []
    size = 0
    goal = min(FIRST_GROUP, EMBED_GROUP)
    tail = len(vsf_ids) - FIRST_GROUP
    for n, vsf_id in enumerate(vsf_ids):
        if n == tail and batch:
            yield batch
            batch, size = [], 0
        outcome = _prepare(vsf_id, progress)
        if isinstance(outcome, str):
            results[vsf_id] = outcome
            continue
        batch.append(outcome)
        size += len(outcome[1])
        if size >= goal:
            yield batch
            batch, size, goal = [], 0, EMBED_GROUP
    if batch:
        yield batch


def _wanted(batch: list[Prepared], results: dict[str, str]) -> list[Prepared]:
    """The files of ``batch`` still in progress (not cancelled or deleted
    while the previous batch embedded): nothing is embedded for the rest."""
    alive = set(
        VectorStoreFile.objects.filter(
            pk__in=[vsf.pk for vsf, _ in batch],
            status=VectorStoreFile.Status.IN_PROGRESS,
        ).values_list("pk", flat=True)
    )
    for vsf, _ in batch:
        if vsf.pk not in alive:
            results[vsf.pk] = "skipped"
    return [item for item in batch if item[0].pk in alive]


def _resolved(
    inflight: tuple[list[Prepared], Future[list[list[float]]]],
) -> tuple[list[Prepared], list[list[float]]]:
    batch, future = inflight
    return batch, future.result()  # re-raises the embedding's error here


def _vector_text(vector: Sequence[float]) -> str:
    return "[" + ",".join(map(repr, vector)) + "]"


def _chunks_store(batch: list[Prepared], vectors: list[list[float]]) -> dict[str, str]:
    """Store a batch's chunks and complete its files, in one transaction
    that first locks the files still in progress (the others were
    cancelled, deleted or done by a twin meanwhile: ``skipped``). A twin of
    this task may have stored some chunks before dying: they are replaced.
    Chunk rows go in by COPY: no per-row statement."""
    if not batch:
        return {}
    dims = embeddings.embedding_dimensions()
    results: dict[str, str] = {}
    with transaction.atomic():
        # In primary-key order, so two workers locking overlapping batches
        # cannot deadlock.
        locked = {
            row.pk: row
            for row in VectorStoreFile.objects.select_for_update()
            .filter(
                pk__in=[vsf.pk for vsf, _ in batch],
                status=VectorStoreFile.Status.IN_PROGRESS,
            )
            .order_by("pk")
        }
        offset = 0
        done: list[VectorStoreFile] = []
        with connection.cursor() as cursor:
            cursor.execute(
                "DELETE FROM tools_chunk WHERE vector_store_file_id = ANY(%s)",
                [list(locked)],
            )
            with cursor.cursor.copy(
                "COPY tools_chunk (vector_store_id, vector_store_file_id, file_id, "
                "position, text, tokens, attributes, embedding) FROM STDIN"
            ) as copy:
                for vsf, pieces in batch:
                    mine = vectors[offset : offset + len(pieces)]
                    offset += len(pieces)
                    row = locked.get(vsf.pk)
                    if row is None:
                        results[vsf.pk] = "skipped"
                        continue
                    attributes = json.dumps(row.attributes or {})
                    for n, (piece, vector) in enumerate(zip(pieces, mine, strict=True)):
                        copy.write_row(
                            (
                                row.vector_store_id,
                                row.pk,
                                row.file_id,
                                n,
                                piece.text,
                                piece.tokens,
                                attributes,
                                _vector_text(vector),
                            )
                        )
                    # What the store holds for this file: its text and its
                    # vectors.
                    row.usage_bytes = sum(len(p.text.encode()) for p in pieces) + (
                        len(mine) * CHUNK_VECTOR_BYTES_PER_DIMENSION * dims
                    )
                    row.chunk_count = len(pieces)
                    row.status = VectorStoreFile.Status.COMPLETED
                    row.last_error = None
                    done.append(row)
                    results[vsf.pk] = "completed"
            # One statement for the batch's files. Django's bulk_update
            # builds a CASE per field and row: compiling it for 256 files
            # took the GIL for ~0.3 s a batch, time the embedding thread
            # needs for its own Python.
            cursor.execute(
                f'UPDATE "{VectorStoreFile._meta.db_table}" AS f SET status = %s, '
                "last_error = NULL, usage_bytes = v.usage_bytes, "
                "chunk_count = v.chunk_count "
                "FROM unnest(%s::text[], %s::bigint[], %s::int[]) "
                "AS v(id, usage_bytes, chunk_count) WHERE f.id = v.id",
                [
                    VectorStoreFile.Status.COMPLETED.value,
                    [row.pk for row in done],
                    [row.usage_bytes for row in done],
                    [row.chunk_count for row in done],
                ],
            )
    return results
