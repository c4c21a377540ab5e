"""The store's pages and who may see what (in-process, rolled back)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from assistants.models import Assistant, Run, Thread
from core.models import Project
from store.markdown import render_content
from store.models import BuilderProfile, Conversation, Listing, Membership, Rating
from store.streaming import _visitor_frame
from tests.conftest import TEST_MODEL, ensure_test_model
from tests.store_helpers import PASSWORD, SECRET, clear_quotas, make_listing, make_user

PUBLIC = Listing.Visibility.PUBLIC
LINK = Listing.Visibility.LINK
PRIVATE = Listing.Visibility.PRIVATE


@pytest.fixture
def owner(db: Any) -> User:
    ensure_test_model()
    return make_user()


@pytest.fixture
def owner_client(owner: User) -> Client:
    c = Client()
    c.force_login(owner)
    return c


@pytest.fixture
def stranger_client(db: Any) -> Client:
    c = Client()
    c.force_login(make_user())
    return c


@pytest.fixture(autouse=True)
def _fresh_quotas() -> None:
    clear_quotas()


def test_signup_creates_a_personal_project_and_logs_in(db: Any) -> None:
    c = Client()
    response = c.post(
        "/store/accounts/signup",
        {"username": "ada", "password1": PASSWORD, "password2": PASSWORD},
    )
    assert response.status_code == 302
    user = User.objects.get(username="ada")
    membership = Membership.objects.get(user=user)
    assert Project.objects.filter(pk=membership.project_id).exists()
    assert BuilderProfile.objects.get(user=user).display_name == "ada"
    assert c.get("/store/me").status_code == 200


def test_login_and_logout(db: Any) -> None:
    user = make_user()
    c = Client()
    response = c.post(
        "/store/accounts/login", {"username": user.username, "password": PASSWORD}
    )
    assert response.status_code == 302
    assert c.get("/store/me").status_code == 200
    assert c.post("/store/accounts/logout").status_code == 302
    assert c.get("/store/me").status_code == 302  # to the login page


def test_a_private_listing_is_404_to_everyone_but_its_owner(
    owner: User, owner_client: Client, stranger_client: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PRIVATE)
    url = f"/store/g/{listing.slug}"
    assert owner_client.get(url).status_code == 200
    assert stranger_client.get(url).status_code == 404
    assert Client().get(url).status_code == 404
    assert Client().get(f"{url}/chat").status_code == 404
    assert Client().post(f"{url}/chat", {"text": "hi"}).status_code == 404
    assert stranger_client.get(f"{url}/edit").status_code == 404


def test_a_link_listing_is_reachable_but_not_listed(owner: User) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=LINK, name="Zebracorn")
    Listing.objects.filter(pk=listing.pk).update(featured=True)
    c = Client()
    assert c.get(f"/store/g/{listing.slug}").status_code == 200
    assert listing.slug not in c.get("/store/").content.decode()
    assert listing.slug not in c.get("/store/search?q=Zebracorn").content.decode()
    assert listing.slug not in c.get("/store/sitemap.xml").content.decode()


def test_public_listings_are_on_home_search_and_sitemap(owner: User) -> None:
    listing = make_listing(
        owner,
        model=TEST_MODEL,
        visibility=PUBLIC,
        name="Quokka translator",
        short_description="Translates between marsupials",
    )
    Listing.objects.filter(pk=listing.pk).update(featured=True)
    other = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC, name="Unrelated")
    c = Client()
    home = c.get("/store/").content.decode()
    assert f"/store/g/{listing.slug}" in home
    found = c.get("/store/search?q=marsupials").content.decode()
    assert f"/store/g/{listing.slug}" in found
    assert f"/store/g/{other.slug}" not in found
    by_name = c.get("/store/search?q=quokka").content.decode()
    assert f"/store/g/{listing.slug}" in by_name
    sitemap = c.get("/store/sitemap.xml")
    assert sitemap["Content-Type"].startswith("application/xml")
    assert f"/store/g/{listing.slug}</loc>" in sitemap.content.decode()


def test_an_unlisted_listing_disappears_for_everyone_but_its_owner(
    owner: User, owner_client: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    Listing.objects.filter(pk=listing.pk).update(unlisted_by_operator=True)
    assert Client().get(f"/store/g/{listing.slug}").status_code == 404
    assert listing.slug not in Client().get("/store/sitemap.xml").content.decode()
    assert owner_client.get(f"/store/g/{listing.slug}").status_code == 200


def test_trending_counts_this_weeks_runs_through_the_store_or_the_api(
    owner: User,
) -> None:
    quiet = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    busy = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    chatty = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    hidden = make_listing(owner, model=TEST_MODEL, visibility=LINK)

    def runs(listing: Listing, n: int, days_ago: int = 0) -> None:
        # One thread per run: a run per thread may be active at a time.
        for _ in range(n):
            thread = Thread.objects.create(project=listing.assistant.project)
            run = Run.objects.create(
                project=thread.project,
                thread=thread,
                assistant_id=listing.assistant_id,
                model=TEST_MODEL,
                status="completed",
            )
            Run.objects.filter(pk=run.pk).update(
                created_at=timezone.now() - timedelta(days=days_ago)
            )

    runs(busy, 3)  # e.g. through the API, no store conversation at all
    runs(chatty, 2)
    runs(quiet, 9, days_ago=8)  # busy last month, not this week
    runs(hidden, 5)  # never listed
    home = Client().get("/store/")
    assert [x.slug for x in home.context["trending"]] == [busy.slug, chatty.slug]
    assert quiet.slug not in home.content.decode()


def test_hidden_instructions_never_reach_a_page_for_other_people(
    owner: User, owner_client: Client, stranger_client: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    Listing.objects.filter(pk=listing.pk).update(featured=True)
    conv, _ = _start_chat(stranger_client, listing)
    stranger_client.post(f"/store/c/{conv.pk}/share")
    conv.refresh_from_db()
    pages = [
        "/store/",
        f"/store/g/{listing.slug}",
        f"/store/g/{listing.slug}/chat",
        f"/store/c/{conv.pk}",
        f"/store/s/{conv.share_token}",
        f"/store/u/{owner.username}",
        "/store/search?q=helper",
    ]
    for page in pages:
        response = stranger_client.get(page)
        assert response.status_code == 200, page
        assert SECRET not in response.content.decode(), page
        assert SECRET not in Client().get(page).content.decode(), page
    # The owner sees them, and so does everyone once the owner shows them.
    assert SECRET in owner_client.get(f"/store/g/{listing.slug}").content.decode()
    Listing.objects.filter(pk=listing.pk).update(show_instructions=True)
    assert SECRET in Client().get(f"/store/g/{listing.slug}").content.decode()


def test_the_api_keeps_an_assistant_to_its_project(owner: User, api: Any) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    response = api.get(f"/v1/assistants/{listing.assistant_id}")
    assert response.status_code == 404
    assert SECRET not in response.content.decode()
    listed = api.get("/v1/assistants").content.decode()
    assert SECRET not in listed


def test_the_visitor_stream_carries_no_run_object() -> None:
    run_payload = {"id": "run_1", "status": "completed", "instructions": SECRET}
    event, data = _visitor_frame("thread.run.completed", run_payload, "/f/{id}")  # type: ignore[misc]
    assert event == "status"
    assert SECRET not in str(data)
    for name in ("thread.run.created", "thread.run.in_progress", "thread.run.queued"):
        assert _visitor_frame(name, run_payload, "/f/{id}") is None
    delta = {"delta": {"content": [{"type": "text", "text": {"value": "Hi"}}]}}
    assert _visitor_frame("thread.message.delta", delta, "/f/{id}") == (
        "delta",
        {"text": "Hi"},
    )


def test_markdown_is_rendered_without_html_scripts_or_external_images() -> None:
    html = str(
        render_content(
            [
                {
                    "type": "text",
                    "text": {
                        "value": "**bold** <script>alert(1)</script> "
                        "![pixel](https://evil.example/p.png) "
                        "[x](javascript:alert(1)) <img src=x onerror=alert(1)>",
                        "annotations": [],
                    },
                },
                {"type": "image_file", "image_file": {"file_id": "file_abc"}},
            ],
            file_url="/store/c/conv_1/files/{id}",
        )
    )
    assert "<strong>bold</strong>" in html
    assert "<script" not in html
    assert "evil.example/p.png" not in html.replace("[image: pixel]", "")
    assert 'href="javascript' not in html  # left as plain text
    assert "<img src=x" not in html
    assert '<img class="chat-image" src="/store/c/conv_1/files/file_abc"' in html


def test_citations_become_footnotes_with_the_quoted_files_name() -> None:
    value = "Signed in 1642. Pears grow there. See sandbox:/mnt/data/r.csv"
    first_end = value.index(".")
    second_end = value.index(" See") - 1

    def cite(end: int, file_id: str, quote: str) -> dict[str, Any]:
        return {
            "type": "file_citation",
            "text": "...",
            "start_index": 0,
            "end_index": end,
            "file_citation": {"file_id": file_id, "quote": quote},
        }

    path = "sandbox:/mnt/data/r.csv"
    html = str(
        render_content(
            [
                {
                    "type": "text",
                    "text": {
                        "value": value.replace(path, f"[the report]({path})"),
                        "annotations": [
                            cite(first_end, "file_a", "The <b>treaty</b> of 1642"),
                            cite(second_end, "file_b", "Pears and quinces"),
                            {
                                "type": "file_path",
                                "text": path,
                                "start_index": 0,
                                "end_index": 0,
                                "file_path": {"file_id": "file_csv"},
                            },
                        ],
                    },
                }
            ],
            file_url="/store/c/conv_1/files/{id}",
            file_names={"file_a": "treaty <1>.pdf"},
        )
    )
    assert 'Signed in 1642<sup class="cite">[1]</sup>.' in html
    assert '<ol class="citations"><li><span class="cite-file">treaty &lt;1&gt;.pdf' in (
        html
    )
    assert '<q class="cite-quote">The &lt;b&gt;treaty&lt;/b&gt; of 1642</q>' in html
    # A file of another project (no name known) is not named by its id.
    assert '<span class="cite-file">a deleted file</span>' in html
    assert "file_b" not in html
    # The output file links to the conversation's file endpoint.
    assert 'href="/store/c/conv_1/files/file_csv"' in html


_FORM = re.compile(r"<form[^>]*method=\"post\"[^>]*>(.*?)</form>", re.S | re.I)


def test_every_post_form_carries_a_csrf_token(
    owner: User, owner_client: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    unpublished = Assistant.objects.create(
        project=listing.assistant.project, model=TEST_MODEL, name="Draft"
    ).id
    pages = [
        "/store/",
        f"/store/g/{listing.slug}",
        f"/store/g/{listing.slug}/chat",
        f"/store/g/{listing.slug}/edit",
        "/store/me",
        "/store/me/assistants/new",
        "/store/me/profile",
        "/store/me/keys",
        f"/store/me/publish?assistant={unpublished}",
    ]
    seen = 0
    for page in pages:
        body = owner_client.get(page).content.decode()
        for form in _FORM.findall(body):
            seen += 1
            assert "csrfmiddlewaretoken" in form, page
    for page in ["/store/accounts/login", "/store/accounts/signup"]:
        body = Client().get(page).content.decode()
        assert all("csrfmiddlewaretoken" in f for f in _FORM.findall(body)), page
    assert seen >= 8


def test_posts_without_a_csrf_token_are_refused(owner: User) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    c = Client(enforce_csrf_checks=True)
    assert c.post("/store/accounts/signup", {"username": "x"}).status_code == 403
    assert c.post("/store/accounts/login", {"username": "x"}).status_code == 403
    assert c.post(f"/store/g/{listing.slug}/chat", {"text": "hi"}).status_code == 403
    assert c.post(f"/store/g/{listing.slug}/report", {"reason": "x"}).status_code == 403
    c.force_login(make_user())
    for url, data in [
        (f"/store/g/{listing.slug}/rate", {"stars": 5}),
        ("/store/me/profile", {"display_name": "x"}),
        ("/store/me/assistants/new", {"name": "x", "model": TEST_MODEL}),
        ("/store/me/keys", {"name": "x"}),
        ("/store/me/projects/new", {"name": "x"}),
        ("/store/accounts/logout", {}),
    ]:
        assert c.post(url, data).status_code == 403, url
    assert not Rating.objects.filter(listing=listing).exists()


def test_a_rating_is_one_per_user_and_listing(
    owner: User, stranger_client: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    url = f"/store/g/{listing.slug}/rate"
    stranger_client.post(url, {"stars": 2, "review": "meh"})
    stranger_client.post(url, {"stars": 5, "review": "grew on me"})
    assert list(listing.ratings.values_list("stars", "review")) == [(5, "grew on me")]
    page = Client().get(f"/store/g/{listing.slug}").content.decode()
    assert "grew on me" in page and "★ 5.0 (1 rating)" in page
    assert Client().post(url, {"stars": 1}).status_code == 302  # to login
    assert listing.ratings.count() == 1


def test_a_report_reaches_the_operators(owner: User) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    Client().post(f"/store/g/{listing.slug}/report", {"reason": "spam"})
    assert list(listing.reports.values_list("reason", flat=True)) == ["spam"]


def test_publishing_through_the_forms(owner: User, owner_client: Client) -> None:
    response = owner_client.post(
        "/store/me/assistants/new",
        {"name": "Poet", "instructions": SECRET, "model": TEST_MODEL},
    )
    assert response.status_code == 302
    assistant_id = response["Location"].split("assistant=")[1]
    response = owner_client.post(
        "/store/me/publish",
        {
            "assistant": assistant_id,
            "slug": "poet",
            "category": "writing",
            "short_description": "Writes verse",
            "avatar_emoji": "🪶",
            "avatar_color": "#112233",
            "starters": "A haiku\n\nA limerick",
            "visibility": "public",
        },
    )
    assert response.status_code == 302
    listing = Listing.objects.get(slug="poet")
    assert listing.assistant_id == assistant_id
    assert listing.starters == ["A haiku", "A limerick"]
    assert listing.show_instructions is False
    assert listing.builder == owner


def test_nobody_publishes_or_edits_someone_elses_assistant(
    owner: User, stranger_client: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    other = make_listing(owner, model=TEST_MODEL).assistant_id
    response = stranger_client.get(f"/store/me/publish?assistant={other}")
    assert response.status_code == 404
    response = stranger_client.post(
        f"/store/g/{listing.slug}/edit", {"slug": "stolen", "visibility": "public"}
    )
    assert response.status_code == 404
    assert not Listing.objects.filter(slug="stolen").exists()


def _start_chat(client: Client, listing: Listing, text: str = "hi") -> tuple[Any, Any]:
    response = client.post(
        f"/store/g/{listing.slug}/chat", {"text": text}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 200, response.content
    body = response.json()
    conv = Conversation.objects.get(pk=body["conversation_url"].rsplit("/", 1)[1])
    return conv, body


def test_conversations_are_private_to_the_visitor_until_shared(
    owner: User, stranger_client: Client
) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    conv, body = _start_chat(stranger_client, listing, "What is 2+2?")
    assert stranger_client.get(f"/store/c/{conv.pk}").status_code == 200
    assert Client().get(f"/store/c/{conv.pk}").status_code == 404
    assert Client().get(body["events_url"]).status_code == 404
    assert Client().post(f"/store/c/{conv.pk}/share").status_code == 404
    stranger_client.post(f"/store/c/{conv.pk}/share")
    conv.refresh_from_db()
    assert conv.share_token and len(conv.share_token) >= 32
    shared = Client().get(f"/store/s/{conv.share_token}")
    assert shared.status_code == 200
    assert "What is 2+2?" in shared.content.decode()
    assert "<textarea" not in shared.content.decode()  # read-only
    assert Client().get("/store/s/not-a-token").status_code == 404


def test_anonymous_visitors_have_a_daily_quota_per_listing(
    owner: User, settings: Any
) -> None:
    settings.STORE_ANON_RUNS_PER_IP_LISTING = 2
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    other = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    statuses = [
        Client()
        .post(
            f"/store/g/{listing.slug}/chat",
            {"text": "hi"},
            HTTP_ACCEPT="application/json",
        )
        .status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert Conversation.objects.filter(listing=listing).count() == 2
    # Another listing has its own allowance.
    assert (
        Client().post(f"/store/g/{other.slug}/chat", {"text": "hi"}).status_code == 302
    )


def test_the_owners_daily_limit_caps_the_public_but_not_the_owner(
    owner: User, owner_client: Client, stranger_client: Client
) -> None:
    listing = make_listing(
        owner, model=TEST_MODEL, visibility=PUBLIC, daily_run_limit=1
    )
    url = f"/store/g/{listing.slug}/chat"
    assert stranger_client.post(url, {"text": "a"}).status_code == 302
    refused = stranger_client.post(url, {"text": "b"}, HTTP_ACCEPT="application/json")
    assert refused.status_code == 429
    assert "limit" in refused.json()["error"]
    assert Client().post(url, {"text": "c"}).status_code == 429
    assert owner_client.post(url, {"text": "mine"}).status_code == 302


def test_duplicate_copies_into_the_visitors_project_only_when_allowed(
    owner: User, stranger_client: Client
) -> None:
    closed = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    assert stranger_client.post(f"/store/g/{closed.slug}/duplicate").status_code == 404
    assert SECRET not in stranger_client.get(f"/store/g/{closed.slug}").content.decode()
    listing = make_listing(
        owner, model=TEST_MODEL, visibility=PUBLIC, allow_duplicate=True
    )
    page = stranger_client.get(f"/store/g/{listing.slug}").content.decode()
    assert "Duplicate to my project" in page
    response = stranger_client.post(f"/store/g/{listing.slug}/duplicate")
    assert response.status_code == 302
    visitor = User.objects.get(pk=stranger_client.session["_auth_user_id"])
    copy = Assistant.objects.get(project__memberships__user=visitor)
    assert copy.instructions == SECRET
    assert copy.name == "Helper (copy)"
    assert copy.project_id != listing.assistant.project_id
    assert Client().post(f"/store/g/{listing.slug}/duplicate").status_code == 302


def test_operators_unlist_and_feature_in_bulk_from_the_admin(owner: User) -> None:
    first = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    second = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    operator = User.objects.create_superuser("operator", password=PASSWORD)
    c = Client()
    c.force_login(operator)
    changelist = c.get("/admin/store/listing/")
    assert changelist.status_code == 200
    assert first.slug in changelist.content.decode()
    for action in ("feature", "unlist"):
        response = c.post(
            "/admin/store/listing/",
            {"action": action, "_selected_action": [first.pk, second.pk]},
        )
        assert response.status_code == 302
    assert set(
        Listing.objects.filter(pk__in=[first.pk, second.pk]).values_list(
            "featured", "unlisted_by_operator"
        )
    ) == {(True, True)}
    assert Client().get(f"/store/g/{first.slug}").status_code == 404


def test_search_follows_an_assistant_renamed_through_the_api(owner: User) -> None:
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC, name="Plain")
    Assistant.objects.filter(pk=listing.assistant_id).update(
        name="Wombat whisperer", description="Burrowing advice"
    )
    for query in ("wombat", "burrowing"):
        found = Client().get(f"/store/search?q={query}").content.decode()
        assert f"/store/g/{listing.slug}" in found, query
    assert f"/store/g/{listing.slug}" not in (
        Client().get("/store/search?q=plain").content.decode()
    )


def test_shared_pages_carry_opengraph_tags(owner: User) -> None:
    listing = make_listing(
        owner,
        model=TEST_MODEL,
        visibility=PUBLIC,
        name="Tide <tables>",
        short_description="When the sea comes & goes",
    )
    page = Client().get(f"/store/g/{listing.slug}").content.decode()
    assert '<meta property="og:title" content="Tide &lt;tables&gt;">' in page
    assert (
        '<meta property="og:description" content="When the sea comes &amp; goes">'
        in page
    )
    assert (
        f'<meta property="og:url" content="http://testserver/store/g/{listing.slug}">'
        in page
    )


def test_store_404s_are_pages_and_api_404s_stay_json(db: Any) -> None:
    page = Client().get("/store/g/no-such-listing")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")
    assert "Not found" in page.content.decode()
    api = Client().get("/v1/no-such-endpoint")
    assert api.status_code == 404
    assert "error" in api.json()


def test_search_finds_listings_that_mean_the_same_thing(owner: User) -> None:
    from store.services.listing import listing_embed

    marine = make_listing(
        owner,
        model=TEST_MODEL,
        visibility=PUBLIC,
        name="Reef guide",
        description="Answers questions about sharks, whales and coral reefs",
    )
    taxes = make_listing(
        owner,
        model=TEST_MODEL,
        visibility=PUBLIC,
        name="Ledger helper",
        description="Bookkeeping for small businesses and VAT returns",
    )
    for listing in (marine, taxes):
        listing_embed(listing_id=listing.pk)
    # No word in common with either listing.
    found = Client().get("/store/search?q=ocean+animals").content.decode()
    assert f"/store/g/{marine.slug}" in found
    assert f"/store/g/{taxes.slug}" not in found


_SECRET_KEY = re.compile(r'<code id="new-key">(sk-[^<]+)</code>')


def test_a_web_user_creates_an_api_key_shown_once_that_works_until_revoked(
    owner: User, owner_client: Client
) -> None:
    from core.models import ApiKey, hash_key

    page = owner_client.post("/store/me/keys", {"name": "laptop"})
    assert page.status_code == 200
    assert page["Cache-Control"] == "no-store"
    found = _SECRET_KEY.search(page.content.decode())
    assert found is not None
    raw = found.group(1)
    key = ApiKey.objects.get(name="laptop")
    project = Membership.objects.get(user=owner).project
    assert key.project_id == project.pk
    # Only the hash is kept, and the secret is never shown again.
    assert key.hashed_key == hash_key(raw) and raw not in str(vars(key))
    assert raw not in owner_client.get("/store/me/keys").content.decode()
    api = Client(headers={"Authorization": f"Bearer {raw}"})
    assert api.get("/v1/assistants").status_code == 200

    # Someone else cannot revoke it; its owner can, and then it fails.
    stranger = Client()
    stranger.force_login(make_user())
    assert stranger.post(f"/store/me/keys/{key.pk}/revoke").status_code == 404
    assert api.get("/v1/assistants").status_code == 200
    assert owner_client.post(f"/store/me/keys/{key.pk}/revoke").status_code == 302
    assert api.get("/v1/assistants").status_code == 401


def test_the_project_switcher_changes_where_assistants_and_keys_go(
    owner: User, owner_client: Client
) -> None:
    first = Membership.objects.get(user=owner).project
    make_listing(owner, model=TEST_MODEL, name="In the first")
    response = owner_client.post("/store/me/projects/new", {"name": "Side project"})
    assert response.status_code == 302
    second = Project.objects.get(name="Side project")
    assert second.organization_id == first.organization_id
    assert Membership.objects.filter(user=owner, project=second).exists()
    # Creating it switched to it: the dashboard shows its (no) assistants.
    dashboard = owner_client.get("/store/me").content.decode()
    assert "In the first" not in dashboard
    assert 'id="project-select"' in dashboard
    owner_client.post(
        "/store/me/assistants/new", {"name": "In the second", "model": TEST_MODEL}
    )
    assert Assistant.objects.get(name="In the second").project_id == second.pk
    owner_client.post("/store/me/keys", {"name": "side"})
    from core.models import ApiKey

    assert ApiKey.objects.get(name="side").project_id == second.pk

    back = owner_client.post(
        "/store/me/project", {"project": first.pk, "next": "/store/me"}
    )
    assert back.status_code == 302 and back["Location"] == "/store/me"
    assert "In the first" in owner_client.get("/store/me").content.decode()
    # Only one's own projects, and only local redirects.
    other = Membership.objects.get(user=make_user()).project
    assert (
        owner_client.post("/store/me/project", {"project": other.pk}).status_code == 404
    )
    away = owner_client.post(
        "/store/me/project", {"project": first.pk, "next": "https://evil.example/"}
    )
    assert away["Location"] == "/store/me"


def test_the_client_ip_is_read_right_to_left_through_trusted_proxies_only() -> None:
    from store.services.throttle import client_ip

    trusted = ["10.0.0.0/8", "fd00::1"]
    forged = "6.6.6.6, 1.2.3.4, 10.0.0.2"
    # Not from a proxy of ours: the header is the client's to forge.
    assert client_ip(remote_addr="5.5.5.5", forwarded_for=forged, trusted=trusted) == (
        "5.5.5.5"
    )
    assert client_ip(remote_addr="10.0.0.1", forwarded_for=forged, trusted=[]) == (
        "10.0.0.1"
    )
    # Through two proxies of ours: the first untrusted hop from the right.
    assert client_ip(remote_addr="10.0.0.1", forwarded_for=forged, trusted=trusted) == (
        "1.2.3.4"
    )
    assert (
        client_ip(remote_addr="fd00::1", forwarded_for="2001:db8::7", trusted=trusted)
        == "2001:db8::7"
    )
    assert (
        client_ip(remote_addr="10.0.0.1", forwarded_for="junk", trusted=trusted)
        == "10.0.0.1"
    )


def test_anonymous_quotas_count_the_forwarded_client_behind_a_trusted_proxy(
    owner: User, settings: Any
) -> None:
    settings.TRUSTED_PROXIES = ["127.0.0.1"]
    settings.STORE_ANON_RUNS_PER_IP = 1
    listing = make_listing(owner, model=TEST_MODEL, visibility=PUBLIC)
    url = f"/store/g/{listing.slug}/chat"
    first = Client(HTTP_X_FORWARDED_FOR="203.0.113.5")
    assert first.post(url, {"text": "hi"}).status_code == 302
    assert first.post(url, {"text": "again"}).status_code == 429
    # Another client behind the same proxy has its own quota.
    other = Client(HTTP_X_FORWARDED_FOR="203.0.113.6")
    assert other.post(url, {"text": "hi"}).status_code == 302


def test_log_ins_are_refused_after_too_many_failures(db: Any, settings: Any) -> None:
    settings.STORE_LOGIN_FAILURES_PER_15_MIN = 3
    user = make_user()
    c = Client()
    for _ in range(3):
        bad = c.post(
            "/store/accounts/login", {"username": user.username, "password": "no"}
        )
        assert bad.status_code == 200
    # Now even the right password is refused, for a while.
    right = {"username": user.username, "password": PASSWORD}
    refused = c.post("/store/accounts/login", right)
    assert refused.status_code == 429
    assert "Too many attempts" in refused.content.decode()
    assert c.get("/store/me").status_code == 302
    # Per username too: another IP guessing the same account is refused.
    elsewhere = Client(REMOTE_ADDR="192.0.2.9")
    assert elsewhere.post("/store/accounts/login", right).status_code == 429
    clear_quotas()
    assert c.post("/store/accounts/login", right).status_code == 302


def test_sign_ups_are_limited_per_ip(db: Any, settings: Any) -> None:
    settings.STORE_SIGNUPS_PER_IP_HOUR = 1
    c = Client()
    data = {"password1": PASSWORD, "password2": PASSWORD}
    assert (
        c.post("/store/accounts/signup", {"username": "one", **data}).status_code == 302
    )
    again = Client().post("/store/accounts/signup", {"username": "two", **data})
    assert again.status_code == 429
    assert not User.objects.filter(username="two").exists()


def _image(fmt: str, size: tuple[int, int] = (40, 20)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


def _edit_form(listing: Listing, **extra: Any) -> dict[str, Any]:
    return {
        "slug": listing.slug,
        "category": listing.category,
        "short_description": "x",
        "avatar_emoji": "🤖",
        "avatar_color": "#4f46e5",
        "visibility": listing.visibility,
        **extra,
    }


def test_an_uploaded_avatar_is_re_encoded_and_served_only_where_the_listing_is(
    owner: User,
    owner_client: Client,
    stranger_client: Client,
    settings: Any,
    tmp_path: Any,
) -> None:
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image

    settings.MEDIA_ROOT = str(tmp_path)
    listing = make_listing(owner, model=TEST_MODEL, visibility=PRIVATE)
    url = f"/store/g/{listing.slug}/edit"
    upload = SimpleUploadedFile("me.jpg", _image("JPEG"), content_type="image/jpeg")
    response = owner_client.post(url, _edit_form(listing, avatar_upload=upload))
    assert response.status_code == 302
    listing.refresh_from_db()
    assert listing.avatar_image.name.endswith(".png")
    page = owner_client.get(f"/store/g/{listing.slug}").content.decode()
    assert f"/store/g/{listing.slug}/avatar.png?v=" in page
    served = owner_client.get(f"/store/g/{listing.slug}/avatar.png")
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    image = Image.open(io.BytesIO(b"".join(served.streaming_content)))  # type: ignore[attr-defined]
    assert (image.format, image.size) == ("PNG", (256, 256))
    # A private listing's avatar is as hidden as the listing.
    assert stranger_client.get(f"/store/g/{listing.slug}/avatar.png").status_code == 404

    # Not an image (an HTML page named .png), or too large: a form error,
    # and the avatar stays as it was.
    before = listing.avatar_image.name
    fake = SimpleUploadedFile("x.png", b"<html><script>alert(1)</script>")
    refused = owner_client.post(url, _edit_form(listing, avatar_upload=fake))
    assert refused.status_code == 200
    assert "not an image" in refused.content.decode()
    settings.STORE_AVATAR_MAX_BYTES = 100
    big = SimpleUploadedFile("big.png", _image("PNG", (300, 300)))
    refused = owner_client.post(url, _edit_form(listing, avatar_upload=big))
    assert "too large" in refused.content.decode()
    listing.refresh_from_db()
    assert listing.avatar_image.name == before

    owner_client.post(url, _edit_form(listing, avatar_remove="on"))
    listing.refresh_from_db()
    assert not listing.avatar_image
    assert owner_client.get(f"/store/g/{listing.slug}/avatar.png").status_code == 404
