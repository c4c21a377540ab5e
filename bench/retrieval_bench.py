"""Retrieval: search quality, HNSW latency and recall at scale, ingestion
throughput. Run with ``make bench-retrieval`` (the launcher provides
PostgreSQL and Redis)::

    DATA_DIR=/tmp/agents-retrievalbench AGENTS_ENGINE=off \\
        .venv/bin/python -m core.stack exec -- .venv/bin/python \\
        bench/retrieval_bench.py --collection ../shared/data/cranfield

Phases (``--phases``, all by default):

quality     the collection's documents are uploaded through the API, one
            file each, and ingested by a real Celery worker (the platform's
            own parse → chunk → embed → store pipeline) into one vector
            store; then every query is searched through
            ``POST /v1/vector_stores/{id}/search`` with each ranker (vector
            only, keyword only, hybrid); nDCG@10 and recall@10 against the
            judgments. Ingestion throughput (chunks/s, from the batch's
            creation to its last file completed) is compared with the raw
            embedding throughput of the same model on the same chunk texts,
            measured in this process right after.
scale       synthetic chunks are inserted straight into the chunks table
            (embedding a million texts is out of reach on 2 cores): each is
            the sum of two real document embeddings from the quality phase
            plus a little noise, normalised, with
            an attribute ``bucket`` in 0..99. For each size (``--sizes``) the
            database part of a search (the HNSW query exactly as
            ``tools.file_search.search`` runs it) is timed for the real
            queries, unfiltered and with filters keeping 10 % and 1 % of the
            chunks, and recall@10 is measured against exact search (the same
            query with index scans disabled).

A collection is a directory in the Cranfield layout: ``corpus.jsonl``
(``{"_id", "title", "text"}``), ``queries.jsonl`` (``{"_id", "text"}``) and
``qrels.tsv`` (``query-id, corpus-id, score`` with a header row). Figures are
printed and written to ``bench/results/retrieval-<timestamp>.json``; targets
are reported as met or missed, never asserted.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import math
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench.api_bench import (  # noqa: E402
    RESULTS_DIR,
    Server,
    django_env,
    migrate,
    tenant_create,
)
from core.stack.proc import die_with_parent  # noqa: E402

SETTINGS = "bench.settings"
print = functools.partial(print, flush=True)  # noqa: A001  (progress under a pipe)
MODES = ("vector", "keyword", "hybrid")


# --------------------------------------------------------------------------
# The collection


@dataclass
class Collection:
    docs: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def collection_load(path: Path, limit_queries: int | None) -> Collection:
    docs = {}
    with open(path / "corpus.jsonl") as f:
        for line in f:
            row = json.loads(line)
            title, text = row.get("title") or "", row.get("text") or ""
            # Cranfield abstracts usually repeat the title; an empty abstract
            # (two docs) still has its title.
            body = text if text.startswith(title) else f"{title}\n{text}"
            docs[str(row["_id"])] = body.strip() or title or "(empty)"
    queries = {}
    with open(path / "queries.jsonl") as f:
        for line in f:
            row = json.loads(line)
            queries[str(row["_id"])] = row["text"]
    qrels: dict[str, dict[str, int]] = {}
    with open(path / "qrels.tsv") as f:
        next(f)
        for line in f:
            qid, did, score = line.split()
            if int(score) > 0:
                qrels.setdefault(qid, {})[did] = int(score)
    ids = [q for q in queries if q in qrels]
    if limit_queries:
        ids = ids[:limit_queries]
    return Collection(docs, {q: queries[q] for q in ids}, qrels)


def ndcg_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall_at(ranked: list[str], relevant: dict[str, int], k: int = 10) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant) if relevant else 0.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[index]


# --------------------------------------------------------------------------
# Processes


class Worker:
    """A Celery worker on the ingestion queue only, one process."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "-Q",
                    "ingestion",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "WARNING",
                    "--without-mingle",
                    "--without-gossip",
                    "--hostname",
                    f"retrieval-bench-{os.getpid()}@%h",
                ],
                cwd=BASE_DIR,
                env=django_env(SETTINGS),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),
            )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------
# Quality and ingestion throughput


@dataclass
class QualityReport:
    documents: int = 0
    chunks: int = 0
    upload_seconds: float = 0.0
    ingest_seconds: float = 0.0
    ingest_chunks_per_s: float = 0.0
    raw_embed_chunks_per_s: float = 0.0
    ingest_ratio: float = 0.0
    failed_files: int = 0
    modes: dict[str, dict[str, float]] = field(default_factory=dict)
    store_id: str = ""


def _wait_store(sdk: Any, store_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        store = sdk.vector_stores.retrieve(store_id)
        if store.file_counts.in_progress == 0:
            return store
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingestion still running after {timeout}s")
        time.sleep(0.25)


def quality_phase(
    sdk: Any, col: Collection, *, ingest_timeout: float, uploaders: int
) -> QualityReport:
    report = QualityReport(documents=len(col.docs))

    # Warm-up: the worker imports torch and loads the model on its first
    # file; that one-off cost is not ingestion throughput.
    warm = sdk.vector_stores.create(name="warm-up")
    warm_file = sdk.files.create(
        file=("warm.txt", io.BytesIO(b"warm up the embedding model")),
        purpose="assistants",
    )
    sdk.vector_stores.files.create(vector_store_id=warm.id, file_id=warm_file.id)
    _wait_store(sdk, warm.id, 300)

    started = time.monotonic()

    def upload(item: tuple[str, str]) -> tuple[str, str]:
        doc_id, text = item
        f = sdk.files.create(
            file=(f"{doc_id}.txt", io.BytesIO(text.encode())), purpose="assistants"
        )
        return doc_id, f.id

    with ThreadPoolExecutor(uploaders) as pool:
        file_of = dict(pool.map(upload, col.docs.items()))
    report.upload_seconds = time.monotonic() - started
    print(f"  uploaded {len(file_of)} files in {report.upload_seconds:.1f}s")

    store = sdk.vector_stores.create(name="retrieval-bench")
    report.store_id = store.id
    ids = list(file_of.values())
    started = time.monotonic()
    for i in range(0, len(ids), 500):
        sdk.vector_stores.file_batches.create(
            vector_store_id=store.id,
            files=[
                {"file_id": fid, "attributes": {"doc": name}}
                for name, fid in list(file_of.items())[i : i + 500]
            ],
        )
    final = _wait_store(sdk, store.id, ingest_timeout)
    report.ingest_seconds = time.monotonic() - started
    report.failed_files = final.file_counts.failed

    from tools.embeddings import embed
    from tools.models import Chunk

    texts = list(
        Chunk.objects.filter(vector_store_id=store.id).values_list("text", flat=True)
    )
    report.chunks = len(texts)
    report.ingest_chunks_per_s = report.chunks / report.ingest_seconds
    print(
        f"  ingested {report.chunks} chunks in {report.ingest_seconds:.1f}s "
        f"({report.ingest_chunks_per_s:.1f} chunks/s, "
        f"{report.failed_files} files failed)"
    )
    embed(texts[:8])  # load the model in this process first
    started = time.monotonic()
    embed(texts)
    raw_seconds = time.monotonic() - started
    report.raw_embed_chunks_per_s = len(texts) / raw_seconds
    report.ingest_ratio = report.ingest_chunks_per_s / report.raw_embed_chunks_per_s
    print(
        f"  raw embedding of the same chunks: {report.raw_embed_chunks_per_s:.1f} "
        f"chunks/s; ingestion/raw = {report.ingest_ratio:.2f}"
    )

    doc_of_file = {fid: doc for doc, fid in file_of.items()}
    for mode in MODES:
        ndcgs, recalls, latencies = [], [], []
        for qid, text in col.queries.items():
            t0 = time.monotonic()
            page = sdk.vector_stores.search(
                store.id,
                query=text,
                max_num_results=10,
                ranking_options={"ranker": mode if mode != "hybrid" else "auto"},
            )
            latencies.append((time.monotonic() - t0) * 1000)
            ranked: list[str] = []
            for hit in page.data:
                doc = doc_of_file.get(hit.file_id)
                if doc is not None and doc not in ranked:
                    ranked.append(doc)
            ndcgs.append(ndcg_at(ranked, col.qrels[qid]))
            recalls.append(recall_at(ranked, col.qrels[qid]))
        report.modes[mode] = {
            "ndcg@10": round(statistics.mean(ndcgs), 4),
            "recall@10": round(statistics.mean(recalls), 4),
            "api_p50_ms": round(percentile(latencies, 50), 1),
            "api_p95_ms": round(percentile(latencies, 95), 1),
        }
        print(f"  {mode:8s} {report.modes[mode]}")
    return report


# --------------------------------------------------------------------------
# Scale: HNSW latency and recall against exact search


@dataclass
class ScaleRow:
    size: int
    filter: str
    selectivity: float
    p50_ms: float
    p95_ms: float
    recall_at_10: float
    mean_rows: float
    exact_p50_ms: float


def _vector_sql(where: str) -> str:
    return f"""
        WITH hits AS MATERIALIZED (
            SELECT id, embedding <=> %s::vector AS distance
            FROM tools_chunk
            WHERE vector_store_id = ANY(%s) AND {where}
            ORDER BY distance
            LIMIT %s
        )
        SELECT id FROM hits ORDER BY distance
    """


def scale_fill(store_id: str, target: int, base_store: str, noise: float) -> float:
    """Insert synthetic chunks into ``store_id`` until it holds ``target``;
    returns the seconds it took."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM tools_chunk WHERE vector_store_id = %s", [store_id]
        )
        have = int(cursor.fetchone()[0])
        cursor.execute(
            "SELECT id FROM tools_vectorstorefile WHERE vector_store_id = %s",
            [store_id],
        )
        vsf_id = cursor.fetchone()[0]
    started = time.monotonic()
    step = 20_000
    while have < target:
        n = min(step, target - have)
        with connection.cursor() as cursor:
            # Each row: the sum of two real document embeddings (a pair of
            # its own, so no two rows share a direction, and rows lie among
            # real text's embeddings rather than in isotropic noise), plus
            # uniform noise, normalised. The noise array is built per row
            # (it refers to g).
            cursor.execute(
                """
                WITH base AS (
                    SELECT row_number() OVER (ORDER BY id) - 1 AS k, embedding
                    FROM tools_chunk WHERE vector_store_id = %s
                ), nb AS (SELECT count(*) AS n FROM base)
                INSERT INTO tools_chunk (vector_store_id, vector_store_file_id,
                    file_id, position, text, tokens, attributes, embedding)
                SELECT %s, %s, 'synthetic', g, 'synthetic chunk', 2,
                    jsonb_build_object('bucket', g %% 100),
                    l2_normalize(a.embedding + b.embedding + (
                        SELECT array_agg((random() - 0.5) * %s + 0 * g + 0 * i)
                        FROM generate_series(1, 384) AS i
                    )::vector)
                FROM generate_series(%s, %s) AS g
                JOIN nb ON TRUE
                JOIN base a ON a.k = g %% nb.n
                JOIN base b ON b.k = (g %% nb.n + 1 + (g / nb.n) * 37) %% nb.n
                """,
                [base_store, store_id, vsf_id, noise, have, have + n - 1],
            )
        have += n
        rate = (have) / max(time.monotonic() - started, 1e-9)
        print(f"    {have} chunks ({rate:.0f}/s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE tools_chunk")
    return time.monotonic() - started


def scale_measure(
    store_id: str,
    size: int,
    vectors: list[list[float]],
    exact_queries: int,
    ef_search: int,
) -> list[ScaleRow]:
    from django.db import connection, transaction

    filters = [
        ("none", 1.0, "TRUE", []),
        ("10%", 0.1, "(attributes -> %s) < %s::jsonb", ["bucket", "10"]),
        ("1%", 0.01, "(attributes -> %s) = %s::jsonb", ["bucket", "7"]),
    ]
    rows = []
    for name, selectivity, where, params in filters:
        sql = _vector_sql(where)
        latencies, found = [], []
        approx: list[list[int]] = []
        for vector in vectors:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL hnsw.ef_search = %s", [ef_search])
                cursor.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
                t0 = time.perf_counter()
                cursor.execute(sql, [str(vector), [store_id], *params, 10])
                ids = [r[0] for r in cursor.fetchall()]
                latencies.append((time.perf_counter() - t0) * 1000)
            approx.append(ids)
            found.append(len(ids))
        recalls, exact_ms = [], []
        for vector, ids in list(zip(vectors, approx, strict=True))[:exact_queries]:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_indexscan = off")
                cursor.execute("SET LOCAL enable_bitmapscan = off")
                t0 = time.perf_counter()
                cursor.execute(sql, [str(vector), [store_id], *params, 10])
                truth = [r[0] for r in cursor.fetchall()]
                exact_ms.append((time.perf_counter() - t0) * 1000)
            if truth:
                recalls.append(len(set(ids) & set(truth)) / len(truth))
        row = ScaleRow(
            size=size,
            filter=name,
            selectivity=selectivity,
            p50_ms=round(percentile(latencies, 50), 2),
            p95_ms=round(percentile(latencies, 95), 2),
            recall_at_10=round(statistics.mean(recalls), 4) if recalls else 0.0,
            mean_rows=round(statistics.mean(found), 2),
            exact_p50_ms=round(percentile(exact_ms, 50), 1),
        )
        print(f"  {row}", flush=True)
        rows.append(row)
    return rows


def scale_phase(
    project_id: str,
    base_store: str,
    col: Collection,
    sizes: list[int],
    *,
    exact_queries: int,
    ef_search: int,
    noise: float,
) -> list[ScaleRow]:
    from core.models import Project
    from tools.embeddings import embed
    from tools.models import File, VectorStore, VectorStoreFile

    project = Project.objects.get(pk=project_id)
    if base_store == "latest":
        base_store = (
            VectorStore.objects.filter(name="retrieval-bench")
            .order_by("-seq")
            .values_list("id", flat=True)
            .first()
        ) or ""
    # An earlier run's synthetic chunks would change the graph measured here:
    # drop them, and rebuild the index without their dead entries.
    from django.db import connection

    if VectorStore.objects.filter(name="synthetic").exists():
        VectorStore.objects.filter(name="synthetic").delete()
        with connection.cursor() as cursor:
            cursor.execute("REINDEX INDEX chunk_embedding_hnsw")
    store = VectorStore.objects.create(project=project, name="synthetic")
    file = File.objects.create(
        project=project, filename="synthetic.txt", purpose="assistants", bytes=1
    )
    VectorStoreFile.objects.create(
        vector_store=store, file=file, status="completed", chunking_strategy={}
    )
    vectors = embed(list(col.queries.values()))
    rows: list[ScaleRow] = []
    for size in sorted(sizes):
        print(f"  filling to {size} chunks", flush=True)
        seconds = scale_fill(store.id, size, base_store, noise)
        print(f"  filled in {seconds:.0f}s", flush=True)
        rows.extend(scale_measure(store.id, size, vectors, exact_queries, ef_search))
    return rows


# --------------------------------------------------------------------------


def targets(quality: QualityReport | None, scale: list[ScaleRow]) -> list[str]:
    out = []
    if quality is not None and quality.modes:
        m = quality.modes
        hybrid = m["hybrid"]["ndcg@10"]
        best_single = max(m["vector"]["ndcg@10"], m["keyword"]["ndcg@10"])
        out.append(
            f"hybrid nDCG@10 {hybrid} beats both single rankers "
            f"(best {best_single}): {'met' if hybrid > best_single else 'MISSED'}"
        )
        out.append(
            f"ingestion/raw embedding throughput {quality.ingest_ratio:.2f} >= 0.9: "
            f"{'met' if quality.ingest_ratio >= 0.9 else 'MISSED'}"
        )
    for row in scale:
        ok = row.p95_ms < 10 and row.recall_at_10 >= 0.95
        out.append(
            f"{row.size} chunks, filter {row.filter}: p95 {row.p95_ms} ms < 10, "
            f"recall@10 {row.recall_at_10} >= 0.95: {'met' if ok else 'MISSED'}"
        )
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--collection",
        type=Path,
        default=BASE_DIR.parent / "shared" / "data" / "cranfield",
    )
    parser.add_argument("--phases", default="quality,scale")
    parser.add_argument(
        "--sizes", default="100000", help="chunk counts for the scale phase"
    )
    parser.add_argument("--limit-queries", type=int, default=None)
    parser.add_argument("--exact-queries", type=int, default=50)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.03)
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument(
        "--base-store",
        help="skip the quality phase: take the scale phase's base vectors from "
        "this vector store, or 'latest' (the last quality phase's in the same "
        "DATA_DIR)",
    )
    parser.add_argument("--ingest-timeout", type=float, default=1800)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    phases = set(args.phases.split(","))
    col = collection_load(args.collection, args.limit_queries)
    print(
        f"collection {args.collection}: {len(col.docs)} documents, "
        f"{len(col.queries)} judged queries"
    )
    migrate(SETTINGS)
    raw_key = tenant_create(SETTINGS)
    # The SDK logs every request at INFO under Django's root logger.
    for name in ("httpx", "httpx2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    server = Server(
        workers=1,
        app="config.asgi:application",
        settings=SETTINGS,
        log_path=data_dir / "retrieval-bench-server.log",
    )
    worker = Worker(data_dir / "retrieval-bench-worker.log")
    quality: QualityReport | None = None
    scale: list[ScaleRow] = []
    try:
        server.start()
        worker.start()
        import openai

        sdk = openai.OpenAI(
            base_url=f"http://127.0.0.1:{server.port}/v1",
            api_key=raw_key,
            max_retries=0,
            timeout=120,
        )
        from core.models import ApiKey, hash_key

        project_id = ApiKey.objects.get(hashed_key=hash_key(raw_key)).project_id
        base_store = args.base_store
        if "quality" in phases and not base_store:
            print("quality and ingestion:")
            quality = quality_phase(
                sdk, col, ingest_timeout=args.ingest_timeout, uploaders=args.uploaders
            )
            base_store = quality.store_id
        worker.stop()
        if "scale" in phases:
            print("scale:")
            random.seed(0)
            if not base_store:
                raise SystemExit("the scale phase needs --base-store or quality")
            scale = scale_phase(
                project_id,
                base_store,
                col,
                [int(s) for s in args.sizes.split(",") if s],
                exact_queries=args.exact_queries,
                ef_search=args.ef_search,
                noise=args.noise,
            )
    finally:
        worker.stop()
        server.stop()
    lines = targets(quality, scale)
    print("targets:")
    for line in lines:
        print(f"  {line}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"retrieval-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps(
            {
                "collection": str(args.collection),
                "quality": vars(quality) if quality else None,
                "scale": [vars(r) for r in scale],
                "targets": lines,
            },
            indent=2,
        )
    )
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
