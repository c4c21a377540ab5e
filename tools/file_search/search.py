"""Hybrid search over chunks: vector similarity (HNSW) and full-text ranking,
fused by a weighted sum of their normalised scores.

Each ranker is one SQL query over ``tools_chunk`` that already applies the
store and attribute filters, so a filter never empties a page that the index
scan would have filled. The vector query has two plans, chosen per query by
the rows the store scope and filters leave, counted from statistics that
``tools_chunk``'s triggers keep (``_counted_probe``: per store, its chunks;
per store, key and value, the chunks holding it; the parts of a compound
filter taken as independent), or the planner's estimate where a range test
meets too many values to count (``_probe``) (``vector_ranking``):

- **exact**: at most ``SEARCH_EXACT_MAX_ROWS`` rows: they are fetched through
  the store's btree or the attributes' GIN index and every distance is
  computed. Exact, and cheaper than the graph walk a selective scope needs.
  A filter on ``eq``/``in`` or a range test (alone, or a part of an
  ``and``) reads its rows, vectors included, as one range of
  ``tools_attribute_chunk``'s covering index instead (``_posting_ranking``;
  tools migration 0010): a row there costs less, so up to ~1.2 times as
  many rows are searched exactly.
- **hnsw**: more rows: the HNSW index with pgvector 0.8's iterative scan,
  which keeps pulling candidates until enough rows pass the filter (without
  it, an HNSW scan returns at most ``ef_search`` rows *before* filtering: a
  1 % filter leaves almost nothing). Its breadth follows the estimate
  (``hnsw_params``): a filter keeping 10 % needs about ten times the
  candidates, so one beam that wide is searched and what it visited is
  returned in distance order, rather than resuming a narrow walk batch
  after batch (2-3 times slower at the same recall). A scan that still
  comes back short (the estimate was far too high, or
  ``hnsw.max_scan_tuples`` ran out) is answered again exactly, so a
  selective filter never loses rows.

A store is a filter too: a store holding 1 % of the table is searched
exactly, not through a graph built over everyone's chunks.

A filter with a **filter index** (tools.models.FilterIndex: an HNSW graph
over the store's chunks passing it, declared by an operator or proposed
by this store's searches that the filter made costly: a beam it widened,
a walk that came back short, a large exact scan; ``vector_ranking``) is
searched through that graph when the search's filter is the index's or
an ``and`` holding it: PostgreSQL's planner picks the partial index, and
the plan choice and the beam are sized for its rows (``_indexed_rows``).
A store's own graph (an index without a filter, for a store sharing the
table with others) serves each of its searches the same way.

The keyword query is BM25 (``keyword_ranking``) with the statistics that
``tools_chunk``'s triggers keep (migration 0007). Alone it scores every
chunk holding a term of the query, most of a store for a question in plain
words. In a hybrid search it scores a bounded pool instead: the vector
ranker's ``SEARCH_KEYWORD_POOL`` nearest chunks and the chunks holding the
query's rarest terms (``query_rankings``). On Cranfield that pool ranked as
well as every match (hybrid nDCG@10 0.419 against 0.420) at a cost that
does not grow with the store.

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
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from django.conf import settings
from django.db import connection, transaction
from pydantic import Field

from core.db import prepared_cursor
from core.observability import metrics
from core.validation import Input
from tools.embeddings import embed

logger = logging.getLogger(__name__)

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


def filter_sql(
    flt: Filter | None, params: list[Any], depth: int = 0, *, estimate: bool = False
) -> str:
    """A WHERE fragment over ``attributes`` (jsonb); appends to ``params``.

    eq/ne/in/nin compare JSON values (so 1 and "1" differ, as they do in
    OpenAI's filters); gt/gte/lt/lte compare numbers, or strings with a
    string value; a missing key matches only ``ne`` and ``nin``.

    eq/in are containment tests (``attributes @> {"key": value}``): for a
    scalar value that is the same as comparing ``attributes -> key`` (an
    array or object attribute contains no scalar at its key), and it is what
    the GIN index ``chunk_attributes`` serves and what the planner estimates
    from the column's statistics. ``estimate`` writes gt/gte/lt/lte as
    jsonpath tests instead (``attributes @@ '$."key" < 10'``), for
    ``EXPLAIN`` only: PostgreSQL estimates those from the same statistics,
    where the exact CASE expression gets a fixed one-third guess (which a
    key or value that ``_plain_jsonpath`` declines still gets: the estimate
    never fails where the search itself would not).
    """
    if flt is None:
        return "TRUE"
    if depth > 8:
        raise FilterError("filters are nested too deeply")
    if isinstance(flt, CompoundFilter):
        joiner = " AND " if flt.type == "and" else " OR "
        return (
            "("
            + joiner.join(
                filter_sql(f, params, depth + 1, estimate=estimate) for f in flt.filters
            )
            + ")"
        )
    key, value = flt.key, flt.value
    if flt.type in ("in", "nin"):
        if not isinstance(value, list):
            raise FilterError(f"'{flt.type}' needs a list value")
        params.append([json.dumps({key: v}) for v in value])
        test = "(attributes @> ANY(%s::jsonb[]))"
        return test if flt.type == "in" else f"NOT {test}"
    if isinstance(value, list):
        raise FilterError(f"'{flt.type}' needs a single value, not a list")
    if flt.type in ("eq", "ne"):
        params.append(json.dumps({key: value}))
        test = "(attributes @> %s::jsonb)"
        return test if flt.type == "eq" else f"NOT {test}"
    op = _NUMERIC_OPS[flt.type]
    if isinstance(value, bool):
        raise FilterError(f"'{flt.type}' cannot compare booleans")
    if estimate and _plain_jsonpath(key, value):
        params.append(f"$.{json.dumps(key)} {op} {json.dumps(value)}")
        return "(attributes @@ %s::jsonpath)"
    params.extend([key, key, value])
    return _range_sql("attributes -> %s", "attributes ->> %s", op, value)


def _range_sql(typed: str, text: str, op: str, value: object) -> str:
    """gt/gte/lt/lte of a jsonb value against ``value`` (the last
    parameter; a scalar, as ``filter_sql`` checked): a number with a
    number, a string with a string, else false. ``typed`` is the jsonb
    value, ``text`` the same as text: the attributes of ``filter_sql`` and
    the counted values of ``_leaf_sql`` are compared by this one test."""
    if isinstance(value, str):
        return f"(jsonb_typeof({typed}) = 'string' AND ({text}) {op} %s)"
    # CASE, not AND: PostgreSQL may evaluate AND's operands in any order,
    # and casting a string attribute to numeric would raise.
    return (
        f"(CASE WHEN jsonb_typeof({typed}) = 'number' "
        f"THEN ({text})::numeric END) {op} %s"
    )


def _plain_jsonpath(key: str, value: Scalar) -> bool:
    """Whether ``$."key" op value`` written from JSON is certainly a valid
    jsonpath: JSON's escapes are jsonpath's, but a lone surrogate escape or a
    number JSON spells ``Infinity``/``NaN`` is not, and PostgreSQL would
    refuse the statement (and abort the search's transaction). Any
    backslash, or a number that is not finite, keeps the CASE form."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return "\\" not in json.dumps(key) + json.dumps(value)


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


Plan = Literal["exact", "hnsw", "hnsw+resume", "hnsw+exact"]


@dataclass
class VectorRanking:
    """A vector query's rows (chunk id, cosine distance), nearest first, and
    how it was answered: ``exact``, ``hnsw``, ``hnsw+resume`` (the wide beam
    came back short, a resumed walk answered) or ``hnsw+exact`` (the index
    came back short, the exact plan answered)."""

    rows: list[tuple[int, float]]
    plan: Plan
    estimated_rows: float | None
    # Whether a filter index's graph served the walk (the table's did not).
    filter_index: bool = False
    # Whether the filter, or the store's share of the table, made it cost
    # more than a graph of the rows passing would (what proposes a filter
    # index, ``vector_ranking``): a beam widened past the unfiltered one's,
    # a walk that came back short, or an exact scan of more than
    # _COSTLY_EXACT_SHARE × SEARCH_EXACT_MAX_ROWS rows.
    costly: bool = False


@dataclass(frozen=True)
class _Probe:
    """What the plan choice reads, in one round trip (``_counted_probe``,
    else ``_probe``)."""

    # The chunks passing the store scope and filter: counted, or the
    # planner's estimate.
    estimate: float
    # The rows an exact plan would read: ``estimate`` when an index finds the
    # passing rows, else every chunk of the stores (a range filter is checked
    # row by row).
    reads: float
    # The chunks table's size (pg_class.reltuples; 0 before its first
    # ANALYZE).
    table: float
    # Whether ``estimate`` is a count (no filter, or one comparison counted
    # by ``_counted_probe``) rather than an estimate that may be far off.
    counted: bool = False
    # The comparison whose rows tools_attribute_chunk lists for the exact
    # plan to read (``_listable``: the filter itself, or the part of an
    # ``and`` keeping the fewest), and how many it keeps (counted).
    driver: ComparisonFilter | None = None
    driver_rows: float = 0.0
    # The searched store's ready filter indexes (tools.models.FilterIndex):
    # each one's predicate and the chunks it held when built.
    indexes: tuple[tuple[str, float], ...] = ()


def _plan_rows(plan: Any) -> float:
    if isinstance(plan, str):
        plan = json.loads(plan)
    return float(plan[0]["Plan"]["Plan Rows"])


# The searched store's ready filter indexes with their sizes (at their
# build: a filter's own rows are counted live, ``vector_ranking``), as
# JSON: a select list entry of the probe's round trip. Only for one store:
# the index's ``vector_store_id = 'vs_…'`` follows from ``= ANY('{vs_…}')``,
# not from a list of several. ~0.05 ms a search with one index declared
# (reading the index's size from pg_class as well: ~0.12).
_FILTER_INDEXES_SQL = (
    "(SELECT coalesce(json_agg(json_build_array(f.predicate, f.rows)), '[]') "
    "FROM tools_filterindex f "
    "WHERE cardinality(%s::text[]) = 1 AND f.vector_store_id = ANY(%s) "
    "AND f.status = 'ready')"
)


def _filter_indexes(value: Any) -> tuple[tuple[str, float], ...]:
    rows = json.loads(value) if isinstance(value, str) else value
    return tuple((str(p), float(n)) for p, n in rows or ())


def index_predicate(store_id: str, flt: Filter | None) -> str:
    """A filter index's WHERE (tools.models.FilterIndex): the store test and
    ``filter_sql``'s fragment with its values written in, the text the
    search's own query holds for that store and filter, from which
    PostgreSQL's planner proves that the partial index applies. No filter:
    the store's own graph (a store sharing the table with others)."""
    params: list[Any] = [store_id]
    where = "" if flt is None else " AND " + filter_sql(flt, params)
    # compose_sql: PostgreSQL's operations only (psycopg's client-side
    # binding, the same quoting the search's own queries get).
    ops: Any = connection.ops
    return str(ops.compose_sql("vector_store_id = %s" + where, params))


@dataclass(frozen=True)
class _Indexed:
    """The filter index serving a search (``_indexed_rows``)."""

    # The chunks it held when built.
    rows: float
    # Whether it is the search's own filter's (else a broader one's: the
    # store's own graph, or a part of an ``and``).
    own: bool


def _indexed_rows(
    probe: _Probe, store_ids: Sequence[str], flt: Filter | None
) -> _Indexed | None:
    """The smallest filter index serving this search (the store's own, the
    filter's, or a part of an ``and``'s), or None: the walk's breadth and
    the plan choice are then sized for that graph rather than the whole
    table's."""
    if not probe.indexes or len(store_ids) != 1:
        return None
    store = store_ids[0]
    parts = flt.filters if isinstance(flt, CompoundFilter) and flt.type == "and" else []
    own = index_predicate(store, flt)
    wanted = {own, index_predicate(store, None)}
    wanted.update(index_predicate(store, f) for f in parts)
    sizes = [(rows, p == own) for p, rows in probe.indexes if p in wanted]
    if not sizes:
        return None
    rows, is_own = min(sizes, key=lambda s: (s[0], not s[1]))
    return _Indexed(rows, is_own)


def _probe(cursor: Any, store_ids: Sequence[str], flt: Filter | None) -> _Probe:
    """The planner's estimates and the table's size, as one string of
    statements in one round trip. Planning only, nothing is read. For a
    range filter this took 1.2-1.4 ms (p50) as five round trips (a savepoint
    around the jsonpath estimate among them) and takes 0.6-0.7 ms so; with
    no filter 0.3-0.45 ms either way (bench/retrieval_bench.py's 100k
    chunks)."""
    stores = list(store_ids)
    params: list[Any] = [stores]
    where = filter_sql(flt, params, estimate=True)
    sql = (
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM tools_chunk "
        f"WHERE vector_store_id = ANY(%s) AND {where}; "
    )
    scans_stores = not _index_served(flt)
    if scans_stores:
        sql += (
            "EXPLAIN (FORMAT JSON) SELECT 1 FROM tools_chunk "
            "WHERE vector_store_id = ANY(%s); "
        )
        params.append(stores)
    sql += (
        "SELECT (SELECT reltuples FROM pg_class "
        f"WHERE oid = 'tools_chunk'::regclass), {_FILTER_INDEXES_SQL}"
    )
    params.extend([stores, stores])
    cursor.execute(sql, params)
    estimate = _plan_rows(cursor.fetchone()[0])
    reads = estimate
    if scans_stores:
        cursor.nextset()
        reads = _plan_rows(cursor.fetchone()[0])
    cursor.nextset()
    row = cursor.fetchone()
    return _Probe(
        estimate=estimate,
        reads=reads,
        table=max(0.0, float(row[0])),
        indexes=_filter_indexes(row[1]),
    )


# A range filter's count reads the key's values in the stores (it cannot
# use the index order: a value may be a number or a string); past this many
# distinct values the planner's estimate is taken instead.
_COUNTED_MAX_VALUES = 5000


def _leaf_sql(flt: ComparisonFilter, stores: list[str], params: list[Any]) -> str:
    """A select list entry counting the chunks of ``stores`` that hold a
    value of ``flt.key`` that ``flt`` keeps (eq/in/gt/...; for ne/nin, the
    ones eq/in keep): ``tools_attribute_value``, which tools_chunk's
    triggers keep (migration 0009). The same tests as ``filter_sql``'s.
    A range test returns an array: the count, and the values read (more
    than ``_COUNTED_MAX_VALUES``: not counted)."""
    scope = "FROM tools_attribute_value WHERE vector_store_id = ANY(%s) AND key = %s"
    if flt.type in ("eq", "ne", "in", "nin"):
        values = flt.value if isinstance(flt.value, list) else [flt.value]
        params.extend([stores, flt.key, [json.dumps(v) for v in values]])
        return f"(SELECT coalesce(sum(chunks), 0) {scope} AND value = ANY(%s::jsonb[]))"
    test = _range_sql("value", "value #>> '{}'", _NUMERIC_OPS[flt.type], flt.value)
    params.extend([flt.value, stores, flt.key, _COUNTED_MAX_VALUES + 1])
    return (
        "(SELECT ARRAY[coalesce(sum(chunks) FILTER (WHERE "
        f"{test}), 0), count(*)] FROM (SELECT value, chunks {scope} LIMIT %s) v)"
    )


def _counted_share(flt: Filter, counts: list[Any], total: float) -> float | None:
    """The share of the stores' ``total`` chunks that ``flt`` keeps, from
    the leaves' counts (consumed from ``counts`` in ``_leaf_sql`` order);
    None if a range test read too many values. The parts of a compound
    filter are taken as independent, as PostgreSQL's planner takes them."""
    if isinstance(flt, CompoundFilter):
        parts = [_counted_share(f, counts, total) for f in flt.filters]
        if any(p is None for p in parts):
            return None
        shares = [float(p) for p in parts if p is not None]
        if flt.type == "and":
            return math.prod(shares)
        return 1.0 - math.prod(1.0 - p for p in shares)
    value = counts.pop(0)
    if isinstance(value, list):
        if value[1] > _COUNTED_MAX_VALUES:
            return None
        value = value[0]
    share = min(1.0, float(value) / total)
    return 1.0 - share if flt.type in ("ne", "nin") else share


def _counted_probe(store_ids: Sequence[str], flt: Filter | None) -> _Probe | None:
    """The rows passing, counted rather than estimated: the stores' chunks
    from tools_keyword_store (migration 0007), each comparison's from
    tools_attribute_value (migration 0009), in one round trip. Exact for a
    single comparison whatever other keys the chunks carry, which is where
    the planner's estimate from the whole jsonb value goes wrong (migration
    0009 gives figures). None when a range test meets more distinct values
    than it reads (the caller asks the planner)."""
    stores = list(store_ids)
    params: list[Any] = [stores]
    leaves: list[ComparisonFilter] = []
    selects: list[str] = []

    def walk(f: Filter) -> None:
        if isinstance(f, CompoundFilter):
            for part in f.filters:
                walk(part)
        else:
            leaves.append(f)
            selects.append(_leaf_sql(f, stores, params))

    if flt is not None:
        walk(flt)
    # Prepared (one text per filter's shape): planning it took longer than
    # running it, 0.36 against 0.22 ms a search (p50, 1M chunks, shard <
    # 10), in the caller's transaction all the same.
    with prepared_cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT coalesce(sum(chunks), 0) FROM tools_keyword_store "
            "WHERE vector_store_id = ANY(%s)), "
            "(SELECT reltuples FROM pg_class WHERE oid = 'tools_chunk'::regclass), "
            + _FILTER_INDEXES_SQL
            + "".join(", " + select for select in selects),
            [params[0], stores, stores, *params[1:]],
        )
        row = cursor.fetchone()
    total, table = float(row[0]), max(0.0, float(row[1]))
    indexes = _filter_indexes(row[2])
    if flt is None or total == 0:
        return _Probe(
            estimate=total, reads=total, table=table, counted=True, indexes=indexes
        )
    share = _counted_share(flt, list(row[3:]), total)
    if share is None:
        return None
    estimate = total * share
    reads = estimate if _index_served(flt) else total
    # One comparison's count is exact (a chunk holds one value per key; ne
    # and nin keep what eq and in do not); a compound filter's combines its
    # parts as independent, which they need not be.
    counted = isinstance(flt, ComparisonFilter)
    driver, driver_rows = _driver(flt, list(zip(leaves, row[3:], strict=True)))
    return _Probe(
        estimate=estimate,
        reads=reads,
        table=table,
        counted=counted,
        driver=driver,
        driver_rows=driver_rows,
        indexes=indexes,
    )


def _listable(flt: Filter) -> bool:
    """Whether ``tools_attribute_chunk`` lists the rows ``flt`` keeps as one
    range of its index: eq/in, or a range test of a number or a string (ne
    and nin keep rows the key's absence lets through). A value JSON cannot
    carry (NaN, a lone surrogate) is left to ``filter_sql``."""
    if not isinstance(flt, ComparisonFilter) or flt.type in ("ne", "nin"):
        return False
    values = flt.value if isinstance(flt.value, list) else [flt.value]
    for value in values:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return False
    if flt.type in ("eq", "in"):
        return True
    return isinstance(flt.value, int | float | str) and not isinstance(flt.value, bool)


def _driver(
    flt: Filter, counts: list[tuple[ComparisonFilter, Any]]
) -> tuple[ComparisonFilter | None, float]:
    """Of ``flt`` (a comparison, or an ``and`` of parts), the comparison
    ``tools_attribute_chunk`` lists (``_listable``) keeping the fewest rows,
    with that count (``counts``: each comparison of ``flt`` with its
    ``_leaf_sql`` count): the rows ``_posting_ranking`` reads. None for
    other filters (an ``or`` keeps rows no one part lists)."""
    if isinstance(flt, CompoundFilter) and flt.type != "and":
        return None, 0.0
    parts = flt.filters if isinstance(flt, CompoundFilter) else [flt]
    best: tuple[ComparisonFilter | None, float] = (None, 0.0)
    for part in parts:
        if isinstance(part, ComparisonFilter) and _listable(part):
            count = next(c for leaf, c in counts if leaf is part)
            rows = float(count[0] if isinstance(count, list) else count)
            if best[0] is None or rows < best[1]:
                best = (part, rows)
    return best


def _ranking_sql(where: str, *, index: bool, capped: bool = False) -> str:
    """The vector query of both plans: one WHERE, so they cannot drift apart.

    ``index``: ``ORDER BY distance LIMIT`` inside the CTE, which is what lets
    PostgreSQL answer it from the HNSW index; the outer query sorts again by
    distance then id (the scan's relaxed order is only approximately sorted,
    and ties must not depend on the plan).

    Exact: the rows come from the store's btree, the attributes' GIN index
    or a sequential scan, and every distance is computed in one pass that
    keeps only the nearest (a top-N sort; nothing is stored per row, which
    was a quarter of the time when 10,000 rows passed). The subquery is what
    keeps the HNSW index out of it. ``capped``: the subquery reads at most
    the cap + 1 rows into a materialized CTE; the answer is its nearest, and
    a second branch returns a marker row (``over``) when a row past the cap
    exists, so one query both answers and tells that its answer was cut
    short. At 1M chunks over the 10,000 rows of a 1 % filter (p50, ms):
    3.5-4.3 uncapped, 4.5-4.8 so, 5.3-5.8 with the ``row_number()`` marker
    this replaced (a window over every row)."""
    scored = (
        "SELECT id, embedding <=> %s::halfvec AS distance FROM tools_chunk "
        f"WHERE vector_store_id = ANY(%s) AND {where}"
    )
    if index:
        return (
            f"WITH hits AS MATERIALIZED ({scored} ORDER BY distance LIMIT %s) "
            "SELECT id, distance FROM hits ORDER BY distance, id"
        )
    if not capped:
        return (
            f"SELECT id, distance FROM ({scored} OFFSET 0) passing "
            "ORDER BY distance, id LIMIT %s"
        )
    return (
        f"WITH passing AS MATERIALIZED ({scored} LIMIT %s) "
        "(SELECT id, distance, false AS over FROM passing "
        "ORDER BY distance, id LIMIT %s) "
        "UNION ALL (SELECT 0, 0, true FROM passing OFFSET %s LIMIT 1)"
    )


def _pairs(rows: Sequence[Sequence[Any]]) -> list[tuple[int, float]]:
    return [(int(r[0]), float(r[1])) for r in rows]


def _exact_ranking(
    cursor: Any,
    vector: list[float],
    store_ids: Sequence[str],
    where: str,
    where_params: list[Any],
    limit: int,
    cap: int | None,
) -> list[tuple[int, float]] | None:
    """Every distance over the rows that pass (``_ranking_sql``'s exact
    plan): the exact answer, or None when more than ``cap`` rows pass (the
    estimate was wrong; the caller takes the index)."""
    params = [str(vector), list(store_ids), *where_params]
    if cap is None:
        cursor.execute(_ranking_sql(where, index=False), [*params, limit])
        return _pairs(cursor.fetchall())
    cursor.execute(
        _ranking_sql(where, index=False, capped=True), [*params, cap + 1, limit, cap]
    )
    rows = cursor.fetchall()
    if any(row[2] for row in rows):
        return None
    return _pairs(rows)


def _posting_ranking(
    cursor: Any,
    vector: list[float],
    store_ids: Sequence[str],
    flt: Filter,
    driver: ComparisonFilter,
    limit: int,
) -> list[tuple[int, float]]:
    """The exact answer over the rows ``flt`` keeps, read as the range of
    ``tools_attribute_chunk``'s covering primary key that ``driver`` (a
    part of ``flt``, ``_listable``) lists: an index-only scan of the rows'
    vectors and attributes, the rest of ``flt`` tested on those attributes.
    Against ``_exact_ranking``'s bitmap heap scan of tools_chunk (a page
    per row when the rows lie apart, each row deformed and rechecked) at 1M
    chunks over the 10,000 rows of a 1 % filter: 3.7-4.0 against 15 ms
    scattered, 3.9-5.2 against 7-8 grouped by file (psql, one query, the
    list packed as migration 0010 fills it); as ingestion leaves the list
    (``_POSTING_VISIT_COST``), 7.5 ms p50 scattered in the search's loop.
    """
    params: list[Any] = [str(vector), list(store_ids), driver.key]
    if driver.type in ("eq", "in"):
        values = driver.value if isinstance(driver.value, list) else [driver.value]
        listed = "value = ANY(%s::jsonb[])"
        params.append([json.dumps(v) for v in values])
    else:
        # jsonb orders numbers among numbers (numerically) and strings among
        # strings (by the database's collation) as filter_sql compares
        # them; the range of the index also takes other types' values (null
        # and strings sort before numbers, booleans after), which the type
        # test drops. (filter_sql's own test, a number parsed from text per
        # row, took a third of the scan: 5.4 against 3.5 ms over 10,000.)
        op = _NUMERIC_OPS[driver.type]
        kind = "string" if isinstance(driver.value, str) else "number"
        listed = f"value {op} %s::jsonb AND jsonb_typeof(value) = '{kind}'"
        params.append(json.dumps(driver.value))
    rest = _without(flt, driver)
    # The driver itself is the index condition: testing it again on every
    # row's attributes (a jsonb containment each) would cost a fifth more.
    where = filter_sql(rest, params)
    cursor.execute(
        "SELECT chunk_id, embedding <=> %s::halfvec AS distance "
        "FROM tools_attribute_chunk WHERE vector_store_id = ANY(%s) "
        f"AND key = %s AND {listed} AND {where} "
        "ORDER BY distance, chunk_id LIMIT %s",
        [*params, limit],
    )
    return _pairs(cursor.fetchall())


def _without(flt: Filter, driver: ComparisonFilter) -> Filter | None:
    """``flt`` less ``driver`` (``flt`` itself, or one part of its ``and``)."""
    if not isinstance(flt, CompoundFilter):
        return None
    others = list(flt.filters)
    others.pop(next(i for i, f in enumerate(others) if f is driver))
    if not others:
        return None
    if len(others) == 1:
        return others[0]
    return CompoundFilter(type="and", filters=others)


# pgvector's upper bound for hnsw.ef_search, and its default for
# hnsw.max_scan_tuples (the most a walk resumed batch after batch visits).
_HNSW_MAX_EF = 1000
_HNSW_MAX_SCAN_TUPLES = 20_000
# ef_search per candidate the scan is expected to need (``limit`` divided by
# the share of the index that passes the store scope and filters). On
# bench/retrieval_bench.py's 100k chunks with a filter keeping 10 %, the 40
# rows a search asks for are the first 40 passing among ~470 nearest chunks
# (the median query; ~1,500 at the 95th percentile). pgvector's iterative
# scan reached them by resuming a beam of 100 batch after batch: recall@10
# 0.96 at p50 18 ms, p95 32 ms (~15 index pages read per candidate). One
# beam as wide as the expected candidates, then the rest of what it visited,
# nearest first (what pgvector returns once hnsw.max_scan_tuples is spent),
# does better; the beam's width, not the budget, sets both recall and time.
# Since the graph is built with ef_construction 128 (migration 0005), a
# narrower beam keeps the recall: on a quiet host (2026-11-23, every one of
# the 225 Cranfield queries against its exact answer), vector ranker p50 /
# p95 ms and recall@10 at 100k — 0.9: 7.9 / 10.2, 0.982; 0.8: 6.9 / 8.5,
# 0.979; 0.7: 5.8 / 7.3, 0.978; 0.6: 5.0 / 6.6, 0.971; 0.5: 5.1 / 6.6,
# 0.968 (more walks resumed) — and at 1M (120 queries) — 0.9: 17.0 / 25.9,
# 0.963; 0.7: 10.7 / 15.5, 0.958; 0.6: 9.5 / 12.7, 0.951; 0.5: 8.2 / 11.4,
# 0.950. Since then (tools migrations 0008-0010, shared buffers in huge
# pages), with the filter keeping 10 % scattered (``shard < 10``), vector
# ranker p50 / p95 ms and recall@10 over the 225 queries (2026-11-23, two
# sweeps each) — 1M: 0.7: 6.68-7.43 / 8.44-9.30, 0.972; 0.6: 6.04-6.84 /
# 7.48-8.54, 0.970; 0.5: 5.33-5.64 / 6.61-6.87, 0.963 — and 100k (fresh
# build): 0.7: 4.92 / 6.06, 0.994; 0.6: 4.88 / 5.81, 0.992; 0.5: 4.38 /
# 5.27, 0.989 (following the content, ``bucket < 10``: 0.987, 0.980,
# 0.967). 0.6 kept recall 0.02 over the target at 1M, but left a hybrid
# search, ~1.5 ms more than the vector ranker, at 9.3-11.4 ms p95 as the
# host's speed drifted (2026-11-23, evening: bench and two sweeps); 0.5
# took it to 8.7-9.0 (vector 5.6-6.6 / 7.2-8.4 against 6.3-7.6 / 7.9-9.3)
# at recall 0.963, 0.013 over the target (0.989 at 100k).
_EF_PER_CANDIDATE = 0.5
# The graph elements the scan may visit (hnsw.max_scan_tuples) per unit of
# ef_search. A beam of width ef visits about that many on its own (at ef 336
# on the 100k set, budgets from 1 to 3,000 returned the same rows), so the
# walk does not resume: pgvector returns the rest of what it visited. When
# the filter is far more selective than estimated, what was visited runs
# out, the scan comes back short and the exact plan answers, instead of
# first walking up to pgvector's default 20,000 elements.
_VISITS_PER_EF = 8


@dataclass(frozen=True)
class HnswParams:
    ef_search: int
    max_scan_tuples: int


def beam_scale(table: float) -> float:
    """How much wider a beam must be on a graph of ``table`` chunks for the
    recall it has at 100,000: a walk misses more of the true neighbours as
    the graph grows (each layer's greedy step skips more of them). On
    bench/retrieval_bench.py's chunks (ef_construction 128), unfiltered
    recall@10 at ef_search 100 was 0.988 at 100k and 0.944 at 1M; at 1M,
    130 gave 0.954 and 160 0.958 (p95 8.6 and 9.0 ms). 1.5 at 1M, 2 at
    10M."""
    if table <= 100_000:
        return 1.0
    return 1.0 + 0.5 * math.log10(table / 100_000)


def _ef_floor(limit: int, table: float) -> int:
    """The narrowest beam on a table of ``table`` chunks:
    ``SEARCH_HNSW_EF_SEARCH`` widened by ``beam_scale``, never below the
    rows asked for."""
    configured = int(getattr(settings, "SEARCH_HNSW_EF_SEARCH", 100))
    return max(math.ceil(configured * beam_scale(table)), limit)


def hnsw_params(
    limit: int, passing: float | None, table: float, graph: float | None = None
) -> HnswParams:
    """hnsw.ef_search and hnsw.max_scan_tuples for a scan that must return
    ``limit`` rows when ``passing`` of the ``graph``'s chunks pass the store
    scope and filters (None: unknown, the configured breadth); ``graph`` is
    the ``table`` (all chunks) unless a filter index serves the search.

    The beam is widened for the table's size (``beam_scale``) even over a
    filter index's smaller graph: a filter that follows the content keeps
    a region of the vector space as crowded as the whole table is, and its
    graph needs the same breadth. At 1M chunks over ``bucket < 10``'s index
    of 100,000 (bench/retrieval_bench.py, 225 queries): recall@10 0.955 at
    ef_search 100 (the scale of 100,000), 0.972 at 150, 3.6 ms p95 both.

    Over a filter index no larger than an exact scan would read (without
    it, the exact plan answered) the least beam is twice as wide: such a
    graph holds few clusters (a 1 % filter following the content: the
    chunks of 14 documents), which its links join worse than the whole
    table's do. At 1M chunks over ``bucket = 7``'s 10,000 (225 queries):
    recall@10 0.933 at ef_search 150, 1.27 / 1.46 ms p50 / p95; 0.968 at
    300, 1.53 / 1.75; the exact scan it replaces took 3.8 / 4.5."""
    scale = beam_scale(table)
    floor = _ef_floor(limit, table)
    graph = table if graph is None else graph
    small = _exact_max_rows(limit, _exact_floor(), table, _POSTING_VISIT_COST)
    if graph < table and graph <= small:
        floor = min(_HNSW_MAX_EF, 2 * floor)
    candidates = float(limit)
    if passing is not None and graph > 0:
        candidates = limit * graph / max(passing, 1.0)
    ef = min(
        _HNSW_MAX_EF, max(floor, math.ceil(_EF_PER_CANDIDATE * candidates * scale))
    )
    # Beyond the widest beam, resumed batches must make up the rest.
    visits = max(_VISITS_PER_EF * ef, math.ceil(4 * candidates))
    return HnswParams(ef_search=ef, max_scan_tuples=min(visits, _HNSW_MAX_SCAN_TUPLES))


def _hnsw_ranking(
    cursor: Any,
    vector: list[float],
    store_ids: Sequence[str],
    where: str,
    where_params: list[Any],
    limit: int,
    params: HnswParams,
) -> list[tuple[int, float]]:
    # SET LOCAL of all three, and the query, in one round trip.
    # relaxed_order: rows may come slightly out of order (the query sorts
    # them again); the scan goes on past the first beam until `limit` rows
    # pass the filter.
    cursor.execute(
        "SELECT set_config('hnsw.ef_search', %s, true), "
        "set_config('hnsw.max_scan_tuples', %s, true), "
        "set_config('hnsw.iterative_scan', 'relaxed_order', true); "
        + _ranking_sql(where, index=True),
        [
            str(params.ef_search),
            str(params.max_scan_tuples),
            str(vector),
            list(store_ids),
            *where_params,
            limit,
        ],
    )
    cursor.nextset()  # past set_config's row, to the query's
    return _pairs(cursor.fetchall())


# What visiting one candidate costs in the HNSW scan (the graph neighbours'
# distances, a heap fetch for the filter) over computing one row's distance
# in an exact scan, measured on bench/retrieval_bench.py's 100k chunks:
# ~30 us a candidate (12 ms for ~400) against ~3.5 us a row read through the
# GIN index (35 ms for a filter keeping 10 %, 2 ms for 1 %). Since tools
# migration 0008 (narrow rows, halfvec) both are cheaper: at 100k the 10 %
# filter's ~470 candidates take ~4.2 ms (~9 us each), a 1 % filter's 1,000
# exact rows ~0.7 ms; a ratio of ~13, which would raise the exact bound
# by ~1.2x. Not re-tuned: no case of the benchmark sits near the bound.
_HNSW_VISIT_COST = 9
# The same over a row read from tools_attribute_chunk's covering index
# (``_posting_ranking``), as ingestion leaves it: its leaf pages split as
# rows come (~57 % full, in no order), 10,000 rows took 7.5 ms at 1M chunks
# and 9.3 at 100k (p50), ~0.65-0.9 us a row: a ratio of ~13 to a
# candidate, the same as a row of tools_chunk's grouped by file. Packed
# (migration 0010's sorted fill, or a REINDEX) they took 4.5 and 3.5 ms,
# a ratio of ~26-33; the bound is set for the state a live store is in.
_POSTING_VISIT_COST = 13


def _exact_floor() -> int:
    """SEARCH_EXACT_MAX_ROWS: the fewest rows an exact scan may take."""
    return int(getattr(settings, "SEARCH_EXACT_MAX_ROWS", 2000))


def _exact_max_rows(
    limit: int, floor: int, table: float, cost: float = _HNSW_VISIT_COST
) -> int:
    """The most rows an exact scan should take. The index scan visits about
    ``limit × table / rows`` candidates to find ``limit`` that pass, an exact
    scan computes ``rows`` distances: exact is cheaper while
    ``rows² < cost × limit × table``, which grows with the table (about
    6,000 rows at 100k chunks for 40 results, 19,000 at 1M; rows read from
    tools_attribute_chunk, ``_POSTING_VISIT_COST``: 7,200 and 22,800).
    ``floor`` (``SEARCH_EXACT_MAX_ROWS``) is the least."""
    return max(floor, int(math.sqrt(cost * limit * table)))


def _exact_cap(probe: _Probe, bound: int) -> int | None:
    """The most rows an exact scan chosen for an estimate of at most
    ``bound`` may read before it gives way to the index (None: no cap).

    An estimate can be far off (the parts of a compound filter are taken
    as independent; a range test over too many values to count takes the
    planner's estimate): past four times the bound, the index answers
    instead. A count needs no cap: the store's own rows, or one
    comparison's (``_counted_probe``). The capped query costs about a
    fifth more (``_ranking_sql``): at 1M chunks, over the 10,000 rows of a
    1 % filter scattered through the table (bench/retrieval_bench.py's
    ``shard = 7``, 225 queries), 20.0 / 22.2 ms p50 / p95 capped against
    16.8 / 19.5 uncapped."""
    return None if probe.counted else 4 * bound


# An exact scan of more than this many times SEARCH_EXACT_MAX_ROWS rows
# costs more than a walk of those rows' own graph (VectorRanking.costly):
# at 1M chunks (bench/retrieval_bench.py, 225 queries) a 1 % filter's
# 10,000 rows took 3.7-4.1 ms p50 read exactly from the list; up to the
# 2,000 rows of the default bound an exact scan takes under a millisecond,
# which no walk beats.
_COSTLY_EXACT_SHARE = 4


def _index_served(flt: Filter | None) -> bool:
    """Whether an index finds the rows passing ``flt`` (with the store's
    btree, the attributes' GIN index for eq/in) rather than a scan of the
    stores' chunks checking each."""
    if flt is None:
        return True
    if isinstance(flt, CompoundFilter):
        parts = [_index_served(f) for f in flt.filters]
        return any(parts) if flt.type == "and" else all(parts)
    return flt.type in ("eq", "in")


def vector_ranking(
    cursor: Any,
    vector: list[float],
    store_ids: Sequence[str],
    flt: Filter | None,
    limit: int,
) -> VectorRanking:
    """The ``limit`` chunks of ``store_ids`` passing ``flt`` nearest to
    ``vector`` (see the module docstring for the plans). Runs inside the
    caller's transaction (it sets ``SET LOCAL`` options)."""
    ranking = _vector_ranking(cursor, vector, store_ids, flt, limit)
    metrics.vector_search(ranking.plan)
    if ranking.plan in ("hnsw+resume", "hnsw+exact") and flt is not None:
        # What tells an operator which filter wants a filter index: its
        # rows lie away from this query, and the walk went deep for them.
        logger.info(
            "vector search: the graph walk came back short (%s) for stores %s "
            "and filter %s; a filter index for it (manage.py filter_index) "
            "would serve it",
            ranking.plan,
            ",".join(store_ids),
            json.dumps(flt.model_dump(mode="json"), sort_keys=True),
        )
    if ranking.costly:
        # Counted towards the index being built without an operator (one
        # store's searches only: a filter index serves those; no filter,
        # the store's own graph). Imported here: the service imports this
        # module.
        from tools.services.filter_index import filter_index_propose

        filter_index_propose(vector_store_id=store_ids[0], flt=flt)
    return ranking


def _vector_ranking(
    cursor: Any,
    vector: list[float],
    store_ids: Sequence[str],
    flt: Filter | None,
    limit: int,
) -> VectorRanking:
    params: list[Any] = []
    where = filter_sql(flt, params)
    probe = _counted_probe(store_ids, flt) or _probe(cursor, store_ids, flt)
    estimate, reads, table = probe.estimate, probe.reads, probe.table
    # The graph the walk would search: the table's, or a filter index's
    # (tools.models.FilterIndex; the planner picks the smallest whose
    # predicate the query implies), which holds at least the rows passing.
    indexed = _indexed_rows(probe, store_ids, flt)
    graph = table if indexed is None else max(indexed.rows, estimate)
    served = indexed is not None
    floor = _exact_floor()
    exact_max = _exact_max_rows(limit, floor, graph)
    driver = probe.driver
    listed_max = _exact_max_rows(limit, floor, graph, _POSTING_VISIT_COST)
    # Whether a filter index would answer it cheaper (VectorRanking.costly):
    # not once its own serves it (a broader one's graph may still be far
    # wider than its rows).
    indexable = len(store_ids) == 1 and not (indexed is not None and indexed.own)
    if flt is not None and driver is not None and probe.driver_rows <= listed_max:
        listed = _posting_ranking(cursor, vector, store_ids, flt, driver, limit)
        costly = indexable and probe.driver_rows > _COSTLY_EXACT_SHARE * floor
        return VectorRanking(listed, "exact", estimate, served, costly)
    if reads <= exact_max:
        bound = floor if reads <= floor else exact_max
        rows = _exact_ranking(
            cursor, vector, store_ids, where, params, limit, _exact_cap(probe, bound)
        )
        if rows is not None:
            costly = indexable and reads > _COSTLY_EXACT_SHARE * floor
            return VectorRanking(rows, "exact", estimate, served, costly)
    hnsw = hnsw_params(limit, estimate, table, graph)
    rows = _hnsw_ranking(cursor, vector, store_ids, where, params, limit, hnsw)
    if len(rows) >= limit:
        # A beam the filter widened (past the unfiltered one's over the
        # same graph): over the filter's own graph that one would do.
        unfiltered = hnsw_params(limit, None, table, graph).ef_search
        costly = indexable and hnsw.ef_search > unfiltered
        return VectorRanking(rows, "hnsw", estimate, served, costly)
    if hnsw.max_scan_tuples < _HNSW_MAX_SCAN_TUPLES:
        # What the wide beam visited held too few passing rows: near this
        # query the filter keeps far less than its average (a filter that
        # follows the content does; at 1M synthetic chunks, 7 % of the
        # queries with a 10 % filter). Scan again, resuming the walk batch
        # after batch, before paying for an exact scan of every passing row
        # (~2 s at 1M chunks).
        ef = _ef_floor(limit, table)
        rows = _hnsw_ranking(
            cursor,
            vector,
            store_ids,
            where,
            params,
            limit,
            HnswParams(ef_search=ef, max_scan_tuples=_HNSW_MAX_SCAN_TUPLES),
        )
        if len(rows) >= limit:
            return VectorRanking(rows, "hnsw+resume", estimate, served, indexable)
    # Short: fewer rows pass than asked for (then the exact scan is small),
    # or the walk spent hnsw.max_scan_tuples under a filter far more
    # selective than estimated. Either way the exact answer is complete:
    # from the list when its part reads no more than the rest would cost
    # read from tools_chunk (a part of an ``and`` may keep far more rows
    # than the whole).
    share = _POSTING_VISIT_COST / _HNSW_VISIT_COST
    if flt is not None and driver is not None and probe.driver_rows <= share * reads:
        listed = _posting_ranking(cursor, vector, store_ids, flt, driver, limit)
        return VectorRanking(listed, "hnsw+exact", estimate, served, indexable)
    exact = _exact_ranking(cursor, vector, store_ids, where, params, limit, cap=None)
    return VectorRanking(exact or [], "hnsw+exact", estimate, served, indexable)


# BM25's term-frequency saturation and length normalisation: the usual
# values (Robertson & Zaragoza, "The Probabilistic Relevance Framework").
BM25_K1 = 1.2
BM25_B = 0.75


@dataclass
class TermStats:
    """The query's lexemes that the stores hold, rarest first, with their
    BM25 weights, from the statistics ``tools_chunk``'s triggers keep
    (migration 0007). Stores searched together count as one collection."""

    terms: list[str]
    dfs: list[int]
    idfs: list[float]
    avgdl: float

    def rarest(self, bound: int) -> list[str]:
        """The rarest terms while the chunks holding them stay within
        ``bound`` (their document frequencies summed)."""
        out: list[str] = []
        total = 0
        for term, df in zip(self.terms, self.dfs, strict=True):
            total += df
            if total > bound:
                break
            out.append(term)
        return out


def term_stats(query: str, store_ids: Sequence[str]) -> TermStats:
    # The query is parsed as the chunks were (to_tsvector, english), so its
    # lexemes are the stored ones. Prepared: 0.38 -> 0.29 ms (p50, 1M).
    with prepared_cursor() as cursor:
        cursor.execute(
            """
            WITH s AS (
                SELECT coalesce(sum(chunks), 0) AS n, coalesce(sum(lexemes), 0) AS l
                FROM tools_keyword_store WHERE vector_store_id = ANY(%s)
            )
            SELECT t.term, sum(t.df)::bigint AS df, s.n, s.l
            FROM tools_keyword_term t, s
            WHERE t.vector_store_id = ANY(%s)
              AND t.term = ANY(tsvector_to_array(to_tsvector('english', %s)))
            GROUP BY t.term, s.n, s.l
            ORDER BY df, t.term
            """,
            [list(store_ids), list(store_ids), query],
        )
        rows = cursor.fetchall()
    if not rows or not rows[0][2]:
        return TermStats([], [], [], 1.0)
    n, lexemes = int(rows[0][2]), int(rows[0][3])
    dfs = [int(r[1]) for r in rows]
    return TermStats(
        terms=[str(r[0]) for r in rows],
        dfs=dfs,
        # Lucene's BM25 idf: never negative, even for a term in every chunk.
        idfs=[math.log(1 + (n - df + 0.5) / (df + 0.5)) for df in dfs],
        avgdl=max(lexemes / n, 1.0),
    )


def tsquery_any(terms: Sequence[str]) -> str:
    """A tsquery text matching any of ``terms``, taken as lexemes as they
    are (quoted: a lexeme may hold any character)."""
    return " | ".join(
        "'" + t.replace("\\", "\\\\").replace("'", "''") + "'" for t in terms
    )


# A chunk's BM25 score for the query: ts_filter(setweight(...)) keeps only
# the query's lexemes (setweight marks them 'A'), so only those few are
# unnested; a lexeme's positions are its occurrences (PostgreSQL keeps up to
# 256), and length(...), the chunk's distinct lexemes, its length.
# ``w.v`` is the chunk's search_vector with the query's lexemes marked,
# made once per chunk by _WEIGHTED_SQL (a LATERAL subquery that OFFSET 0
# keeps from being folded into the score): the search_vector sits in TOAST
# (tools migration 0008), and every reference to the column would fetch it
# again, once for the lexemes and once per lexeme for the length.
# Parameters: idfs, terms, avgdl; then _WEIGHTED_SQL's terms.
_BM25_SQL = f"""
    (SELECT sum(
        (%s::float8[])[array_position(%s::text[], l.lexeme)]
        * greatest(cardinality(l.positions), 1) * {BM25_K1 + 1}
        / (greatest(cardinality(l.positions), 1)
           + {BM25_K1} * ({1 - BM25_B}
                          + {BM25_B} * length(w.v) / %s::float8)))
     FROM unnest(ts_filter(w.v, '{{a}}')) AS l)
"""
_WEIGHTED_SQL = (
    "CROSS JOIN LATERAL "
    "(SELECT setweight(c.search_vector, 'A', %s::text[]) AS v OFFSET 0) w"
)


def keyword_ranking(
    cursor: Any,
    stats: TermStats,
    store_ids: Sequence[str],
    where: str,
    where_params: list[Any],
    limit: int,
    pool: Sequence[int] | None = None,
) -> list[tuple[int, float]]:
    """The ``limit`` best chunks by BM25 with their scores.

    ``pool`` None: every chunk holding any of the terms is scored (exact;
    the cost grows with the matches: most of a store for a question in
    plain words). Otherwise only the chunks of ``pool`` (the vector
    ranker's nearest) and those holding the query's rarest terms, up to
    ``SEARCH_KEYWORD_RARE_ROWS`` chunks: a hybrid search's bounded cost,
    and an identifier or name that only a few chunks hold is still found
    when the vector ranker misses it.
    """
    if not stats.terms:
        return []
    match_params: list[Any]
    if pool is None:
        match, match_params = (
            "c.search_vector @@ %s::tsquery",
            [tsquery_any(stats.terms)],
        )
    else:
        rare = stats.rarest(int(getattr(settings, "SEARCH_KEYWORD_RARE_ROWS", 100)))
        match, match_params = "c.id = ANY(%s)", [list(pool)]
        if rare:
            match = f"({match} OR c.search_vector @@ %s::tsquery)"
            match_params.append(tsquery_any(rare))
    cursor.execute(
        f"""
        SELECT c.id, {_BM25_SQL} AS score
        FROM tools_chunk c {_WEIGHTED_SQL}
        WHERE {match} AND c.vector_store_id = ANY(%s) AND {where}
        ORDER BY score DESC NULLS LAST, c.id
        LIMIT %s
        """,
        [
            stats.idfs,
            stats.terms,
            stats.avgdl,
            stats.terms,
            *match_params,
            list(store_ids),
            *where_params,
            limit,
        ],
    )
    # A pooled chunk holding none of the terms scores NULL (not filtered in
    # SQL: PostgreSQL would compute the score twice, once for the filter).
    return [(int(r[0]), float(r[1])) for r in cursor.fetchall() if r[1]]


def query_rankings(
    cursor: Any,
    query: str,
    vector: list[float] | None,
    store_ids: Sequence[str],
    flt: Filter | None,
    depth: int,
    compiled: tuple[str, list[Any]],
) -> list[tuple[str, list[tuple[int, float]]]]:
    """The database part of a search for one query: the vector ranking
    (``vector`` given), the keyword ranking (``query`` non-empty), each
    ``depth`` long; ``compiled`` is ``filter_sql`` of ``flt``. With both,
    the keyword ranker scores the vector ranker's nearest
    ``SEARCH_KEYWORD_POOL`` and the rarest terms' chunks (``keyword_ranking``)."""
    where, params = compiled
    out: list[tuple[str, list[tuple[int, float]]]] = []
    pool: list[int] | None = None
    if vector is not None:
        wide = max(depth, int(getattr(settings, "SEARCH_KEYWORD_POOL", 40)))
        nearest = vector_ranking(
            cursor, vector, store_ids, flt, wide if query else depth
        )
        out.append(("vector", nearest.rows[:depth]))
        pool = [chunk_id for chunk_id, _ in nearest.rows]
    if query:
        stats = term_stats(query, store_ids)
        out.append(
            (
                "keyword",
                keyword_ranking(cursor, stats, store_ids, where, params, depth, pool),
            )
        )
    return out


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
            rankings.extend(
                query_rankings(
                    cursor,
                    query if mode != "vector" else "",
                    vectors[i] if mode != "keyword" else None,
                    vector_store_ids,
                    filters,
                    depth,
                    (where, params),
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
