"""The engine client against a scripted engine (a real HTTP server) and, once
per capability, against the real local engine the launcher starts."""

from __future__ import annotations

import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jsonschema
import pytest
from django.core.exceptions import ImproperlyConfigured

from assistants.engine import (
    ChatChunk,
    ChatRequest,
    EngineError,
    Usage,
    chat_stream,
    transport,
)
from assistants.engine.client import engine_request_id, sse_data
from core.models import LanguageModel
from core.services.models import language_models_seed_from_env
from tests.conftest import WEATHER

if TYPE_CHECKING:
    from tests.fake_engine import FakeEngine

pytest_plugins = ["tests.fake_engine"]

USER: list[dict[str, Any]] = [{"role": "user", "content": "Say hello."}]
PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}
PERSON_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {"name": "person", "schema": PERSON, "strict": True},
}

_ids = 0


def unique_id() -> str:
    # Round-robin turns are per model id and per process: a fresh id makes
    # a test's replica order start at the first base URL.
    global _ids
    _ids += 1
    return f"model-{os.getpid()}-{_ids}"


def dead_url() -> str:
    """A base URL where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def collect(
    request: ChatRequest, should_stop: Callable[[], bool] | None = None
) -> list[ChatChunk]:
    if should_stop is None:
        return list(chat_stream(request))
    return list(chat_stream(request, should_stop=should_stop))


def text_of(chunks: list[ChatChunk]) -> str:
    return "".join(c.content for c in chunks)


def assembled_calls(chunks: list[ChatChunk]) -> dict[int, dict[str, Any]]:
    """Tool calls as an executor assembles them: id/name set once, args appended."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for delta in chunk.tool_calls:
            call = calls.setdefault(
                delta.index, {"id": None, "name": None, "arguments": ""}
            )
            if delta.id is not None:
                assert call["id"] is None, "an id is given once per call"
                call["id"] = delta.id
            if delta.name is not None:
                assert call["name"] is None, "a name is given once per call"
                call["name"] = delta.name
            call["arguments"] += delta.arguments
    return calls


# --- streaming text ----------------------------------------------------------


def test_it_streams_text_token_by_token(fake_engine: FakeEngine) -> None:
    fake_engine.script(
        {
            "chunks": ["Hel", "lo", ", world"],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3},
            "cached_tokens": 8,
        }
    )
    model = fake_engine.model(
        id=unique_id(), served_name="engine-name", api_key="engine-key"
    )
    chunks = collect(
        ChatRequest(
            model=model,
            messages=USER,
            max_tokens=50,
            temperature=0.2,
            top_p=0.9,
            seed=7,
            request_id="req_123",
        )
    )

    assert [c.content for c in chunks if c.content] == ["Hel", "lo", ", world"]
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    assert chunks[-1].usage == Usage(
        prompt_tokens=12, completion_tokens=3, cached_tokens=8
    )
    [body] = fake_engine.bodies()
    assert body == {
        "model": "engine-name",
        "messages": USER,
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
    }
    [sent] = fake_engine.requests()
    assert sent["headers"]["authorization"] == "Bearer engine-key"
    assert sent["headers"]["x-request-id"] == engine_request_id("req_123")
    assert sent["completed"] and not sent["aborted"]


def test_consecutive_calls_reuse_one_kept_alive_connection(
    fake_engine: FakeEngine,
) -> None:
    """The connection goes back to the pool intact: the end of a call does
    not shut down a socket that the next call now owns."""
    transport.clear_pool()
    model = fake_engine.model(id=unique_id())
    fake_engine.script({"content": "one"}, {"content": "two"})
    origin = transport.Target.parse(fake_engine.url).origin

    assert text_of(collect(ChatRequest(model=model, messages=USER))) == "one"
    [first] = transport._pool._idle[origin]
    assert text_of(collect(ChatRequest(model=model, messages=USER))) == "two"
    assert transport._pool._idle[origin] == [first]
    assert all(r["completed"] and not r["aborted"] for r in fake_engine.requests())


def test_usage_without_cached_tokens_leaves_them_unknown(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script({"content": "Hi.", "usage": {"prompt_tokens": 3}})
    chunks = collect(ChatRequest(model=fake_engine.model(), messages=USER))
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.prompt_tokens == 3 and usage.cached_tokens is None


def test_the_model_id_is_sent_when_there_is_no_served_name(
    fake_engine: FakeEngine,
) -> None:
    collect(ChatRequest(model=fake_engine.model(id="plain-id"), messages=USER))
    [body] = fake_engine.bodies()
    assert body["model"] == "plain-id"
    assert "seed" not in body and "tools" not in body


def test_an_assistant_turn_with_only_tool_calls_is_sent_with_empty_content(
    fake_engine: FakeEngine,
) -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
    ]
    history: list[dict[str, Any]] = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    collect(ChatRequest(model=fake_engine.model(), messages=history))
    [body] = fake_engine.bodies()
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": calls,
    }
    assert history[1]["content"] is None, "the caller's list is not modified"


# --- tool calls --------------------------------------------------------------


def test_parallel_tool_call_deltas_assemble_into_calls(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script(
        {
            "tool_calls": [
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "get_weather", "arguments": {"city": "Rome"}},
            ]
        }
    )
    chunks = collect(
        ChatRequest(
            model=fake_engine.model(),
            messages=USER,
            tools=[WEATHER],
            tool_choice="auto",
            parallel_tool_calls=True,
        )
    )

    calls = assembled_calls(chunks)
    assert sorted(calls) == [0, 1]
    assert [calls[i]["name"] for i in (0, 1)] == ["get_weather", "get_weather"]
    assert [json.loads(calls[i]["arguments"]) for i in (0, 1)] == [
        {"city": "Paris"},
        {"city": "Rome"},
    ]
    assert all(calls[i]["id"] for i in (0, 1))
    assert sum(len(c.tool_calls) for c in chunks) > 2, "arguments came in pieces"
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]
    [body] = fake_engine.bodies()
    assert body["tools"] == [WEATHER]
    assert body["tool_choice"] == "auto"
    assert body["parallel_tool_calls"] is True


def test_an_engine_repeating_tool_ids_and_names_is_normalised(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script(
        {
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Lima"}}],
            "repeat_tool_ids": True,
        }
    )
    chunks = collect(
        ChatRequest(model=fake_engine.model(), messages=USER, tools=[WEATHER])
    )
    calls = assembled_calls(chunks)  # asserts id and name come once
    assert calls[0]["name"] == "get_weather"
    assert json.loads(calls[0]["arguments"]) == {"city": "Lima"}


def test_tool_choice_is_not_sent_without_tools(fake_engine: FakeEngine) -> None:
    collect(
        ChatRequest(
            model=fake_engine.model(),
            messages=USER,
            tool_choice="auto",
            parallel_tool_calls=False,
        )
    )
    [body] = fake_engine.bodies()
    assert "tool_choice" not in body and "parallel_tool_calls" not in body


# --- capabilities ------------------------------------------------------------


def test_without_stream_tools_a_tool_request_is_made_unstreamed_and_replayed(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script(
        {
            "content": "Let me look.",
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9},
        }
    )
    model = fake_engine.model(capabilities={"stream_tools": False})
    chunks = collect(
        ChatRequest(model=model, messages=USER, tools=[WEATHER], tool_choice="auto")
    )

    [body] = fake_engine.bodies()
    assert body["stream"] is False and "stream_options" not in body
    assert [bool(c.content) for c in chunks] == [True, False, False]
    assert chunks[0].content == "Let me look."
    calls = assembled_calls(chunks)
    assert json.loads(calls[0]["arguments"]) == {"city": "Oslo"}
    assert chunks[-1].finish_reason == "tool_calls"
    assert chunks[-1].usage == Usage(prompt_tokens=20, completion_tokens=9)


def test_without_stream_tools_tool_choice_none_still_streams(
    fake_engine: FakeEngine,
) -> None:
    model = fake_engine.model(capabilities={"stream_tools": False})
    chunks = collect(
        ChatRequest(model=model, messages=USER, tools=[WEATHER], tool_choice="none")
    )
    [body] = fake_engine.bodies()
    assert body["stream"] is True
    assert text_of(chunks) == "Hello from the fake engine."


def test_structured_outputs_are_translated_for_llamacpp(
    fake_engine: FakeEngine,
) -> None:
    for mode, expected in [
        ("llamacpp", {"type": "json_object", "schema": PERSON}),
        ("openai", PERSON_FORMAT),
        ("none", None),
    ]:
        model = fake_engine.model(capabilities={"structured_outputs": mode})
        collect(ChatRequest(model=model, messages=USER, response_format=PERSON_FORMAT))
        body = fake_engine.bodies()[-1]
        assert body.get("response_format") == expected, mode
    json_object = {"type": "json_object"}
    model = fake_engine.model(capabilities={"structured_outputs": "llamacpp"})
    collect(ChatRequest(model=model, messages=USER, response_format=json_object))
    assert fake_engine.bodies()[-1]["response_format"] == json_object


def test_capabilities_drop_what_the_engine_refuses(fake_engine: FakeEngine) -> None:
    model = fake_engine.model(
        capabilities={"parallel_tool_calls": False, "tool_choice_required": False}
    )
    collect(
        ChatRequest(
            model=model,
            messages=USER,
            tools=[WEATHER],
            tool_choice="required",
            parallel_tool_calls=False,
        )
    )
    other = {**WEATHER, "function": {**WEATHER["function"], "name": "other"}}
    collect(
        ChatRequest(
            model=model, messages=USER, tools=[WEATHER, other], tool_choice="required"
        )
    )
    one_tool, two_tools = fake_engine.bodies()
    assert "parallel_tool_calls" not in one_tool
    assert one_tool["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    assert two_tools["tool_choice"] == "auto"


def test_an_unknown_structured_outputs_mode_is_a_permanent_error(
    fake_engine: FakeEngine,
) -> None:
    model = fake_engine.model(capabilities={"structured_outputs": "guided"})
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=model, messages=USER))
    assert not caught.value.transient
    assert "structured_outputs" in caught.value.message
    assert fake_engine.requests() == []


# --- replicas ----------------------------------------------------------------


def test_it_fails_over_to_the_next_replica_when_one_refuses_connections(
    fake_engine: FakeEngine,
) -> None:
    model = fake_engine.model(id=unique_id(), base_urls=[dead_url(), fake_engine.url])
    chunks = collect(ChatRequest(model=model, messages=USER))
    assert text_of(chunks) == "Hello from the fake engine."
    assert len(fake_engine.requests()) == 1


def test_calls_rotate_over_replicas(fake_engine: FakeEngine) -> None:
    model = fake_engine.model(
        id=unique_id(), base_urls=[fake_engine.url, fake_engine.replica_url + "/"]
    )
    for _ in range(4):
        collect(ChatRequest(model=model, messages=USER))
    ports = [r["port"] for r in fake_engine.requests()]
    assert ports == [fake_engine.port, fake_engine.replica_port] * 2


def test_an_unreachable_engine_is_a_transient_error_naming_it() -> None:
    url = dead_url()
    model = LanguageModel(id=unique_id(), base_urls=[url])
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=model, messages=USER))
    assert caught.value.transient
    assert caught.value.message.startswith(
        f"The model engine for '{model.id}' at {url} is unreachable: "
    )


def test_when_every_replica_is_down_the_error_names_them_all() -> None:
    urls = [dead_url(), dead_url()]
    model = LanguageModel(id=unique_id(), base_urls=urls)
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=model, messages=USER))
    assert caught.value.transient
    assert all(url in caught.value.message for url in urls)


def test_a_model_without_base_urls_is_a_permanent_error() -> None:
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=LanguageModel(id="nowhere"), messages=USER))
    assert not caught.value.transient
    assert "no base URL" in caught.value.message


# --- stopping ----------------------------------------------------------------


def test_should_stop_aborts_the_engine_request_mid_stream(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script(
        {"chunks": [f"t{i} " for i in range(200)], "delay_per_chunk": 0.05}
    )
    stop = threading.Event()
    received: list[ChatChunk] = []
    started = time.monotonic()
    for chunk in chat_stream(
        ChatRequest(model=fake_engine.model(), messages=USER), should_stop=stop.is_set
    ):
        received.append(chunk)
        if len(received) == 3:
            stop.set()
    elapsed = time.monotonic() - started

    assert len(received) == 3, "nothing is yielded once should_stop is true"
    assert elapsed < 5, "200 chunks at 50 ms would take 10 s"
    aborted = fake_engine.wait_for_abort()
    assert not aborted["completed"]


def test_should_stop_is_honoured_while_the_engine_is_silent(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script({"hang": 30})
    deadline = time.monotonic() + 0.5
    started = time.monotonic()
    chunks = collect(
        ChatRequest(model=fake_engine.model(), messages=USER),
        should_stop=lambda: time.monotonic() > deadline,
    )
    assert chunks == []
    assert time.monotonic() - started < 2.5
    fake_engine.wait_for_abort()


def test_on_sent_overlaps_the_engine_and_a_failure_aborts_it(
    fake_engine: FakeEngine,
) -> None:
    # on_sent runs on the caller's thread while the engine works, before
    # any chunk is handed over.
    fake_engine.script({"chunks": ["late"], "delay_per_chunk": 0.3})
    seen: list[tuple[str, int]] = []
    stream = chat_stream(
        ChatRequest(model=fake_engine.model(), messages=USER),
        on_sent=lambda: seen.append(("sent", threading.get_ident())),
    )
    chunks = [c.content for c in stream if c.content]
    assert seen == [("sent", threading.get_ident())] and chunks == ["late"]

    # An on_sent that raises aborts the request it overlapped.
    fake_engine.script({"hang": 30})

    def fail() -> None:
        # Once the engine holds the request (before that, abort means it is
        # never sent at all).
        deadline = time.monotonic() + 5
        while not fake_engine.requests() and time.monotonic() < deadline:
            time.sleep(0.02)
        raise RuntimeError("bookkeeping failed")

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="bookkeeping failed"):
        list(
            chat_stream(
                ChatRequest(model=fake_engine.model(), messages=USER), on_sent=fail
            )
        )
    assert time.monotonic() - started < 5
    fake_engine.wait_for_abort()


def test_closing_the_generator_aborts_the_engine_request(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script({"chunks": ["a "] * 100, "delay_per_chunk": 0.05})
    stream = chat_stream(ChatRequest(model=fake_engine.model(), messages=USER))
    assert next(stream).content == "a "
    stream.close()
    fake_engine.wait_for_abort()


# --- errors ------------------------------------------------------------------


@pytest.mark.parametrize("stream_tools", [True, False])
def test_a_5xx_is_a_transient_error(
    fake_engine: FakeEngine, stream_tools: bool
) -> None:
    fake_engine.script({"status": 503, "error_message": "overloaded, try later"})
    model = fake_engine.model(capabilities={"stream_tools": stream_tools})
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=model, messages=USER, tools=[WEATHER]))
    assert caught.value.transient
    assert "HTTP 503" in caught.value.message
    assert "overloaded, try later" in caught.value.message


def test_a_4xx_is_a_permanent_error_with_the_engines_message(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script(
        {"status": 400, "error_message": "This model's maximum context is 8192"}
    )
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=fake_engine.model(), messages=USER))
    assert not caught.value.transient
    assert "maximum context is 8192" in caught.value.message


def test_rate_limiting_is_transient(fake_engine: FakeEngine) -> None:
    fake_engine.script({"status": 429})
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=fake_engine.model(), messages=USER))
    assert caught.value.transient


@pytest.mark.parametrize("stream_tools", [True, False])
def test_garbage_is_a_permanent_error(
    fake_engine: FakeEngine, stream_tools: bool
) -> None:
    fake_engine.script({"garbage": True})
    model = fake_engine.model(capabilities={"stream_tools": stream_tools})
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=model, messages=USER, tools=[WEATHER]))
    assert not caught.value.transient
    assert caught.value.message.startswith(
        "The model engine answered something that is not an OpenAI-compatible "
        "chat completion: "
    )


def test_a_connection_dropped_mid_stream_is_a_transient_error(
    fake_engine: FakeEngine,
) -> None:
    fake_engine.script({"chunks": ["a", "b", "c", "d"], "disconnect_after": 3})
    received: list[ChatChunk] = []
    with pytest.raises(EngineError) as caught:
        for chunk in chat_stream(ChatRequest(model=fake_engine.model(), messages=USER)):
            received.append(chunk)
    assert caught.value.transient
    assert text_of(received) == "ab", "what came before the drop was delivered"


def test_a_silent_engine_times_out(fake_engine: FakeEngine, settings: Any) -> None:
    settings.ENGINE_READ_TIMEOUT = 0.5
    fake_engine.script({"hang": 5})
    started = time.monotonic()
    with pytest.raises(EngineError) as caught:
        collect(ChatRequest(model=fake_engine.model(), messages=USER))
    assert caught.value.transient
    assert "did not answer within" in caught.value.message
    assert time.monotonic() - started < 3


def test_engine_errors_survive_pickling() -> None:
    error = pickle.loads(pickle.dumps(EngineError("down", transient=True)))
    assert (error.message, error.transient) == ("down", True)


def test_server_sent_events_are_parsed_leniently() -> None:
    lines = [
        ": ping",
        "event: message",
        'data: {"a":',
        "data: 1}",
        "",
        'data: {"b": 2}',  # no blank line before the next event
        'data: {"c": 3}',
        "",
        "data:[DONE]",
    ]
    assert list(sse_data(iter(lines))) == [
        '{"a":\n1}',
        '{"b": 2}',
        '{"c": 3}',
        "[DONE]",
    ]


# --- the real local engine ---------------------------------------------------


@pytest.fixture
def real_model() -> LanguageModel:
    """The engine the launcher started (AGENTS_ENGINE_URL), as a registry entry."""
    url = os.environ.get("AGENTS_ENGINE_URL")
    if not url:
        message = "no real engine: AGENTS_ENGINE_URL is unset (core.stack sets it)"
        if os.environ.get("AGENTS_REQUIRE_REAL_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return LanguageModel(
        id=os.environ.get("DEFAULT_MODEL", "smollm2-135m-instruct"),
        base_urls=[url],
        api_key=os.environ.get("AGENTS_ENGINE_API_KEY", ""),
        capabilities=json.loads(os.environ.get("AGENTS_ENGINE_CAPABILITIES") or "{}"),
    )


def test_the_real_engine_streams_a_plain_answer(real_model: LanguageModel) -> None:
    chunks = collect(
        ChatRequest(
            model=real_model,
            messages=[{"role": "user", "content": "Name three colours."}],
            max_tokens=40,
            temperature=0,
        )
    )
    assert text_of(chunks).strip()
    assert sum(1 for c in chunks if c.content) > 3, "token by token"
    assert chunks[-1].finish_reason in {"stop", "length"}


def test_the_real_engine_answers_json_that_validates(
    real_model: LanguageModel,
) -> None:
    chunks = collect(
        ChatRequest(
            model=real_model,
            messages=[
                {"role": "system", "content": "Answer with JSON only."},
                {"role": "user", "content": "Ann is 30 years old. Give her as JSON."},
            ],
            response_format=PERSON_FORMAT,
            max_tokens=100,
            temperature=0,
        )
    )
    answer = json.loads(text_of(chunks))
    jsonschema.validate(answer, PERSON)


def test_the_real_engine_calls_a_named_function(real_model: LanguageModel) -> None:
    chunks = collect(
        ChatRequest(
            model=real_model,
            messages=[{"role": "user", "content": "What is the weather in Paris?"}],
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            max_tokens=100,
            temperature=0,
        )
    )
    calls = assembled_calls(chunks)
    assert [c["name"] for c in calls.values()] == ["get_weather"]
    arguments = json.loads(calls[0]["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    assert chunks[-1].finish_reason == "tool_calls"


# --- the registry entry the launcher's environment creates --------------------


@pytest.mark.django_db
def test_model_capabilities_from_the_environment_reach_a_new_entry(
    settings: Any,
) -> None:
    settings.DEFAULT_MODEL = "local-engine"
    settings.MODEL_BASE_URL = "http://127.0.0.1:9/v1"
    settings.MODEL_CAPABILITIES = {"stream_tools": False}
    model = language_models_seed_from_env()
    assert model is not None
    assert model.capabilities == {
        "tools": True,
        "json_schema": True,
        "stream_tools": False,
    }


@pytest.mark.django_db
def test_model_capabilities_override_only_the_keys_they_name(settings: Any) -> None:
    settings.DEFAULT_MODEL = "local-engine"
    settings.MODEL_BASE_URL = "http://127.0.0.1:9/v1"
    LanguageModel.objects.create(
        id="local-engine",
        base_urls=[],
        capabilities={"tools": False, "structured_outputs": "openai"},
    )
    settings.MODEL_CAPABILITIES = {"structured_outputs": "llamacpp"}
    language_models_seed_from_env()
    stored = LanguageModel.objects.get(id="local-engine")
    assert stored.capabilities == {"tools": False, "structured_outputs": "llamacpp"}
    settings.MODEL_CAPABILITIES = {}
    stored.capabilities = {"tools": True}
    stored.save()
    language_models_seed_from_env()
    assert LanguageModel.objects.get(id="local-engine").capabilities == {"tools": True}


@pytest.mark.django_db
def test_model_capabilities_must_be_a_json_object(settings: Any) -> None:
    settings.DEFAULT_MODEL = "local-engine"
    settings.MODEL_BASE_URL = "http://127.0.0.1:9/v1"
    settings.MODEL_CAPABILITIES = ["tools"]
    with pytest.raises(ImproperlyConfigured):
        language_models_seed_from_env()


# --- the launcher's side --------------------------------------------------------


def test_the_launcher_fails_loudly_without_an_engine_when_real_services_are_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from core.stack import __main__ as launcher

    monkeypatch.setattr(launcher, "unavailable_reason", lambda: "not installed")
    stack = launcher.Stack()
    stack.env.pop("MODEL_BASE_URL", None)
    stack.env.pop("AGENTS_ENGINE", None)
    stack.data_dir = tmp_path
    with pytest.raises(RuntimeError, match="no local engine: not installed"):
        stack.launch_engine(required=True)
    stack.launch_engine(required=False)  # only a warning
    assert stack.engine is None


def test_a_configured_engine_is_announced_to_the_tests_instead_of_started() -> None:
    from core.stack import __main__ as launcher

    stack = launcher.Stack()
    stack.env.update(
        MODEL_BASE_URL="http://gpu-1:8000/v1, http://gpu-2:8000/v1",
        MODEL_CAPABILITIES='{"structured_outputs": "openai"}',
        MODEL_API_KEY="k",
    )
    for name in ("AGENTS_ENGINE_URL", "AGENTS_ENGINE_CAPABILITIES"):
        stack.env.pop(name, None)
    stack.env.pop("AGENTS_ENGINE_API_KEY", None)
    stack.launch_engine(required=True)
    stack.announce_engine(tests=True)
    assert stack.engine is None
    assert stack.env["AGENTS_ENGINE_URL"] == "http://gpu-1:8000/v1"
    assert stack.env["AGENTS_ENGINE_CAPABILITIES"] == '{"structured_outputs": "openai"}'
    assert stack.env["AGENTS_ENGINE_API_KEY"] == "k"


def test_the_engine_process_does_not_see_the_platforms_settings() -> None:
    from core.stack.engine import engine_environment

    env = engine_environment(
        {
            "PATH": "/bin",
            "PORT": "8123",
            "HOST": "0.0.0.0",
            "API_KEY": "x",
            "MODEL": "other.gguf",
            "GGML_CUDA": "1",
        }
    )
    assert env == {"PATH": "/bin", "GGML_CUDA": "1"}


def test_request_ids_reach_the_engine_as_uuids(fake_engine: FakeEngine) -> None:
    """llama.cpp's server refuses a non-UUID X-Request-Id with a 400."""
    import uuid as uuidlib

    ours = str(uuidlib.uuid4())
    assert engine_request_id(ours) == ours
    mapped = engine_request_id("client-chosen id")
    assert uuidlib.UUID(mapped) and mapped == engine_request_id("client-chosen id")
    collect(
        ChatRequest(
            model=fake_engine.model(),
            request_id="client-chosen id",
            messages=[{"role": "user", "content": "hi"}],
        )
    )
    assert fake_engine.requests()[-1]["headers"]["x-request-id"] == mapped
