"""file_search in a run, end to end: the scripted engine calls the tool, the
worker searches the assistant's and the thread's vector stores (real
embeddings, real pgvector), and the answer cites the result."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest

from tests.retrieval_samples import pdf_bytes

pytestmark = pytest.mark.live
pytest_plugins = ["tests.fake_engine"]

FAKE_MODEL = "fake-model"
INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"


def _ingested_store(sdk: Any, name: str, data: bytes) -> tuple[str, str]:
    file_id = sdk.files.create(file=(name, io.BytesIO(data)), purpose="assistants").id
    store = sdk.vector_stores.create(name=name, file_ids=[file_id])
    deadline = time.monotonic() + 120
    while sdk.vector_stores.retrieve(store.id).file_counts.completed < 1:
        assert time.monotonic() < deadline, "ingestion stuck"
        time.sleep(0.2)
    return store.id, file_id


def test_a_run_searches_both_stores_and_cites_the_result(sdk: Any, engine: Any) -> None:
    treaty_store, treaty_file = _ingested_store(
        sdk,
        "treaty.pdf",
        pdf_bytes(["The Harrowgate treaty was signed in 1642 by four cities."]),
    )
    thread_store, thread_file = _ingested_store(
        sdk, "orchard.txt", b"The Tessaly orchard grows quinces and pears."
    )
    assistant = sdk.beta.assistants.create(
        model=FAKE_MODEL,
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [treaty_store]}},
    )
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": "When was the treaty signed?"}],
        tool_resources={"file_search": {"vector_store_ids": [thread_store]}},
    )
    engine.script(
        {
            "tool_calls": [
                {
                    "name": "file_search",
                    "arguments": {"queries": ["Harrowgate treaty signed"]},
                }
            ]
        },
        {"content": "It was signed in 1642 [1]. Quinces grow there [2]."},
    )
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
    )
    assert run.status == "completed", run.last_error

    # The model read numbered results from both stores.
    requests = engine.requests()
    tool_reply = next(m for m in requests[-1]["messages"] if m.get("role") == "tool")[
        "content"
    ]
    assert "[1]" in tool_reply and "Harrowgate" in tool_reply
    assert "Tessaly" in tool_reply

    steps = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")
    step = next(s for s in steps if s.type == "tool_calls")
    call = step.step_details.tool_calls[0]
    assert call.type == "file_search"
    results = call.file_search.results
    assert results[0].file_id == treaty_file
    assert results[0].file_name == "treaty.pdf"
    assert {r.file_id for r in results} == {treaty_file, thread_file}
    assert all(0 <= r.score <= 1 for r in results)
    assert not results[0].content  # only with include
    full = sdk.beta.threads.runs.steps.retrieve(
        step.id, thread_id=thread.id, run_id=run.id, include=[INCLUDE]
    )
    assert (
        "Harrowgate"
        in full.step_details.tool_calls[0].file_search.results[0].content[0].text
    )

    messages = sdk.beta.threads.messages.list(thread.id, order="desc")
    answer = messages.data[0].content[0].text
    assert "[1]" not in answer.value and "[2]" not in answer.value
    citations = [a for a in answer.annotations if a.type == "file_citation"]
    assert len(citations) == 2
    first, second = citations
    assert first.file_citation.file_id == treaty_file
    assert second.file_citation.file_id == thread_file
    assert 0 <= first.start_index < first.end_index <= len(answer.value)
    assert "1642" in answer.value[first.start_index : first.end_index]
    assert "Quinces" in answer.value[second.start_index : second.end_index]


def test_files_attached_for_file_search_go_into_the_threads_own_store(
    sdk: Any, engine: Any
) -> None:
    first = sdk.files.create(
        file=("moon.txt", io.BytesIO(b"The moon base is called Tycho Deep.")),
        purpose="assistants",
    ).id
    second = sdk.files.create(
        file=("mars.txt", io.BytesIO(b"The Mars rover is named Pathwalker.")),
        purpose="assistants",
    ).id
    file_search = [{"type": "file_search"}]
    thread = sdk.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "Read this.",
                "attachments": [{"file_id": first, "tools": file_search}],
            }
        ]
    )
    (store_id,) = thread.tool_resources.file_search.vector_store_ids
    store = sdk.vector_stores.retrieve(store_id)
    assert store.expires_after is not None and store.expires_after.days == 7
    # A later attachment joins the same store; one for code only does not.
    sdk.beta.threads.messages.create(
        thread.id,
        role="user",
        content="And this.",
        attachments=[
            {"file_id": second, "tools": file_search},
            {"file_id": first, "tools": [{"type": "code_interpreter"}]},
        ],
    )
    again = sdk.beta.threads.retrieve(thread.id)
    assert again.tool_resources.file_search.vector_store_ids == [store_id]
    deadline = time.monotonic() + 120
    while sdk.vector_stores.retrieve(store_id).file_counts.completed < 2:
        assert time.monotonic() < deadline, "ingestion stuck"
        time.sleep(0.2)
    listed = {f.id for f in sdk.vector_stores.files.list(store_id)}
    assert listed == {first, second}
    hits = sdk.vector_stores.search(store_id, query="name of the rover on Mars")
    assert hits.data[0].file_id == second
