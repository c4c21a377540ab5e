"""Parsing, chunking, embedding and storing files, in process (real model,
real pgvector), and the file_search plugin's contract."""

from __future__ import annotations

import io
import math
import time
from typing import Any

import pytest
from django.core.files.base import ContentFile

from tests.retrieval_samples import EXPECTED, all_samples, docx_bomb_bytes, pdf_bytes
from tools import embeddings
from tools.file_search import parsers
from tools.file_search.parsers import InvalidFile, Limits, UnsupportedFile
from tools.file_search.search import ComparisonFilter, chunks_search
from tools.models import Chunk, VectorStoreFile
from tools.runtime import ToolCallContext, ToolError, server_tool
from tools.services import vector_store as vector_store_services
from tools.services.file import FileCreateInput, file_create
from tools.services.ingestion import (
    chunks_split,
    vector_store_file_ingest,
    vector_store_files_ingest,
)
from tools.services.vector_store import (
    FileBatchCreateInput,
    VectorStoreCreateInput,
    VectorStoreFileCreateInput,
    file_batch_create,
    vector_store_create,
    vector_store_file_add,
)

LIMITS = Limits(max_bytes=1_000_000, max_chars=1_000_000, max_unzipped=2_000_000)


def _parse(name: str, data: bytes, limits: Limits = LIMITS) -> str:
    return parsers.extract_text(
        io.BytesIO(data), filename=name, mime_type="", limits=limits
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_parser_reads_a_real_sample(name: str) -> None:
    text = _parse(name, all_samples()[name])
    assert EXPECTED[name] in " ".join(text.split())


def test_html_drops_scripts_and_styles() -> None:
    text = _parse("page.html", all_samples()["page.html"])
    assert "do not index" not in text and "color:red" not in text


@pytest.mark.parametrize(
    ("name", "data", "error", "message"),
    [
        ("archive.bin", b"\x00\x01binary", UnsupportedFile, "not supported"),
        ("noext", b"hello", UnsupportedFile, "without an extension"),
        ("blank.txt", b"   \n\n  ", InvalidFile, "no text"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj garbage", InvalidFile, ""),
        ("fake.pdf", b"this is not a pdf", InvalidFile, "not a PDF"),
        ("broken.docx", b"PK\x03\x04 not really a zip", InvalidFile, "zip"),
        ("bad.json", b"{not json", InvalidFile, "JSON"),
        ("binary.txt", b"abc\x00\x00\x00def", UnsupportedFile, "binary"),
        ("big.txt", b"a" * (LIMITS.max_bytes + 1), InvalidFile, "larger"),
    ],
)
def test_bad_files_raise_the_right_error(
    name: str, data: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        _parse(name, data)
    assert message in str(caught.value)


def test_a_docx_zip_bomb_is_refused_without_inflating_it() -> None:
    bomb = docx_bomb_bytes(8 * 1024 * 1024)
    assert len(bomb) < 100_000
    started = time.monotonic()
    with pytest.raises(InvalidFile, match="unpacks"):
        _parse("bomb.docx", bomb)
    assert time.monotonic() - started < 2


def test_static_chunking_respects_size_and_overlap() -> None:
    text = " ".join(f"word{i}" for i in range(3000))
    strategy = {
        "type": "static",
        "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 50},
    }
    chunks = chunks_split(text, strategy)
    assert len(chunks) > 5
    assert all(c.tokens <= 200 for c in chunks)
    assert all(embeddings.count_tokens(c.text) <= 200 for c in chunks)
    # Consecutive chunks share their overlap: the next starts inside this one.
    first, second = chunks[0].text, chunks[1].text
    assert second.split()[0] in first.split()
    # Nothing is lost: the last word is in the last chunk.
    assert chunks[-1].text.endswith("word2999")


def test_embeddings_are_normalised_and_semantic() -> None:
    vectors = embeddings.embed(
        ["a cat sat on the mat", "a kitten rested on the rug", "stock market crash"]
    )
    assert len(vectors[0]) == embeddings.embedding_dimensions() == 384
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])


def test_many_texts_go_to_the_batch_threads_and_come_back_in_order(
    settings: Any,
) -> None:
    import torch

    settings.EMBEDDING_WORKERS = 2
    settings.EMBEDDING_BATCH_SIZE = 4
    # Lengths out of order, more batches than threads.
    texts = [f"{'turbulent flow ' * (i * 7 % 40)}sample {i}" for i in range(23)]
    before = torch.get_num_threads()
    together = embeddings.embed(texts)
    pool = embeddings._pool
    assert pool is not None and pool.workers >= 2
    # One text at a time takes the single model, not the batch threads.
    alone = [embeddings.embed([text])[0] for text in texts]
    for a, b in zip(together, alone, strict=True):
        assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.9999
    assert torch.get_num_threads() == before


def test_a_tasks_last_files_make_a_small_batch_of_their_own(
    monkeypatch: Any,
) -> None:
    from tools.services import ingestion

    monkeypatch.setattr(
        ingestion,
        "_prepare",
        lambda vsf_id, progress: (vsf_id, [ingestion.ChunkText("x", 1)]),
    )
    ids = [f"vsf_{i}" for i in range(500)]
    sizes = [
        len(batch)
        for batch in ingestion._batches(ids, ingestion.Progress(), results={})
    ]
    first, group = ingestion.FIRST_GROUP, ingestion.EMBED_GROUP
    assert sizes == [first, group, 500 - 2 * first - group, first]
    assert sum(sizes) == 500


def _file(tenant: Any, name: str, data: bytes) -> Any:
    return file_create(
        project=tenant.project,
        data=FileCreateInput(purpose="assistants"),
        content=ContentFile(data, name=name),
        filename=name,
        mime_type=None,
    )


def test_ingesting_stores_searchable_chunks_and_is_idempotent(tenant: Any) -> None:
    files = {name: _file(tenant, name, data) for name, data in all_samples().items()}
    store = vector_store_create(project=tenant.project, data=VectorStoreCreateInput())
    rows = [
        vector_store_file_add(
            vector_store=store,
            data=VectorStoreFileCreateInput(
                file_id=f.id, attributes={"name": name, "size": len(name)}
            ),
        )
        for name, f in files.items()
    ]
    for row in rows:
        assert vector_store_file_ingest(vsf_id=row.id) == "completed"
    assert vector_store_file_ingest(vsf_id=rows[0].id) == "skipped"
    for row in rows:
        row.refresh_from_db()
        assert row.status == "completed", row.last_error
        assert row.usage_bytes > 0 and row.chunk_count >= 1
    count = Chunk.objects.filter(vector_store_id=store.id).count()

    # Running a file's ingestion again replaces its chunks, never doubles them.
    VectorStoreFile.objects.filter(pk=rows[0].pk).update(status="in_progress")
    assert vector_store_file_ingest(vsf_id=rows[0].id) == "completed"
    assert Chunk.objects.filter(vector_store_id=store.id).count() == count

    hits = chunks_search(
        vector_store_ids=[store.id], queries=["When was the Harrowgate treaty signed?"]
    )
    assert hits[0].filename == "report.pdf"
    assert all(0 <= h.score <= 1 for h in hits)
    hits = chunks_search(
        vector_store_ids=[store.id],
        queries=["reactor helium"],
        filters=ComparisonFilter(type="eq", key="name", value="memo.docx"),
    )
    assert [h.filename for h in hits] == ["memo.docx"]


def test_a_bad_file_fails_with_its_reason_and_a_huge_one_is_not_read(
    tenant: Any,
) -> None:
    store = vector_store_create(project=tenant.project, data=VectorStoreCreateInput())
    cases = {
        "corrupt.pdf": (b"%PDF-1.7\n" + b"\x8f" * 500, "invalid_file"),
        "photo.bin": (b"\x89PNG\r\n\x1a\n", "unsupported_file"),
        "spaces.txt": (b"      \n", "invalid_file"),
        "bomb.docx": (docx_bomb_bytes(200 * 1024 * 1024), "invalid_file"),
    }
    for name, (data, code) in cases.items():
        f = _file(tenant, name, data)
        row = vector_store_file_add(
            vector_store=store, data=VectorStoreFileCreateInput(file_id=f.id)
        )
        started = time.monotonic()
        assert vector_store_file_ingest(vsf_id=row.id) == "failed"
        assert time.monotonic() - started < 10
        row.refresh_from_db()
        assert row.last_error is not None
        assert row.last_error["code"] == code, (name, row.last_error)
    # A "2 GB" file: refused by its recorded size before a byte is read.
    huge = _file(tenant, "huge.txt", b"tiny")
    type(huge).objects.filter(pk=huge.pk).update(bytes=2 * 1024**3)
    row = vector_store_file_add(
        vector_store=store, data=VectorStoreFileCreateInput(file_id=huge.id)
    )
    assert vector_store_file_ingest(vsf_id=row.id) == "failed"
    row.refresh_from_db()
    assert row.last_error == {
        "code": "invalid_file",
        "message": row.last_error["message"],
    }
    assert "bytes" in row.last_error["message"]


def test_the_file_search_plugin_returns_numbered_sources(tenant: Any) -> None:
    plugin = server_tool("file_search")
    assert plugin is not None
    f = _file(tenant, "report.pdf", pdf_bytes(["The Harrowgate treaty of 1642."]))
    store = vector_store_create(
        project=tenant.project, data=VectorStoreCreateInput(file_ids=[f.id])
    )
    row = VectorStoreFile.objects.get(vector_store=store)
    vector_store_file_ingest(vsf_id=row.id)
    tool = {"type": "file_search", "file_search": {"max_num_results": 5}}
    fn = plugin.engine_function(tool)
    assert fn["name"] == "file_search" and "queries" in fn["parameters"]["properties"]

    def ctx(arguments: dict[str, Any]) -> ToolCallContext:
        return ToolCallContext(
            run_id="run_x",
            thread_id="thread_x",
            project_id=tenant.project.id,
            assistant_id="asst_x",
            call_id="call_x",
            tool=tool,
            resources={"file_search": {"vector_store_ids": [store.id]}},
            attachment_file_ids=[],
            arguments=arguments,
            emit_delta=lambda _: None,
            should_stop=lambda: False,
        )

    outcome = plugin.invoke(ctx({"queries": ["Harrowgate treaty"]}), 3)
    result = outcome.details["results"][0]
    assert result["file_id"] == f.id and result["file_name"] == "report.pdf"
    assert "Harrowgate" in result["content"][0]["text"]
    assert outcome.details["ranking_options"]["ranker"] == "default_2024_08_21"
    assert outcome.sources[0].marker == 3 and outcome.sources[0].file_id == f.id
    assert "[3]" in outcome.model_output and "Harrowgate" in outcome.model_output
    with pytest.raises(ToolError):
        plugin.invoke(ctx({"queries": []}), 1)


def test_a_group_of_files_is_embedded_together_and_fails_one_by_one(
    tenant: Any,
) -> None:
    store = vector_store_create(project=tenant.project, data=VectorStoreCreateInput())
    names = {
        "one.txt": b"The first lantern burns blue.",
        "broken.pdf": b"%PDF-1.4 nothing else",
        "two.md": b"# Two\n\nThe second lantern burns green.",
    }
    rows = [
        vector_store_file_add(
            vector_store=store,
            data=VectorStoreFileCreateInput(file_id=_file(tenant, n, d).id),
        )
        for n, d in names.items()
    ]
    results = vector_store_files_ingest(vsf_ids=[r.id for r in rows])
    assert [results[r.id] for r in rows] == ["completed", "failed", "completed"]
    assert vector_store_files_ingest(vsf_ids=[r.id for r in rows]) == {
        r.id: "skipped" for r in rows
    }
    texts = sorted(
        Chunk.objects.filter(vector_store_id=store.id).values_list("text", flat=True)
    )
    assert texts == [
        "# Two\n\nThe second lantern burns green.",
        "The first lantern burns blue.",
    ]


@pytest.fixture
def sent(monkeypatch: Any) -> list[list[str]]:
    """The groups of vector store file ids sent to the ingestion workers."""
    from tools.tasks import vector_store_files_ingest_task

    groups: list[list[str]] = []
    monkeypatch.setattr(
        vector_store_files_ingest_task,
        "apply_async",
        lambda args, **_: groups.append(list(args[0])),
    )
    return groups


def test_a_batch_travels_to_the_workers_in_groups_of_similar_sizes(
    tenant: Any,
    monkeypatch: Any,
    sent: list[list[str]],
    django_capture_on_commit_callbacks: Any,
) -> None:
    # The model pads each of its batches to its longest text: files of
    # similar sizes in one task's pipeline waste less. Smallest first, a
    # group of at most GROUP_FILES; a file past SMALL_FILE_BYTES alone.
    monkeypatch.setattr(vector_store_services, "GROUP_FILES", 2)
    monkeypatch.setattr(vector_store_services, "SMALL_FILE_BYTES", 1000)
    sizes = [300, 10, 5000, 200, 20, 100]
    files = [_file(tenant, f"f{n}.txt", b"x" * n) for n in sizes]
    store = vector_store_create(project=tenant.project, data=VectorStoreCreateInput())
    with django_capture_on_commit_callbacks(execute=True):
        file_batch_create(
            vector_store=store,
            data=FileBatchCreateInput(file_ids=[f.id for f in files]),
        )
    size_of = dict(
        VectorStoreFile.objects.filter(vector_store=store).values_list(
            "id", "file__bytes"
        )
    )
    assert sorted([size_of[i] for i in group] for group in sent) == [
        [10, 20],
        [100, 200],
        [300],
        [5000],
    ]


def test_a_batch_adds_new_files_once_and_re_adds_the_store_s_own(
    tenant: Any, sent: list[list[str]], django_capture_on_commit_callbacks: Any
) -> None:
    done, broken, new = (_file(tenant, f"{n}.txt", b"lanterns") for n in "abc")
    store = vector_store_create(project=tenant.project, data=VectorStoreCreateInput())
    with django_capture_on_commit_callbacks(execute=True):
        file_batch_create(
            vector_store=store,
            data=FileBatchCreateInput(file_ids=[done.id, broken.id]),
        )
    assert sum(map(len, sent)) == 2
    rows = VectorStoreFile.objects.filter(vector_store=store)
    rows.filter(file_id=done.id).update(status="completed", attempts=1)
    rows.filter(file_id=broken.id).update(
        status="failed", attempts=5, last_error={"code": "server_error"}
    )
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        batch = file_batch_create(
            vector_store=store,
            data=FileBatchCreateInput(
                files=[
                    {"file_id": new.id},
                    {"file_id": done.id, "attributes": {"k": 1}},
                    {"file_id": broken.id},
                    {"file_id": new.id, "attributes": {"k": 2}},
                ]
            ),
        )
    by_file = {row.file_id: row for row in rows.all()}
    assert len(by_file) == 3
    assert {row.batch_id for row in by_file.values()} == {batch.id}
    # A completed file is not ingested again; its new attributes apply.
    assert by_file[done.id].status == "completed"
    assert by_file[done.id].attributes == {"k": 1}
    # A failed one starts over; a file named twice counts once, as first named.
    assert by_file[broken.id].status == "in_progress"
    assert by_file[broken.id].attempts == 0
    assert by_file[broken.id].last_error is None
    assert by_file[new.id].attributes == {}
    assert sorted(i for group in sent for i in group) == sorted(
        [by_file[broken.id].id, by_file[new.id].id]
    )


def test_the_ingest_command_loads_a_folder_into_a_store(
    tenant: Any, tmp_path: Any
) -> None:
    from django.core.management import call_command

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# A\n\nThe Corvid engine idles at 900 rpm.")
    (tmp_path / "sub" / "b.txt").write_text("The Marlow canal freezes in January.")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01")
    out = io.StringIO()
    call_command(
        "vector_store_ingest",
        str(tmp_path),
        "--project",
        tenant.project.id,
        "--name",
        "Folder",
        stdout=out,
        stderr=io.StringIO(),
    )
    store_id = out.getvalue().split(":")[0]
    rows = VectorStoreFile.objects.filter(vector_store_id=store_id)
    assert sorted(rows.values_list("file__filename", "status")) == [
        ("a.md", "completed"),
        ("b.txt", "completed"),
        ("c.bin", "failed"),
    ]
    assert "failed c.bin" in out.getvalue()
    hits = chunks_search(vector_store_ids=[store_id], queries=["canal freezing"])
    assert hits[0].filename == "b.txt"
    # Run again: nothing new is added.
    call_command(
        "vector_store_ingest",
        str(tmp_path),
        "--vector-store",
        store_id,
        "--project",
        tenant.project.id,
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert rows.count() == 3


def test_the_pipeline_embeds_batch_by_batch_and_skips_a_file_cancelled_meanwhile(
    tenant: Any, monkeypatch: Any
) -> None:
    from tools.services import ingestion

    # One file per batch: three batches through the pipeline (embedding in
    # the background thread, storing on this one).
    monkeypatch.setattr(ingestion, "EMBED_GROUP", 1)
    store = vector_store_create(project=tenant.project, data=VectorStoreCreateInput())
    texts = {
        "a.txt": b"The Corvid engine idles at 900 rpm.",
        "b.txt": b"The Marlow canal freezes in January.",
        "c.txt": b"The Harrowgate bell rings twice at noon.",
    }
    rows = {
        name: vector_store_file_add(
            vector_store=store,
            data=VectorStoreFileCreateInput(
                file_id=_file(tenant, name, data).id, attributes={"name": name}
            ),
        )
        for name, data in texts.items()
    }
    prepare = ingestion._prepare

    def prepare_then_cancel_b(vsf_id: str, progress: Any) -> Any:
        outcome = prepare(vsf_id, progress)
        if vsf_id == rows["b.txt"].id:
            # Cancelled after it was read, before its batch is embedded.
            VectorStoreFile.objects.filter(pk=vsf_id).update(status="cancelled")
        return outcome

    monkeypatch.setattr(ingestion, "_prepare", prepare_then_cancel_b)
    results = vector_store_files_ingest(vsf_ids=[r.id for r in rows.values()])
    assert results == {
        rows["a.txt"].id: "completed",
        rows["b.txt"].id: "skipped",
        rows["c.txt"].id: "completed",
    }
    chunks = Chunk.objects.filter(vector_store_id=store.id).order_by("file_id")
    assert sorted((c.text, c.attributes["name"], c.position) for c in chunks) == [
        (texts["a.txt"].decode(), "a.txt", 0),
        (texts["c.txt"].decode(), "c.txt", 0),
    ]
    for chunk in chunks:
        # The vector stored is the text's own embedding (rows are not
        # shifted between batches).
        want = embeddings.embed([chunk.text])[0]
        assert math.isclose(
            sum(a * b for a, b in zip(chunk.embedding, want, strict=True)),
            1.0,
            abs_tol=1e-4,
        )
    done = VectorStoreFile.objects.get(pk=rows["c.txt"].id)
    assert done.status == "completed" and done.chunk_count == 1
