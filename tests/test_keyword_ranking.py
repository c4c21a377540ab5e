"""The keyword ranker (tools/file_search/search.py): BM25 over the lexemes
PostgreSQL's english configuration makes, with statistics that
``tools_chunk``'s triggers keep (migration 0007) through every way chunks
come and go. Real PostgreSQL; the reference scores are computed here from
the lexemes' counts, not by the SQL under test."""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import override_settings

from tests.chunk_rows import chunks_add, store_file
from tools.file_search.search import (
    BM25_B,
    BM25_K1,
    keyword_ranking,
    term_stats,
    tsquery_any,
)
from tools.models import (
    Chunk,
    KeywordStore,
    KeywordTerm,
    VectorStore,
    VectorStoreFile,
)


def _lexemes(text: str) -> Counter[str]:
    """Each lexeme of ``text`` with its occurrences, as PostgreSQL parses it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT lexeme, cardinality(positions) "
            "FROM unnest(to_tsvector('english', %s))",
            [text],
        )
        return Counter({lexeme: n for lexeme, n in cursor.fetchall()})


def _expected_stats(texts: list[str]) -> tuple[int, int, Counter[str]]:
    chunks = [_lexemes(t) for t in texts]
    df: Counter[str] = Counter()
    for lexemes in chunks:
        df.update(set(lexemes))
    return len(chunks), sum(len(lexemes) for lexemes in chunks), df


def _stored_stats(store_id: str) -> tuple[int, int, Counter[str]]:
    row = KeywordStore.objects.filter(vector_store_id=store_id).first()
    terms = Counter(
        dict(
            KeywordTerm.objects.filter(vector_store_id=store_id).values_list(
                "term", "df"
            )
        )
    )
    return (row.chunks, row.lexemes, terms) if row else (0, 0, terms)


ALPHA = [
    "Boundary layer transition on a heated flat plate at high speed.",
    "The boundary layer of a cone in supersonic flow, heated and cooled.",
    "Aeroelastic models of aircraft wings: similarity laws for flutter.",
]
BETA = [
    "Heat transfer to a blunt body at hypersonic speed.",
    "Flutter of panels in supersonic flow; the panels are heated.",
]


def test_statistics_follow_chunks_in_and_out(tenant: Any) -> None:
    store = VectorStore.objects.create(project=tenant.project, name="kw")
    other = VectorStore.objects.create(project=tenant.project, name="other")
    alpha, beta = store_file(tenant, store, "alpha"), store_file(tenant, store, "beta")
    chunks_add(alpha, ALPHA)
    chunks_add(beta, BETA, seed=1)
    gamma = store_file(tenant, other, "gamma")
    chunks_add(gamma, ["Flutter of a heated panel."], seed=2)
    assert _stored_stats(store.id) == _expected_stats(ALPHA + BETA)
    assert _stored_stats(other.id) == _expected_stats(["Flutter of a heated panel."])

    # A file leaves the store: its chunks go by the database's cascade.
    VectorStoreFile.objects.filter(pk=beta.pk).delete()
    assert not Chunk.objects.filter(vector_store_file_id=beta.pk).exists()
    assert _stored_stats(store.id) == _expected_stats(ALPHA)
    # Terms only the deleted file held are gone, not left at zero.
    assert not KeywordTerm.objects.filter(vector_store_id=store.id, df__lte=0)
    assert "hyperson" not in _stored_stats(store.id)[2]

    # The store goes: nothing of it is left; the other store is untouched.
    VectorStore.objects.filter(pk=store.pk).delete()
    assert _stored_stats(store.id) == (0, 0, Counter())
    assert _stored_stats(other.id) == _expected_stats(["Flutter of a heated panel."])


def test_statistics_follow_updates(tenant: Any) -> None:
    store = VectorStore.objects.create(project=tenant.project, name="kw")
    ids = chunks_add(store_file(tenant, store, "alpha"), ALPHA)
    # An attributes update (what the platform does) counts nothing again.
    Chunk.objects.filter(id__in=ids).update(attributes={"n": 9})
    assert _stored_stats(store.id) == _expected_stats(ALPHA)
    # A new text: the old lexemes counted out, the new ones in.
    Chunk.objects.filter(id=ids[2]).update(text=BETA[0])
    assert _stored_stats(store.id) == _expected_stats([*ALPHA[:2], BETA[0]])
    # A chunk moved to another store leaves this one's counts.
    other = VectorStore.objects.create(project=tenant.project, name="other")
    Chunk.objects.filter(id=ids[0]).update(vector_store_id=other.id)
    assert _stored_stats(store.id) == _expected_stats([ALPHA[1], BETA[0]])
    assert _stored_stats(other.id) == _expected_stats([ALPHA[0]])


def _bm25(texts: list[str], query: str) -> dict[int, float]:
    """Each text's BM25 score for ``query`` (index → score, matches only)."""
    n, total, df = _expected_stats(texts)
    avgdl = total / n
    terms = set(_lexemes(query))
    scores: dict[int, float] = {}
    for i, text in enumerate(texts):
        lexemes = _lexemes(text)
        score = 0.0
        for term in terms & set(lexemes):
            idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
            tf = lexemes[term]
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(lexemes) / avgdl)
            score += idf * tf * (BM25_K1 + 1) / (tf + norm)
        if score > 0:
            scores[i] = score
    return scores


def _ranking(
    store_ids: list[str], query: str, limit: int = 10, pool: list[int] | None = None
) -> list[tuple[int, float]]:
    with transaction.atomic(), connection.cursor() as cursor:
        stats = term_stats(query, store_ids)
        return keyword_ranking(cursor, stats, store_ids, "TRUE", [], limit, pool)


def test_scores_are_bm25(tenant: Any) -> None:
    store = VectorStore.objects.create(project=tenant.project, name="kw")
    texts = ALPHA + BETA + ["Heated, heated, heated: the plate is heated again."]
    ids = chunks_add(store_file(tenant, store, "all"), texts)
    query = "heated boundary layer at supersonic speed"
    expected = _bm25(texts, query)
    got = _ranking([store.id], query)
    assert [cid for cid, _ in got] == [
        ids[i] for i, _ in sorted(expected.items(), key=lambda kv: -kv[1])
    ]
    for cid, score in got:
        assert score == pytest.approx(expected[ids.index(cid)], rel=1e-9)
    # A term repeated saturates: four "heated" score less than four times
    # one.
    one = _bm25(texts, "heated")
    assert one[5] < 4 * one[0]


def test_stores_searched_together_count_as_one_collection(tenant: Any) -> None:
    first = VectorStore.objects.create(project=tenant.project, name="a")
    second = VectorStore.objects.create(project=tenant.project, name="b")
    a = chunks_add(store_file(tenant, first, "a"), ALPHA)
    b = chunks_add(store_file(tenant, second, "b"), BETA, seed=1)
    expected = _bm25(ALPHA + BETA, "flutter of heated panels")
    got = dict(_ranking([first.id, second.id], "flutter of heated panels"))
    ids = a + b
    assert got == {
        ids[i]: pytest.approx(score, rel=1e-9) for i, score in expected.items()
    }


def test_a_pooled_ranking_finds_what_only_few_chunks_hold(tenant: Any) -> None:
    """Hybrid search scores the vector ranker's nearest (the pool) and the
    chunks holding the query's rarest terms: an identifier outside the pool
    is still found; without the rare-term reads it is not."""
    store = VectorStore.objects.create(project=tenant.project, name="kw")
    texts = [f"Routine note {i} about the heated panel." for i in range(60)]
    texts[41] = "Error code xk4471 was raised by the heated panel controller."
    ids = chunks_add(store_file(tenant, store, "notes"), texts)
    pool = ids[:10]
    query = "what raises error xk4471 on the heated panel"

    # "xk4471", "error", "rais": one chunk each; "heat", "panel": all 60.
    with override_settings(SEARCH_KEYWORD_RARE_ROWS=10):
        found = _ranking([store.id], query, limit=20, pool=pool)
    assert found[0][0] == ids[41]
    assert {cid for cid, _ in found} == set(pool) | {ids[41]}

    with override_settings(SEARCH_KEYWORD_RARE_ROWS=0):
        pooled_only = _ranking([store.id], query, limit=20, pool=pool)
    assert {cid for cid, _ in pooled_only} == set(pool)

    # Unpooled, every chunk holding a term is scored, the same way.
    everything = _ranking([store.id], query, limit=100)
    assert len(everything) == 60
    assert everything[0] == pytest.approx(found[0])


def test_rarest_terms_stop_at_the_bound(tenant: Any) -> None:
    store = VectorStore.objects.create(project=tenant.project, name="kw")
    chunks_add(
        store_file(tenant, store, "t"),
        ["alpha beta gamma", "beta gamma", "gamma", "gamma delta"],
    )
    stats = term_stats("gamma beta alpha delta epsilon", [store.id])
    # Rarest first; "epsilon" is in no chunk, so not a term at all.
    assert list(zip(stats.terms, stats.dfs, strict=True)) == [
        ("alpha", 1),
        ("delta", 1),
        ("beta", 2),
        ("gamma", 4),
    ]
    assert stats.rarest(2) == ["alpha", "delta"]
    assert stats.rarest(3) == ["alpha", "delta"]
    assert stats.rarest(4) == ["alpha", "delta", "beta"]
    assert stats.rarest(0) == []


def test_tsquery_any_takes_any_lexeme_literally(tenant: Any) -> None:
    # Lexemes as a tsvector can hold them (array_to_tsvector keeps them as
    # they are): quotes, backslashes, operators, spaces.
    odd = ["o'reilly", "c:\\temp\\new", "a|b", "x & y", "!not", "it''s"]
    with connection.cursor() as cursor:
        for lexeme in odd:
            cursor.execute(
                "SELECT array_to_tsvector(%s::text[]) @@ %s::tsquery, "
                "array_to_tsvector(%s::text[]) @@ %s::tsquery",
                [[lexeme], tsquery_any([lexeme]), ["other"], tsquery_any([lexeme])],
            )
            assert cursor.fetchone() == (True, False), lexeme
        cursor.execute(
            "SELECT array_to_tsvector(%s::text[]) @@ %s::tsquery",
            [["plain", odd[1]], tsquery_any(["missing", odd[1]])],
        )
        assert cursor.fetchone()[0] is True

    # And through the ranker, pooled (the rare-term read builds its query
    # from the stored lexemes) and not.
    store = VectorStore.objects.create(project=tenant.project, name="kw")
    text = r"O'Reilly's path is C:\temp\new, it's a path"
    ids = chunks_add(store_file(tenant, store, "odd"), [text, "nothing in common here"])
    assert [cid for cid, _ in _ranking([store.id], text)] == [ids[0]]
    assert [cid for cid, _ in _ranking([store.id], text, pool=[])] == [ids[0]]


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_store_keep_exact_statistics() -> None:
    """Two transactions adding and deleting a store's chunks at once: one
    waits on the store's row (no deadlock, no lost update)."""
    from django.db import connections

    from tests.conftest import ensure_test_model, make_tenant

    ensure_test_model()
    tenant = make_tenant()
    store = VectorStore.objects.create(project=tenant.project, name="kw")
    doomed = store_file(tenant, store, "doomed")
    chunks_add(doomed, BETA)
    files = [store_file(tenant, store, f"f{i}") for i in range(2)]
    texts = [ALPHA, [*ALPHA[:2], "Heated panels in hypersonic flow."]]
    inserted, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            with transaction.atomic():
                chunks_add(files[i], texts[i], seed=i)
                if i == 1:
                    Chunk.objects.filter(vector_store_file_id=doomed.pk).delete()
                else:
                    inserted.set()
                    release.wait(30)
        except BaseException as exc:  # reported below, from the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    first = threading.Thread(target=write, args=(0,))
    first.start()
    assert inserted.wait(30)
    second = threading.Thread(target=write, args=(1,))
    second.start()
    # The second writer queues on the store's row while the first holds it.
    waiting = 0
    for _ in range(100):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            waiting = cursor.fetchone()[0]
        if waiting:
            break
        second.join(0.1)
    release.set()
    first.join(60)
    second.join(60)
    assert waiting == 1
    assert not errors
    assert _stored_stats(store.id) == _expected_stats(texts[0] + texts[1])
