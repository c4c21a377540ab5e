"""The authorization matrix: every route of the URLconf, every method, every
kind of caller, the expected status every time (issue #9).

One row per (route, method). ``test_every_route_has_a_row`` walks
``config.urls`` with Django's resolver and fails for a route or an API method
without a row (and for a row whose route is gone), so a new endpoint cannot
ship without saying who may call it.

Callers of ``/v1``:

- ``owner``: the project that owns the objects in the path;
- ``same_org``: another project of the same organization (projects are the
  tenant boundary: 404, exactly like a stranger);
- ``other_org``: a project of another organization (404);
- ``revoked``: a revoked key of the owning project (401);
- ``no_key``: no Authorization header (401);
- ``session``: a logged-in superuser's session cookie and no key (401:
  cookies never authenticate the API).

Lists answer 200 to everyone with a key and never contain another project's
objects; bodies that name another project's object are refused. Read-only
fields (ids, timestamps, status, usage, project) sent in create and update
bodies are rejected or ignored, never written. The store's and the admin's
routes are checked with web users: anonymous, the owner, another user.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework.views import APIView

from assistants.models import Run, RunStep
from core.services.keys import api_key_create, api_key_revoke
from tests.conftest import TEST_MODEL, Tenant, ensure_test_model, make_tenant
from tests.store_helpers import PASSWORD, make_listing, make_user

API_METHODS = ("get", "post", "put", "patch", "delete")
READ_ONLY_FIELDS: dict[str, Any] = {
    "id": "injected_id_123",
    "object": "injected",
    "created_at": 1,
    "status": "completed",
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    "project": "proj_injected",
    "project_id": "proj_injected",
    "organization": "org_injected",
}

# Matrix cells checked, by this module's tests (printed by the last test).
CELLS: dict[str, int] = {"api": 0, "read_only": 0, "lists": 0, "web": 0}


# --- routes -----------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    pattern: str
    callback: Any


def _walk(patterns: list[Any], prefix: str = "") -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield Route(prefix + str(entry.pattern), entry.callback)


def all_routes() -> list[Route]:
    return list(_walk(get_resolver().url_patterns))


def api_methods(route: Route) -> list[str]:
    view = getattr(route.callback, "view_class", None) or getattr(
        route.callback, "cls", None
    )
    if view is None or not issubclass(view, APIView):
        return []
    return [m.upper() for m in API_METHODS if hasattr(view, m)]


# --- the world: one project's objects, and its neighbours' ------------------


@dataclass
class World:
    owner: Tenant
    same_org: Tenant
    other_org: Tenant
    revoked_key: str
    superuser: User
    ids: dict[str, str] = field(default_factory=dict)
    # Ids of objects the two other projects own (never in the owner's lists).
    foreign_ids: set[str] = field(default_factory=set)

    def client(self, actor: str) -> Any:
        if actor == "session":
            web = APIClient()
            web.force_login(self.superuser)
            return web
        api = APIClient()
        key = {
            "owner": self.owner.raw_key,
            "same_org": self.same_org.raw_key,
            "other_org": self.other_org.raw_key,
            "revoked": self.revoked_key,
        }.get(actor)
        if key is not None:
            api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return api


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.content[:500]
    body = response.json()
    assert isinstance(body, dict)
    return body


def _upload_file(api: Any, name: str) -> str:
    return _ok(
        api.post(
            "/v1/files",
            {
                "file": SimpleUploadedFile(name, b"abc", content_type="text/plain"),
                "purpose": "assistants",
            },
            format="multipart",
        )
    )["id"]


def _objects_of(api: Any, ids: dict[str, str], tag: str = "") -> None:
    """Create one of every kind of object through the API, ids into ``ids``."""

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return _ok(api.post(path, body, format="json"))

    ids["assistant"] = post("/v1/assistants", {"model": TEST_MODEL, "name": tag})["id"]
    ids["thread"] = post(
        "/v1/threads", {"messages": [{"role": "user", "content": "hello"}]}
    )["id"]
    ids["message"] = post(
        f"/v1/threads/{ids['thread']}/messages", {"role": "user", "content": "hi"}
    )["id"]
    ids["file"] = _upload_file(api, f"a{tag}.txt")
    ids["file2"] = _upload_file(api, f"b{tag}.txt")
    ids["vector_store"] = post("/v1/vector_stores", {"name": f"vs{tag}"})["id"]


def build_world() -> World:
    ensure_test_model()
    owner = make_tenant()
    same_org = make_tenant(organization=owner.organization)
    other_org = make_tenant()
    revoked = api_key_create(project=owner.project, name="revoked")
    api_key_revoke(api_key=revoked.api_key)
    superuser = User.objects.create_superuser(
        f"root-{owner.project.id}", password=PASSWORD
    )
    world = World(owner, same_org, other_org, revoked.raw, superuser)
    api = world.client("owner")
    ids = world.ids
    _objects_of(api, ids)

    def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return _ok(api.post(path, body, format="json"))

    # A thread with a queued run (no worker runs in-process: it stays queued),
    # and a finished run whose event stream ends at once.
    ids["run_thread"] = post("/v1/threads", {})["id"]
    ids["run"] = post(
        f"/v1/threads/{ids['run_thread']}/runs", {"assistant_id": ids["assistant"]}
    )["id"]
    ids["done_thread"] = post("/v1/threads", {})["id"]
    ids["done_run"] = post(
        f"/v1/threads/{ids['done_thread']}/runs", {"assistant_id": ids["assistant"]}
    )["id"]
    Run.objects.filter(pk=ids["done_run"]).update(
        status="completed", completed_at=timezone.now()
    )
    ids["step"] = RunStep.objects.create(
        run_id=ids["run"],
        thread_id=ids["run_thread"],
        assistant_id=ids["assistant"],
        key="matrix",
        type="message_creation",
        step_details={
            "type": "message_creation",
            "message_creation": {"message_id": ids["message"]},
        },
    ).id
    ids["upload"] = post(
        "/v1/uploads",
        {
            "filename": "big.txt",
            "purpose": "assistants",
            "bytes": 3,
            "mime_type": "text/plain",
        },
    )["id"]
    ids["part"] = _ok(
        api.post(
            f"/v1/uploads/{ids['upload']}/parts",
            {"data": SimpleUploadedFile("blob", b"abc")},
            format="multipart",
        )
    )["id"]
    ids["vs_file"] = post(
        f"/v1/vector_stores/{ids['vector_store']}/files", {"file_id": ids["file"]}
    )["id"]
    ids["batch"] = post(
        f"/v1/vector_stores/{ids['vector_store']}/file_batches",
        {"file_ids": [ids["file2"]]},
    )["id"]
    for actor, tag in (("same_org", "s"), ("other_org", "o")):
        theirs: dict[str, str] = {}
        _objects_of(world.client(actor), theirs, tag)
        world.foreign_ids |= set(theirs.values())
    return world


# --- the /v1 rows -----------------------------------------------------------

Body = Callable[[dict[str, str]], Any]


@dataclass(frozen=True)
class Row:
    route: str
    method: str
    path: str
    # "object": the path names the owner's objects (others: 404);
    # "collection": the caller's own list or a create (others: 200, own data);
    # "global": the installation's model registry (any key: 200).
    kind: str
    owner: frozenset[int] = frozenset({200})
    body: Body | None = None
    multipart: bool = False
    # Statuses for same_org/other_org when not the kind's default: a create
    # whose body names the owner's objects.
    foreign: frozenset[int] | None = None
    # Probe read-only fields in the body (create/update with a JSON body).
    read_only: bool = False


def S(*codes: int) -> frozenset[int]:
    return frozenset(codes)


RUN = "v1/threads/<str:thread_id>/runs/<str:run_id>"
VS = "v1/vector_stores/<str:vector_store_id>"
REFUSED = S(400, 404)

ROWS: list[Row] = [
    Row("v1/models", "GET", "/v1/models", "global"),
    Row(
        "v1/models/<path:model_id>",
        "GET",
        f"/v1/models/{TEST_MODEL}",
        "global",
    ),
    Row("v1/assistants", "GET", "/v1/assistants", "collection"),
    Row(
        "v1/assistants",
        "POST",
        "/v1/assistants",
        "collection",
        body=lambda ids: {"model": TEST_MODEL, "name": "new"},
        read_only=True,
    ),
    Row(
        "v1/assistants",
        "POST",
        "/v1/assistants",
        "collection",
        # An assistant may not use another project's files or stores.
        body=lambda ids: {
            "model": TEST_MODEL,
            "tools": [{"type": "code_interpreter"}, {"type": "file_search"}],
            "tool_resources": {
                "code_interpreter": {"file_ids": [ids["file"]]},
                "file_search": {"vector_store_ids": [ids["vector_store"]]},
            },
        },
        foreign=REFUSED,
    ),
    Row(
        "v1/assistants/<str:assistant_id>",
        "GET",
        "/v1/assistants/{assistant}",
        "object",
    ),
    Row(
        "v1/assistants/<str:assistant_id>",
        "POST",
        "/v1/assistants/{assistant}",
        "object",
        body=lambda ids: {"name": "renamed"},
        read_only=True,
    ),
    Row(
        "v1/assistants/<str:assistant_id>",
        "DELETE",
        "/v1/assistants/{assistant}",
        "object",
    ),
    Row(
        "v1/threads",
        "POST",
        "/v1/threads",
        "collection",
        body=lambda ids: {"metadata": {"k": "v"}},
        read_only=True,
    ),
    Row(
        "v1/threads",
        "POST",
        "/v1/threads",
        "collection",
        body=lambda ids: {
            "tool_resources": {
                "file_search": {"vector_store_ids": [ids["vector_store"]]}
            },
            "messages": [
                {
                    "role": "user",
                    "content": "x",
                    "attachments": [
                        {"file_id": ids["file"], "tools": [{"type": "file_search"}]}
                    ],
                }
            ],
        },
        foreign=REFUSED,
    ),
    Row(
        "v1/threads/runs",
        "POST",
        "/v1/threads/runs",
        "collection",
        body=lambda ids: {"assistant_id": ids["assistant"]},
        foreign=REFUSED,
        read_only=True,
    ),
    Row("v1/threads/<str:thread_id>", "GET", "/v1/threads/{thread}", "object"),
    Row(
        "v1/threads/<str:thread_id>",
        "POST",
        "/v1/threads/{thread}",
        "object",
        body=lambda ids: {"metadata": {"a": "b"}},
        read_only=True,
    ),
    Row("v1/threads/<str:thread_id>", "DELETE", "/v1/threads/{thread}", "object"),
    Row(
        "v1/threads/<str:thread_id>/messages",
        "GET",
        "/v1/threads/{thread}/messages",
        "object",
    ),
    Row(
        "v1/threads/<str:thread_id>/messages",
        "POST",
        "/v1/threads/{thread}/messages",
        "object",
        body=lambda ids: {"role": "user", "content": "more"},
        read_only=True,
    ),
    Row(
        "v1/threads/<str:thread_id>/messages/<str:message_id>",
        "GET",
        "/v1/threads/{thread}/messages/{message}",
        "object",
    ),
    Row(
        "v1/threads/<str:thread_id>/messages/<str:message_id>",
        "POST",
        "/v1/threads/{thread}/messages/{message}",
        "object",
        body=lambda ids: {"metadata": {"x": "y"}},
        read_only=True,
    ),
    Row(
        "v1/threads/<str:thread_id>/messages/<str:message_id>",
        "DELETE",
        "/v1/threads/{thread}/messages/{message}",
        "object",
    ),
    Row(
        "v1/threads/<str:thread_id>/runs",
        "GET",
        "/v1/threads/{run_thread}/runs",
        "object",
    ),
    Row(
        "v1/threads/<str:thread_id>/runs",
        "POST",
        "/v1/threads/{thread}/runs",
        "object",
        body=lambda ids: {"assistant_id": ids["assistant"]},
        read_only=True,
    ),
    Row(RUN, "GET", "/v1/threads/{run_thread}/runs/{run}", "object"),
    Row(
        RUN,
        "POST",
        "/v1/threads/{run_thread}/runs/{run}",
        "object",
        body=lambda ids: {"metadata": {"m": "1"}},
        read_only=True,
    ),
    Row(
        f"{RUN}/cancel", "POST", "/v1/threads/{run_thread}/runs/{run}/cancel", "object"
    ),
    Row(
        f"{RUN}/submit_tool_outputs",
        "POST",
        "/v1/threads/{run_thread}/runs/{run}/submit_tool_outputs",
        "object",
        # The run is queued, not waiting for outputs: the owner is let in and
        # told so (400), everyone else never learns the run exists.
        owner=S(400),
        body=lambda ids: {"tool_outputs": [{"tool_call_id": "c", "output": "o"}]},
    ),
    Row(
        f"{RUN}/events",
        "GET",
        "/v1/threads/{done_thread}/runs/{done_run}/events",
        "object",
    ),
    Row(f"{RUN}/steps", "GET", "/v1/threads/{run_thread}/runs/{run}/steps", "object"),
    Row(
        f"{RUN}/steps/<str:step_id>",
        "GET",
        "/v1/threads/{run_thread}/runs/{run}/steps/{step}",
        "object",
    ),
    Row("v1/files", "GET", "/v1/files", "collection"),
    Row(
        "v1/files",
        "POST",
        "/v1/files",
        "collection",
        body=lambda ids: {
            "file": SimpleUploadedFile("n.txt", b"new", content_type="text/plain"),
            "purpose": "assistants",
        },
        multipart=True,
        read_only=True,
    ),
    Row("v1/files/<str:file_id>", "GET", "/v1/files/{file}", "object"),
    Row("v1/files/<str:file_id>", "DELETE", "/v1/files/{file}", "object"),
    Row("v1/files/<str:file_id>/content", "GET", "/v1/files/{file}/content", "object"),
    Row(
        "v1/uploads",
        "POST",
        "/v1/uploads",
        "collection",
        body=lambda ids: {
            "filename": "u.txt",
            "purpose": "assistants",
            "bytes": 10,
            "mime_type": "text/plain",
        },
        read_only=True,
    ),
    Row(
        "v1/uploads/<str:upload_id>/parts",
        "POST",
        "/v1/uploads/{upload}/parts",
        "object",
        body=lambda ids: {"data": SimpleUploadedFile("blob", b"x")},
        multipart=True,
    ),
    Row(
        "v1/uploads/<str:upload_id>/complete",
        "POST",
        "/v1/uploads/{upload}/complete",
        "object",
        body=lambda ids: {"part_ids": [ids["part"]]},
        read_only=True,
    ),
    Row(
        "v1/uploads/<str:upload_id>/cancel",
        "POST",
        "/v1/uploads/{upload}/cancel",
        "object",
    ),
    Row("v1/vector_stores", "GET", "/v1/vector_stores", "collection"),
    Row(
        "v1/vector_stores",
        "POST",
        "/v1/vector_stores",
        "collection",
        body=lambda ids: {"name": "new store"},
        read_only=True,
    ),
    Row(
        "v1/vector_stores",
        "POST",
        "/v1/vector_stores",
        "collection",
        body=lambda ids: {"name": "theft", "file_ids": [ids["file"]]},
        foreign=REFUSED,
    ),
    Row(VS, "GET", "/v1/vector_stores/{vector_store}", "object"),
    Row(
        VS,
        "POST",
        "/v1/vector_stores/{vector_store}",
        "object",
        body=lambda ids: {"name": "renamed"},
        read_only=True,
    ),
    Row(VS, "DELETE", "/v1/vector_stores/{vector_store}", "object"),
    Row(
        f"{VS}/search",
        "POST",
        "/v1/vector_stores/{vector_store}/search",
        "object",
        body=lambda ids: {"query": "anything"},
    ),
    Row(f"{VS}/files", "GET", "/v1/vector_stores/{vector_store}/files", "object"),
    Row(
        f"{VS}/files",
        "POST",
        "/v1/vector_stores/{vector_store}/files",
        "object",
        body=lambda ids: {"file_id": ids["file2"]},
        read_only=True,
    ),
    Row(
        f"{VS}/files/<str:file_id>",
        "GET",
        "/v1/vector_stores/{vector_store}/files/{vs_file}",
        "object",
    ),
    Row(
        f"{VS}/files/<str:file_id>",
        "POST",
        "/v1/vector_stores/{vector_store}/files/{vs_file}",
        "object",
        body=lambda ids: {"attributes": {"k": "v"}},
        read_only=True,
    ),
    Row(
        f"{VS}/files/<str:file_id>",
        "DELETE",
        "/v1/vector_stores/{vector_store}/files/{vs_file}",
        "object",
    ),
    Row(
        f"{VS}/files/<str:file_id>/content",
        "GET",
        "/v1/vector_stores/{vector_store}/files/{vs_file}/content",
        "object",
    ),
    Row(
        f"{VS}/file_batches",
        "POST",
        "/v1/vector_stores/{vector_store}/file_batches",
        "object",
        body=lambda ids: {"file_ids": [ids["file"]]},
        read_only=True,
    ),
    Row(
        f"{VS}/file_batches/<str:batch_id>",
        "GET",
        "/v1/vector_stores/{vector_store}/file_batches/{batch}",
        "object",
    ),
    Row(
        f"{VS}/file_batches/<str:batch_id>/cancel",
        "POST",
        "/v1/vector_stores/{vector_store}/file_batches/{batch}/cancel",
        "object",
    ),
    Row(
        f"{VS}/file_batches/<str:batch_id>/files",
        "GET",
        "/v1/vector_stores/{vector_store}/file_batches/{batch}/files",
        "object",
    ),
]

# Public documents: anyone, with or without a key or session, gets 200.
PUBLIC_ROUTES = {"openapi.json", "docs/", "redoc/"}
# Probes and the metrics scrape (core/observability): no API key involved.
OPS_ROUTES = {"healthz", "readyz", "metrics"}


def _row_id(row: Row) -> str:
    suffix = "+refs" if row.foreign is not None else ""
    return f"{row.method} {row.route}{suffix}"


# --- the checks -------------------------------------------------------------


def _call(api: Any, row: Row, world: World, body_override: Any = None) -> Any:
    path = row.path.format(**world.ids)
    method = getattr(api, row.method.lower())
    if row.method == "GET":
        return method(path)
    body = body_override if body_override is not None else None
    if body is None and row.body is not None:
        body = row.body(world.ids)
    if row.multipart:
        return method(path, body or {}, format="multipart")
    return method(path, body, format="json") if body is not None else method(path)


def _expect(response: Any, codes: frozenset[int], who: str, row: Row) -> None:
    assert response.status_code in codes, (
        f"{row.method} {row.path} as {who}: {response.status_code} "
        f"(expected {sorted(codes)}): {response.content[:300]!r}"
    )
    if response.status_code >= 400:
        # Every refusal is the OpenAI error body.
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
    CELLS["api"] += 1


def _list_ids(response: Any) -> set[str]:
    if "json" not in response.get("Content-Type", ""):
        return set()
    body = response.json()
    data = body.get("data") if isinstance(body, dict) else None
    return {item["id"] for item in data or [] if isinstance(item, dict)}


@pytest.fixture
def world(db: Any) -> World:
    return build_world()


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_api_route(row: Row, world: World) -> None:
    owner_ids = set(world.ids.values())
    foreign_default = {
        "object": S(404),
        "collection": S(200),
        "global": S(200),
    }[row.kind]
    foreign = row.foreign if row.foreign is not None else foreign_default
    # Everyone but the owner first: nothing they do may change the world.
    for actor in ("no_key", "revoked", "session"):
        _expect(_call(world.client(actor), row, world), S(401), actor, row)
    for actor in ("same_org", "other_org"):
        response = _call(world.client(actor), row, world)
        _expect(response, foreign, actor, row)
        if row.kind != "global" and response.status_code == 200:
            leaked = _list_ids(response) & owner_ids
            assert not leaked, f"{actor} sees the owner's {leaked}"
            CELLS["lists"] += 1
    response = _call(world.client("owner"), row, world)
    _expect(response, row.owner, "owner", row)
    if row.method == "GET" and response.status_code == 200:
        leaked = _list_ids(response) & world.foreign_ids
        assert not leaked, f"the owner sees another project's {leaked}"
        CELLS["lists"] += 1


READ_ONLY_ROWS = [row for row in ROWS if row.read_only]


@pytest.mark.parametrize("row", READ_ONLY_ROWS, ids=_row_id)
def test_read_only_fields_are_never_written(row: Row, world: World) -> None:
    owner = world.client("owner")
    for name, value in READ_ONLY_FIELDS.items():
        assert row.body is not None
        body = row.body(world.ids)
        if row.multipart:
            body[name] = value if isinstance(value, str) else json.dumps(value)
        else:
            body[name] = value
        response = _call(owner, row, world, body_override=body)
        CELLS["read_only"] += 1
        if response.status_code == 400:
            error = response.json()["error"]
            assert error["param"] == name, error
            continue
        assert response.status_code == 200, response.content[:300]
        written = response.json()
        assert written.get(name) != value, f"{name} was written: {written}"
        if name in ("project", "project_id", "organization"):
            assert name not in written


def test_a_foreign_key_cannot_read_objects_by_guessing_the_path(world: World) -> None:
    """Ids of the owner in the other projects' paths: the same 404 as an id
    that never existed, so ids cannot be probed for existence."""
    stranger = world.client("other_org")
    for path in (
        f"/v1/assistants/{world.ids['assistant']}",
        "/v1/assistants/asst_doesnotexist",
    ):
        response = stranger.get(path)
        assert response.status_code == 404
        CELLS["api"] += 1
    real = stranger.get(f"/v1/assistants/{world.ids['assistant']}").json()
    made_up = stranger.get("/v1/assistants/asst_doesnotexist").json()
    assert real["error"]["message"].replace(world.ids["assistant"], "X") == made_up[
        "error"
    ]["message"].replace("asst_doesnotexist", "X")


@pytest.mark.parametrize("route", sorted(PUBLIC_ROUTES))
def test_public_documents(route: str, db: Any) -> None:
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer sk-bogus-key-000000"}):
        response = Client().get(f"/{route}", **headers)
        assert response.status_code == 200, (route, headers)
        CELLS["web"] += 1


def test_probes_and_metrics(db: Any) -> None:
    """Liveness and readiness answer anyone (an orchestrator has no key) and
    never 401; with METRICS_TOKEN set, /metrics wants exactly that token: an
    API key or a session is not it."""
    from django.test import override_settings

    ensure_test_model()
    tenant = make_tenant()
    for headers in ({}, {"HTTP_AUTHORIZATION": f"Bearer {tenant.raw_key}"}):
        assert Client().get("/healthz", **headers).status_code == 200
        assert Client().get("/readyz", **headers).status_code in (200, 503)
        CELLS["web"] += 2
    with override_settings(METRICS_TOKEN="metrics-token-0123", METRICS_ALLOWED_IPS=[]):
        for headers in (
            {},
            {"HTTP_AUTHORIZATION": f"Bearer {tenant.raw_key}"},
            {"HTTP_AUTHORIZATION": "Bearer wrong"},
        ):
            assert Client().get("/metrics", **headers).status_code == 401
            CELLS["web"] += 1
        root = Client()
        root.force_login(User.objects.create_superuser("m-root", password=PASSWORD))
        assert root.get("/metrics").status_code == 401
        good = {"HTTP_AUTHORIZATION": "Bearer metrics-token-0123"}
        assert Client().get("/metrics", **good).status_code == 200
        CELLS["web"] += 2


# --- completeness -----------------------------------------------------------


def _web_route_patterns() -> set[str]:
    return set(WEB_ROWS)


def test_every_route_has_a_row() -> None:
    rows = {(row.route, row.method) for row in ROWS}
    missing: list[str] = []
    seen_api: set[tuple[str, str]] = set()
    for route in all_routes():
        methods = api_methods(route)
        if route.pattern.startswith("v1/"):
            assert methods, f"{route.pattern} is not a DRF APIView"
            for method in methods:
                seen_api.add((route.pattern, method))
                if (route.pattern, method) not in rows:
                    missing.append(f"{method} {route.pattern}")
        elif route.pattern.startswith("admin/"):
            continue  # test_admin_urls_are_all_known
        elif route.pattern not in PUBLIC_ROUTES | OPS_ROUTES | _web_route_patterns():
            missing.append(route.pattern)
    assert not missing, f"routes without a row in the matrix: {missing}"
    stale = rows - seen_api
    assert not stale, f"rows for routes that no longer exist: {stale}"


# --- the store and the admin: web users ---------------------------------------


@dataclass
class WebWorld:
    """A builder ("owner") with a private and a public listing, a
    conversation of theirs with a finished run, a share link and an API key;
    and another signed-in user ("other") who owns none of it."""

    owner: User
    other: User
    ids: dict[str, str] = field(default_factory=dict)

    def client(self, actor: str) -> Client:
        web = Client()
        if actor != "anon":
            web.force_login(self.owner if actor == "owner" else self.other)
        return web


def build_web_world() -> WebWorld:
    from store.models import Listing
    from store.selectors import projects_of
    from store.services.conversation import conversation_share, conversation_start

    ensure_test_model()
    owner, other = make_user(), make_user()
    private = make_listing(owner, model=TEST_MODEL)
    public = make_listing(owner, model=TEST_MODEL, visibility="public")
    assert private.visibility == Listing.Visibility.PRIVATE
    conversation, run = conversation_start(
        listing=public, user_id=owner.pk, session_key="", text="hello"
    )
    Run.objects.filter(pk=run.id).update(
        status="completed", completed_at=timezone.now()
    )
    project = projects_of(user=owner).get()
    key = api_key_create(project=project, name="web").api_key
    return WebWorld(
        owner=owner,
        other=other,
        ids={
            "owner_name": owner.username,
            "private": private.slug,
            "public": public.slug,
            "conversation": conversation.id,
            "run": run.id,
            "token": conversation_share(conversation=conversation),
            "file": "file_notinthisconversation",
            "key": key.id,
            "project": project.id,
            "assistant": private.assistant_id,
        },
    )


@dataclass(frozen=True)
class WebRow:
    route: str
    method: str
    path: str
    # Expected status for "anon", "owner", "other".
    expect: tuple[int, int, int]
    data: dict[str, str] = field(default_factory=dict)


LOGIN = -302  # login_required: a 302 to the login page
WEB_ROWS: list[WebRow] = [
    WebRow("store/", "GET", "/store/", (200, 200, 200)),
    WebRow("store/search", "GET", "/store/search?q=helper", (200, 200, 200)),
    WebRow("store/sitemap.xml", "GET", "/store/sitemap.xml", (200, 200, 200)),
    WebRow("store/accounts/signup", "GET", "/store/accounts/signup", (200, 200, 200)),
    WebRow("store/accounts/login", "GET", "/store/accounts/login", (200, 200, 200)),
    WebRow("store/accounts/logout", "POST", "/store/accounts/logout", (302, 302, 302)),
    WebRow("store/me", "GET", "/store/me", (LOGIN, 200, 200)),
    WebRow(
        "store/me/assistants/new", "GET", "/store/me/assistants/new", (LOGIN, 200, 200)
    ),
    WebRow(
        "store/me/publish",
        "GET",
        "/store/me/publish?assistant={assistant}",
        (LOGIN, 302, 404),
    ),
    WebRow("store/me/profile", "GET", "/store/me/profile", (LOGIN, 200, 200)),
    WebRow("store/me/keys", "GET", "/store/me/keys", (LOGIN, 200, 200)),
    WebRow(
        "store/me/keys/<str:key_id>/revoke",
        "POST",
        "/store/me/keys/{key}/revoke",
        (LOGIN, 302, 404),
    ),
    WebRow(
        "store/me/project",
        "POST",
        "/store/me/project",
        (LOGIN, 302, 404),
        data={"project": "{project}"},
    ),
    WebRow(
        "store/me/projects/new",
        "POST",
        "/store/me/projects/new",
        (LOGIN, 302, 302),
        data={"name": "another"},
    ),
    WebRow("store/u/<str:username>", "GET", "/store/u/{owner_name}", (200, 200, 200)),
    WebRow("store/g/<slug:slug>", "GET", "/store/g/{private}", (404, 200, 404)),
    WebRow(
        "store/g/<slug:slug>/edit", "GET", "/store/g/{private}/edit", (LOGIN, 200, 404)
    ),
    WebRow(
        "store/g/<slug:slug>/avatar.png",
        "GET",
        "/store/g/{private}/avatar.png",
        (404, 404, 404),
    ),
    WebRow(
        "store/g/<slug:slug>/rate",
        "POST",
        "/store/g/{private}/rate",
        (LOGIN, 302, 404),
        data={"stars": "5", "review": ""},
    ),
    WebRow(
        "store/g/<slug:slug>/report",
        "POST",
        "/store/g/{private}/report",
        (404, 302, 404),
        data={"reason": "spam"},
    ),
    WebRow(
        "store/g/<slug:slug>/duplicate",
        "POST",
        "/store/g/{private}/duplicate",
        (LOGIN, 404, 404),
    ),
    WebRow(
        "store/g/<slug:slug>/chat", "GET", "/store/g/{private}/chat", (404, 200, 404)
    ),
    WebRow(
        "store/c/<str:conversation_id>",
        "GET",
        "/store/c/{conversation}",
        (404, 200, 404),
    ),
    WebRow(
        "store/c/<str:conversation_id>/runs/<str:run_id>/events",
        "GET",
        "/store/c/{conversation}/runs/{run}/events",
        (404, 200, 404),
    ),
    WebRow(
        "store/c/<str:conversation_id>/share",
        "POST",
        "/store/c/{conversation}/share",
        (404, 302, 404),
    ),
    WebRow(
        "store/c/<str:conversation_id>/files/<str:file_id>",
        "GET",
        "/store/c/{conversation}/files/{file}",
        (404, 404, 404),
    ),
    # A share link is public by design: anyone holding it reads the
    # conversation (and nothing else of the builder's).
    WebRow("store/s/<str:token>", "GET", "/store/s/{token}", (200, 200, 200)),
    WebRow(
        "store/s/<str:token>/files/<str:file_id>",
        "GET",
        "/store/s/{token}/files/{file}",
        (404, 404, 404),
    ),
]


def _web_route_patterns() -> set[str]:
    return {row.route for row in WEB_ROWS}


@pytest.mark.parametrize("row", WEB_ROWS, ids=lambda r: f"{r.method} {r.route}")
def test_store_route(row: WebRow, db: Any) -> None:
    from tests.store_helpers import clear_quotas

    clear_quotas()
    web_world = build_web_world()
    path = row.path.format(**web_world.ids)
    data = {k: v.format(**web_world.ids) for k, v in row.data.items()}
    # The owner last: their POST may change what the others would see.
    for actor, expected in sorted(
        zip(("anon", "owner", "other"), row.expect, strict=True),
        key=lambda pair: pair[0] == "owner",
    ):
        web = web_world.client(actor)
        response = web.get(path) if row.method == "GET" else web.post(path, data)
        status = 302 if expected == LOGIN else expected
        assert response.status_code == status, (
            f"{row.method} {path} as {actor}: {response.status_code}, "
            f"expected {expected}"
        )
        if expected == LOGIN:
            assert "/accounts/login" in response["Location"]
        CELLS["web"] += 1


def _admin_routes() -> list[tuple[str, str]]:
    """(url name, path) of every admin page that needs no object: the index,
    each app's index, and each registered model's changelist and add page."""
    from django.urls import reverse

    pages = [("admin:index", reverse("admin:index"))]
    for model in admin.site._registry:
        meta = model._meta
        pages.append(
            (
                f"admin:{meta.app_label}",
                reverse("admin:app_list", args=[meta.app_label]),
            )
        )
        for view in ("changelist", "add"):
            name = f"admin:{meta.app_label}_{meta.model_name}_{view}"
            pages.append((name, reverse(name)))
    return sorted(set(pages))


def test_every_admin_page_is_for_staff_only(db: Any) -> None:
    """Anonymous and ordinary web users are sent to the admin login; a staff
    user without permissions is refused (403) every model page; only an
    operator with permission gets in. Store users are never staff."""
    visitor = make_user()
    staff = make_user()
    staff.is_staff = True
    staff.save()
    root = User.objects.create_superuser("matrix-root", password=PASSWORD)
    clients = {"anon": Client(), "user": Client(), "staff": Client(), "root": Client()}
    clients["user"].force_login(visitor)
    clients["staff"].force_login(staff)
    clients["root"].force_login(root)
    pages = _admin_routes()
    request = RequestFactory().get("/admin/")
    request.user = root
    closed_add_pages = {
        f"admin:{model._meta.app_label}_{model._meta.model_name}_add"
        for model, model_admin in admin.site._registry.items()
        if not model_admin.has_add_permission(request)
    }
    assert len(pages) > 10
    for name, path in pages:
        for actor in ("anon", "user"):
            response = clients[actor].get(path)
            assert response.status_code == 302, (name, actor, response.status_code)
            assert "/admin/login/" in response["Location"], (name, actor)
            CELLS["web"] += 1
        staff_status = clients["staff"].get(path).status_code
        is_model_page = name.endswith(("_changelist", "_add"))
        # A staff user without permissions: no model page; indexes render
        # empty (200) or, for an app they have nothing in, 404.
        allowed = {403} if is_model_page else {200, 404}
        assert staff_status in allowed, (name, staff_status)
        CELLS["web"] += 1
        # An operator gets every page, except add pages the admin closes to
        # everyone (read-only models such as messages: 403).
        root_status = 403 if name in closed_add_pages else 200
        assert clients["root"].get(path).status_code == root_status, name
        CELLS["web"] += 1
    # And permissions are what lets staff in: one view permission, one page.
    staff.user_permissions.add(Permission.objects.get(codename="view_apikey"))
    response = clients["staff"].get("/admin/core/apikey/")
    assert response.status_code == 200
    CELLS["web"] += 1


# Django admin's own kinds of route; every admin route must be one of them
# or a custom page listed in ADMIN_CUSTOM (checked staff-only below).
ADMIN_KINDS = [
    re.compile(r"^admin/$"),
    re.compile(r"^admin/(login|logout|password_change|password_change/done)/$"),
    re.compile(r"^admin/(autocomplete|jsi18n)/$"),
    re.compile(r"^admin/r/<path:content_type_id>/<path:object_id>/$"),
    re.compile(r"^admin/\^\(\?P<app_label>[a-z_|]+\)/\$$"),
    re.compile(r"^admin/\(\?P<url>\.\*\)\$$"),
    re.compile(r"^admin/\w+/\w+/(add/|<path:object_id>/(history/|delete/|change/)?)?$"),
]
# Custom admin pages: route → (app_model whose object they show, path suffix).
ADMIN_CUSTOM = {
    "admin/auth/user/<id>/password/": ("auth.user", "password/"),
    "admin/assistants/assistant/<path:object_id>/versions/<int:number>/": (
        "assistants.assistant",
        "versions/1/",
    ),
}


def test_admin_urls_are_all_known() -> None:
    unknown = [
        route.pattern
        for route in all_routes()
        if route.pattern.startswith("admin/")
        and route.pattern not in ADMIN_CUSTOM
        and not any(kind.match(route.pattern) for kind in ADMIN_KINDS)
    ]
    assert not unknown, f"admin routes without a row: {unknown}"


def test_custom_admin_pages_are_for_staff_only(db: Any) -> None:
    ensure_test_model()
    owner = make_tenant()
    assistant = APIClient()
    assistant.credentials(HTTP_AUTHORIZATION=f"Bearer {owner.raw_key}")
    assistant_id = _ok(
        assistant.post("/v1/assistants", {"model": TEST_MODEL}, format="json")
    )["id"]
    visitor, staff = make_user(), make_user()
    staff.is_staff = True
    staff.save()
    objects = {"auth.user": str(visitor.pk), "assistants.assistant": assistant_id}
    for app_model, suffix in ADMIN_CUSTOM.values():
        from tests.conftest import admin_url

        path = admin_url(app_model, objects[app_model]).removesuffix("change/")
        path += suffix
        anon, user, staffer = Client(), Client(), Client()
        user.force_login(visitor)
        staffer.force_login(staff)
        for web in (anon, user):
            response = web.get(path)
            assert response.status_code == 302, (path, response.status_code)
            assert "/admin/login/" in response["Location"]
            CELLS["web"] += 1
        assert staffer.get(path).status_code in (403, 404), path
        CELLS["web"] += 1


def test_matrix_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this module: prints how many cells the matrix checked."""
    total = sum(CELLS.values())
    with capsys.disabled():
        print(
            f"\n[authz matrix] {len(ROWS)} API rows x 6 callers, "
            f"{len(WEB_ROWS)} store rows x 3 callers, admin pages x 4 callers: "
            f"{total} cells checked (api {CELLS['api']}, lists {CELLS['lists']}, "
            f"read-only fields {CELLS['read_only']}, web {CELLS['web']})"
        )
