"""Quotas and limits: per-key request rate limits, per-project token budgets,
oversize and absurd inputs, and caps on runaway runs.

Rate limits and budgets run against the real Redis and PostgreSQL of the
stack, in process (Django test client) and through the official SDK against
the live server. Oversize inputs go to the live server over HTTP. Runaway
runs are executed in this process (so their caps can be set per test)
against the scripted engine.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import openai
import pytest
from django.test import override_settings
from django.utils import timezone

from assistants.models import Message, Run, RunStatus, Thread
from assistants.runs.executor import run_execute
from assistants.services.run import ToolOutputsInput, tool_outputs_submit
from core.models import ProjectLimits
from core.ratelimit import format_duration, limits_cache_clear
from core.services.quota import budgets_cache_clear
from tests.conftest import TEST_MODEL, WEATHER, Tenant, admin_url, make_tenant

pytest_plugins = ["tests.fake_engine"]

# A bound for "answered at once", generous for a machine shared with other
# test runs; the figures themselves are in bench/limits_bench.py.
QUICK_SECONDS = 5.0


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    limits_cache_clear()
    budgets_cache_clear()


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def _assistant(api: Any) -> str:
    response = api.post("/v1/assistants", {"model": TEST_MODEL}, format="json")
    assert response.status_code == 200, response.content
    return str(response.json()["id"])


# --- request rate limits ----------------------------------------------------


def test_a_key_over_its_request_limit_gets_429_with_openais_body_and_headers(
    api: Any, tenant: Tenant
) -> None:
    tenant.key.requests_per_minute = 3
    tenant.key.save(update_fields=["requests_per_minute"])
    remaining = []
    for _ in range(3):
        response = api.get("/v1/assistants")
        assert response.status_code == 200
        assert response["x-ratelimit-limit-requests"] == "3"
        remaining.append(response["x-ratelimit-remaining-requests"])
        assert response["x-ratelimit-reset-requests"].endswith("s")
    assert remaining == ["2", "1", "0"]

    refused = api.get("/v1/assistants")
    assert refused.status_code == 429
    error = _error(refused)
    assert error["type"] == "requests"
    assert error["code"] == "rate_limit_exceeded"
    assert error["param"] is None
    assert "Limit 3" in error["message"]
    # One request every 20 s refills a 3-per-minute bucket.
    assert 15 <= int(refused["Retry-After"]) <= 20
    assert 15_000 <= int(refused["retry-after-ms"]) <= 20_000
    assert refused["x-ratelimit-remaining-requests"] == "0"


def test_run_creation_has_its_own_bucket(api: Any, tenant: Tenant) -> None:
    ProjectLimits.objects.create(
        project=tenant.project, runs_per_minute=1, requests_per_minute=100
    )
    assistant_id = _assistant(api)
    first = api.post("/v1/threads/runs", {"assistant_id": assistant_id}, format="json")
    assert first.status_code == 200, first.content
    second = api.post("/v1/threads/runs", {"assistant_id": assistant_id}, format="json")
    assert second.status_code == 429
    assert _error(second)["code"] == "rate_limit_exceeded"
    assert "run creations" in _error(second)["message"]
    thread_id = first.json()["thread_id"]
    on_thread = api.post(
        f"/v1/threads/{thread_id}/runs", {"assistant_id": assistant_id}, format="json"
    )
    assert on_thread.status_code == 429
    # Everything else still goes through, on the other bucket.
    listed = api.get("/v1/assistants")
    assert listed.status_code == 200
    assert listed["x-ratelimit-limit-requests"] == "100"
    assert Run.objects.filter(project=tenant.project).count() == 1


def test_a_keys_override_beats_its_projects_and_zero_is_unlimited(
    api: Any, tenant: Tenant
) -> None:
    ProjectLimits.objects.create(project=tenant.project, requests_per_minute=1)
    assert api.get("/v1/assistants").status_code == 200
    assert api.get("/v1/assistants").status_code == 429
    tenant.key.requests_per_minute = 0
    tenant.key.save(update_fields=["requests_per_minute"])
    limits_cache_clear()  # what 5 seconds do in a real process
    for _ in range(20):
        response = api.get("/v1/assistants")
        assert response.status_code == 200
        assert "x-ratelimit-limit-requests" not in response


def test_limits_are_per_key(api: Any, tenant: Tenant) -> None:
    from rest_framework.test import APIClient

    other = make_tenant()
    for t in (tenant, other):
        t.key.requests_per_minute = 1
        t.key.save(update_fields=["requests_per_minute"])
    assert api.get("/v1/assistants").status_code == 200
    assert api.get("/v1/assistants").status_code == 429
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {other.raw_key}")
    assert client.get("/v1/assistants").status_code == 200


def test_the_limiter_fails_open_when_redis_is_down(api: Any, tenant: Tenant) -> None:
    tenant.key.requests_per_minute = 1
    tenant.key.save(update_fields=["requests_per_minute"])
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        for _ in range(3):
            response = api.get("/v1/assistants")
            assert response.status_code == 200
            assert "x-ratelimit-limit-requests" not in response


@pytest.mark.live
def test_the_sdk_sees_rate_limit_error_with_retry_after(
    sdk: Any, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    with django_db_blocker.unblock():
        live_tenant.key.requests_per_minute = 2
        live_tenant.key.save(update_fields=["requests_per_minute"])
    sdk.beta.assistants.list()
    sdk.beta.assistants.list()
    with pytest.raises(openai.RateLimitError) as caught:
        sdk.beta.assistants.list()
    assert caught.value.status_code == 429
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.type == "requests"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_reset_times_are_spelt_like_openais() -> None:
    assert format_duration(0.02) == "20ms"
    assert format_duration(1.5) == "1.5s"
    assert format_duration(360) == "6m0s"


# --- token budgets ----------------------------------------------------------


def _spent(tenant: Tenant, tokens: int, *, created_at: datetime | None = None) -> None:
    """A finished run of ``tenant`` that used ``tokens``."""
    thread = Thread.objects.create(project=tenant.project)
    Run.objects.create(
        project=tenant.project,
        thread=thread,
        assistant_id="asst_x",
        model=TEST_MODEL,
        status=RunStatus.COMPLETED,
        usage={
            "prompt_tokens": tokens - tokens // 3,
            "completion_tokens": tokens // 3,
            "total_tokens": tokens,
        },
        created_at=created_at or timezone.now(),
    )


def test_a_run_create_over_the_daily_budget_is_refused_before_anything_is_written(
    api: Any, tenant: Tenant
) -> None:
    assistant_id = _assistant(api)
    ProjectLimits.objects.create(project=tenant.project, daily_token_budget=100)
    _spent(tenant, 60)
    _spent(tenant, 50)
    threads = Thread.objects.filter(project=tenant.project).count()
    runs = Run.objects.filter(project=tenant.project).count()

    refused = api.post(
        "/v1/threads/runs",
        {
            "assistant_id": assistant_id,
            "thread": {"messages": [{"role": "user", "content": "hi"}]},
        },
        format="json",
    )
    assert refused.status_code == 429
    error = _error(refused)
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "insufficient_quota"
    assert "daily token budget (110 of 100" in error["message"]
    thread = Thread.objects.filter(project=tenant.project).first()
    assert thread is not None
    on_thread = api.post(
        f"/v1/threads/{thread.id}/runs", {"assistant_id": assistant_id}, format="json"
    )
    assert on_thread.status_code == 429
    assert _error(on_thread)["type"] == "insufficient_quota"
    assert Thread.objects.filter(project=tenant.project).count() == threads
    assert Run.objects.filter(project=tenant.project).count() == runs


@override_settings(QUOTA_USAGE_CACHE_SECONDS=0)
def test_the_monthly_budget_counts_this_month_only_and_zero_is_unlimited(
    api: Any, tenant: Tenant
) -> None:
    assistant_id = _assistant(api)
    limits = ProjectLimits.objects.create(
        project=tenant.project, monthly_token_budget=1000
    )
    month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    _spent(tenant, 5000, created_at=month - timedelta(seconds=1))  # last month
    _spent(tenant, 900, created_at=month)
    body = {"assistant_id": assistant_id}
    assert api.post("/v1/threads/runs", body, format="json").status_code == 200
    _spent(tenant, 100)
    refused = api.post("/v1/threads/runs", body, format="json")
    assert refused.status_code == 429
    assert "monthly token budget (1000 of 1000" in _error(refused)["message"]
    limits.monthly_token_budget = 0
    limits.save()
    budgets_cache_clear()  # what 5 seconds do in a real process
    assert api.post("/v1/threads/runs", body, format="json").status_code == 200


@pytest.mark.django_db(transaction=True)
@override_settings(QUOTA_USAGE_CACHE_SECONDS=0)
def test_a_run_that_crosses_the_budget_finishes_its_step_then_stops(
    registered_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant()
    ProjectLimits.objects.create(project=tenant.project, daily_token_budget=100)
    run = _queued_run(tenant, monkeypatch)
    registered_engine.script(
        {
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            "usage": {"prompt_tokens": 80, "completion_tokens": 30},
        }
    )
    run_execute(run.id)  # 110 tokens: over budget during this step
    run.refresh_from_db()
    assert run.status == RunStatus.REQUIRES_ACTION
    assert run.usage["total_tokens"] == 110
    _submit_outputs(run)
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.last_error["code"] == "rate_limit_exceeded"
    assert "daily token budget" in run.last_error["message"]
    assert len(registered_engine.requests()) == 1  # no second model call


# --- runaway runs -----------------------------------------------------------


def _queued_run(tenant: Tenant, monkeypatch: pytest.MonkeyPatch) -> Run:
    """A queued run with the get_weather function; wake-ups are recorded,
    not sent (the executor runs in this process)."""
    from assistants.tasks import run_execute_task
    from core import taskqueue

    monkeypatch.setattr(taskqueue, "direct_possible", lambda: False)
    monkeypatch.setattr(run_execute_task, "delay", lambda *a, **k: None)
    thread = Thread.objects.create(project=tenant.project)
    Message.objects.create(
        thread=thread,
        role=Message.Role.USER,
        content=[{"type": "text", "text": {"value": "weather?", "annotations": []}}],
    )
    return Run.objects.create(
        project=tenant.project,
        thread=thread,
        assistant_id="asst_test",
        model="fake-model",
        instructions="You are terse.",
        tools=[WEATHER],
        status=RunStatus.QUEUED,
    )


def _submit_outputs(run: Run) -> None:
    run.refresh_from_db()
    calls = run.required_action["submit_tool_outputs"]["tool_calls"]
    tool_outputs_submit(
        run=run,
        data=ToolOutputsInput.model_validate(
            {
                "tool_outputs": [
                    {"tool_call_id": c["id"], "output": "cold"} for c in calls
                ]
            }
        ),
    )


@pytest.mark.django_db(transaction=True)
@override_settings(RUN_MAX_TOOL_STEPS=2)
def test_a_model_that_keeps_asking_for_tool_outputs_is_stopped(
    registered_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant()
    run = _queued_run(tenant, monkeypatch)
    call = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}
    registered_engine.script(call, call, call)
    for _round in range(2):
        run_execute(run.id)
        run.refresh_from_db()
        assert run.status == RunStatus.REQUIRES_ACTION
        _submit_outputs(run)
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.last_error["code"] == "server_error"
    assert (
        "maximum of 2 tool-call steps (RUN_MAX_TOOL_STEPS)" in run.last_error["message"]
    )
    assert len(registered_engine.requests()) == 3
    assert run.failed_at is not None and run.required_action is None


@pytest.mark.django_db(transaction=True)
@override_settings(RUN_MAX_SECONDS=1.0)
def test_a_run_over_its_wall_time_is_stopped_mid_answer(
    registered_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant()
    run = _queued_run(tenant, monkeypatch)
    registered_engine.script({"chunks": ["word "] * 200, "delay_per_chunk": 0.1})
    started = time.monotonic()
    run_execute(run.id)
    took = time.monotonic() - started
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert (
        "maximum run time of 1 seconds (RUN_MAX_SECONDS)" in run.last_error["message"]
    )
    assert took < 15  # not the 20 s the engine would have taken
    assert registered_engine.wait_for_abort()["aborted"] is True
    (message,) = Message.objects.filter(run_id=run.id)
    assert message.status == "incomplete"
    assert message.incomplete_details == {"reason": "run_failed"}


@pytest.mark.django_db(transaction=True)
def test_a_run_past_its_wall_time_is_not_resumed_after_tool_outputs(
    registered_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = make_tenant()
    run = _queued_run(tenant, monkeypatch)
    registered_engine.script(
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}
    )
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.REQUIRES_ACTION
    # The client took its time: the run started two hours ago.
    Run.objects.filter(pk=run.pk).update(started_at=timezone.now() - timedelta(hours=2))
    _submit_outputs(run)
    run_execute(run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "RUN_MAX_SECONDS" in run.last_error["message"]
    assert len(registered_engine.requests()) == 1


# --- oversize and absurd inputs (live server) -------------------------------


def _counts(tenant: Tenant, django_db_blocker: Any) -> tuple[int, int]:
    with django_db_blocker.unblock():
        return (
            Thread.objects.filter(project=tenant.project).count(),
            Run.objects.filter(project=tenant.project).count(),
        )


def _timed(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    started = time.monotonic()
    response = http.request(method, path, **kwargs)
    assert time.monotonic() - started < QUICK_SECONDS
    return response


def _live_assistant(http: httpx.Client) -> str:
    response = http.post("/assistants", json={"model": TEST_MODEL})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


@pytest.mark.live
def test_a_10_mb_json_body_is_refused_with_413(
    http: httpx.Client, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    before = _counts(live_tenant, django_db_blocker)
    content = "x" * (10 * 1024 * 1024)
    body = json.dumps({"messages": [{"role": "user", "content": content}]})
    response = _timed(
        http,
        "POST",
        "/threads",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert _error(response)["code"] == "payload_too_large"
    assert _counts(live_tenant, django_db_blocker) == before


@pytest.mark.live
def test_a_1000_level_nested_body_is_refused_with_400(
    http: httpx.Client, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    before = _counts(live_tenant, django_db_blocker)
    deep = "[" * 1000 + "]" * 1000
    for body in (
        deep,
        '{"metadata": {"a": ' + deep + "}}",
        '{"messages": [{"role": "user", "content": "hi", "metadata": '
        + "{"
        + '"a": {' * 999
        + "}" * 1000
        + "}]}",
    ):
        response = _timed(
            http,
            "POST",
            "/threads",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, response.text
        assert _error(response)["type"] == "invalid_request_error"
        assert _error(response)["code"] == "json_too_deep"
    assert _counts(live_tenant, django_db_blocker) == before


@pytest.mark.live
def test_100000_messages_in_one_request_are_refused_naming_the_param(
    http: httpx.Client, live_tenant: Tenant, django_db_blocker: Any
) -> None:
    assistant_id = _live_assistant(http)
    before = _counts(live_tenant, django_db_blocker)
    messages = [{"role": "user", "content": "x"}] * 100_000
    response = _timed(http, "POST", "/threads", json={"messages": messages})
    assert response.status_code == 400
    assert _error(response)["param"] == "messages"
    assert _error(response)["code"] == "array_above_max_length"
    response = _timed(
        http,
        "POST",
        "/threads/runs",
        json={"assistant_id": assistant_id, "thread": {"messages": messages}},
    )
    assert response.status_code == 400
    assert _error(response)["param"] == "thread.messages"
    assert _counts(live_tenant, django_db_blocker) == before


@pytest.mark.live
@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"metadata": {f"k{i}": "v" for i in range(10_000)}}, "metadata"),
        ({"metadata": {"k": "v" * 1_000_000}}, "metadata"),
        ({"metadata": {"k" * 100_000: "v"}}, "metadata"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "metadata": {"k": "v" * 5000}}
                ]
            },
            "messages[0].metadata",
        ),
        ({"instructions": "x" * 300_000}, "instructions"),
    ],
)
def test_giant_metadata_and_overlong_strings_are_refused(
    http: httpx.Client,
    live_tenant: Tenant,
    django_db_blocker: Any,
    body: dict[str, Any],
    param: str,
) -> None:
    before = _counts(live_tenant, django_db_blocker)
    if "instructions" in body:
        body = {"assistant_id": _live_assistant(http), **body}
        response = _timed(http, "POST", "/threads/runs", json=body)
    else:
        response = _timed(http, "POST", "/threads", json=body)
    assert response.status_code == 400, response.text
    error = _error(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert _counts(live_tenant, django_db_blocker) == before


# --- admin ------------------------------------------------------------------


def test_an_operator_sets_budgets_and_limits_on_the_project_in_admin(
    tenant: Tenant, admin_client: Any
) -> None:
    url = admin_url("core.project", tenant.project.pk)
    page = admin_client.get(url)
    assert page.status_code == 200
    for field in ("daily_token_budget", "monthly_token_budget", "runs_per_minute"):
        assert f"limits-0-{field}" in page.content.decode()
    key_page = admin_client.get(admin_url("core.apikey", tenant.key.pk))
    assert key_page.status_code == 200
    assert 'name="requests_per_minute"' in key_page.content.decode()
