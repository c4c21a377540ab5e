"""The store chat end to end: the real server and worker, a scripted engine,
and a browser-like client reading the store's own event stream."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx
import openai
import orjson
import pytest

from assistants.models import Assistant
from core.services.keys import api_key_create
from sandbox import SessionManager, docker_client
from store.models import Conversation, Listing
from store.selectors import projects_of
from store.services.listing import ListingFields, listing_create
from tests.store_helpers import SECRET, clear_quotas, make_listing, make_user
from tests.test_code_interpreter_run import _require_docker
from tools.code_interpreter import runtime as ci

pytestmark = pytest.mark.live
pytest_plugins = ["tests.fake_engine"]

FAKE_MODEL = "fake-model"
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


@pytest.fixture
def listing(engine: Any, django_db_blocker: Any) -> Listing:
    with django_db_blocker.unblock():
        clear_quotas()
        return make_listing(
            make_user(),
            model=FAKE_MODEL,
            visibility=Listing.Visibility.PUBLIC,
            name="Geographer",
        )


@pytest.fixture
def site(live_server_url: str) -> str:
    return live_server_url.removesuffix("/v1")


def _sse(response: httpx.Response) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    event = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            events.append((event, data if event == "done" else orjson.loads(data)))
            if event == "done":
                break
    return events


def _send(browser: httpx.Client, page: str, text: str) -> dict[str, Any]:
    form = browser.get(page)
    assert form.status_code == 200
    token = _CSRF.search(form.text)
    assert token is not None
    action = re.search(r'id="chat-form"[^>]*action="([^"]+)"', form.text)
    assert action is not None
    response = browser.post(
        action.group(1),
        data={"csrfmiddlewaretoken": token.group(1), "text": text},
        headers={"Accept": "application/json", "Referer": str(form.url)},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_visitor_chats_and_reads_the_answer_as_it_streams(
    site: str, listing: Listing, fake_engine: Any
) -> None:
    fake_engine.script(
        {"chunks": ["Paris ", "is the ", "**capital**."], "delay_per_chunk": 0.05},
        {"content": "Lyon is second."},
    )
    with httpx.Client(base_url=site, timeout=30) as browser:
        started = _send(browser, f"/store/g/{listing.slug}/chat", "Capital of France?")
        with browser.stream("GET", started["events_url"]) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = _sse(response)
        deltas = [data["text"] for name, data in events if name == "delta"]
        assert deltas == ["Paris ", "is the ", "**capital**."]
        [message] = [data for name, data in events if name == "message"]
        assert "<strong>capital</strong>" in message["html"]
        assert ("status", {"status": "completed", "error": None}) in events
        assert events[-1] == ("done", "[DONE]")
        assert SECRET not in str(events)
        # The engine did get the instructions: they are hidden, not dropped.
        assert SECRET in str(fake_engine.bodies()[0]["messages"])

        # A second message goes to the same conversation.
        page = started["conversation_url"]
        again = _send(browser, page, "And the second city?")
        assert again["conversation_url"] == page
        with browser.stream("GET", again["events_url"]) as response:
            events = _sse(response)
        assert (
            "".join(d["text"] for n, d in events if n == "delta") == "Lyon is second."
        )
        history = browser.get(page).text
        assert "Capital of France?" in history and "Lyon is second." in history
        assert SECRET not in history

    # Someone else's browser sees neither the conversation nor its stream.
    with httpx.Client(base_url=site, timeout=30) as stranger:
        assert stranger.get(started["events_url"]).status_code == 404
        assert stranger.get(started["conversation_url"]).status_code == 404


def _ingested(client: Any, name: str, data: bytes) -> tuple[str, str]:
    file_id = client.files.create(file=(name, data), purpose="assistants").id
    store = client.vector_stores.create(name=name, file_ids=[file_id])
    # Generous: ingesting one small file (the worker embeds it) once took
    # over two minutes on a heavily loaded 2-core machine.
    deadline = time.monotonic() + 300
    while client.vector_stores.retrieve(store.id).file_counts.completed < 1:
        assert time.monotonic() < deadline, "ingestion stuck"
        time.sleep(0.2)
    return store.id, file_id


def test_the_chat_shows_code_interpreter_images_and_file_search_citations(
    site: str, live_server_url: str, engine: Any, django_db_blocker: Any
) -> None:
    _require_docker()
    with django_db_blocker.unblock():
        clear_quotas()
        owner = make_user()
        project = projects_of(user=owner).get()
        raw_key = api_key_create(project=project, name="builder").raw
    api = openai.OpenAI(
        base_url=live_server_url, api_key=raw_key, max_retries=0, timeout=30
    )
    store_id, doc_id = _ingested(
        api, "treaty-notes.txt", b"The Harrowgate treaty was signed in 1642."
    )
    made = api.beta.assistants.create(
        model=FAKE_MODEL,
        name="Historian",
        instructions=SECRET,
        tools=[{"type": "file_search"}, {"type": "code_interpreter"}],
        tool_resources={"file_search": {"vector_store_ids": [store_id]}},
    )
    with django_db_blocker.unblock():
        listing = listing_create(
            user=owner,
            assistant=Assistant.objects.get(pk=made.id),
            data=ListingFields(
                slug=f"historian-{made.id[-8:].lower()}",
                visibility=Listing.Visibility.PUBLIC,
            ),
        )
    engine.script(
        {
            "tool_calls": [
                {"name": "file_search", "arguments": {"queries": ["treaty signed"]}}
            ]
        },
        {
            "tool_calls": [
                {
                    "name": "code_interpreter",
                    "arguments": json.dumps(
                        {
                            "code": "import matplotlib.pyplot as plt\n"
                            "plt.bar(['1642'], [1])\nplt.show()"
                        }
                    ),
                }
            ]
        },
        {"content": "It was signed in 1642 [1]. Here is a **chart**."},
    )
    thread_id = ""
    try:
        with httpx.Client(base_url=site, timeout=60) as browser:
            started = _send(browser, f"/store/g/{listing.slug}/chat", "When?")
            with django_db_blocker.unblock():
                conv = Conversation.objects.get(
                    pk=started["conversation_url"].rsplit("/", 1)[1]
                )
                thread_id = conv.thread_id
            with browser.stream("GET", started["events_url"]) as response:
                events = _sse(response)
            assert ("status", {"status": "completed", "error": None}) in events
            [message] = [data for name, data in events if name == "message"]
            html = message["html"]
            # The citation: a footnote mark where the cited sentence ends and
            # the quoted file's name (not its id) with the passage.
            assert 'It was signed in 1642<sup class="cite">[1]</sup>.' in html
            assert '<span class="cite-file">treaty-notes.txt</span>' in html
            assert "Harrowgate treaty was signed" in html
            assert doc_id not in html
            # The chart: served by the store, for this conversation only.
            image = re.search(r'<img class="chat-image" src="([^"]+)"', html)
            assert image is not None
            src = image.group(1)
            assert src.startswith(f"/store/c/{conv.pk}/files/file")
            png = browser.get(src)
            assert png.status_code == 200
            assert png.headers["content-type"] == "image/png"
            assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
            # The page rendered later shows the same.
            page = browser.get(started["conversation_url"]).text
            assert '<span class="cite-file">treaty-notes.txt</span>' in page
            assert src in page
            assert SECRET not in page and SECRET not in str(events)
        with httpx.Client(base_url=site, timeout=30) as stranger:
            assert stranger.get(src).status_code == 404
            file_id = src.rsplit("/", 1)[1]
            assert stranger.get(f"/v1/files/{file_id}/content").status_code == 401
    finally:
        if thread_id:
            key = ci.session_key(project.id, thread_id)
            SessionManager(ci.sandbox_config(), docker_client()).close(key)
