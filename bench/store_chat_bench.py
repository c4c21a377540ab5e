"""Time to first streamed token: the store's browser chat against the API.

Run under the launcher (embedded PostgreSQL and Redis; Debian's chromium)::

    make bench-store-chat
    make bench-store-chat BENCH_STORE_CHAT_ARGS="--trials 40"

Starts the scripted engine (answering at once), uvicorn and one Celery
worker as ``make run`` does, publishes an assistant in a signed-up user's
project, then interleaves two kinds of trial on that one assistant:

- API: ``POST /v1/threads/runs`` with ``stream: true`` (the project's key),
  from sending the request to the first ``thread.message.delta`` frame;
- browser: chromium (Playwright) on the store's chat page, signed in as the
  owner (no quota), from the form's submit event to the first answer text
  painted in the page (a MutationObserver, the page's own clock). That path
  is a form POST (thread, message and run created through the services),
  then an EventSource on the store's session-authenticated stream.

Prints p50/p95 of both and of their difference; writes
bench/results/store-chat-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from bench.api_bench import HOST, RESULTS_DIR, migrate  # noqa: E402
from bench.runs_bench import (  # noqa: E402
    Children,
    start_engine,
    start_web,
    start_worker,
)

SETTINGS = "config.settings.local"
MODEL = "store-bench-engine"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
PASSWORD = "store bench password"
WATCH = """() => {
  window.__ttft = null;
  const form = document.getElementById('chat-form');
  form.addEventListener('submit', () => { window.__t0 = performance.now(); },
                        {capture: true});
  const seen = () => {
    const m = document.querySelector('.msg.assistant');
    if (m && m.textContent.trim() && window.__ttft === null) {
      window.__ttft = performance.now() - window.__t0;
    }
  };
  new MutationObserver(seen).observe(document.getElementById('log'),
    {childList: true, subtree: true, characterData: true});
}"""


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def setup(engine_port: int) -> tuple[str, str, str, str]:
    """A user with a published assistant and an API key of its project;
    returns (username, listing slug, raw key, assistant id)."""
    import django

    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    django.setup()
    from django.db import connections

    from assistants.models import Assistant
    from core.services.keys import api_key_create
    from core.services.models import language_model_register
    from store.models import Listing
    from store.selectors import projects_of
    from store.services.account import account_signup
    from store.services.listing import ListingFields, listing_create

    stamp = time.time_ns()
    language_model_register(name=MODEL, base_urls=[f"http://{HOST}:{engine_port}/v1"])
    user = account_signup(username=f"storechatbench{stamp}", password=PASSWORD)
    project = projects_of(user=user).get()
    assistant = Assistant.objects.create(
        project=project, model=MODEL, name="Bench", instructions="Be brief."
    )
    slug = f"store-chat-bench-{stamp}"
    listing_create(
        user=user,
        assistant=assistant,
        data=ListingFields(slug=slug, visibility=Listing.Visibility.PUBLIC),
    )
    raw = api_key_create(project=project, name="store chat bench").raw
    connections.close_all()
    return user.username, slug, raw, assistant.id


def api_trial(client: Any, assistant_id: str) -> float:
    body = {
        "assistant_id": assistant_id,
        "thread": {"messages": [{"role": "user", "content": "Say hello."}]},
        "stream": True,
    }
    start = time.perf_counter()
    first: float | None = None
    with client.stream("POST", "/v1/threads/runs", json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if first is None and line == "event: thread.message.delta":
                first = time.perf_counter()
            if line.startswith("event: done"):
                break
    assert first is not None, "no delta streamed"
    return (first - start) * 1000


def browser_trial(page: Any, site: str, slug: str) -> float:
    page.goto(f"{site}/store/g/{slug}/chat")
    page.evaluate(WATCH)
    page.fill("#chat-form textarea", "Say hello.")
    page.click("#chat-form button")
    page.wait_for_function("() => window.__ttft !== null", timeout=30_000)
    ttft: float = page.evaluate("() => window.__ttft")
    page.wait_for_selector(".msg.assistant:not(.streaming)", timeout=30_000)
    return ttft


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if not shutil.which(CHROMIUM):
        print(f"no chromium at {CHROMIUM} (apt-get install chromium)")
        return 2
    import httpx
    from playwright.sync_api import sync_playwright

    logging.getLogger("httpx").setLevel(logging.WARNING)
    data_dir = Path(os.environ.get("DATA_DIR", BASE_DIR / ".data"))
    migrate(SETTINGS)
    children = Children()
    try:
        _, engine_port = start_engine(children, data_dir)
        username, slug, raw_key, assistant_id = setup(engine_port)
        _, web_port = start_web(children, data_dir, SETTINGS)
        start_worker(children, data_dir, 1, SETTINGS, "threads")
        site = f"http://{HOST}:{web_port}"
        headers = {"Authorization": f"Bearer {raw_key}", "OpenAI-Beta": "assistants=v2"}
        api_ms: list[float] = []
        browser_ms: list[float] = []
        with (
            httpx.Client(base_url=site, headers=headers, timeout=60) as client,
            sync_playwright() as pw,
        ):
            browser = pw.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                ],
            )
            page = browser.new_page()
            page.goto(f"{site}/store/accounts/login")
            page.fill("#id_username", username)
            page.fill("#id_password", PASSWORD)
            page.click("form.form button")
            page.wait_for_url(f"{site}/store/")
            for _ in range(args.warmup):
                api_trial(client, assistant_id)
                browser_trial(page, site, slug)
            for i in range(args.trials):
                # Alternate which goes first, so drift hits both alike.
                if i % 2:
                    browser_ms.append(browser_trial(page, site, slug))
                    api_ms.append(api_trial(client, assistant_id))
                else:
                    api_ms.append(api_trial(client, assistant_id))
                    browser_ms.append(browser_trial(page, site, slug))
            browser.close()
    finally:
        children.stop_all()

    def summary(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(pct(values, 95), 1),
        }

    diffs = [b - a for a, b in zip(api_ms, browser_ms, strict=True)]
    results = {
        "api": summary(api_ms),
        "browser": summary(browser_ms),
        "browser_minus_api": summary(diffs),
    }
    for name, row in results.items():
        print(f"{name:18} p50 {row['p50_ms']:7.1f} ms   p95 {row['p95_ms']:7.1f} ms")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"store-chat-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps({"args": vars(args), "ttft": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
