"""Filter indexes (tools.models.FilterIndex): an HNSW index over the chunks
of one store passing one filter. Built by the service and the management
command, used by PostgreSQL for a search with that filter (or an ``and``
holding it), the walk sized for its graph, the rows still the exact
nearest; dropped with the store. Real PostgreSQL + pgvector."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings

from core.errors import InvalidRequestError
from tests.test_vector_search_plans import (  # noqa: F401 (fixture)
    BIG,
    _assert_exact,
    _query,
    _truth,
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
    vector_ranking,
)
from tools.models import FilterIndex, VectorStore
from tools.services.filter_index import (
    BuildProgress,
    filter_index_create,
    filter_index_drop,
)
from tools.services.vector_store import vector_store_delete

# Keeps bucket < 10: 10 % of the big store, and no index lists it (nin:
# a chunk without the key passes too), so without a filter index only the
# whole table's graph or a scan of the store could answer.
TEN = {"type": "nin", "key": "bucket", "value": list(range(10, 100))}


def _exists(name: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
        return bool(cursor.fetchone()[0])


def _plan_index(store_id: str, flt: Filter) -> str:
    """The index PostgreSQL's plan for the search's HNSW query scans."""
    params: list[Any] = []
    where = filter_sql(flt, params)
    with connection.cursor() as cursor:
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
    from datetime import timedelta

    from django.utils import timezone

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
    assert index.name in out.getvalue() and "ready" in out.getvalue()
    out = io.StringIO()
    call_command("filter_index", "drop", stores["big"], json.dumps(TEN), stdout=out)
    assert f"{index.name} dropped" in out.getvalue()
    assert not _exists(index.name)
    assert not FilterIndex.objects.exists()
