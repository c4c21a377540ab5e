"""Runs, driven by the official SDK against the real server and a real
Celery worker, with a scripted OpenAI-compatible engine saying exact things."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from typing import Any

import httpx
import openai
import pytest
from openai import AssistantEventHandler

from assistants.models import Message, Run, RunStep
from core.services.models import language_model_register
from tests.conftest import WEATHER, Tenant, admin_url

pytestmark = pytest.mark.live
pytest_plugins = ["tests.fake_engine"]

FAKE_MODEL = "fake-model"


@pytest.fixture
def assistant(sdk: Any, engine: Any) -> Any:
    return sdk.beta.assistants.create(
        model=FAKE_MODEL, name="Helper", instructions="You are terse.", tools=[WEATHER]
    )


def _thread_with(sdk: Any, text: str) -> Any:
    return sdk.beta.threads.create(messages=[{"role": "user", "content": text}])


def _wait_status(
    sdk: Any, thread_id: str, run_id: str, statuses: set[str], timeout: float = 30
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = sdk.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        if run.status in statuses:
            return run
        assert time.monotonic() < deadline, f"run stuck in {run.status}"
        time.sleep(0.1)


def _db(django_db_blocker: Any, fn: Any) -> Any:
    with django_db_blocker.unblock():
        return fn()


def test_create_and_poll_answers_with_the_engines_text(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script(
        {
            "content": "Paris is the capital.",
            "usage": {"prompt_tokens": 42, "completion_tokens": 5},
        }
    )
    thread = _thread_with(sdk, "Capital of France?")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "completed"
    assert run.usage.prompt_tokens == 42 and run.usage.completion_tokens == 5
    assert run.started_at and run.completed_at
    messages = sdk.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].content[0].text.value == "Paris is the capital."
    assert messages[1].run_id == run.id and messages[1].assistant_id == assistant.id
    steps = sdk.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data
    assert [s.type for s in steps] == ["message_creation"]
    assert steps[0].step_details.message_creation.message_id == messages[1].id
    sent = engine.requests()[-1]
    assert sent["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent["messages"][-1]["content"] == "Capital of France?"


def test_run_overrides_reach_the_engine(sdk: Any, assistant: Any, engine: Any) -> None:
    engine.script({"content": "ok"})
    thread = _thread_with(sdk, "hi")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        poll_interval_ms=50,
        instructions="Override.",
        additional_instructions="Be kind.",
        additional_messages=[{"role": "user", "content": "and more"}],
        temperature=0.2,
        top_p=0.9,
        tool_choice="none",
        metadata={"k": "v"},
        extra_body={"seed": 7},
    )
    assert run.status == "completed"
    assert run.instructions == "Override.\n\nBe kind."
    assert run.metadata == {"k": "v"} and run.temperature == 0.2
    sent = engine.requests()[-1]
    assert sent["messages"][0]["content"] == "Override.\n\nBe kind."
    assert sent["messages"][-1]["content"] == "and more"
    assert sent["temperature"] == 0.2 and sent["top_p"] == 0.9 and sent["seed"] == 7
    assert "tools" not in sent or not sent["tools"]


def test_streaming_delivers_every_token_in_order(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    chunks = ["Hel", "lo", ", ", "wor", "ld"]
    engine.script({"chunks": chunks, "delay_per_chunk": 0.02})
    thread = _thread_with(sdk, "greet")
    seen: list[str] = []
    order: list[str] = []

    class Handler(AssistantEventHandler):
        def on_event(self, event: Any) -> None:
            order.append(event.event)

        def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            seen.append(delta.value)

    with sdk.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=Handler()
    ) as stream:
        stream.until_done()
        final = stream.get_final_run()
    assert seen == chunks
    assert final.status == "completed"
    assert order[0] == "thread.run.created"
    assert order.index("thread.message.created") < order.index("thread.message.delta")
    assert order[-1] == "thread.run.completed"


def test_create_thread_and_run_streams_the_thread_first(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script({"content": "done"})
    events: list[str] = []
    stream = sdk.beta.threads.create_and_run(
        assistant_id=assistant.id,
        stream=True,
        thread={"messages": [{"role": "user", "content": "go"}]},
    )
    for event in stream:
        events.append(event.event)
    assert events[0] == "thread.created"
    assert events[-1] == "thread.run.completed"
    polled = sdk.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        poll_interval_ms=50,
        thread={"messages": [{"role": "user", "content": "again"}]},
    )
    assert polled.status == "completed"


def test_parallel_function_calls_round_trip_through_submit_and_poll(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script(
        {
            "tool_calls": [
                {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            ]
        },
        {"content": "Sunny in both."},
    )
    thread = _thread_with(sdk, "Weather in Paris and Rome?")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "requires_action"
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == [
        "Paris",
        "Rome",
    ]
    assert all(c.id.startswith("call_") for c in calls)
    assert run.expires_at is not None
    with pytest.raises(openai.BadRequestError):  # all outputs at once
        sdk.beta.threads.runs.submit_tool_outputs(
            run_id=run.id,
            thread_id=thread.id,
            tool_outputs=[{"tool_call_id": calls[0].id, "output": "20C"}],
        )
    done = sdk.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        poll_interval_ms=50,
        tool_outputs=[
            {"tool_call_id": calls[0].id, "output": "20C"},
            {"tool_call_id": calls[1].id, "output": "25C"},
        ],
    )
    assert done.status == "completed"
    sent = engine.requests()[-1]["messages"]
    tool_messages = [m for m in sent if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["20C", "25C"]
    assert sent[-3]["tool_calls"][0]["id"] == calls[0].id
    steps = sdk.beta.threads.runs.steps.list(
        run_id=run.id, thread_id=thread.id, order="asc"
    ).data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    outputs = [c.function.output for c in steps[0].step_details.tool_calls]
    assert outputs == ["20C", "25C"]


def test_submit_tool_outputs_stream_continues_the_run(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script(
        {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]},
        {"chunks": ["Cold", " today"]},
    )
    thread = _thread_with(sdk, "Weather in Oslo?")
    with sdk.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()
    assert run.status == "requires_action"
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    texts: list[str] = []

    class Handler(AssistantEventHandler):
        def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            texts.append(delta.value)

    with sdk.beta.threads.runs.submit_tool_outputs_stream(
        run_id=run.id,
        thread_id=thread.id,
        event_handler=Handler(),
        tool_outputs=[{"tool_call_id": call.id, "output": "-5C"}],
    ) as stream:
        stream.until_done()
        final = stream.get_final_run()
    assert texts == ["Cold", " today"]
    assert final.status == "completed"


def test_parallel_tool_calls_false_keeps_one_call(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script(
        {
            "tool_calls": [
                {"name": "get_weather", "arguments": '{"city": "A"}'},
                {"name": "get_weather", "arguments": '{"city": "B"}'},
            ]
        },
    )
    thread = _thread_with(sdk, "two cities")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        parallel_tool_calls=False,
        poll_interval_ms=50,
    )
    assert run.status == "requires_action"
    assert len(run.required_action.submit_tool_outputs.tool_calls) == 1


def test_strict_function_arguments_are_retried_until_valid(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script(
        {"tool_calls": [{"name": "get_weather", "arguments": '{"town": 1}'}]},
        {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "Lima"}'}]},
    )
    thread = _thread_with(sdk, "weather")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "requires_action"
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert json.loads(call.function.arguments) == {"city": "Lima"}


def test_json_schema_answers_validate_or_the_run_fails_clearly(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "count", "schema": schema, "strict": True},
    }
    engine.script(
        {"content": "not json"}, {"content": '{"n": "x"}'}, {"content": '{"n": 3}'}
    )
    thread = _thread_with(sdk, "count")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        response_format=fmt,
        tool_choice="none",
        poll_interval_ms=50,
    )
    assert run.status == "completed"
    answer = sdk.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert json.loads(answer.content[0].text.value) == {"n": 3}
    assert engine.requests()[-1]["response_format"]["type"] == "json_schema"

    engine.script({"content": "nope"}, {"content": "nope"}, {"content": "nope"})
    thread = _thread_with(sdk, "count again")
    failed = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        response_format=fmt,
        tool_choice="none",
        poll_interval_ms=50,
    )
    assert failed.status == "failed"
    assert failed.last_error.code == "server_error"
    assert "valid" in failed.last_error.message
    texts = [
        m.content[0].text.value
        for m in sdk.beta.threads.messages.list(thread_id=thread.id).data
        if m.role == "assistant" and m.content
    ]
    assert all(t != "nope" for t in texts)


def test_max_completion_tokens_ends_incomplete(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script(
        {
            "content": "a long answer cut",
            "finish_reason": "length",
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
        }
    )
    thread = _thread_with(sdk, "talk")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        max_completion_tokens=5,
        poll_interval_ms=50,
    )
    assert run.status == "incomplete"
    assert run.incomplete_details.reason == "max_completion_tokens"
    assert engine.requests()[-1]["max_tokens"] == 5
    message = sdk.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.status == "incomplete"


def test_max_prompt_tokens_ends_incomplete_without_calling_the_engine(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    thread = _thread_with(sdk, "x" * 4000)
    before = len(engine.requests())
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        max_prompt_tokens=50,
        poll_interval_ms=50,
    )
    assert run.status == "incomplete"
    assert run.incomplete_details.reason == "max_prompt_tokens"
    assert len(engine.requests()) == before


def test_cancel_mid_stream_stops_the_engine_request(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script({"chunks": ["tick "] * 200, "delay_per_chunk": 0.05})
    thread = _thread_with(sdk, "count slowly")
    with sdk.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id
    ) as stream:
        for event in stream:
            if event.event == "thread.message.delta":
                run_id = stream.current_run.id
                cancelled_at = time.monotonic()
                sdk.beta.threads.runs.cancel(run_id=run_id, thread_id=thread.id)
                break
    run = _wait_status(sdk, thread.id, run_id, {"cancelled"}, timeout=10)
    assert run.cancelled_at is not None
    assert time.monotonic() - cancelled_at < 5
    assert engine.requests()[-1].get("aborted") is True
    message = sdk.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.status == "incomplete"


def test_requires_action_expires(
    sdk: Any, assistant: Any, engine: Any, django_db_blocker: Any
) -> None:
    engine.script(
        {"tool_calls": [{"name": "get_weather", "arguments": '{"city": "X"}'}]}
    )
    thread = _thread_with(sdk, "weather")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "requires_action"
    # Ten minutes pass in one UPDATE; the worker's reaper does the rest.
    _db(
        django_db_blocker,
        lambda: Run.objects.filter(pk=run.id).update(expires_at="2000-01-01T00:00:00Z"),
    )
    expired = _wait_status(sdk, thread.id, run.id, {"expired"}, timeout=10)
    assert expired.required_action is None
    step = sdk.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id).data[0]
    assert step.status == "expired"


def test_only_one_of_50_concurrent_run_creates_wins(
    live_server_url: str, live_tenant: Tenant, assistant: Any, sdk: Any, engine: Any
) -> None:
    # Long enough that the winner is still active when the last create lands.
    engine.script({"chunks": ["a"] * 300, "delay_per_chunk": 0.1})
    thread = _thread_with(sdk, "race")

    def create(_: int) -> int:
        return httpx.post(
            f"{live_server_url}/threads/{thread.id}/runs",
            headers=live_tenant.headers,
            timeout=30,
            json={"assistant_id": assistant.id},
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        codes = list(pool.map(create, range(50)))
    assert codes.count(200) == 1
    assert codes.count(400) == 49
    runs = sdk.beta.threads.runs.list(thread_id=thread.id).data
    assert len(runs) == 1
    sdk.beta.threads.runs.cancel(run_id=runs[0].id, thread_id=thread.id)
    _wait_status(sdk, thread.id, runs[0].id, {"cancelled"})


def test_a_message_cannot_be_added_while_a_run_is_active(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script({"chunks": ["a"] * 50, "delay_per_chunk": 0.05})
    thread = _thread_with(sdk, "hi")
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.beta.threads.messages.create(
            thread_id=thread.id, role="user", content="interrupt"
        )
    assert run.id in info.value.message
    _wait_status(sdk, thread.id, run.id, {"completed"})
    sdk.beta.threads.messages.create(thread_id=thread.id, role="user", content="now")


def test_an_unreachable_engine_fails_the_run_with_a_clear_message(
    sdk: Any, engine: Any, django_db_blocker: Any
) -> None:
    _db(
        django_db_blocker,
        lambda: language_model_register(
            name="down-model", base_urls=["http://127.0.0.1:9/v1"]
        ),
    )
    assistant = sdk.beta.assistants.create(model="down-model")
    thread = _thread_with(sdk, "hello?")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "failed"
    assert run.last_error.code == "server_error"
    assert "unreachable" in run.last_error.message


def test_garbage_from_the_engine_fails_the_run(
    sdk: Any, assistant: Any, engine: Any
) -> None:
    engine.script({"garbage": True})
    thread = _thread_with(sdk, "hello")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    assert run.status == "failed"
    assert "OpenAI-compatible" in run.last_error.message

    # Without tools the message and its step are written while the engine
    # works on the first token; a failure then ends them with the run.
    engine.script({"garbage": True})
    plain = sdk.beta.assistants.create(model=FAKE_MODEL)
    thread = _thread_with(sdk, "hello")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=plain.id, poll_interval_ms=50
    )
    assert run.status == "failed"
    steps = sdk.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id)
    assert [(s.type, s.status) for s in steps.data] == [("message_creation", "failed")]
    messages = sdk.beta.threads.messages.list(thread_id=thread.id, run_id=run.id)
    assert [m.status for m in messages.data] == ["incomplete"]


def test_a_worker_killed_mid_run_leaves_nothing_stuck_or_doubled(
    sdk: Any, assistant: Any, engine: Any, django_db_blocker: Any
) -> None:
    engine.script(
        {"chunks": ["slow "] * 100, "delay_per_chunk": 0.1}, {"content": "recovered"}
    )
    thread = _thread_with(sdk, "survive")
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    _wait_status(sdk, thread.id, run.id, {"in_progress"})
    deadline = time.monotonic() + 10
    worker = ""
    while not worker and time.monotonic() < deadline:
        worker = _db(django_db_blocker, lambda: Run.objects.get(pk=run.id).worker)
        time.sleep(0.05)
    pid = int(worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    final = _wait_status(sdk, thread.id, run.id, {"completed", "failed"}, timeout=40)
    assert final.status == "completed"
    assistant_messages = _db(
        django_db_blocker,
        lambda: list(Message.objects.filter(thread_id=thread.id, role="assistant")),
    )
    assert len(assistant_messages) == 1
    assert assistant_messages[0].content[0]["text"]["value"] == "recovered"
    steps = _db(django_db_blocker, lambda: list(RunStep.objects.filter(run_id=run.id)))
    assert len(steps) == 1 and steps[0].status == "completed"
    attempts = _db(django_db_blocker, lambda: Run.objects.get(pk=run.id).attempts)
    assert attempts == 2


def test_runs_and_steps_list_retrieve_update_and_scope(
    sdk: Any,
    assistant: Any,
    engine: Any,
    live_server_url: str,
    other_live_tenant: Tenant,
) -> None:
    engine.script({"content": "one"}, {"content": "two"})
    thread = _thread_with(sdk, "hi")
    first = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    second = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    listed = [r.id for r in sdk.beta.threads.runs.list(thread_id=thread.id)]
    assert listed == [second.id, first.id]
    updated = sdk.beta.threads.runs.update(
        run_id=first.id, thread_id=thread.id, metadata={"tag": "x"}
    )
    assert updated.metadata == {"tag": "x"}
    step = sdk.beta.threads.runs.steps.list(run_id=first.id, thread_id=thread.id).data[
        0
    ]
    again = sdk.beta.threads.runs.steps.retrieve(
        step_id=step.id,
        run_id=first.id,
        thread_id=thread.id,
        include=["step_details.tool_calls[*].file_search.results[*].content"],
    )
    assert again.id == step.id
    with pytest.raises(openai.BadRequestError):
        sdk.beta.threads.runs.cancel(run_id=first.id, thread_id=thread.id)
    other = openai.OpenAI(
        base_url=live_server_url, api_key=other_live_tenant.raw_key, max_retries=0
    )
    with pytest.raises(openai.NotFoundError):
        other.beta.threads.runs.retrieve(first.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        other.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)


def test_bad_run_requests_are_named(sdk: Any, assistant: Any, engine: Any) -> None:
    thread = _thread_with(sdk, "hi")
    cases = [
        ({"assistant_id": "asst_nope"}, openai.NotFoundError, "assistant_id"),
        (
            {"assistant_id": assistant.id, "model": "nope"},
            openai.BadRequestError,
            "model",
        ),
        (
            {
                "assistant_id": assistant.id,
                "tool_choice": {"type": "function", "function": {"name": "other"}},
            },
            openai.BadRequestError,
            "tool_choice.function.name",
        ),
        (
            {"assistant_id": assistant.id, "truncation_strategy": {"type": "x"}},
            openai.BadRequestError,
            "truncation_strategy.type",
        ),
        (
            {"assistant_id": assistant.id, "max_completion_tokens": 0},
            openai.BadRequestError,
            "max_completion_tokens",
        ),
    ]
    for body, error, param in cases:
        with pytest.raises(error) as info:
            sdk.post(f"/threads/{thread.id}/runs", body=body, cast_to=object)
        assert info.value.body["param"] == param, body
    assert sdk.beta.threads.runs.list(thread_id=thread.id).data == []


def _sse_events(response: httpx.Response) -> list[tuple[str | None, str]]:
    """(id, event) pairs of an SSE response, in order."""
    out: list[tuple[str | None, str]] = []
    entry_id: str | None = None
    for line in response.iter_lines():
        if line.startswith("id: "):
            entry_id = line[4:]
        elif line.startswith("event: "):
            out.append((entry_id, line[7:]))
            entry_id = None
    return out


def test_a_dropped_stream_resumes_from_last_event_id(
    sdk: Any, assistant: Any, engine: Any, live_server_url: str, live_tenant: Tenant
) -> None:
    engine.script({"chunks": ["a", "b", "c"]})
    thread = _thread_with(sdk, "hi")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    url = f"{live_server_url}/threads/{thread.id}/runs/{run.id}/events"
    with httpx.stream("GET", url, headers=live_tenant.headers, timeout=30) as full:
        everything = _sse_events(full)
    names = [name for _id, name in everything]
    assert names[0] == "thread.run.created" and names[-2:] == [
        "thread.run.completed",
        "done",
    ]
    assert names.count("thread.message.delta") == 3
    # Resume after the first delta: exactly the rest arrives.
    first_delta = names.index("thread.message.delta")
    resume_from = everything[first_delta][0]
    headers = {**live_tenant.headers, "Last-Event-ID": str(resume_from)}
    with httpx.stream("GET", url, headers=headers, timeout=30) as rest:
        resumed = [name for _id, name in _sse_events(rest)]
    assert resumed == names[first_delta + 1 :]
    bad = httpx.get(url, headers={**live_tenant.headers, "Last-Event-ID": "x"})
    assert bad.status_code == 400


def test_the_admin_run_inspector_shows_steps_tool_calls_and_tokens(
    sdk: Any, assistant: Any, engine: Any, live_server_url: str, django_db_blocker: Any
) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    engine.script(
        {
            "tool_calls": [{"name": "get_weather", "arguments": '{"city": "Nice"}'}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7},
        }
    )
    thread = _thread_with(sdk, "weather in Nice")
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=50
    )
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    with django_db_blocker.unblock():
        admin = get_user_model().objects.create_superuser(
            username=f"op-{run.id}", password="pw-for-tests"
        )
        browser = Client()
        browser.force_login(admin)
        page = browser.get(admin_url("assistants.run", run.id))
        assert page.status_code == 200
        html = page.content.decode()
    assert call.id in html and "get_weather" in html and "Nice" in html
    assert "requires_action" in html and "waited in queue" in html.lower()
    assert "&quot;total_tokens&quot;: 18" in html or '"total_tokens": 18' in html
