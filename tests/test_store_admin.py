"""The operators' admin: versions of instructions (diff, revert), usage per
assistant from the run table, links between assistant, listing, runs and
threads, the report workflow, and re-embedding after a rename."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from assistants.models import Assistant, Run, RunStatus, Thread
from assistants.services.assistant import AssistantUpdateInput, assistant_update
from store.models import AssistantVersion, Listing, Report
from store.selectors import assistant_usage
from store.services.listing import listings_reembed_stale
from store.services.versions import assistant_version_revert, change_source
from tests.conftest import TEST_MODEL, admin_url, ensure_test_model
from tests.store_helpers import SECRET, make_listing, make_user


@pytest.fixture
def owner(db: Any) -> User:
    ensure_test_model()
    return make_user()


@pytest.fixture
def operator(db: Any) -> User:
    return User.objects.create_superuser(username="operator", password="x" * 12)


@pytest.fixture
def admin(operator: User) -> Client:
    c = Client()
    c.force_login(operator)
    return c


def _versions(assistant: Assistant) -> list[tuple[int, str | None, str, str]]:
    return [
        (v.number, v.instructions, v.source, v.author)
        for v in AssistantVersion.objects.filter(assistant=assistant).order_by("number")
    ]


def _version_url(assistant: Assistant, number: int) -> str:
    return reverse(
        "admin:assistants_assistant_version", args=[quote(assistant.pk), number]
    )


def _update(assistant: Assistant, **fields: Any) -> None:
    assistant_update(assistant=assistant, data=AssistantUpdateInput(**fields))


def test_every_change_of_the_instructions_through_any_door_is_a_version(
    owner: User, admin: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL)
    assistant = listing.assistant
    _update(assistant, instructions="Be brief.")  # the API's service
    _update(assistant, name="Renamed")  # not the instructions: no version
    with change_source(source="store", author="ada"):
        _update(assistant, instructions="Be brief.\nBe kind.")
    form = admin.get(admin_url("assistants.assistant", assistant.pk))
    assert form.status_code == 200
    response = admin.post(
        admin_url("assistants.assistant", assistant.pk),
        {
            "project": assistant.project_id,
            "name": "Renamed",
            "description": "",
            "model": TEST_MODEL,
            "instructions": "Be kind.",
            "tools": "[]",
            "tool_resources": "{}",
            "metadata": "{}",
            "response_format": '"auto"',
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "3",
            "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    assert _versions(assistant) == [
        (1, SECRET, "api", ""),
        (2, "Be brief.", "api", ""),
        (3, "Be brief.\nBe kind.", "store", "ada"),
        (4, "Be kind.", "admin", "operator"),
    ]


def test_the_diff_view_shows_added_and_removed_lines_and_revert_is_a_new_version(
    owner: User, admin: Client
) -> None:
    assistant = make_listing(owner, model=TEST_MODEL).assistant
    _update(assistant, instructions="line one\nline two")
    _update(assistant, instructions="line one\nline three")
    url = _version_url(assistant, 3)
    page = admin.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert '<div class="del">line two</div>' in html
    assert '<div class="add">line three</div>' in html
    assert '<div class="same">line one</div>' in html

    # Against the current text, version 2 differs; version 3 is current.
    current = admin.get(_version_url(assistant, 2) + "?against=current")
    assert '<div class="add">line three</div>' in current.content.decode()

    response = admin.post(_version_url(assistant, 2))
    assert response.status_code == 302
    assistant.refresh_from_db()
    assert assistant.instructions == "line one\nline two"
    latest = AssistantVersion.objects.filter(assistant=assistant).first()
    assert latest is not None
    assert (latest.number, latest.source, latest.author) == (
        4,
        "revert to v2",
        "operator",
    )
    # Reverting to what is already current records nothing.
    version = AssistantVersion.objects.get(assistant=assistant, number=4)
    assert assistant_version_revert(version=version, author="x") is None
    assert AssistantVersion.objects.filter(assistant=assistant).count() == 4


def test_a_stranger_cannot_see_or_revert_versions(owner: User) -> None:
    assistant = make_listing(owner, model=TEST_MODEL).assistant
    c = Client()
    c.force_login(owner)  # a store user, not staff
    url = _version_url(assistant, 1)
    assert c.get(url).status_code == 302  # to the admin login
    assert c.post(url).status_code == 302
    assert AssistantVersion.objects.filter(assistant=assistant).count() == 1


def _run(assistant: Assistant, thread: Thread, status: str, **fields: Any) -> Run:
    return Run.objects.create(
        project=assistant.project,
        thread=thread,
        assistant_id=assistant.pk,
        model=TEST_MODEL,
        status=status,
        **fields,
    )


def test_usage_counts_runs_by_status_and_tokens_over_7_and_30_days(
    owner: User, admin: Client
) -> None:
    assistant = make_listing(owner, model=TEST_MODEL).assistant
    other = make_listing(owner, model=TEST_MODEL).assistant
    thread = Thread.objects.create(project=assistant.project)
    usage = {"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107}
    _run(assistant, thread, RunStatus.COMPLETED, usage=usage)
    old = _run(assistant, thread, RunStatus.FAILED, usage=usage)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=10))
    ancient = _run(assistant, thread, RunStatus.COMPLETED, usage=usage)
    Run.objects.filter(pk=ancient.pk).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    _run(other, Thread.objects.create(project=other.project), RunStatus.COMPLETED)

    week, month = assistant_usage(assistant_id=assistant.pk)
    assert (week.days, week.runs, week.by_status) == (7, 1, {"completed": 1})
    assert (week.prompt_tokens, week.completion_tokens) == (100, 7)
    assert (month.days, month.runs) == (30, 2)
    assert month.by_status == {"completed": 1, "failed": 1}
    assert (month.prompt_tokens, month.completion_tokens) == (200, 14)

    page = admin.get(admin_url("assistants.assistant", assistant.pk)).content.decode()
    assert "last 7 days" in page and "1 completed" in page and "1 failed" in page
    # The page links the listing, the runs and the threads.
    listing = Listing.objects.get(assistant=assistant)
    assert admin_url("store.listing", str(listing.pk)) in page
    assert f"?assistant_id={assistant.pk}" in page
    threads = admin.get(f"/admin/assistants/thread/?assistant={assistant.pk}")
    assert threads.status_code == 200
    assert list(threads.context["cl"].result_list) == [thread]
    runs = admin.get(f"/admin/assistants/run/?assistant_id={assistant.pk}")
    assert runs.context["cl"].result_count == 3


def test_the_admin_lists_filter_and_show_runs_per_assistant(
    owner: User, admin: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility="public")
    thread = Thread.objects.create(project=listing.assistant.project)
    _run(listing.assistant, thread, RunStatus.COMPLETED)
    unpublished = Assistant.objects.create(
        project=listing.assistant.project, model=TEST_MODEL, name="Draft"
    )
    page = admin.get("/admin/assistants/assistant/?listed=public")
    assert page.status_code == 200
    rows = list(page.context["cl"].result_list)
    assert [a.pk for a in rows] == [listing.assistant_id]
    assert rows[0].n_runs_7d == 1
    drafts = admin.get("/admin/assistants/assistant/?listed=none")
    assert unpublished in list(drafts.context["cl"].result_list)
    listings = admin.get("/admin/store/listing/")
    assert listings.status_code == 200
    [row] = [x for x in listings.context["cl"].result_list if x.pk == listing.pk]
    assert row.n_runs == 1
    assert admin.get(admin_url("store.listing", str(listing.pk))).status_code == 200
    assert admin.get("/admin/store/conversation/").status_code == 200
    assert (
        admin.get(admin_url("assistants.run", Run.objects.get().pk)).status_code == 200
    )


def test_reports_are_resolved_or_dismissed_by_an_operator_at_a_time(
    owner: User, operator: User, admin: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility="public")
    first = Report.objects.create(listing=listing, reason="spam")
    second = Report.objects.create(listing=listing, reason="not spam")
    assert admin.get("/admin/store/report/").status_code == 200
    response = admin.post(
        "/admin/store/report/",
        {"action": "resolve_and_unlist", "_selected_action": [first.pk]},
    )
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.status == Report.Status.RESOLVED
    assert first.handled_by == operator and first.handled_at is not None
    listing.refresh_from_db()
    assert listing.unlisted_by_operator
    admin.post(
        "/admin/store/report/",
        {"action": "dismiss", "_selected_action": [second.pk]},
    )
    second.refresh_from_db()
    assert second.status == Report.Status.DISMISSED
    admin.post(
        "/admin/store/report/",
        {"action": "reopen", "_selected_action": [second.pk]},
    )
    second.refresh_from_db()
    assert (second.status, second.handled_by, second.handled_at) == ("open", None, None)


def test_renaming_an_assistant_through_the_api_re_embeds_its_listing(
    owner: User,
) -> None:
    from tools.embeddings import embed

    listing = make_listing(owner, model=TEST_MODEL, name="Bread baker")
    Listing.objects.filter(pk=listing.pk).update(
        embedding=embed(["Bread baker"])[0], embedding_stale=False
    )
    _update(listing.assistant, name="Tax accountant", description="Files taxes")
    listing.refresh_from_db()
    assert listing.embedding_stale
    assert listings_reembed_stale() == 1
    listing.refresh_from_db()
    assert not listing.embedding_stale
    [expected] = embed(["Tax accountant. Files taxes"])
    assert sum(
        a * b for a, b in zip(listing.embedding, expected, strict=True)
    ) == pytest.approx(1.0, abs=1e-3)
