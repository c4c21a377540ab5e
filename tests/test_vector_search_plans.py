"""The vector query's plan choice (tools/file_search/search.py): exact over
the few rows a selective store scope or filter leaves, the HNSW iterative
scan otherwise (its beam as wide as the filter's selectivity asks), exact
again when that scan comes back short. Whatever the
plan, the rows are the exact nearest neighbours on these small stores (real
PostgreSQL + pgvector; synthetic vectors, no model)."""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

import numpy as np
import pytest
from django.db import connection, transaction
from django.test import override_settings

import tools.file_search.search as search
from core.observability import metrics
from tests.chunk_rows import DIM, chunks_add, store_file
from tools.file_search.search import (
    ComparisonFilter,
    CompoundFilter,
    Filter,
    VectorRanking,
    _counted_probe,
    _exact_ranking,
    filter_sql,
    hnsw_params,
    vector_ranking,
)
from tools.models import (
    AttributeChunk,
    AttributeValue,
    Chunk,
    VectorStore,
    VectorStoreFile,
    chunk_index_sql,
)

BIG = 2000
SMALL = 60


def _store(tenant: Any, name: str, attributes: list[dict[str, Any]]) -> str:
    store = VectorStore.objects.create(project=tenant.project, name=name)
    chunks_add(
        store_file(tenant, store, name),
        [f"chunk {i}" for i in range(len(attributes))],
        seed=len(name),
        attributes=attributes,
    )
    return store.id


@pytest.fixture
def stores(tenant: Any) -> dict[str, str]:
    with connection.cursor() as cursor:
        # Inserting row by row into a live HNSW graph is what makes this
        # fixture slow; the test's transaction drops the index, loads, and
        # builds it once (all rolled back with the test).
        cursor.execute("DROP INDEX chunk_embedding_hnsw")
    big = _store(
        tenant,
        "big",
        [
            {"bucket": i % 100, "tag": "odd" if i % 2 else "even", "n": str(i)}
            for i in range(BIG)
        ],
    )
    small = _store(tenant, "small", [{"bucket": i % 100} for i in range(SMALL)])
    with connection.cursor() as cursor:
        # The chunks' foreign keys are deferred: check them now, or CREATE
        # INDEX refuses a table with pending trigger events.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")
        cursor.execute(chunk_index_sql("chunk_embedding_hnsw"))
        # Fresh statistics, as autovacuum keeps them: the plan choice reads
        # the planner's estimates.
        cursor.execute("ANALYZE tools_chunk")
    return {"big": big, "small": small}


def _query(seed: int) -> list[float]:
    v = np.random.default_rng(1000 + seed).standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _truth(
    store_id: str, vector: list[float], keep: Any, limit: int
) -> list[tuple[int, float]]:
    """Nearest rows by cosine distance, computed here (not by PostgreSQL),
    as the search computes them: chunks and query in half precision."""
    rows = [
        (c.id, np.asarray(c.embedding, dtype=np.float64))
        for c in Chunk.objects.filter(vector_store_id=store_id).only(
            "id", "embedding", "attributes"
        )
        if keep(c.attributes)
    ]
    q = np.asarray(vector, dtype=np.float16).astype(np.float64)
    scored = [
        (cid, 1 - float(e @ q / (np.linalg.norm(e) * np.linalg.norm(q))))
        for cid, e in rows
    ]
    return sorted(scored, key=lambda r: r[1])[:limit]


def _search(
    store_id: str, vector: list[float], flt: Filter | None, limit: int = 10
) -> VectorRanking:
    with transaction.atomic(), connection.cursor() as cursor:
        return vector_ranking(cursor, vector, [store_id], flt, limit)


def _assert_exact(ranking: VectorRanking, truth: list[tuple[int, float]]) -> None:
    assert [r[0] for r in ranking.rows] == [t[0] for t in truth]
    for (_, got), (_, want) in zip(ranking.rows, truth, strict=True):
        assert got == pytest.approx(want, abs=1e-5)


def test_a_small_store_is_searched_exactly(stores: dict[str, str]) -> None:
    for seed in range(3):
        vector = _query(seed)
        ranking = _search(stores["small"], vector, None)
        assert ranking.plan == "exact"
        _assert_exact(ranking, _truth(stores["small"], vector, lambda a: True, 10))


SELECTIVE: list[tuple[Filter, Any]] = [
    (
        ComparisonFilter(type="eq", key="bucket", value=7),
        lambda a: a.get("bucket") == 7,
    ),
    (
        ComparisonFilter(type="in", key="bucket", value=[3, 4, 5]),
        lambda a: a.get("bucket") in (3, 4, 5),
    ),
    (
        ComparisonFilter(type="lt", key="bucket", value=2),
        lambda a: a.get("bucket", 999) < 2,
    ),
    (
        CompoundFilter(
            type="and",
            filters=[
                ComparisonFilter(type="eq", key="tag", value="odd"),
                ComparisonFilter(type="gte", key="bucket", value=95),
            ],
        ),
        lambda a: a.get("tag") == "odd" and a.get("bucket", -1) >= 95,
    ),
]


@override_settings(SEARCH_EXACT_MAX_ROWS=2500)
def test_a_selective_filter_is_searched_exactly(stores: dict[str, str]) -> None:
    # eq, in, lt and a compound filter: each keeps 1-3 % of the store. eq/in
    # rows come from the GIN index; a range filter reads the whole store
    # (2,000 rows, under the bound set here).
    for flt, keep in SELECTIVE:
        for seed in range(3):
            vector = _query(seed)
            ranking = _search(stores["big"], vector, flt)
            assert ranking.plan == "exact", flt
            assert ranking.estimated_rows is not None
            assert ranking.estimated_rows < BIG / 5, flt
            _assert_exact(ranking, _truth(stores["big"], vector, keep, 10))


@override_settings(SEARCH_HNSW_EF_SEARCH=1000)
def test_a_broad_scope_takes_the_index_and_finds_the_same_rows(
    stores: dict[str, str],
) -> None:
    # ef_search 1000 over 2,000 rows: the graph walk sees nearly everything,
    # so its answer must be the exact one.
    broad = ComparisonFilter(type="eq", key="tag", value="even")
    for flt, keep in (
        (None, lambda a: True),
        (broad, lambda a: a.get("tag") == "even"),
    ):
        for seed in range(3):
            vector = _query(seed)
            with override_settings(SEARCH_EXACT_MAX_ROWS=100):
                ranking = _search(stores["big"], vector, flt)
            assert ranking.plan == "hnsw"
            _assert_exact(ranking, _truth(stores["big"], vector, keep, 10))


def test_a_short_index_scan_is_answered_exactly(stores: dict[str, str]) -> None:
    # Odd rows, and rows whose n is even or 1, 3, 5, 7: a quarter of the
    # store as the plan choice takes them (independent), 4 rows in fact.
    # The estimate picks the index, which finds 4 rows for a page of 10:
    # the exact plan answers instead.
    numbers: list[Any] = ["1", "3", "5", "7", *(str(i) for i in range(0, BIG, 2))]
    flt = CompoundFilter(
        type="and",
        filters=[
            ComparisonFilter(type="eq", key="tag", value="odd"),
            ComparisonFilter(type="in", key="n", value=numbers),
        ],
    )
    vector = _query(0)
    with override_settings(SEARCH_EXACT_MAX_ROWS=100):
        ranking = _search(stores["big"], vector, flt)
    assert ranking.plan == "hnsw+exact"
    truth = _truth(
        stores["big"], vector, lambda a: a["tag"] == "odd" and a["n"] in numbers, 10
    )
    assert len(truth) == 4
    _assert_exact(ranking, truth)


@override_settings(SEARCH_HNSW_EF_SEARCH=1000)
def test_filters_keep_their_json_semantics(stores: dict[str, str]) -> None:
    # eq/in are containment tests for the index; they must still compare
    # values: "7" is not 7, and a missing key matches only ne and nin.
    vector = _query(0)
    cases: list[tuple[Filter, Any]] = [
        (ComparisonFilter(type="eq", key="n", value=7), lambda a: False),
        (ComparisonFilter(type="eq", key="n", value="7"), lambda a: a["n"] == "7"),
        (
            ComparisonFilter(type="ne", key="missing", value=1),
            lambda a: True,
        ),
        (
            ComparisonFilter(type="nin", key="bucket", value=list(range(1, 100))),
            lambda a: a["bucket"] == 0,
        ),
        (ComparisonFilter(type="gt", key="n", value="1998"), lambda a: a["n"] > "1998"),
    ]
    for flt, keep in cases:
        ranking = _search(stores["big"], vector, flt, limit=5)
        _assert_exact(ranking, _truth(stores["big"], vector, keep, 5))


def test_the_beam_widens_with_the_candidates_a_filter_needs() -> None:
    # No filter: the configured breadth (never below the rows asked for).
    with override_settings(SEARCH_HNSW_EF_SEARCH=100):
        assert hnsw_params(40, 100_000, 100_000).ef_search == 100
        assert hnsw_params(150, 100_000, 100_000).ef_search == 150
        assert hnsw_params(40, None, 100_000).ef_search == 100
        # A filter keeping 10 %: 40 rows are about the first 400 candidates.
        # 0.5 x those: the beam's width, not every candidate's visit, sets
        # the recall.
        ten = hnsw_params(40, 10_000, 100_000)
        assert ten.ef_search == 200
        # The walk stops resuming after about what the first beam visits.
        assert ten.max_scan_tuples == 8 * 200
        # 0.1 %: pgvector's widest beam, then resumed batches, bounded.
        rare = hnsw_params(40, 100, 100_000)
        assert rare.ef_search == 1000
        assert rare.max_scan_tuples == 20_000
        # A bigger graph needs a wider beam for the same recall: 1.5 x at
        # 1M chunks, 2 x at 10M, for the floor and a filter's beam alike.
        assert hnsw_params(40, None, 1_000_000).ef_search == 150
        assert hnsw_params(40, None, 10_000_000).ef_search == 200
        assert hnsw_params(40, 100_000, 1_000_000).ef_search == 300
        # Over a filter index: sized for its graph, the table's scale kept;
        # twice the least beam over one no larger than an exact scan reads
        # (22,803 rows at 1M: sqrt(13 x 40 x 1M)).
        assert hnsw_params(40, 100_000, 1_000_000, 100_000).ef_search == 150
        assert hnsw_params(40, 10_000, 1_000_000, 10_000).ef_search == 300
        assert hnsw_params(40, 22_803, 1_000_000, 22_803).ef_search == 300
        assert hnsw_params(40, 22_804, 1_000_000, 22_804).ef_search == 150


@override_settings(SEARCH_HNSW_EF_SEARCH=40, SEARCH_EXACT_MAX_ROWS=100)
def test_a_mid_selectivity_filter_takes_a_wide_beam_and_finds_the_nearest_rows(
    stores: dict[str, str],
) -> None:
    # A filter keeping 10 % that no index lists (nin: a missing key passes
    # too): the exact plan would read the whole store, so the graph
    # answers, with a beam 0.5 times as wide as the ~400 candidates that 40
    # passing rows take. Over 2,000 rows that beam sees most of them: the
    # nearest ten are the exact ones, and of the 40 at most two differ
    # (recall 0.95, the target), each passing the filter.
    flt = ComparisonFilter(type="nin", key="bucket", value=list(range(10, 100)))
    for seed in range(3):
        vector = _query(seed)
        with transaction.atomic(), connection.cursor() as cursor:
            ranking = vector_ranking(cursor, vector, [stores["big"]], flt, 40)
            cursor.execute("SELECT current_setting('hnsw.ef_search')::int")
            ef = cursor.fetchone()[0]
        assert ranking.plan == "hnsw"
        assert ranking.estimated_rows is not None
        assert ef >= 200, ef
        truth = _truth(stores["big"], vector, lambda a: a["bucket"] < 10, 40)
        _assert_exact(VectorRanking(ranking.rows[:10], "hnsw", None), truth[:10])
        got = {r[0] for r in ranking.rows}
        assert len(got) == 40
        assert len(got & {t[0] for t in truth}) >= 38
        passing = _truth(stores["big"], vector, lambda a: a["bucket"] < 10, BIG)
        assert got <= {t[0] for t in passing}


def short_walk_filter(first: int = 1001) -> CompoundFilter:
    """A filter that seems to keep a quarter of the big store but keeps
    about 10 rows: what makes its wide beam come back short (below)."""
    return CompoundFilter(
        type="and",
        filters=[
            ComparisonFilter(type="eq", key="tag", value="odd"),
            ComparisonFilter(type="nin", key="bucket", value=list(range(3, 100, 2))),
            ComparisonFilter(
                type="nin", key="n", value=[str(i) for i in range(first, BIG, 100)]
            ),
        ],
    )


@override_settings(SEARCH_HNSW_EF_SEARCH=40, SEARCH_EXACT_MAX_ROWS=100)
def test_a_short_wide_beam_resumes_the_walk_before_going_exact(
    stores: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # Conditions that seem to keep half, 51 % and 99.5 % of the rows, so a
    # quarter together as the plan choice takes them (independent), but
    # keep 10 rows (0.5 %): the odd rows of bucket 1 under 1,000, all the
    # others keep of the odd. The beam sized for a quarter visits too few
    # rows to find the 10; a resumed walk finds them before an exact scan
    # is paid for.
    flt = short_walk_filter()
    resumed = metrics.VECTOR_SEARCHES.labels("hnsw+resume")
    before = resumed._value.get()
    caplog.set_level(logging.INFO, logger="tools.file_search.search")
    for seed in range(3):
        vector = _query(seed)
        ranking = _search(stores["big"], vector, flt)
        assert ranking.plan == "hnsw+resume"
        assert ranking.estimated_rows == pytest.approx(BIG * 0.5 * 0.51 * 0.995)
        truth = _truth(
            stores["big"], vector, lambda a: a["bucket"] == 1 and int(a["n"]) < 1000, 10
        )
        assert len(truth) == 10
        _assert_exact(ranking, truth)
    # Counted by plan, and logged with the store and the filter: what tells
    # an operator that a filter index would serve this filter.
    assert resumed._value.get() == before + 3
    logged = [
        r.getMessage() for r in caplog.records if "came back short" in r.getMessage()
    ]
    assert len(logged) == 3
    assert stores["big"] in logged[0] and '"key": "tag"' in logged[0]


def test_an_exact_scan_past_its_cap_gives_way_to_the_index(
    stores: dict[str, str],
) -> None:
    # The same condition four times, taken as independent: (22 % or 22 %)
    # four times over, 46 rows, where 440 pass (no part is one comparison
    # that tools_attribute_chunk lists, so tools_chunk is read). The
    # estimate picks the exact plan; its cap (4 x 100 rows) is passed, so
    # the index answers, and still right.
    same = ComparisonFilter(type="in", key="bucket", value=list(range(22)))
    either = CompoundFilter(type="or", filters=[same, same])
    flt = CompoundFilter(type="and", filters=[either] * 4)
    vector = _query(0)
    with override_settings(SEARCH_EXACT_MAX_ROWS=100, SEARCH_HNSW_EF_SEARCH=1000):
        ranking = _search(stores["big"], vector, flt)
    assert ranking.estimated_rows == pytest.approx(BIG * (1 - 0.78**2) ** 4)
    assert ranking.plan == "hnsw"
    _assert_exact(
        ranking, _truth(stores["big"], vector, lambda a: a["bucket"] < 22, 10)
    )


def test_exact_scan_marks_a_cut_short_answer(stores: dict[str, str]) -> None:
    # The exact query itself: under its cap it answers; one row over, it
    # says so (None) rather than answer from the rows it read.
    vector = _query(1)
    params: list[Any] = []
    where = filter_sql(ComparisonFilter(type="eq", key="bucket", value=7), params)
    with transaction.atomic(), connection.cursor() as cursor:
        passing = Chunk.objects.filter(
            vector_store_id=stores["big"], attributes__bucket=7
        ).count()
        assert passing == BIG // 100
        full = _exact_ranking(cursor, vector, [stores["big"]], where, params, 5, None)
        capped = _exact_ranking(
            cursor, vector, [stores["big"]], where, params, 5, passing
        )
        over = _exact_ranking(
            cursor, vector, [stores["big"]], where, params, 5, passing - 1
        )
    truth = _truth(stores["big"], vector, lambda a: a.get("bucket") == 7, 5)
    assert capped == full
    assert full is not None
    _assert_exact(VectorRanking(full, "exact", None), truth)
    assert over is None


def _sent(
    store_id: str, vector: list[float], flt: Filter | None, limit: int = 10
) -> tuple[str, list[str]]:
    """The plan a search took and the statements (round trips) it sent."""
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as sent:
        ranking = _search(store_id, vector, flt, limit=limit)
    # Only the search's own statements: not the savepoint of _search's
    # atomic block inside the test's transaction.
    own = [
        q["sql"]
        for q in sent.captured_queries
        if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]
    return ranking.plan, own


def _scan(store_id: str, vector: list[float], flt: Filter) -> tuple[str, str]:
    """The plan a search took and the statement that computed distances."""
    plan, sent = _sent(store_id, vector, flt)
    scans = [sql for sql in sent if "<=>" in sql]
    assert len(scans) == 1
    return plan, scans[0]


@override_settings(SEARCH_EXACT_MAX_ROWS=100)
def test_the_exact_plan_reads_the_rows_where_they_are_listed(
    stores: dict[str, str],
) -> None:
    # eq/in and range tests, alone or in an "and", read their rows from
    # tools_attribute_chunk (the "and" by its part keeping the fewest, the
    # rest tested there); an "or" from tools_chunk, through the GIN index,
    # its scan capped as its count is an estimate (the query's marker
    # branch, UNION ALL); ne on a small store from tools_chunk, uncapped
    # (counted).
    bucket = ComparisonFilter(type="eq", key="bucket", value=7)
    odd = ComparisonFilter(type="eq", key="tag", value="odd")
    picked = ["1", "101", "1001", "2", "300"]
    number = ComparisonFilter(type="in", key="n", value=picked)
    below = ComparisonFilter(type="lt", key="bucket", value=3)
    cases: list[tuple[str, Filter, str, Any]] = [
        ("big", bucket, "tools_attribute_chunk", lambda a: a["bucket"] == 7),
        (
            "big",
            CompoundFilter(type="and", filters=[odd, number, below]),
            "tools_attribute_chunk",
            lambda a: a["tag"] == "odd" and a["n"] in picked and a["bucket"] < 3,
        ),
        (
            "big",
            CompoundFilter(type="or", filters=[bucket, number]),
            "UNION ALL",
            lambda a: a["bucket"] == 7 or a["n"] in picked,
        ),
        ("big", below, "tools_attribute_chunk", lambda a: a["bucket"] < 3),
        (
            "big",
            ComparisonFilter(type="lt", key="n", value="101"),
            "tools_attribute_chunk",
            lambda a: a["n"] < "101",
        ),
        (
            "small",
            ComparisonFilter(type="ne", key="bucket", value=3),
            "tools_chunk",
            lambda a: a["bucket"] != 3,
        ),
    ]
    for store, flt, reads, keep in cases:
        vector = _query(3)
        plan, sql = _scan(stores[store], vector, flt)
        assert plan == "exact", flt
        assert reads in sql, flt
        assert ("UNION ALL" in sql) is (reads == "UNION ALL"), flt
        with transaction.atomic(), connection.cursor() as cursor:
            ranking = vector_ranking(cursor, vector, [stores[store]], flt, 10)
        truth = _truth(stores[store], vector, keep, 10)
        assert truth
        _assert_exact(ranking, truth)
    # The "and" is read by its part keeping the fewest: n's five values.
    _, sql = _scan(stores["big"], _query(3), cases[1][1])
    assert "key = 'n'" in sql


def test_a_listed_range_keeps_what_the_filter_keeps(tenant: Any) -> None:
    # A key holding numbers, strings, booleans and null: each comparison,
    # read from tools_attribute_chunk's index (jsonb's order, a type test),
    # keeps exactly the rows filter_sql's test keeps on tools_chunk.
    values: list[Any] = [1, 2.5, 2, "2", "10", "abc", True, False, None, 10, -3, 0.0]
    store = _store(tenant, "mixed", [{"v": v} for v in values] + [{}, {"w": 1}])
    cases: list[ComparisonFilter] = [
        ComparisonFilter(type=op, key="v", value=value)
        for op in ("lt", "lte", "gt", "gte")
        for value in (2, 2.5, 0, "2", "b", -10)
    ] + [
        ComparisonFilter(type="eq", key="v", value=2.0),
        ComparisonFilter(type="in", key="v", value=[1, "2", True]),
    ]
    for flt in cases:
        params: list[Any] = []
        where = filter_sql(flt, params)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id FROM tools_chunk WHERE vector_store_id = %s AND {where}",
                [store, *params],
            )
            want = {row[0] for row in cursor.fetchall()}
        plan, sql = _scan(store, _query(4), flt)
        assert plan == "exact" and "tools_attribute_chunk" in sql, flt
        with transaction.atomic(), connection.cursor() as cursor:
            ranking = vector_ranking(cursor, _query(4), [store], flt, 50)
        assert {r[0] for r in ranking.rows} == want, flt


def _statements(store_id: str, flt: Filter | None, limit: int) -> tuple[str, int]:
    """The plan a search took and how many statements (round trips) it sent."""
    plan, sent = _sent(store_id, _query(2), flt, limit)
    return plan, len(sent)


@override_settings(SEARCH_EXACT_MAX_ROWS=100, SEARCH_HNSW_EF_SEARCH=40)
def test_a_search_takes_two_round_trips(stores: dict[str, str]) -> None:
    # The planner's estimates and the table's size in one, the query (and
    # the scan's settings) in the other, whatever the plan (a range filter's
    # search had taken seven).
    cases: list[tuple[str, Filter | None, str]] = [
        ("small", None, "exact"),
        ("big", None, "hnsw"),
        ("big", ComparisonFilter(type="eq", key="bucket", value=7), "exact"),
        ("big", ComparisonFilter(type="lt", key="bucket", value=10), "exact"),
        (
            "big",
            ComparisonFilter(type="nin", key="bucket", value=list(range(10, 100))),
            "hnsw",
        ),
    ]
    for store, flt, plan in cases:
        assert _statements(stores[store], flt, 10) == (plan, 2), (store, flt)


@override_settings(SEARCH_EXACT_MAX_ROWS=100, SEARCH_HNSW_EF_SEARCH=40)
def test_a_range_filter_on_any_key_estimates_without_failing(
    stores: dict[str, str],
) -> None:
    # The estimate writes range filters as jsonpath, which PostgreSQL
    # refuses for some keys (a lone surrogate) and values (NaN). Those keep
    # the filter's own form; the search answers (no row has these keys, so
    # none passes) and its transaction is still usable.
    odd: list[tuple[str, Any]] = [
        ('we"ird\\key', 3),
        ("tab\tand\x01", 3),
        ("missing", float("nan")),
        ("missing", float("inf")),
        ("bücket ☃", "x"),
    ]
    vector = _query(0)
    for key, value in odd:
        flt = ComparisonFilter(type="lt", key=key, value=value)
        with transaction.atomic(), connection.cursor() as cursor:
            ranking = vector_ranking(cursor, vector, [stores["big"]], flt, 10)
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        assert ranking.rows == [], key


def _toasted(store_id: str) -> list[tuple[bool, ...]]:
    """Per chunk: whether its embedding, attributes, store id, text and
    search_vector are out of line."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_column_toast_chunk_id(embedding) IS NOT NULL, "
            "pg_column_toast_chunk_id(attributes) IS NOT NULL, "
            "pg_column_toast_chunk_id(vector_store_id) IS NOT NULL, "
            "pg_column_toast_chunk_id(text) IS NOT NULL, "
            "pg_column_toast_chunk_id(search_vector) IS NOT NULL "
            "FROM tools_chunk WHERE vector_store_id = %s",
            [store_id],
        )
        return list(cursor.fetchall())


def test_a_chunk_row_keeps_only_what_searches_read(tenant: Any) -> None:
    # A search reads a chunk's row for its vector, store and attributes;
    # since tools migration 0008 a row of real text (over PostgreSQL's ~2 kB
    # TOAST threshold) gives up its text and search_vector, never those, so
    # that pages hold many rows (an exact scan of a 1 % filter at 1M chunks
    # read one 8 kB page per row before: 5x slower).
    rng = np.random.default_rng(7)
    words = [
        "".join(chr(97 + int(c)) for c in rng.integers(0, 26, 8)) for _ in range(60)
    ]
    paragraph = " ".join(words[int(i)] for i in rng.integers(0, 60, 180))
    many = [
        "".join(chr(97 + int(c)) for c in rng.integers(0, 26, 8)) for _ in range(2000)
    ]
    attributes = {"author": "someone with a long name", "year": 2024}
    for name, text, expected in [
        ("short", "a few words", (False, False, False, False, False)),
        ("paragraph", paragraph, (False, False, False, True, True)),
        ("long", " ".join(many), (False, False, False, True, True)),
    ]:
        store = VectorStore.objects.create(project=tenant.project, name=name)
        chunks_add(
            store_file(tenant, store, name), [text] * 40, attributes=[attributes] * 40
        )
        assert set(_toasted(store.id)) == {expected}, name
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(DISTINCT (ctid::text::point)[0]) FROM tools_chunk "
                "WHERE vector_store_id = %s",
                [store.id],
            )
            pages = cursor.fetchone()[0]
        # A row of a 776-byte halfvec and short values: 8 to a page.
        assert pages <= 6, (name, pages)


def _counts(store_id: str) -> Counter[tuple[str, str]]:
    """tools_attribute_value of a store, as (key, JSON value) -> chunks."""
    return Counter(
        {
            (key, json.dumps(value)): chunks
            for key, value, chunks in AttributeValue.objects.filter(
                vector_store_id=store_id
            ).values_list("key", "value", "chunks")
        }
    )


def _expected(attributes: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter(
        (key, json.dumps(value)) for a in attributes for key, value in a.items()
    )


def _listed(store_id: str) -> set[tuple[Any, ...]]:
    """tools_attribute_chunk of a store (migration 0010), and what it should
    hold: a row per chunk and attribute key, with its value, the chunk's
    attributes and vector."""
    rows = {
        (key, json.dumps(value), chunk_id, json.dumps(attrs), tuple(map(float, vector)))
        for key, value, chunk_id, attrs, vector in AttributeChunk.objects.filter(
            vector_store_id=store_id
        ).values_list("key", "value", "chunk_id", "attributes", "embedding")
    }
    want = {
        (
            key,
            json.dumps(value),
            c.id,
            json.dumps(c.attributes),
            tuple(map(float, c.embedding)),
        )
        for c in Chunk.objects.filter(vector_store_id=store_id)
        for key, value in c.attributes.items()
    }
    assert rows == want
    return rows


def test_attribute_counts_follow_chunks(tenant: Any) -> None:
    """tools_chunk's triggers keep the counts the plan choice reads
    (migration 0009) and the rows its exact plan reads (0010) through every
    way chunks come, change and go."""
    store = VectorStore.objects.create(project=tenant.project, name="a")
    other = VectorStore.objects.create(project=tenant.project, name="b")
    first, second = (
        store_file(tenant, store, "first"),
        store_file(tenant, store, "second"),
    )
    one: list[dict[str, Any]] = [{"year": 2024, "kind": "memo"}] * 2
    two: list[dict[str, Any]] = [
        {"year": 2025, "kind": "memo", "draft": True},
        {"kind": "7"},
        {},
    ]
    chunks_add(first, ["a", "b"], attributes=one)
    ids = chunks_add(second, ["c", "d", "e"], attributes=two)
    chunks_add(store_file(tenant, other, "third"), ["f"], attributes=[{"kind": 7}])
    assert _counts(store.id) == _expected(one + two)
    assert _counts(other.id) == _expected([{"kind": 7}])
    assert len(_listed(store.id)) == 2 * 2 + 3 + 1
    assert len(_listed(other.id)) == 1

    # A file's attributes updated (what the platform does): counted again.
    Chunk.objects.filter(vector_store_file_id=second.pk).update(
        attributes={"year": 2026}
    )
    assert _counts(store.id) == _expected(one + [{"year": 2026}] * 3)
    assert len(_listed(store.id)) == 2 * 2 + 3
    # A chunk moved to another store.
    Chunk.objects.filter(id=ids[0]).update(vector_store_id=other.id)
    assert _counts(other.id) == _expected([{"kind": 7}, {"year": 2026}])
    assert len(_listed(other.id)) == 2
    assert len(_listed(store.id)) == 2 * 2 + 2
    # A chunk's vector replaced; an update of neither leaves the rows be.
    Chunk.objects.filter(id=ids[1]).update(embedding=[0.5] * DIM)
    Chunk.objects.filter(vector_store_file_id=first.pk).update(tokens=3)
    assert (
        "year",
        "2026",
        ids[1],
        json.dumps({"year": 2026}),
        tuple([0.5] * DIM),
    ) in _listed(store.id)
    # A file leaves the store (the database's cascade): values only it
    # held are gone, not left at zero.
    VectorStoreFile.objects.filter(pk=first.pk).delete()
    assert _counts(store.id) == _expected([{"year": 2026}] * 2)
    assert not AttributeValue.objects.filter(chunks__lte=0).exists()
    assert len(_listed(store.id)) == 2
    # The store goes, and with its files their chunks, the moved one too.
    VectorStore.objects.filter(pk=store.pk).delete()
    assert _counts(store.id) == Counter()
    assert _counts(other.id) == _expected([{"kind": 7}])
    assert _listed(store.id) == set()
    assert len(_listed(other.id)) == 1


def test_the_rows_a_filter_keeps_are_counted_on_any_key(
    stores: dict[str, str],
) -> None:
    """The plan choice counts a comparison's rows exactly, whichever of a
    chunk's keys it tests (PostgreSQL's estimate from the whole jsonb value
    samples the first key in sort order: migration 0009), and combines
    parts as independent."""
    cases: list[Filter] = [
        ComparisonFilter(type="eq", key="tag", value="odd"),
        ComparisonFilter(type="eq", key="n", value="17"),
        ComparisonFilter(type="ne", key="bucket", value=7),
        ComparisonFilter(type="in", key="bucket", value=[1, 2, "3"]),
        ComparisonFilter(type="nin", key="tag", value=["odd", "none"]),
        ComparisonFilter(type="lt", key="bucket", value=10),
        ComparisonFilter(type="gte", key="n", value="5"),
        ComparisonFilter(type="gt", key="missing", value=3),
        ComparisonFilter(type="ne", key="missing", value=3),
    ]
    with connection.cursor() as cursor:
        for flt in cases:
            params: list[Any] = []
            where = filter_sql(flt, params)
            cursor.execute(
                f"SELECT count(*) FROM tools_chunk WHERE vector_store_id = %s "
                f"AND {where}",
                [stores["big"], *params],
            )
            passing = cursor.fetchone()[0]
            probe = _counted_probe([stores["big"]], flt)
            assert probe is not None
            assert probe.estimate == passing, flt
            assert probe.counted, flt
            assert probe.table >= BIG
        both = CompoundFilter(type="and", filters=[cases[0], cases[5]])
        either = CompoundFilter(type="or", filters=[cases[0], cases[5]])
        and_probe = _counted_probe([stores["big"]], both)
        or_probe = _counted_probe([stores["big"]], either)
        whole = _counted_probe([stores["big"], stores["small"]], None)
    assert and_probe is not None and or_probe is not None and whole is not None
    assert and_probe.estimate == pytest.approx(BIG * 0.5 * 0.1)
    assert or_probe.estimate == pytest.approx(BIG * (1 - 0.5 * 0.9))
    # Combined as independent: an estimate, not a count.
    assert not and_probe.counted and not or_probe.counted
    assert whole.counted
    # A range test reads the whole store; eq within "and" an index.
    assert and_probe.reads == and_probe.estimate
    assert or_probe.reads == BIG
    assert whole.estimate == whole.reads == BIG + SMALL


def test_a_range_test_over_many_values_asks_the_planner(
    stores: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # n has 2,000 values: past the most a count reads, the plan choice
    # takes the planner's estimate (and the search still answers right).
    flt = ComparisonFilter(type="lt", key="n", value="2")
    monkeypatch.setattr(search, "_COUNTED_MAX_VALUES", 1000)
    assert _counted_probe([stores["big"]], flt) is None
    vector = _query(0)
    with override_settings(SEARCH_EXACT_MAX_ROWS=100, SEARCH_HNSW_EF_SEARCH=1000):
        ranking = _search(stores["big"], vector, flt)
    truth = _truth(stores["big"], vector, lambda a: a["n"] < "2", 10)
    assert [r[0] for r in ranking.rows] == [t[0] for t in truth]
    monkeypatch.setattr(search, "_COUNTED_MAX_VALUES", 2000)
    assert _counted_probe([stores["big"]], flt) is not None
