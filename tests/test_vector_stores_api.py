"""Vector stores, their files, file batches and search, through the official
SDK against the real server and a real Celery worker (real embeddings, real
pgvector)."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from typing import Any

import httpx
import openai
import pytest
from django.utils import timezone

from tests.conftest import TEST_MODEL, error_of
from tests.retrieval_samples import all_samples, docx_bomb_bytes
from tools.models import Chunk, File, VectorStore
from tools.services.vector_store import vector_stores_expire_due

pytestmark = pytest.mark.live

POLL_MS = 100


@pytest.fixture
def worker(live_worker: Any) -> Any:
    return live_worker


def _upload(sdk: Any, name: str, data: bytes) -> str:
    return str(sdk.files.create(file=(name, io.BytesIO(data)), purpose="assistants").id)


def _wait_file(sdk: Any, store_id: str, file_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        row = sdk.vector_stores.files.retrieve(file_id, vector_store_id=store_id)
        if row.status != "in_progress":
            return row
        assert time.monotonic() < deadline, "ingestion stuck"
        time.sleep(0.2)


def _db(django_db_blocker: Any, fn: Any) -> Any:
    with django_db_blocker.unblock():
        return fn()


def test_upload_and_poll_then_search_finds_the_right_file(
    sdk: Any, worker: Any
) -> None:
    store = sdk.vector_stores.create(name="Library", metadata={"team": "docs"})
    assert store.object == "vector_store" and store.id.startswith("vs_")
    assert store.status == "completed" and store.file_counts.total == 0
    samples = all_samples()
    batch = sdk.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id,
        files=[(name, io.BytesIO(data)) for name, data in samples.items()],
        poll_interval_ms=POLL_MS,
    )
    assert batch.object == "vector_store.files_batch"
    assert batch.status == "completed"
    assert batch.file_counts.completed == len(samples)
    assert batch.file_counts.total == len(samples)

    store = sdk.vector_stores.retrieve(store.id)
    assert store.status == "completed"
    assert store.file_counts.completed == len(samples)
    assert store.usage_bytes > 0
    assert store.metadata == {"team": "docs"}

    page = sdk.vector_stores.search(
        store.id, query="When was the Harrowgate treaty signed?", max_num_results=3
    )
    results = list(page)
    assert 1 <= len(results) <= 3
    assert results[0].filename == "report.pdf"
    assert "Harrowgate" in results[0].content[0].text
    assert all(0 <= r.score <= 1 for r in results)
    assert [r.score for r in results] == sorted(
        (r.score for r in results), reverse=True
    )

    # Several queries at once, each ranker alone (the server's extension).
    for ranker in ("vector", "keyword", "auto"):
        hits = list(
            sdk.vector_stores.search(
                store.id,
                query=["Velmora comet", "how often does the comet return"],
                ranking_options={"ranker": ranker},  # type: ignore[typeddict-item]
            )
        )
        assert hits[0].filename == "page.html", ranker

    # score_threshold drops weak results.
    strict = list(
        sdk.vector_stores.search(
            store.id,
            query="Harrowgate treaty",
            ranking_options={"score_threshold": 0.99},
        )
    )
    assert all(r.score >= 0.99 for r in strict)

    # The file's chunks, in order.
    memo = next(
        f
        for f in sdk.vector_stores.file_batches.list_files(
            batch.id, vector_store_id=store.id
        )
        if sdk.files.retrieve(f.id).filename == "memo.docx"
    )
    content = list(sdk.vector_stores.files.content(memo.id, vector_store_id=store.id))
    assert "Pellucid fund" in " ".join(c.text or "" for c in content)


def test_file_attributes_filter_search(sdk: Any, worker: Any) -> None:
    store = sdk.vector_stores.create(name="Filtered")
    docs = {
        "alpha.txt": ({"region": "north", "year": 2020, "public": True}, "north"),
        "beta.txt": ({"region": "south", "year": 2022, "public": False}, "south"),
        "gamma.txt": ({"region": "east", "year": 2024, "public": True}, "east"),
    }
    for name, (attributes, word) in docs.items():
        file_id = _upload(sdk, name, f"Quarterly grain report for the {word}.".encode())
        row = sdk.vector_stores.files.create_and_poll(
            file_id=file_id,
            vector_store_id=store.id,
            attributes=attributes,
            poll_interval_ms=POLL_MS,
        )
        assert row.status == "completed" and row.attributes == attributes

    def names(flt: dict[str, Any]) -> set[str]:
        hits = sdk.vector_stores.search(
            store.id, query="grain report", filters=flt, max_num_results=10
        )
        return {h.filename for h in hits}

    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"type": "eq", "key": "region", "value": "north"}, {"alpha.txt"}),
        ({"type": "ne", "key": "region", "value": "north"}, {"beta.txt", "gamma.txt"}),
        ({"type": "gt", "key": "year", "value": 2020}, {"beta.txt", "gamma.txt"}),
        ({"type": "gte", "key": "year", "value": 2022}, {"beta.txt", "gamma.txt"}),
        ({"type": "lt", "key": "year", "value": 2022}, {"alpha.txt"}),
        ({"type": "lte", "key": "year", "value": 2022}, {"alpha.txt", "beta.txt"}),
        (
            {"type": "in", "key": "region", "value": ["north", "east"]},
            {"alpha.txt", "gamma.txt"},
        ),
        ({"type": "nin", "key": "region", "value": ["north", "east"]}, {"beta.txt"}),
        ({"type": "eq", "key": "public", "value": False}, {"beta.txt"}),
        (
            {
                "type": "and",
                "filters": [
                    {"type": "eq", "key": "public", "value": True},
                    {"type": "gt", "key": "year", "value": 2021},
                ],
            },
            {"gamma.txt"},
        ),
        (
            {
                "type": "or",
                "filters": [
                    {"type": "eq", "key": "region", "value": "south"},
                    {"type": "lt", "key": "year", "value": 2021},
                ],
            },
            {"alpha.txt", "beta.txt"},
        ),
        ({"type": "eq", "key": "missing", "value": "x"}, set()),
    ]
    for flt, expected in cases:
        assert names(flt) == expected, flt

    # New attributes reach the filters at once.
    gamma = next(
        f.id
        for f in sdk.vector_stores.files.list(store.id)
        if f.attributes and f.attributes.get("region") == "east"
    )
    updated = sdk.vector_stores.files.update(
        gamma, vector_store_id=store.id, attributes={"region": "north"}
    )
    assert updated.attributes == {"region": "north"}
    assert names({"type": "eq", "key": "region", "value": "north"}) == {
        "alpha.txt",
        "gamma.txt",
    }

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.vector_stores.search(
            store.id,
            query="x",
            filters={"type": "in", "key": "region", "value": "north"},
        )
    assert error_of(caught.value)["param"] == "filters"


def test_vector_store_files_add_list_delete_and_readd(
    sdk: Any, worker: Any, django_db_blocker: Any
) -> None:
    store = sdk.vector_stores.create(name="Files")
    good = _upload(sdk, "good.md", b"# Notes\n\nThe Ostrava mill grinds barley.")
    bad = _upload(sdk, "bad.pdf", b"%PDF-1.4 broken beyond repair")
    odd = _upload(sdk, "image.xyz", b"\x01\x02\x03")
    for file_id in (good, bad, odd):
        row = sdk.vector_stores.files.create(file_id=file_id, vector_store_id=store.id)
        assert row.id == file_id and row.object == "vector_store.file"
        assert row.chunking_strategy.type == "static"
    rows = {f: _wait_file(sdk, store.id, f) for f in (good, bad, odd)}
    assert rows[good].status == "completed" and rows[good].last_error is None
    assert rows[bad].status == "failed"
    assert rows[bad].last_error.code == "invalid_file"
    assert rows[odd].status == "failed"
    assert rows[odd].last_error.code == "unsupported_file"

    completed = sdk.vector_stores.files.list(store.id, filter="completed")
    assert [f.id for f in completed] == [good]
    failed = sdk.vector_stores.files.list(store.id, filter="failed", order="asc")
    assert [f.id for f in failed] == [bad, odd]
    # Pages by file id.
    first = sdk.vector_stores.files.list(store.id, limit=1, order="asc")
    assert [f.id for f in first.data] == [good] and first.has_more
    second = sdk.vector_stores.files.list(store.id, limit=1, order="asc", after=good)
    assert [f.id for f in second.data] == [bad]

    store = sdk.vector_stores.retrieve(store.id)
    assert (store.file_counts.completed, store.file_counts.failed) == (1, 2)
    assert store.file_counts.total == 3

    # Re-adding is idempotent: same row, no second copy of the chunks.
    chunks = _db(
        django_db_blocker,
        lambda: Chunk.objects.filter(vector_store_id=store.id).count(),
    )
    again = sdk.vector_stores.files.create(file_id=good, vector_store_id=store.id)
    assert again.status == "completed"
    assert sdk.vector_stores.retrieve(store.id).file_counts.total == 3
    assert (
        _db(
            django_db_blocker,
            lambda: Chunk.objects.filter(vector_store_id=store.id).count(),
        )
        == chunks
    )

    deleted = sdk.vector_stores.files.delete(good, vector_store_id=store.id)
    assert deleted.deleted and deleted.id == good
    assert deleted.object == "vector_store.file.deleted"
    store = sdk.vector_stores.retrieve(store.id)
    assert store.file_counts.total == 2 and store.usage_bytes == 0
    assert (
        _db(
            django_db_blocker,
            lambda: Chunk.objects.filter(vector_store_id=store.id).count(),
        )
        == 0
    )
    # The file itself remains.
    assert sdk.files.retrieve(good).id == good
    with pytest.raises(openai.NotFoundError):
        sdk.vector_stores.files.retrieve(good, vector_store_id=store.id)


def test_bad_files_fail_alone_and_quickly_in_a_batch(
    sdk: Any, worker: Any, django_db_blocker: Any, live_tenant: Any
) -> None:
    store = sdk.vector_stores.create(name="Mixed")
    ids = {
        "ok.txt": _upload(sdk, "ok.txt", b"The Kestrel valve stays shut."),
        "corrupt.pdf": _upload(sdk, "corrupt.pdf", b"%PDF-1.5\n" + b"\xff" * 300),
        "blob.dat": _upload(sdk, "blob.dat", b"\x00" * 64),
        "blank.md": _upload(sdk, "blank.md", b"\n\n   \n"),
        "bomb.docx": _upload(sdk, "bomb.docx", docx_bomb_bytes(300 * 1024 * 1024)),
    }

    def huge() -> str:
        # A "2 GB" text file: its recorded size alone refuses it.
        file = File.objects.get(pk=ids["ok.txt"])
        copy = File.objects.create(
            project=live_tenant.project,
            filename="huge.txt",
            purpose="assistants",
            bytes=2 * 1024**3,
            content=file.content.name,
        )
        return copy.id

    ids["huge.txt"] = _db(django_db_blocker, huge)
    started = time.monotonic()
    batch = sdk.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id,
        file_ids=list(ids.values()),
        poll_interval_ms=POLL_MS,
    )
    assert time.monotonic() - started < 120
    assert batch.file_counts.completed == 1
    assert batch.file_counts.failed == len(ids) - 1
    codes = {
        f.id: (f.status, f.last_error.code if f.last_error else None)
        for f in sdk.vector_stores.file_batches.list_files(
            batch.id, vector_store_id=store.id
        )
    }
    assert codes[ids["ok.txt"]] == ("completed", None)
    assert codes[ids["blob.dat"]] == ("failed", "unsupported_file")
    for name in ("corrupt.pdf", "blank.md", "bomb.docx", "huge.txt"):
        assert codes[ids[name]] == ("failed", "invalid_file"), name
    hits = list(sdk.vector_stores.search(store.id, query="Kestrel valve"))
    assert [h.file_id for h in hits] == [ids["ok.txt"]]


def test_batches_cancel_and_validate(sdk: Any, worker: Any) -> None:
    store = sdk.vector_stores.create(name="Batches")
    file_ids = [
        _upload(sdk, f"n{i}.txt", f"Note {i} about lanterns.".encode())
        for i in range(3)
    ]
    batch = sdk.vector_stores.file_batches.create(
        vector_store_id=store.id,
        files=[
            {"file_id": file_ids[0], "attributes": {"n": 0}},
            {
                "file_id": file_ids[1],
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 0},
                },
            },
        ],
    )
    assert batch.id.startswith("vsfb_")
    cancelled = sdk.vector_stores.file_batches.cancel(
        batch.id, vector_store_id=store.id
    )
    assert cancelled.status in ("cancelled", "completed")
    fetched = sdk.vector_stores.file_batches.retrieve(
        batch.id, vector_store_id=store.id
    )
    assert fetched.file_counts.in_progress == 0
    assert fetched.file_counts.total == 2
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=[])
    assert error_of(caught.value)["param"] == "file_ids"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.vector_stores.file_batches.create(
            vector_store_id=store.id, file_ids=["file-nope"]
        )
    assert error_of(caught.value)["param"] == "file_ids[0]"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.vector_stores.create(
            chunking_strategy={
                "type": "static",
                "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 80},
            }
        )
    assert "chunking_strategy" in (error_of(caught.value)["param"] or "")
    # A cancelled file comes back when it is added again.
    row = sdk.vector_stores.files.create_and_poll(
        file_id=file_ids[2], vector_store_id=store.id, poll_interval_ms=POLL_MS
    )
    assert row.status == "completed"


def test_store_update_list_delete_expiry_and_scope(
    sdk: Any, other_sdk: Any, worker: Any, django_db_blocker: Any
) -> None:
    file_id = _upload(sdk, "x.txt", b"The Umber lighthouse is red.")
    store = sdk.vector_stores.create(
        name="Temp",
        file_ids=[file_id],
        expires_after={"anchor": "last_active_at", "days": 2},
    )
    assert store.expires_after.days == 2
    assert store.expires_at is not None
    assert store.expires_at - store.last_active_at == 2 * 86400
    updated = sdk.vector_stores.update(store.id, name="Renamed", metadata={"k": "v"})
    assert updated.name == "Renamed" and updated.metadata == {"k": "v"}
    listed = [s.id for s in sdk.vector_stores.list(limit=100)]
    assert store.id in listed
    assert store.id not in [s.id for s in other_sdk.vector_stores.list(limit=100)]
    with pytest.raises(openai.NotFoundError):
        other_sdk.vector_stores.retrieve(store.id)
    with pytest.raises(openai.NotFoundError):
        other_sdk.vector_stores.search(store.id, query="x")
    _wait_file(sdk, store.id, file_id)

    def expire() -> int:
        VectorStore.objects.filter(pk=store.id).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        return 0

    _db(django_db_blocker, expire)
    assert sdk.vector_stores.retrieve(store.id).status == "expired"
    with pytest.raises(openai.BadRequestError):
        sdk.vector_stores.search(store.id, query="lighthouse")
    # The live worker's reaper sweeps expired stores too and may get there
    # first: check the outcome, not which of the two did it.
    _db(django_db_blocker, vector_stores_expire_due)
    assert (
        _db(
            django_db_blocker,
            lambda: VectorStore.objects.get(pk=store.id).status,
        )
        == "expired"
    )
    assert (
        _db(
            django_db_blocker,
            lambda: Chunk.objects.filter(vector_store_id=store.id).count(),
        )
        == 0
    )

    deleted = sdk.vector_stores.delete(store.id)
    assert deleted.deleted and deleted.object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError):
        sdk.vector_stores.retrieve(store.id)


def test_inline_vector_stores_on_assistant_and_thread_create(
    sdk: Any, worker: Any
) -> None:
    file_id = _upload(sdk, "inline.txt", b"The Tessaly orchard grows quinces.")
    assistant = sdk.beta.assistants.create(
        model=TEST_MODEL,
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [file_id]}]}},
    )
    (store_id,) = assistant.tool_resources.file_search.vector_store_ids
    _wait_file(sdk, store_id, file_id)
    hits = list(sdk.vector_stores.search(store_id, query="orchard quinces"))
    assert hits[0].file_id == file_id

    thread = sdk.beta.threads.create(
        tool_resources={
            "file_search": {
                "vector_stores": [
                    {
                        "file_ids": [file_id],
                        "chunking_strategy": {"type": "auto"},
                        "metadata": {"from": "thread"},
                    }
                ]
            }
        }
    )
    (thread_store,) = thread.tool_resources.file_search.vector_store_ids
    assert thread_store != store_id
    assert sdk.vector_stores.retrieve(thread_store).metadata == {"from": "thread"}
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.beta.threads.create(
            tool_resources={
                "file_search": {"vector_stores": [{"file_ids": ["file-missing"]}]}
            }
        )
    assert "vector_stores[0].file_ids[0]" in error_of(caught.value)["param"]


def test_polling_header_and_raw_shapes(http: httpx.Client, worker: Any) -> None:
    store = http.post("/vector_stores", json={"name": "raw"}).json()
    for key in ("id", "object", "created_at", "name", "usage_bytes", "file_counts"):
        assert key in store
    assert store["file_counts"] == {
        "in_progress": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "total": 0,
    }
    missing = http.get(f"/vector_stores/{store['id']}/files/file-nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "invalid_request_error"
    bad = http.get(f"/vector_stores/{store['id']}/files", params={"filter": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "filter"
    page = http.post(f"/vector_stores/{store['id']}/search", json={"query": "q"})
    assert page.json()["object"] == "vector_store.search_results.page"
    assert page.json()["data"] == []
