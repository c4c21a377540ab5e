"""The store in a real browser: Debian's chromium driven by Playwright
against the live server and worker, with a scripted engine.

Screenshots of the main pages land in test-artifacts/store/ (gitignored,
made by every run). Playwright never downloads a browser here: it launches
/usr/bin/chromium (apt). Without it the test skips, or fails in CI
(AGENTS_REQUIRE_REAL_SERVICES=1).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.store_helpers import PASSWORD, SECRET, clear_quotas

pytestmark = pytest.mark.live
pytest_plugins = ["tests.fake_engine"]

FAKE_MODEL = "fake-model"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "store"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def _require_browser() -> Any:
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the playwright package is not installed"
    else:
        if not shutil.which(CHROMIUM):
            missing = f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("AGENTS_REQUIRE_REAL_SERVICES") == "1":
            pytest.fail(missing)
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture
def engine(registered_engine: Any, live_worker: Any, django_db_blocker: Any) -> Any:
    with django_db_blocker.unblock():
        clear_quotas()
    return registered_engine


def test_sign_up_publish_find_chat_rate_and_share(
    live_server_url: str, engine: Any, django_db_blocker: Any
) -> None:
    sync_playwright = _require_browser()
    site = live_server_url.removesuffix("/v1")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    username = f"ada{time.monotonic_ns()}"
    slug = f"geographer-{time.monotonic_ns()}"
    # Slow enough chunks that the page shows a partial answer first.
    engine.script(
        {
            "chunks": ["Paris ", "is the ", "capital ", "of **France**."],
            "delay_per_chunk": 0.4,
        }
    )

    # An operator for the admin part; made before Playwright starts its
    # event loop in this thread (the ORM refuses to run inside one).
    operator = f"op{time.monotonic_ns()}"
    with django_db_blocker.unblock():
        from django.contrib.auth.models import User

        User.objects.create_superuser(username=operator, password=PASSWORD)

    def shot(page: Any, name: str) -> None:
        # From the top: a full-page shot of a scrolled page paints the
        # sticky header mid-page.
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(30_000)

            # Sign up.
            page.goto(f"{site}/store/accounts/signup")
            page.fill("#id_username", username)
            page.fill("#id_password1", PASSWORD)
            page.fill("#id_password2", PASSWORD)
            shot(page, "01-signup")
            page.click("form.form button")
            page.wait_for_url(f"{site}/store/me")

            # Create and publish an assistant.
            page.click("text=New assistant")
            page.fill("#id_name", "Geographer")
            page.fill("#id_description", "Knows every capital city on Earth")
            page.fill("#id_instructions", SECRET)
            page.select_option("#id_model", FAKE_MODEL)
            page.click("form.form button")
            page.wait_for_url(re.compile(r".*/store/me/publish\?assistant=.*"))
            page.fill("#id_slug", slug)
            page.select_option("#id_category", "education")
            page.fill("#id_short_description", "Capitals, borders and rivers")
            page.fill("#id_starters", "Capital of France?\nLongest river?")
            page.select_option("#id_visibility", "public")
            shot(page, "02-publish")
            page.click("form.form button")
            page.wait_for_url(f"{site}/store/g/{slug}")
            assert SECRET in page.content()  # the owner sees them

            # Find it by search, from the home page.
            page.goto(f"{site}/store/")
            shot(page, "03-home")
            page.fill(".top-search input", "capitals")
            # The first search loads the embedding model in the server
            # process: slow on a busy machine, so this step may wait longer.
            page.press(".top-search input", "Enter", timeout=180_000)
            page.wait_for_url(
                re.compile(r".*/store/search\?q=capitals"), timeout=180_000
            )
            link = page.locator(f'a.card[href="/store/g/{slug}"]')
            assert link.count() == 1
            shot(page, "04-search")
            link.click()
            page.wait_for_url(f"{site}/store/g/{slug}")
            shot(page, "05-listing")

            # Chat: the answer streams in.
            page.click("text=Start a conversation")
            page.wait_for_url(f"{site}/store/g/{slug}/chat")
            page.fill("#chat-form textarea", "What is the capital of France?")
            page.click("#chat-form button")
            answer = page.locator(".msg.assistant").last
            page.wait_for_function(
                "() => { const m = document.querySelector('.msg.assistant');"
                " return m && m.classList.contains('streaming')"
                " && m.textContent.startsWith('Paris'); }"
            )
            partial = answer.text_content() or ""
            assert partial.startswith("Paris")
            assert "France" not in partial  # seen before the end arrived
            page.wait_for_selector(".msg.assistant:not(.streaming)")
            assert answer.inner_text() == "Paris is the capital of France."
            assert answer.locator("strong").inner_text() == "France"
            assert re.search(r"/store/c/conv_", page.url)
            shot(page, "06-chat")

            # Share the conversation (the page reloads with its link).
            page.reload()
            page.click("form.share button")
            share_url = page.locator("input.share-url").input_value()
            assert "/store/s/" in share_url

            # Rate it.
            page.goto(f"{site}/store/g/{slug}")
            page.select_option("#id_stars", "4")
            page.fill("#id_review", "Knew the answer straight away.")
            page.click("form.rate button")
            page.wait_for_url(f"{site}/store/g/{slug}")
            assert "★ 4.0 (1 rating)" in page.content()
            assert "Knew the answer straight away." in page.content()
            shot(page, "07-rated")

            # Someone else opens the shared link: read-only, no instructions.
            visitor = browser.new_context().new_page()
            visitor.goto(share_url)
            content = visitor.content()
            assert "What is the capital of France?" in content
            assert "Paris is the capital of" in content
            assert SECRET not in content
            assert visitor.locator("textarea").count() == 0
            shot(visitor, "08-shared")
            visitor.goto(f"{site}/store/g/{slug}")
            assert SECRET not in visitor.content()

            # An API key for the builder's project, shown once.
            page.goto(f"{site}/store/me/keys")
            page.fill("#id_name", "laptop")
            page.click("form.row-form button")
            assert page.locator("#new-key").inner_text().startswith("sk-")
            shot(page, "09-api-keys")

            # The operators' admin: the assistant, a new version of its
            # instructions, and the diff.
            admin = browser.new_context().new_page()
            admin.set_default_timeout(30_000)
            admin.set_viewport_size({"width": 1440, "height": 900})
            admin.goto(f"{site}/admin/login/?next=/admin/store/listing/")
            admin.fill("#id_username", operator)
            admin.fill("#id_password", PASSWORD)
            admin.click("input[type=submit]")
            admin.wait_for_url(re.compile(r".*/admin/store/listing/$"))
            shot(admin, "10-admin-listings")
            admin.click(f"text={slug}")
            admin.click("text=the assistant")
            admin.fill("#id_instructions", SECRET + "\nAnswer in one sentence.")
            admin.click("input[name=_continue]")
            admin.wait_for_selector("text=last 7 days")
            shot(admin, "11-admin-assistant")
            admin.locator("text=diff · revert").first.click()
            admin.wait_for_selector(".diff .add")
            assert "Answer in one sentence." in admin.locator(".diff .add").inner_text()
            shot(admin, "12-admin-version-diff")
        finally:
            browser.close()
