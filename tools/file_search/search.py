"""Hybrid search over chunks: vector similarity (HNSW) and full-text ranking,
fused by a weighted sum of their normalised scores.

Each ranker is one SQL query over ``tools_chunk`` that already applies the
store and attribute filters, so a filter never empties a page that the index
scan would have filled. For the vector query pgvector 0.8's iterative index
scan keeps pulling candidates until enough rows pass the filter (without it,
an HNSW scan returns at most ``ef_search`` rows *before* filtering: a 1 %
filter leaves almost nothing).

Scores are in [0, 1]. Hybrid: ``0.7 × vector + 0.3 × keyword``, each
ranker's scores min-max normalised over its candidates (1.0: best in both).
Measured on Cranfield (bench/retrieval_bench.py) this fusion beat reciprocal
rank fusion (k=60), which fell below the vector ranker alone because the
keyword ranker is much weaker there; with several queries a chunk keeps its
best score. Vector only: cosine similarity mapped to [0, 1]. Keyword only:
the rank divided by the best rank of the page.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from django.conf import settings
from django.db import connection, transaction
from pydantic import Field

from core.validation import Input
from tools.embeddings import embed

# The vector ranker's share of a hybrid score (the keyword ranker has the
# rest).
VECTOR_WEIGHT = 0.7
# Each ranker contributes at least this many candidates to the fusion.
MIN_CANDIDATES = 40

ComparisonType = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
Scalar = str | int | float | bool


class ComparisonFilter(Input):
    type: ComparisonType
    key: Annotated[str, Field(min_length=1, max_length=64)]
    value: Scalar | list[Scalar]


class CompoundFilter(Input):
    type: Literal["and", "or"]
    filters: Annotated[
        list[ComparisonFilter | CompoundFilter], Field(min_length=1, max_length=32)
    ]


Filter = ComparisonFilter | CompoundFilter


class FilterError(ValueError):
    """A filter that cannot apply (e.g. ``in`` without a list)."""


_NUMERIC_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def filter_sql(flt: Filter | None, params: list[Any], depth: int = 0) -> str:
    """A WHERE fragment over ``attributes`` (jsonb); appends to ``params``.

    eq/ne/in/nin compare JSON values (so 1 and "1" differ, as they do in
    OpenAI's filters); gt/gte/lt/lte compare numbers, or strings with a
    string value; a missing key matches only ``ne`` and ``nin``.
    """
    if flt is None:
        return "TRUE"
    if depth > 8:
        raise FilterError("filters are nested too deeply")
    if isinstance(flt, CompoundFilter):
        joiner = " AND " if flt.type == "and" else " OR "
        return (
            "("
            + joiner.join(filter_sql(f, params, depth + 1) for f in flt.filters)
            + ")"
        )
    key, value = flt.key, flt.value
    if flt.type in ("in", "nin"):
        if not isinstance(value, list):
            raise FilterError(f"'{flt.type}' needs a list value")
        params.extend([key, [json.dumps(v) for v in value]])
        test = "(attributes -> %s) = ANY(%s::jsonb[])"
        return test if flt.type == "in" else f"NOT coalesce({test}, FALSE)"
    if isinstance(value, list):
        raise FilterError(f"'{flt.type}' needs a single value, not a list")
    if flt.type in ("eq", "ne"):
        params.extend([key, json.dumps(value)])
        test = "(attributes -> %s) = %s::jsonb"
        return test if flt.type == "eq" else f"NOT coalesce({test}, FALSE)"
    op = _NUMERIC_OPS[flt.type]
    if isinstance(value, bool):
        raise FilterError(f"'{flt.type}' cannot compare booleans")
    if isinstance(value, str):
        params.extend([key, key, value])
        return (
            f"(jsonb_typeof(attributes -> %s) = 'string' AND "
            f"(attributes ->> %s) {op} %s)"
        )
    # CASE, not AND: PostgreSQL may evaluate AND's operands in any order,
    # and casting a string attribute to numeric would raise.
    params.extend([key, key, value])
    return (
        f"(CASE WHEN jsonb_typeof(attributes -> %s) = 'number' "
        f"THEN (attributes ->> %s)::numeric END) {op} %s"
    )


Mode = Literal["hybrid", "vector", "keyword"]


@dataclass
class Hit:
    chunk_id: int
    file_id: str
    filename: str
    text: str
    attributes: dict[str, Any]
    score: float
    # Rank per ranker (1-based), for the benchmark and debugging.
    ranks: dict[str, int] = field(default_factory=dict)


def _vector_ranking(
    cursor: Any,
    vector: list[float],
    store_ids: Sequence[str],
    where: str,
    where_params: list[Any],
    limit: int,
) -> list[tuple[int, float]]:
    ef = max(int(getattr(settings, "SEARCH_HNSW_EF_SEARCH", 100)), limit)
    cursor.execute("SET LOCAL hnsw.ef_search = %s", [ef])
    # relaxed_order: rows may come slightly out of order, so the outer query
    # sorts them again; the scan continues until `limit` rows pass the filter.
    cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
    cursor.execute(
        f"""
        WITH hits AS MATERIALIZED (
            SELECT id, embedding <=> %s::vector AS distance
            FROM tools_chunk
            WHERE vector_store_id = ANY(%s) AND {where}
            ORDER BY distance
            LIMIT %s
        )
        SELECT id, distance FROM hits ORDER BY distance
        """,
        [str(vector), list(store_ids), *where_params, limit],
    )
    return [(int(r[0]), float(r[1])) for r in cursor.fetchall()]


def _keyword_ranking(
    cursor: Any,
    query: str,
    store_ids: Sequence[str],
    where: str,
    where_params: list[Any],
    limit: int,
) -> list[tuple[int, float]]:
    # plainto_tsquery ANDs every word: a natural-language question would
    # match almost nothing. Its terms OR-ed instead; ts_rank with length
    # normalisation 1 ranked best of ts_rank/ts_rank_cd variants on Cranfield
    # (cover density rewards adjacent terms, which OR-ed questions rarely
    # have).
    cursor.execute(
        f"""
        WITH q AS (
            SELECT to_tsquery('english', replace(
                plainto_tsquery('english', %s)::text, ' & ', ' | ')) AS query
        )
        SELECT c.id, ts_rank(c.search_vector, q.query, 1) AS rank
        FROM tools_chunk c, q
        WHERE c.search_vector @@ q.query
          AND c.vector_store_id = ANY(%s) AND {where}
        ORDER BY rank DESC
        LIMIT %s
        """,
        [query, list(store_ids), *where_params, limit],
    )
    return [(int(r[0]), float(r[1])) for r in cursor.fetchall()]


def chunks_search(
    *,
    vector_store_ids: Sequence[str],
    queries: Sequence[str],
    filters: Filter | None = None,
    max_num_results: int = 10,
    score_threshold: float = 0.0,
    mode: Mode = "hybrid",
) -> list[Hit]:
    """The best chunks of the stores for ``queries``, best first.

    Raises FilterError for a filter that cannot apply.
    """
    queries = [q for q in queries if q.strip()]
    if not vector_store_ids or not queries:
        return []
    params: list[Any] = []
    where = filter_sql(filters, params)
    depth = max(MIN_CANDIDATES, max_num_results * 2)
    vectors = embed(queries) if mode != "keyword" else []
    rankings: list[tuple[str, list[tuple[int, float]]]] = []
    with transaction.atomic(), connection.cursor() as cursor:
        for i, query in enumerate(queries):
            if mode != "keyword":
                rankings.append(
                    (
                        "vector",
                        _vector_ranking(
                            cursor, vectors[i], vector_store_ids, where, params, depth
                        ),
                    )
                )
            if mode != "vector":
                rankings.append(
                    (
                        "keyword",
                        _keyword_ranking(
                            cursor, query, vector_store_ids, where, params, depth
                        ),
                    )
                )
    scores: dict[int, float] = {}
    ranks: dict[int, dict[str, int]] = {}
    if mode == "hybrid":
        # rankings alternate vector, keyword for each query.
        for q in range(0, len(rankings), 2):
            fused: dict[int, float] = {}
            for (name, ranking), weight in zip(
                rankings[q : q + 2], (VECTOR_WEIGHT, 1 - VECTOR_WEIGHT), strict=True
            ):
                values = [(1 - v) if name == "vector" else v for _, v in ranking]
                for rank, ((chunk_id, _), value) in enumerate(
                    zip(ranking, _minmax(values), strict=True), start=1
                ):
                    fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * value
                    ranks.setdefault(chunk_id, {}).setdefault(name, rank)
            for chunk_id, score in fused.items():
                scores[chunk_id] = max(scores.get(chunk_id, 0.0), score)
    elif mode == "vector":
        for name, ranking in rankings:
            for rank, (chunk_id, distance) in enumerate(ranking, start=1):
                # Cosine distance is in [0, 2]: similarity 1 - d in [-1, 1].
                score = max(0.0, min(1.0, 1 - distance / 2))
                scores[chunk_id] = max(scores.get(chunk_id, 0.0), score)
                ranks.setdefault(chunk_id, {}).setdefault(name, rank)
    else:
        for name, ranking in rankings:
            top = ranking[0][1] if ranking and ranking[0][1] > 0 else 1.0
            for rank, (chunk_id, value) in enumerate(ranking, start=1):
                scores[chunk_id] = max(scores.get(chunk_id, 0.0), value / top)
                ranks.setdefault(chunk_id, {}).setdefault(name, rank)
    ordered = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    ordered = [(cid, s) for cid, s in ordered if s >= score_threshold]
    ordered = ordered[:max_num_results]
    return _hits([cid for cid, _ in ordered], scores, ranks)


def _minmax(values: list[float]) -> list[float]:
    """Scale to [0, 1] over the candidates (all 1.0 when they tie)."""
    if not values:
        return []
    low, high = min(values), max(values)
    if high - low < 1e-12:
        return [1.0] * len(values)
    return [(v - low) / (high - low) for v in values]


def _hits(
    chunk_ids: list[int], scores: dict[int, float], ranks: dict[int, dict[str, int]]
) -> list[Hit]:
    if not chunk_ids:
        return []
    from tools.models import Chunk

    rows = {
        c.id: c
        for c in Chunk.objects.filter(id__in=chunk_ids)
        .select_related("vector_store_file__file")
        .only(
            "id",
            "file_id",
            "text",
            "attributes",
            "vector_store_file__file__filename",
        )
    }
    out = []
    for cid in chunk_ids:
        row = rows.get(cid)
        if row is None:
            continue  # deleted between the ranking and this read
        out.append(
            Hit(
                chunk_id=cid,
                file_id=row.file_id,
                filename=row.vector_store_file.file.filename,
                text=row.text,
                attributes=row.attributes or {},
                score=round(min(1.0, scores[cid]), 6),
                ranks=ranks.get(cid, {}),
            )
        )
    return out


CompoundFilter.model_rebuild()
