"""The store chat end to end: the real server and worker, a scripted engine,
and a browser-like client reading the store's own event stream."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest

from store.models import Listing
from tests.store_helpers import SECRET, clear_quotas, make_listing, make_user

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
