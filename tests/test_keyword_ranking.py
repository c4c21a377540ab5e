"""The full-text ranker's bound (tools/file_search/search.py,
``_keyword_plan``): past ``SEARCH_KEYWORD_MAX_ROWS`` expected matches, only
chunks holding at least 2 (then 3) of the query's terms are ranked, and the
best ranked are the same; a very common lone term is ranked over a capped
sample. Real PostgreSQL full-text search and planner estimates."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings

from tools.file_search.search import _keyword_plan, _keyword_ranking, _tsquery_any
from tools.models import Chunk, File, VectorStore, VectorStoreFile

ROWS = 300


def _text(i: int) -> str:
    # Every chunk says "aircraft"; one in five also "wing", one in fifteen
    # also "flutter"; the filler words differ per chunk.
    words = ["aircraft", f"filler{i}", f"other{i % 7}"]
    if i % 5 == 0:
        words.append("wing")
    if i % 15 == 0:
        words.append("flutter")
    return " ".join(words)


@pytest.fixture
def store(tenant: Any) -> str:
    vs = VectorStore.objects.create(project=tenant.project, name="kw")
    file = File.objects.create(
        project=tenant.project, filename="kw.txt", purpose="assistants", bytes=1
    )
    vsf = VectorStoreFile.objects.create(
        vector_store=vs, file=file, status="completed", chunking_strategy={}
    )
    Chunk.objects.bulk_create(
        [
            Chunk(
                vector_store_id=vs.id,
                vector_store_file_id=vsf.id,
                file_id=file.id,
                position=i,
                text=_text(i),
                tokens=4,
                attributes={},
                embedding=[1.0] + [0.0] * 383,
            )
            for i in range(ROWS)
        ]
    )
    with connection.cursor() as cursor:
        # The plan reads the planner's estimates: fresh statistics, as
        # autovacuum keeps them.
        cursor.execute("ANALYZE tools_chunk")
    return vs.id


def _plan(store_id: str, query: str, limit: int = 10) -> Any:
    with transaction.atomic(), connection.cursor() as cursor:
        return _keyword_plan(cursor, query, [store_id], "TRUE", [], limit)


def _rank(store_id: str, query: str, limit: int) -> list[tuple[int, float]]:
    with transaction.atomic(), connection.cursor() as cursor:
        return _keyword_ranking(cursor, query, [store_id], "TRUE", [], limit)


def test_within_the_bound_every_match_is_ranked(store: str) -> None:
    plan = _plan(store, "flutter of an aircraft wing")
    assert plan.ranked == "'flutter' | 'aircraft' | 'wing'"
    assert plan.candidates == [plan.ranked]
    assert plan.cap == 2000


def test_past_the_bound_chunks_holding_two_terms_are_ranked(store: str) -> None:
    unbounded = _rank(store, "flutter of an aircraft wing", 20)
    with override_settings(SEARCH_KEYWORD_MAX_ROWS=100):
        plan = _plan(store, "flutter of an aircraft wing")
        bounded = _rank(store, "flutter of an aircraft wing", 20)
    # 300 chunks say "aircraft" (past 100); 60 hold two of the terms.
    assert plan.ranked == "'flutter' | 'aircraft' | 'wing'"
    assert plan.candidates == [
        "('flutter' & 'aircraft') | ('flutter' & 'wing') | ('aircraft' & 'wing')",
        plan.ranked,
    ]
    assert plan.cap == 200
    # The same best chunks, with the same scores: every term still ranks.
    assert bounded == unbounded
    assert len(bounded) == 20


def test_three_terms_when_two_are_still_too_many(store: str) -> None:
    # The planner expects 4 chunks to hold all three (it multiplies the
    # terms' frequencies; 20 do): enough for 2 rows asked for, not for 10.
    with override_settings(SEARCH_KEYWORD_MAX_ROWS=30):
        plan = _plan(store, "flutter of an aircraft wing", 2)
        ranked = _rank(store, "flutter of an aircraft wing", 2)
        wider = _plan(store, "flutter of an aircraft wing", 10)
    assert plan.candidates[0] == "('flutter' & 'aircraft' & 'wing')"
    assert wider.candidates[0] == (
        "('flutter' & 'aircraft') | ('flutter' & 'wing') | ('aircraft' & 'wing')"
    )
    ids = [cid for cid, _ in ranked]
    texts = dict(Chunk.objects.filter(id__in=ids).values_list("id", "text"))
    assert len(ids) == 2
    assert all("flutter" in texts[i] and "wing" in texts[i] for i in ids)


def test_a_lone_common_term_is_ranked_over_a_capped_sample(store: str) -> None:
    with override_settings(SEARCH_KEYWORD_MAX_ROWS=20):
        plan = _plan(store, "the aircraft")
        ranked = _rank(store, "the aircraft", 10)
    assert plan.candidates == [plan.ranked] == ["'aircraft'"]
    assert plan.cap == 40
    assert len(ranked) == 10


def test_queries_without_terms_or_with_odd_characters(store: str) -> None:
    assert _plan(store, "the of and") is None
    assert _rank(store, "the of and", 10) == []
    # Strictest first, each read capped at the 5 rows asked for (twice the
    # bound is less): no chunk holds 3 of the terms, 60 hold 2.
    with override_settings(SEARCH_KEYWORD_MAX_ROWS=2):
        ranked = _rank(store, "o'brien's back\\slash aircraft 'wing'", 5)
    assert len(ranked) == 5


def test_lexemes_are_quoted_for_the_tsquery_text(db: Any) -> None:
    # The english parser splits words at quotes and backslashes, but a
    # lexeme holding them must still reach PostgreSQL as itself.
    odd = ["it's", "back\\slash", "plain"]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT array_to_tsvector(%s::text[]) @@ %s::tsquery, "
            "array_to_tsvector(%s::text[]) @@ %s::tsquery",
            [odd, _tsquery_any(odd, 3), odd[:2], _tsquery_any(odd, 3)],
        )
        assert cursor.fetchone() == (True, False)
