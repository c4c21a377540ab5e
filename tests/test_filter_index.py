"""Filter indexes (tools.models.FilterIndex): an HNSW index over the chunks
of one store passing one filter. Built by the service and the management
command, used by PostgreSQL for a search with that filter (or an ``and``
holding it), the walk sized for its graph, the rows still the exact
nearest; dropped with the store. Real PostgreSQL + pgvector."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import TestCase, override_settings
from django.utils import timezone

from core.errors import InvalidRequestError
from tests.test_vector_search_plans import (  # noqa: F401 (fixture)
    BIG,
    SMALL,
    _assert_exact,
    _query,
    _truth,
    short_walk_filter,
    stores,
)
from tools.file_search.search import (
    ComparisonFilter,
    CompoundFilter,
    Filter,
    VectorRanking,
    _ranking_sql,
    filter_sql,
    hnsw_params,
    index_predicate,
    vector_ranking,
)
from tools.models import FilterIndex, VectorStore
from tools.services import filter_index as filter_index_service
from tools.services.filter_index import (
    BuildProgress,
    filter_index_create,
    filter_index_drop,
    filter_index_propose,
    filter_indexes_build_due,
    filter_indexes_drop_idle,
)
from tools.services.vector_store import vector_store_delete
from tools.tasks import filter_index_build_task

# Keeps bucket < 10: 10 % of the big store, and no index lists it (nin:
# a chunk without the key passes too), so without a filter index only the
# whole table's graph or a scan of the store could answer.
TEN = {"type": "nin", "key": "bucket", "value": list(range(10, 100))}


def _exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return bool(cursor.fetchone()[0])


def _plan_index(store_id: str, flt: Filter | None, *, graph: bool = False) -> str:
    """The index PostgreSQL's plan for the search's HNSW query scans.
    ``graph``: a graph if any applies (no sort: a few dozen rows are read
    and sorted cheaper, which is no test of which graph applies)."""
    params: list[Any] = []
    where = filter_sql(flt, params)
    with transaction.atomic(), connection.cursor() as cursor:
        if graph:
            cursor.execute("SET LOCAL enable_sort = off")
        cursor.execute(
            "EXPLAIN (FORMAT JSON) " + _ranking_sql(where, index=True),
            [str(_query(0)), [store_id], *params, 40],
        )
        plan = json.dumps(cursor.fetchone()[0])
    names = [n for n in ("chunk_embedding_hnsw", "tools_chunk_hnsw_f") if n in plan]
    assert len(names) <= 1
    return names[0] if names else "no graph"


def _search(store_id: str, flt: Filter, limit: int) -> tuple[VectorRanking, int]:
    with transaction.atomic(), connection.cursor() as cursor:
        ranking = vector_ranking(cursor, _query(1), [store_id], flt, limit)
        cursor.execute("SELECT current_setting('hnsw.ef_search')::int")
        return ranking, int(cursor.fetchone()[0])


@override_settings(SEARCH_HNSW_EF_SEARCH=40, SEARCH_EXACT_MAX_ROWS=100)
def test_a_filter_index_serves_its_filter_with_a_walk_sized_for_its_graph(
    stores: dict[str, str],  # noqa: F811
) -> None:
    store = VectorStore.objects.get(pk=stores["big"])
    flt = ComparisonFilter.model_validate(TEN)
    before, ef_before = _search(store.id, flt, 40)
    assert before.plan == "hnsw"
    assert _plan_index(store.id, flt) != "tools_chunk_hnsw_f"

    seen: list[BuildProgress] = []
    index = filter_index_create(vector_store=store, filters=TEN, progress=seen.append)
    assert index.status == FilterIndex.Status.READY, index.last_error
    assert index.rows == BIG // 10
    assert index.build_seconds is not None
    assert _exists(index.name)
    assert _plan_index(store.id, flt) == "tools_chunk_hnsw_f"

    ranking, ef = _search(store.id, flt, 40)
    assert ranking.plan == "hnsw"
    # The beam for 40 of the 200 rows of its graph, not for 40 of the 2,000
    # rows of the table's (where one in ten passes).
    assert ef == hnsw_params(40, 200, 2000, 200).ef_search < ef_before
    truth = _truth(store.id, _query(1), lambda a: a["bucket"] < 10, 40)
    _assert_exact(ranking, truth)

    # Declaring it again is a no-op.
    again = filter_index_create(vector_store=store, filters=TEN)
    assert again.pk == index.pk and again.name == index.name


@override_settings(SEARCH_HNSW_EF_SEARCH=40, SEARCH_EXACT_MAX_ROWS=100)
def test_an_and_holding_the_declared_filter_uses_its_index(
    stores: dict[str, str],  # noqa: F811
) -> None:
    store = VectorStore.objects.get(pk=stores["big"])
    filter_index_create(vector_store=store, filters=TEN)
    flt = CompoundFilter(
        type="and",
        filters=[
            ComparisonFilter(type="ne", key="tag", value="odd"),
            ComparisonFilter.model_validate(TEN),
        ],
    )
    assert _plan_index(store.id, flt) == "tools_chunk_hnsw_f"
    ranking, _ = _search(store.id, flt, 10)
    truth = _truth(
        store.id, _query(1), lambda a: a["bucket"] < 10 and a["tag"] == "even", 10
    )
    _assert_exact(ranking, truth)
    # Another store's search, or another filter, does not.
    other = ComparisonFilter(type="nin", key="bucket", value=list(range(11, 100)))
    assert _plan_index(store.id, other) != "tools_chunk_hnsw_f"
    assert _plan_index(stores["small"], flt) != "tools_chunk_hnsw_f"


def test_a_filter_a_search_would_refuse_builds_nothing(
    stores: dict[str, str],  # noqa: F811
) -> None:
    store = VectorStore.objects.get(pk=stores["big"])
    for bad in (
        {"type": "in", "key": "bucket", "value": 3},  # in needs a list
        {"type": "near", "key": "bucket", "value": 3},
        {"type": "eq", "key": "bucket"},
    ):
        with pytest.raises(InvalidRequestError) as caught:
            filter_index_create(vector_store=store, filters=bad)
        assert caught.value.param is not None and "filters" in caught.value.param
    assert not FilterIndex.objects.exists()


def test_a_failed_build_is_recorded_and_built_again_when_declared_again(
    stores: dict[str, str],  # noqa: F811
) -> None:
    store = VectorStore.objects.get(pk=stores["big"])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL statement_timeout = 1")
        cursor.execute("SET LOCAL maintenance_work_mem = '1MB'")
        index = filter_index_create(vector_store=store, filters=TEN)
        cursor.execute("SET LOCAL statement_timeout = 0")
    assert index.status == FilterIndex.Status.FAILED
    assert "statement timeout" in index.last_error
    assert not _exists(index.name)
    rebuilt = filter_index_create(vector_store=store, filters=TEN)
    assert rebuilt.pk == index.pk
    assert rebuilt.status == FilterIndex.Status.READY
    assert rebuilt.last_error == ""
    assert _exists(rebuilt.name)


def test_deleting_the_store_or_the_index_drops_it(
    stores: dict[str, str],  # noqa: F811
    django_capture_on_commit_callbacks: Any,
) -> None:
    big = VectorStore.objects.get(pk=stores["big"])
    small = VectorStore.objects.get(pk=stores["small"])
    first = filter_index_create(vector_store=big, filters=TEN)
    second = filter_index_create(
        vector_store=small, filters={"type": "lt", "key": "bucket", "value": 50}
    )
    assert _exists(first.name) and _exists(second.name)
    with django_capture_on_commit_callbacks(execute=True):
        vector_store_delete(vector_store=big)
    assert not _exists(first.name)
    assert not FilterIndex.objects.filter(pk=first.pk).exists()
    filter_index_drop(filter_index=second)
    assert not _exists(second.name)
    assert not FilterIndex.objects.exists()


def test_an_expired_store_loses_its_filter_indexes(
    stores: dict[str, str],  # noqa: F811
    django_capture_on_commit_callbacks: Any,
) -> None:
    from tools.services.vector_store import vector_stores_expire_due

    store = VectorStore.objects.get(pk=stores["big"])
    index = filter_index_create(vector_store=store, filters=TEN)
    VectorStore.objects.filter(pk=store.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert vector_stores_expire_due() == 1
    assert not _exists(index.name)
    assert not FilterIndex.objects.exists()
    # The table's own graph is untouched.
    assert _exists("chunk_embedding_hnsw")


def test_the_management_command_creates_lists_and_drops(
    stores: dict[str, str],  # noqa: F811
) -> None:
    out = io.StringIO()
    call_command("filter_index", "create", stores["big"], json.dumps(TEN), stdout=out)
    index = FilterIndex.objects.get()
    assert f"{index.name}: ready, {BIG // 10} chunks" in out.getvalue()
    out = io.StringIO()
    call_command("filter_index", "list", stdout=out)
    assert f"{index.name}\tready\tdeclared\t{BIG // 10}\t0\t" in out.getvalue()
    out = io.StringIO()
    call_command("filter_index", "drop", stores["big"], json.dumps(TEN), stdout=out)
    assert f"{index.name} dropped" in out.getvalue()
    assert not _exists(index.name)
    assert not FilterIndex.objects.exists()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The filter index builds handed to the task (its ``delay``, which
    records them here instead of sending them to the broker)."""
    builds: list[int] = []
    monkeypatch.setattr(filter_index_build_task, "delay", builds.append)
    return builds


def _committed_search(
    store_id: str, flt: Filter | None, seed: int, limit: int = 10
) -> VectorRanking:
    """A search, committed (a costly one is counted once it is)."""
    with (
        TestCase.captureOnCommitCallbacks(execute=True),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        return vector_ranking(cursor, _query(seed), [store_id], flt, limit)


def _keeps_short_walk_rows(attributes: dict[str, Any]) -> bool:
    return attributes["bucket"] == 1 and int(attributes["n"]) < 1000


@override_settings(
    SEARCH_HNSW_EF_SEARCH=40,
    SEARCH_EXACT_MAX_ROWS=100,
    SEARCH_AUTO_FILTER_INDEX_AFTER=3,
)
def test_short_walks_propose_a_filter_index_that_a_task_builds(
    stores: dict[str, str],  # noqa: F811
    sent: list[int],
) -> None:
    store_id = stores["big"]
    flt = short_walk_filter()
    for seed in range(2):
        assert _committed_search(store_id, flt, seed).plan == "hnsw+resume"
    row = FilterIndex.objects.get()
    assert row.status == FilterIndex.Status.PROPOSED
    assert row.automatic and row.searches == 2
    assert row.predicate == index_predicate(store_id, flt)
    assert not _exists(row.name)
    assert _search_count_after_hour_gap_starts_again(row, store_id, flt) == 1
    _committed_search(store_id, flt, 1)
    assert sent == []
    # The third in a row hands the build to a task.
    assert _committed_search(store_id, flt, 2).plan == "hnsw+resume"
    assert sent == [row.pk]
    row.refresh_from_db()
    assert row.status == FilterIndex.Status.BUILDING
    assert row.enqueued_at is not None and not _exists(row.name)

    # The task builds it; a second delivery of its message is a no-op.
    filter_index_build_task(row.pk)
    filter_index_build_task(row.pk)
    row.refresh_from_db()
    assert row.status == FilterIndex.Status.READY, row.last_error
    assert row.rows == 10 and row.automatic and _exists(row.name)

    # Its graph now serves the filter: no walk comes back short, and the
    # rows are the exact nearest.
    for seed in range(3, 6):
        ranking = _committed_search(store_id, flt, seed)
        assert ranking.plan == "hnsw" and ranking.filter_index
        _assert_exact(
            ranking, _truth(store_id, _query(seed), _keeps_short_walk_rows, 10)
        )
    row.refresh_from_db()
    assert row.searches == 3
    # A row past proposed (here one whose build failed) counts no more.
    other = short_walk_filter(1101)
    failed = FilterIndex.objects.create(
        vector_store_id=store_id,
        filters=other.model_dump(mode="json"),
        predicate=index_predicate(store_id, other),
        name="tools_chunk_hnsw_ffailed",
        status=FilterIndex.Status.FAILED,
        automatic=True,
        searches=3,
    )
    assert _committed_search(store_id, other, 0).plan == "hnsw+resume"
    failed.refresh_from_db()
    assert failed.searches == 3 and failed.status == FilterIndex.Status.FAILED
    assert sent == [row.pk]
    # Declaring the built one makes it the operator's, in the row returned
    # as in the database.
    declared = filter_index_create(
        vector_store=VectorStore.objects.get(pk=store_id),
        filters=flt.model_dump(mode="json"),
    )
    assert declared.pk == row.pk and not declared.automatic
    row.refresh_from_db()
    assert not row.automatic and row.status == FilterIndex.Status.READY


@override_settings(
    SEARCH_HNSW_EF_SEARCH=40,
    SEARCH_EXACT_MAX_ROWS=50,
    SEARCH_AUTO_FILTER_INDEX_AFTER=100,
)
def test_the_searches_a_filter_makes_costly_propose_its_index(
    stores: dict[str, str],  # noqa: F811
) -> None:
    big = stores["big"]

    def lt(n: int) -> ComparisonFilter:
        return ComparisonFilter(type="lt", key="bucket", value=n)

    half = ComparisonFilter(type="eq", key="tag", value="odd")
    ten = ComparisonFilter.model_validate(TEN)
    # (filter, plan, costly): a beam no wider than the unfiltered one's,
    # or an exact scan of up to 4 × SEARCH_EXACT_MAX_ROWS rows, costs no
    # more than the filter's own graph would.
    cases: list[tuple[Filter | None, str, bool]] = [
        (None, "hnsw", False),
        (half, "hnsw", False),  # a half: the unfiltered beam
        (ten, "hnsw", True),  # a tenth, read through no list: a wider beam
        (lt(5), "exact", False),  # 100 rows
        (lt(15), "exact", True),  # 300 rows, past 4 × 50
    ]
    for flt, plan, costly in cases:
        ranking = _committed_search(big, flt, 0)
        assert (ranking.plan, ranking.costly) == (plan, costly), flt
    counted = {r.predicate: r.searches for r in FilterIndex.objects.all()}
    assert counted == {index_predicate(big, ten): 1, index_predicate(big, lt(15)): 1}
    assert all(r.automatic for r in FilterIndex.objects.all())

    # Over its own graph the filter costs no more: nothing more is counted.
    filter_index_create(vector_store=VectorStore.objects.get(pk=big), filters=TEN)
    ranking = _committed_search(big, ten, 1)
    assert ranking.filter_index and not ranking.costly
    assert FilterIndex.objects.get(predicate=index_predicate(big, ten)).searches == 1


@override_settings(
    SEARCH_HNSW_EF_SEARCH=40,
    SEARCH_EXACT_MAX_ROWS=10,
    SEARCH_AUTO_FILTER_INDEX_AFTER=2,
)
def test_a_store_sharing_the_table_gets_its_own_graph(
    stores: dict[str, str],  # noqa: F811
    sent: list[int],
) -> None:
    # The small store's 60 chunks among the big one's 2,000: more than
    # 4 × SEARCH_EXACT_MAX_ROWS read exactly, with no filter.
    small = stores["small"]

    def search(flt: Filter | None, seed: int) -> VectorRanking:
        return _committed_search(small, flt, seed, limit=5)

    for seed in range(2):
        ranking = search(None, seed)
        assert (ranking.plan, ranking.costly, ranking.filter_index) == (
            "exact",
            True,
            False,
        )
    row = FilterIndex.objects.get()
    assert (
        row.predicate
        == index_predicate(small, None)
        == (f"vector_store_id = '{small}'")
    )
    assert row.filters == {} and row.searches == 2 and sent == [row.pk]
    filter_index_build_task(row.pk)
    row.refresh_from_db()
    assert row.status == FilterIndex.Status.READY and row.rows == SMALL
    assert _plan_index(small, None, graph=True) == "tools_chunk_hnsw_f"
    # Its searches walk its graph, sized for it, and find the exact
    # nearest; so do its filtered ones.
    for seed in range(2, 5):
        ranking = search(None, seed)
        assert (ranking.plan, ranking.costly, ranking.filter_index) == (
            "hnsw",
            False,
            True,
        )
        _assert_exact(ranking, _truth(small, _query(seed), lambda a: True, 5))
    half = ComparisonFilter(type="lt", key="bucket", value=30)
    ranking = search(half, 5)
    assert ranking.filter_index
    _assert_exact(ranking, _truth(small, _query(5), lambda a: a["bucket"] < 30, 5))
    assert FilterIndex.objects.count() == 1
    # The command declares one the same way: '{}'.
    out = io.StringIO()
    call_command("filter_index", "list", small, stdout=out)
    assert f"{row.name}\tready\tautomatic\t{SMALL}\t2\t{{}}" in out.getvalue()


def _search_count_after_hour_gap_starts_again(
    row: FilterIndex, store_id: str, flt: Filter
) -> int:
    """Short searches more than an hour apart are not counted together."""
    FilterIndex.objects.filter(pk=row.pk).update(
        last_search_at=timezone.now() - timedelta(minutes=61)
    )
    _committed_search(store_id, flt, 0)
    row.refresh_from_db()
    return row.searches


@override_settings(SEARCH_HNSW_EF_SEARCH=40, SEARCH_EXACT_MAX_ROWS=100)
def test_no_filter_index_is_proposed_when_switched_off_or_for_several_stores(
    stores: dict[str, str],  # noqa: F811
) -> None:
    flt = short_walk_filter()
    with override_settings(SEARCH_AUTO_FILTER_INDEXES=0):
        assert _committed_search(stores["big"], flt, 0).plan == "hnsw+resume"
    with transaction.atomic(), connection.cursor() as cursor:
        vector_ranking(cursor, _query(0), [stores["big"], stores["small"]], flt, 10)
    assert not FilterIndex.objects.exists()


@override_settings(SEARCH_AUTO_FILTER_INDEX_AFTER=2, SEARCH_AUTO_FILTER_INDEXES=1)
def test_automatic_filter_indexes_are_capped_per_store(
    stores: dict[str, str],  # noqa: F811
    django_capture_on_commit_callbacks: Any,
    monkeypatch: pytest.MonkeyPatch,
    sent: list[int],
) -> None:
    big, small = stores["big"], stores["small"]
    first, second = short_walk_filter(), short_walk_filter(1101)
    with django_capture_on_commit_callbacks(execute=True):
        for store_id, flt in ((big, first), (big, second), (small, first)):
            for _ in range(2):
                filter_index_propose(vector_store_id=store_id, flt=flt)
    rows = {
        (r.vector_store_id, r.predicate): r for r in FilterIndex.objects.order_by("id")
    }
    status = {key: (r.status, r.searches, r.automatic) for key, r in rows.items()}
    building = FilterIndex.Status.BUILDING
    assert status == {
        (big, index_predicate(big, first)): (building, 2, True),
        # The store has its one automatic index: counted, not built.
        (big, index_predicate(big, second)): (FilterIndex.Status.PROPOSED, 2, True),
        # Another store's cap is its own.
        (small, index_predicate(small, first)): (building, 2, True),
    }
    assert sent == [r.pk for r in rows.values() if r.status == building]
    # A store at its cap: this process counts its searches again only
    # after a while (each count is a transaction of its own).
    proposed = rows[(big, index_predicate(big, second))]

    def counted_after_one_more() -> int:
        with django_capture_on_commit_callbacks(execute=True):
            filter_index_propose(vector_store_id=big, flt=second)
        proposed.refresh_from_db()
        return proposed.searches

    assert counted_after_one_more() == 2
    monkeypatch.setattr(filter_index_service, "_settled_until", {})
    assert counted_after_one_more() == 3
    # An operator declaring the proposed one builds it: theirs, uncapped.
    index = filter_index_create(
        vector_store=VectorStore.objects.get(pk=big),
        filters=second.model_dump(mode="json"),
    )
    assert index.pk == rows[(big, index_predicate(big, second))].pk
    assert index.status == FilterIndex.Status.READY and not index.automatic


def test_the_reaper_hands_on_a_build_nobody_is_doing(
    stores: dict[str, str],  # noqa: F811
    sent: list[int],
) -> None:
    big = stores["big"]
    old = timezone.now() - timedelta(minutes=11)

    def row(name: str, flt: Filter, enqueued_at: Any) -> FilterIndex:
        return FilterIndex.objects.create(
            vector_store_id=big,
            filters=flt.model_dump(mode="json"),
            predicate=index_predicate(big, flt),
            name=f"tools_chunk_hnsw_f{name}",
            status=FilterIndex.Status.BUILDING,
            automatic=True,
            enqueued_at=enqueued_at,
        )

    dead = row("dead", ComparisonFilter.model_validate(TEN), old)
    row("fresh", short_walk_filter(), timezone.now())
    held = row("held", short_walk_filter(1101), old)
    # Another session is building ``held`` (it holds the build lock).
    with psycopg.connect(**connection.get_connection_params()) as other:
        other.execute("SELECT pg_advisory_lock(hashtext(%s))", [held.name])
        assert filter_indexes_build_due() == 1
        assert sent == [dead.pk]
        dead.refresh_from_db()
        assert dead.enqueued_at is not None and dead.enqueued_at > old
        # Just handed on: not again until it is overdue once more.
        assert filter_indexes_build_due() == 0
    # The other session ended (died): its build is handed on too.
    assert filter_indexes_build_due() == 1
    assert sent == [dead.pk, held.pk]
    filter_index_build_task(dead.pk)
    dead.refresh_from_db()
    assert dead.status == FilterIndex.Status.READY and dead.rows == BIG // 10


def test_automatic_filter_indexes_no_search_uses_are_dropped(
    stores: dict[str, str],  # noqa: F811
) -> None:
    big = VectorStore.objects.get(pk=stores["big"])
    automatic = filter_index_create(vector_store=big, filters=TEN)
    declared = filter_index_create(
        vector_store=big, filters={"type": "lt", "key": "bucket", "value": 50}
    )
    FilterIndex.objects.filter(pk=automatic.pk).update(automatic=True)
    # Never scanned: counted as used when the server started (minutes ago
    # here) or when its build was handed on, whichever is later.
    soon = timezone.now() + timedelta(days=29)
    assert filter_indexes_drop_idle(now=soon) == 0
    assert _exists(automatic.name)
    FilterIndex.objects.filter(pk=automatic.pk).update(
        enqueued_at=timezone.now() + timedelta(days=20)
    )
    later = timezone.now() + timedelta(days=31)
    assert filter_indexes_drop_idle(now=later) == 0  # built "on day 20"
    with override_settings(SEARCH_AUTO_FILTER_INDEX_IDLE_DAYS=0):
        assert filter_indexes_drop_idle(now=later + timedelta(days=30)) == 0
    assert filter_indexes_drop_idle(now=later + timedelta(days=30)) == 1
    assert not _exists(automatic.name)
    assert not FilterIndex.objects.filter(pk=automatic.pk).exists()
    # The operator's stays, however long unused.
    assert _exists(declared.name)
    assert FilterIndex.objects.filter(pk=declared.pk).exists()


def test_an_index_whose_row_went_during_its_build_is_not_left_behind(
    stores: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tools.services.filter_index as service

    index_sql = service._index_sql

    def store_deleted_meanwhile(name: str, predicate: str, **kwargs: Any) -> str:
        # As the store's delete does, between the build's start and end.
        FilterIndex.objects.filter(name=name).delete()
        return index_sql(name, predicate, **kwargs)

    monkeypatch.setattr(service, "_index_sql", store_deleted_meanwhile)
    big = VectorStore.objects.get(pk=stores["big"])
    index = filter_index_create(vector_store=big, filters=TEN)
    assert index.status == FilterIndex.Status.FAILED
    assert "dropped while it was being built" in index.last_error
    assert not _exists(index.name)
    assert not FilterIndex.objects.exists()
