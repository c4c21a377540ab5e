"""``rewrite_query`` on a vector store search: the model (the scripted engine,
a real HTTP server) rewrites the question, the rewrite is what is searched
and what ``search_query`` reports; whatever goes wrong with the model, the
question is searched as given."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from tests.chunk_rows import chunks_add, store_file
from tests.fake_engine import FakeEngine
from tools.file_search.rewrite import clean
from tools.models import VectorStore

pytest_plugins = ["tests.fake_engine"]

QUESTION = "Where are they fixing up the old beacon?"
REWRITE = "Kestrel lighthouse restoration"
TEXTS = [
    "Lighthouse restoration at Kestrel Point begins in May.",
    "The budget committee meets on Tuesdays.",
]


@pytest.fixture
def store(tenant: Any) -> str:
    """A store of two chunks, neither holding a word of QUESTION."""
    vector_store = VectorStore.objects.create(project=tenant.project, name="notes")
    chunks_add(store_file(tenant, vector_store, "notes"), TEXTS, seed=7)
    return vector_store.id


@pytest.fixture
def rewriter(fake_engine: FakeEngine, db: Any) -> FakeEngine:
    fake_engine.model(id="rewriter").save()
    return fake_engine


def _search(api: Any, store: str, **body: Any) -> dict[str, Any]:
    response = api.post(
        f"/v1/vector_stores/{store}/search",
        {"query": QUESTION, "ranking_options": {"ranker": "keyword"}, **body},
        format="json",
    )
    assert response.status_code == 200, response.content
    return dict(response.json())


@override_settings(SEARCH_REWRITE_MODEL="rewriter")
def test_the_rewritten_query_is_searched_and_reported(
    api: Any, store: str, rewriter: FakeEngine
) -> None:
    # As given, the question's words are in no chunk.
    plain = _search(api, store)
    assert plain["search_query"] == [QUESTION] and plain["data"] == []
    assert rewriter.bodies() == []  # no rewrite unless asked for
    # The model's answer, label and quotes and all, becomes the query.
    rewriter.script({"content": f'Query: "{REWRITE}"\n(I kept the place name.)'})
    page = _search(api, store, rewrite_query=True)
    assert page["search_query"] == [REWRITE]
    assert [hit["content"][0]["text"] for hit in page["data"]] == [TEXTS[0]]
    (sent,) = rewriter.bodies()
    assert sent["messages"][-1] == {"role": "user", "content": QUESTION}
    assert sent["temperature"] == 0.0


@override_settings(SEARCH_REWRITE_MODEL="rewriter", SEARCH_REWRITE_TIMEOUT=1.0)
def test_a_failing_or_slow_model_leaves_the_query_as_given(
    api: Any, store: str, rewriter: FakeEngine
) -> None:
    for reply in (
        {"status": 500, "error_message": "engine overloaded"},
        {"content": "   "},
        {"content": "x" * 300},  # too long to be a query
        # An answer, not a query: more words than the question.
        {"content": "They are restoring the lighthouse at Kestrel Point in May."},
        {"content": REWRITE, "hang": 3},  # past SEARCH_REWRITE_TIMEOUT
        # Cut short by the timeout mid-answer: not its first words either.
        {"chunks": ["Kestrel", " lighthouse", " restoration"], "delay_per_chunk": 0.7},
    ):
        rewriter.reset()
        rewriter.script(reply)
        page = _search(api, store, rewrite_query=True)
        assert page["search_query"] == [QUESTION], reply
        assert page["data"] == []


@override_settings(SEARCH_REWRITE_MODEL="", DEFAULT_MODEL="")
def test_without_a_model_the_query_is_searched_as_given(api: Any, store: str) -> None:
    page = _search(api, store, rewrite_query=True)
    assert page["search_query"] == [QUESTION]


@override_settings(SEARCH_REWRITE_MODEL="rewriter")
def test_a_bad_filter_fails_before_the_model_is_asked(
    api: Any, store: str, rewriter: FakeEngine
) -> None:
    response = api.post(
        f"/v1/vector_stores/{store}/search",
        {
            "query": QUESTION,
            "rewrite_query": True,
            "filters": {"type": "in", "key": "k", "value": "not a list"},
        },
        format="json",
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "filters"
    assert rewriter.bodies() == []


def test_clean_takes_the_query_out_of_a_chatty_answer() -> None:
    assert clean("Search query: lighthouse restoration") == "lighthouse restoration"
    assert clean("\n\n- `kestrel   point`\nbecause…") == "kestrel point"
    assert clean("“beacon repair”") == "beacon repair"
    assert clean("") == "" and clean(" \n ") == ""
    assert clean("y" * 257) == ""
    assert clean("one two three", "a question of four") == "one two three"
    assert clean("one two three four five", "a question of four") == ""
