"""One end-to-end pass through the whole platform on the real local engine
(llama.cpp serving SmolLM2, started by the launcher): the SDK creates runs,
the worker calls the engine, and the answers come back validated."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from core.services.models import language_model_register
from tests.conftest import WEATHER

pytestmark = pytest.mark.live
REAL_MODEL = "real-local-engine"


@pytest.fixture
def real_assistant(sdk: Any, live_worker: Any, django_db_blocker: Any) -> Any:
    url = os.environ.get("AGENTS_ENGINE_URL")
    if not url:
        message = "no real engine: AGENTS_ENGINE_URL is unset (core.stack sets it)"
        if os.environ.get("AGENTS_REQUIRE_REAL_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with django_db_blocker.unblock():
        language_model_register(
            name=REAL_MODEL,
            served_name=os.environ.get("DEFAULT_MODEL", ""),
            base_urls=[url],
            api_key=os.environ.get("AGENTS_ENGINE_API_KEY", ""),
            capabilities=json.loads(
                os.environ.get("AGENTS_ENGINE_CAPABILITIES") or "{}"
            ),
        )
    return sdk.beta.assistants.create(
        model=REAL_MODEL,
        instructions="You are a helpful assistant. Answer briefly.",
        tools=[WEATHER],
    )


def _run(sdk: Any, assistant: Any, text: str, **options: Any) -> tuple[Any, Any]:
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": text}])
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        poll_interval_ms=100,
        **options,
    )
    return thread, run


def test_a_plain_answer(sdk: Any, real_assistant: Any) -> None:
    thread, run = _run(
        sdk,
        real_assistant,
        "What is the capital of France?",
        tool_choice="none",
        max_completion_tokens=40,
    )
    assert run.status in {"completed", "incomplete"}, run.last_error
    answer = sdk.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert answer.role == "assistant"
    assert answer.content[0].text.value.strip()
    assert run.usage.completion_tokens > 0


def test_a_strict_json_answer(sdk: Any, real_assistant: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    thread, run = _run(
        sdk,
        real_assistant,
        "Describe a person named Bob who is 30, as JSON.",
        tool_choice="none",
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    assert run.status == "completed", run.last_error
    value = json.loads(
        sdk.beta.threads.messages.list(thread_id=thread.id)
        .data[0]
        .content[0]
        .text.value
    )
    assert isinstance(value["name"], str) and isinstance(value["age"], int)
    assert set(value) == {"name", "age"}


def test_a_function_call(sdk: Any, real_assistant: Any) -> None:
    _thread, run = _run(
        sdk,
        real_assistant,
        "What is the weather in Paris?",
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert run.status == "requires_action", run.last_error
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments.get("city"), str)
    sdk.beta.threads.runs.cancel(run_id=run.id, thread_id=_thread.id)


def test_prompt_tokens_are_counted_by_the_engines_own_tokenizer(
    sdk: Any, real_assistant: Any, django_db_blocker: Any
) -> None:
    from assistants.models import Message
    from assistants.runs import tokens
    from core.models import LanguageModel

    thread, run = _run(sdk, real_assistant, "Count me, please.", tool_choice="none")
    assert run.status == "completed", run.last_error
    with django_db_blocker.unblock():
        model = LanguageModel.objects.get(pk=REAL_MODEL)
        ids = tokens.tokenize(model, "Count me, please.")
        question = Message.objects.get(thread_id=thread.id, role="user")
    assert ids and all(isinstance(i, int) for i in ids)
    # The stored count is the tokenizer's, plus the template's overhead.
    assert question.token_model == REAL_MODEL
    assert question.token_count == len(ids) + tokens.MESSAGE_OVERHEAD
