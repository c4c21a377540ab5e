"""Filter indexes: an HNSW index over the chunks of one store that pass one
filter (tools.models.FilterIndex says why). Operators declare them with
``manage.py filter_index``; searches find them by themselves, and propose
the ones they lack (``filter_index_propose``), which a task builds.

The build is ``CREATE INDEX CONCURRENTLY`` (outside a transaction), so
ingestion and searches go on while it runs; its progress is read from
``pg_stat_progress_create_index`` on a second connection. A build that
fails leaves no index behind (a failed concurrent build leaves an invalid
one, which is dropped) and the row ``failed`` with the error.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.errors import InvalidRequestError
from core.validation import Input, parse
from tools.file_search.search import Filter, FilterError, index_predicate
from tools.models import Chunk, FilterIndex, VectorStore

# The graph's parameters: the chunk index's (tools.models.Chunk.Meta).
_HNSW = next(i for i in Chunk._meta.indexes if i.name == "chunk_embedding_hnsw")
_PROGRESS_EVERY = 0.5

logger = logging.getLogger(__name__)


class FilterIndexInput(Input):
    # None: the store's own graph, with no filter.
    filters: Filter | None


@dataclass(frozen=True)
class BuildProgress:
    """One reading of pg_stat_progress_create_index: the phase, and the
    table's blocks scanned of all (the rows are found by a scan of the
    whole table; pgvector builds the graph as it reads them)."""

    phase: str
    blocks_done: int
    blocks_total: int
    tuples_done: int


def _index_sql(name: str, predicate: str, *, concurrently: bool) -> str:
    options = ", ".join(_HNSW.get_with_params())
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}{name} "
        f"ON tools_chunk USING hnsw (embedding {_HNSW.opclasses[0]}) "
        f"WITH ({options}) WHERE {predicate}"
    )


def _drop(name: str) -> None:
    # CONCURRENTLY where it can (not in a transaction): a plain DROP INDEX
    # takes tools_chunk's ACCESS EXCLUSIVE lock, which waits for every
    # search and ingestion under way and holds the next ones back.
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX {concurrently}IF EXISTS {name}")


def _watch(
    pid: int, progress: Callable[[BuildProgress], None], done: threading.Event
) -> None:
    """Report the build's progress until ``done``, from this thread's own
    connection (the building one is busy with the build)."""
    try:
        while not done.wait(_PROGRESS_EVERY):
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT phase, blocks_done, blocks_total, tuples_done "
                    "FROM pg_stat_progress_create_index WHERE pid = %s",
                    [pid],
                )
                row = cursor.fetchone()
            if row:
                progress(BuildProgress(str(row[0]), *map(int, row[1:])))
    finally:
        connection.close()


def _predicate(vector_store: VectorStore, filters: Any) -> tuple[Filter | None, str]:
    """``filters`` (a search's ``filters`` object; None or ``{}``: none, the
    store's own graph) parsed, and the index predicate it makes for the
    store. Raises InvalidRequestError for a filter a search would refuse."""
    flt = parse(FilterIndexInput, {"filters": filters or None}).filters
    try:
        return flt, index_predicate(vector_store.id, flt)
    except FilterError as exc:
        raise InvalidRequestError(
            f"Invalid 'filters': {exc}.", param="filters"
        ) from None


def filter_index_get(*, vector_store: VectorStore, filters: Any) -> FilterIndex | None:
    """The store's filter index for ``filters`` (declared, or proposed by
    its searches), if it has one."""
    _, predicate = _predicate(vector_store, filters)
    return FilterIndex.objects.filter(
        vector_store=vector_store, predicate=predicate
    ).first()


def filter_index_create(
    *,
    vector_store: VectorStore,
    filters: Any,
    progress: Callable[[BuildProgress], None] | None = None,
) -> FilterIndex:
    """Declare and build the filter index of ``vector_store`` for
    ``filters``; returns it ``ready``, or ``failed`` with ``last_error``.
    Declaring one the store has already is a no-op (a failed one is built
    again). Raises InvalidRequestError for a filter a search would refuse."""
    flt, predicate = _predicate(vector_store, filters)
    index, created = FilterIndex.objects.get_or_create(
        vector_store=vector_store,
        predicate=predicate,
        defaults={"filters": _filters_json(flt), "name": _new_name()},
    )
    if not created and index.automatic:
        # Declared now: the operator's, outside the automatic ones' cap.
        FilterIndex.objects.filter(pk=index.pk).update(automatic=False)
        index.automatic = False
    if not created and index.status == FilterIndex.Status.READY:
        return index
    return _ensure_built(index, progress)


def filter_index_build(
    *,
    filter_index_id: int,
    progress: Callable[[BuildProgress], None] | None = None,
) -> FilterIndex | None:
    """Build the index of a row left ``building`` (proposed by searches, or
    declared by a process that died): what the build task and the reaper
    hand on. Returns the row as it ends, None if it is gone. Safe to run
    twice, or beside another build of it (one builds, the other returns)."""
    index = FilterIndex.objects.filter(pk=filter_index_id).first()
    if index is None or index.status != FilterIndex.Status.BUILDING:
        return index
    return _ensure_built(index, progress)


def _ensure_built(
    index: FilterIndex, progress: Callable[[BuildProgress], None] | None
) -> FilterIndex:
    with _build_lock(index.name) as mine:
        if not mine:
            return index  # another process is building it
        index.refresh_from_db()
        if index.status == FilterIndex.Status.READY:
            return index
        # New, proposed, failed, or left ``building`` by a process that died.
        return _build(index, progress)


# One more search proposing a filter's index: the ``proposed`` row
# inserted, or its count raised (starting again after an hour without
# one). A row past ``proposed`` (building, ready, failed) is left as it is.
_PROPOSE_SQL = """
INSERT INTO tools_filterindex AS f (
    vector_store_id, filters, predicate, name, status, rows, last_error,
    created_at, automatic, searches, last_search_at
) VALUES (%s, %s::jsonb, %s, %s, 'proposed', 0, '', now(), true, 1, now())
ON CONFLICT (vector_store_id, predicate) DO UPDATE SET
    searches = CASE
        WHEN f.last_search_at > now() - interval '1 hour'
        THEN f.searches + 1 ELSE 1 END,
    last_search_at = now()
WHERE f.status = 'proposed'
RETURNING id, searches
"""


def filter_index_propose(*, vector_store_id: str, flt: Filter | None) -> None:
    """Count a search of one store that ``flt`` (None: the store's share of
    the table) made costly over the table's graph (``VectorRanking.costly``:
    a beam it widened, a walk that came back short, a large exact scan; at
    1M chunks a filter keeping 10 % scattered through the table walks
    ~2,400 elements where its own graph takes ~ten times fewer, and one
    following the content went ~30-40 ms deep where its graph takes ~4). The
    SEARCH_AUTO_FILTER_INDEX_AFTER-th such search within an hour of each
    other hands the filter's index to a build task, while the store has
    fewer than SEARCH_AUTO_FILTER_INDEXES automatic ones built or
    building.

    Counted once the search's transaction commits, in a transaction of its
    own: the count's row lock is then held for the upsert alone, not for
    the rest of the search (the keyword ranker), so concurrent searches
    with one filter do not queue behind each other; and a failure (the
    store deleted meanwhile) costs the count, never the search."""
    if int(settings.SEARCH_AUTO_FILTER_INDEXES) <= 0:
        return
    predicate = index_predicate(vector_store_id, flt)
    if _settled((vector_store_id, predicate)) or _settled((vector_store_id, "")):
        return
    transaction.on_commit(
        functools.partial(
            _proposal_count,
            vector_store_id,
            json.dumps(_filters_json(flt)),
            predicate,
        )
    )


# What this process need not count again for _SETTLED_SECONDS: a filter
# whose row is past ``proposed`` (store, predicate), a store at its cap
# (store, ""). A count is a transaction of its own, 0.34 ms (p50, 100k
# chunks): every search of a 10 % filter paid it, 4.82 ms p50 against 3.85
# without, while its index was building; settled, a filter pays it once a
# minute. Expiring, so that a row dropped or a cap freed is seen.
_SETTLED_SECONDS = 60.0
_SETTLED_MAX = 10_000
_settled_until: dict[tuple[str, str], float] = {}


def _settled(key: tuple[str, str]) -> bool:
    until = _settled_until.get(key)
    return until is not None and until > time.monotonic()


def _settle(key: tuple[str, str]) -> None:
    if len(_settled_until) >= _SETTLED_MAX:
        _settled_until.clear()  # a bound, not a cache policy: rarely hit
    _settled_until[key] = time.monotonic() + _SETTLED_SECONDS


def _proposal_count(vector_store_id: str, filters: str, predicate: str) -> None:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            # Not worth a wait for the WAL's flush in the search's request:
            # a crash loses at most the last counts.
            cursor.execute("SET LOCAL synchronous_commit = off")
            cursor.execute(
                _PROPOSE_SQL, [vector_store_id, filters, predicate, _new_name()]
            )
            counted = cursor.fetchone()
            if counted is None:
                _settle((vector_store_id, predicate))
                return  # built, building or failed
            pk, count = counted
            if count < int(settings.SEARCH_AUTO_FILTER_INDEX_AFTER):
                return
            # The store's proposals cross the threshold one at a time, so
            # that two filters crossing it together cannot both pass the
            # cap's count (a lock of this code's own: the store's row is
            # ingestion's, and its delete's, which hold it for longer).
            cursor.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s))",
                ["filter-index-cap:" + vector_store_id],
            )
            built = FilterIndex.objects.filter(
                vector_store_id=vector_store_id,
                automatic=True,
                status__in=[FilterIndex.Status.BUILDING, FilterIndex.Status.READY],
            ).count()
            if built >= int(settings.SEARCH_AUTO_FILTER_INDEXES):
                _settle((vector_store_id, ""))
                return
            moved = FilterIndex.objects.filter(
                pk=pk, status=FilterIndex.Status.PROPOSED
            ).update(status=FilterIndex.Status.BUILDING, enqueued_at=timezone.now())
    except DatabaseError:
        logger.warning(
            "counting a search proposing a filter index of %s failed",
            vector_store_id,
            exc_info=True,
        )
        return
    if moved:
        _settle((vector_store_id, predicate))
        logger.info(
            "filter index proposed by %d searches of %s: building it",
            count,
            vector_store_id,
        )
        _enqueue_build(pk)


def _filters_json(flt: Filter | None) -> dict[str, Any]:
    """FilterIndex.filters: the filter as a search takes it; ``{}`` for the
    store's own graph."""
    return {} if flt is None else flt.model_dump(mode="json")


def _new_name() -> str:
    return f"tools_chunk_hnsw_f{secrets.token_hex(6)}"


def _enqueue_build(pk: int) -> None:
    from tools.tasks import filter_index_build_task

    try:
        filter_index_build_task.delay(pk)
    except Exception:
        # The broker is away: the reaper hands the build on later
        # (filter_indexes_build_due).
        logger.warning("enqueuing the build of filter index %s failed", pk)


def filter_indexes_drop_idle(*, now: datetime | None = None) -> int:
    """Drop the automatic filter indexes no search has used for
    SEARCH_AUTO_FILTER_INDEX_IDLE_DAYS (0: never): the workload that
    proposed one has moved on, and it still costs every insert of a
    passing chunk and its room in shared buffers. A filter that comes back
    proposes it again. Declared ones stay. Returns how many were dropped.
    For the reaper's sweep.

    Use is PostgreSQL's ``last_idx_scan``. Statistics can be reset, and are
    lost in a crash: an index never scanned since then counts as used when
    the server started or the statistics were reset, whichever is later,
    or when it was handed to its build, if later still."""
    days = int(settings.SEARCH_AUTO_FILTER_INDEX_IDLE_DAYS)
    if days <= 0:
        return 0
    now = now or timezone.now()
    ready = {
        index.name: index
        for index in FilterIndex.objects.filter(
            automatic=True, status=FilterIndex.Status.READY
        )
    }
    if not ready:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indexrelname, i.last_idx_scan, "
            "greatest(pg_postmaster_start_time(), d.stats_reset) "
            "FROM pg_stat_user_indexes i, pg_stat_database d "
            "WHERE d.datname = current_database() AND i.indexrelname = ANY(%s)",
            [list(ready)],
        )
        seen = cursor.fetchall()
    dropped = 0
    for name, last_scan, counted_since in seen:
        index = ready[name]
        since = [t for t in (counted_since, index.enqueued_at) if t is not None]
        last_used = last_scan or max(since)
        if last_used < now - timedelta(days=days):
            logger.info(
                "dropping filter index %s (%s): no search used it since %s",
                name,
                index.vector_store_id,
                last_used.isoformat(),
            )
            filter_index_drop(filter_index=index)
            dropped += 1
    return dropped


def filter_indexes_build_due(
    *, now: datetime | None = None, after: timedelta = timedelta(minutes=10)
) -> int:
    """Hand on the builds nobody is doing: rows ``building`` for longer than
    ``after`` since their build was last handed on (or declared) whose
    build lock no session holds (the task's message was lost, or the
    process building it died; PostgreSQL frees a dead session's lock).
    Returns how many were handed on. For the reaper's sweep."""
    now = now or timezone.now()
    due = FilterIndex.objects.filter(status=FilterIndex.Status.BUILDING).filter(
        Q(enqueued_at__lt=now - after)
        | Q(enqueued_at__isnull=True, created_at__lt=now - after)
    )
    handed = 0
    for index in due:
        with _build_lock(index.name) as free:
            if not free:
                continue  # being built
            moved = FilterIndex.objects.filter(
                pk=index.pk, status=FilterIndex.Status.BUILDING
            ).update(enqueued_at=now)
        if moved:
            _enqueue_build(index.pk)
            handed += 1
    return handed


@contextlib.contextmanager
def _build_lock(name: str) -> Iterator[bool]:
    """Whether this session may build the index ``name``: an advisory lock,
    which PostgreSQL releases if the session dies mid-build."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        mine = bool(cursor.fetchone()[0])
    try:
        yield mine
    finally:
        if mine:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])


def _build(
    index: FilterIndex, progress: Callable[[BuildProgress], None] | None
) -> FilterIndex:
    # In a transaction (the tests' TestCase) CONCURRENTLY cannot run; a
    # plain build locks out writes to tools_chunk while it lasts, in a
    # savepoint so that a failed build does not abort the transaction.
    concurrently = not connection.in_atomic_block
    FilterIndex.objects.filter(pk=index.pk).update(
        status=FilterIndex.Status.BUILDING, last_error=""
    )
    # What a build that died left (an invalid index: updated by every
    # write, used by no query).
    _drop(index.name)
    done = threading.Event()
    watcher: threading.Thread | None = None
    started = time.monotonic()
    try:
        with (
            contextlib.nullcontext() if concurrently else transaction.atomic(),
            connection.cursor() as cursor,
        ):
            if progress is not None:
                cursor.execute("SELECT pg_backend_pid()")
                pid = int(cursor.fetchone()[0])
                watcher = threading.Thread(
                    target=_watch, args=(pid, progress, done), daemon=True
                )
                watcher.start()
            cursor.execute(
                _index_sql(index.name, index.predicate, concurrently=concurrently)
            )
            # What the build counted (pg_class.reltuples, set by it).
            cursor.execute(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
                [index.name],
            )
            rows = max(0, int(cursor.fetchone()[0]))
    except DatabaseError as exc:
        if concurrently:
            _drop(index.name)  # a failed concurrent build leaves one too
        index.status = FilterIndex.Status.FAILED
        index.last_error = str(exc).strip()[:2000]
        FilterIndex.objects.filter(pk=index.pk).update(
            status=index.status, last_error=index.last_error
        )
        return index
    finally:
        done.set()
        if watcher is not None:
            watcher.join()
    built = FilterIndex.objects.filter(pk=index.pk).update(
        status=FilterIndex.Status.READY,
        rows=rows,
        build_seconds=round(time.monotonic() - started, 3),
    )
    if not built:
        # The row went while the index was built (its store deleted or
        # expired, the index dropped): the drop that came with it may have
        # run before the build made the index, so it would be left behind.
        _drop(index.name)
        index.status = FilterIndex.Status.FAILED
        index.last_error = "dropped while it was being built"
        return index
    index.refresh_from_db()
    return index


def filter_index_drop(*, filter_index: FilterIndex) -> None:
    """Drop the index, then its row (a search reading the row meanwhile
    finds no index by its name and ignores it)."""
    _drop(filter_index.name)
    FilterIndex.objects.filter(pk=filter_index.pk).delete()


def filter_indexes_drop(*, vector_store_id: str) -> None:
    """Drop a store's filter indexes: its chunks are going (store deleted or
    expired), and an index left behind would hold none but still cost every
    write to tools_chunk a test of its predicate. The rows go with the
    caller's transaction, the indexes once it commits (concurrently: the
    chunks' delete may take long, and a plain DROP INDEX would hold every
    search back until then)."""
    indexes = FilterIndex.objects.filter(vector_store_id=vector_store_id)
    names = list(indexes.values_list("name", flat=True))
    indexes.delete()
    for name in names:
        transaction.on_commit(functools.partial(_drop, name))
