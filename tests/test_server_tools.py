"""The executor's side of server-side tools (tools/runtime.py): citation
markers, streamed tool input, tool turns that continue the run.

The executor runs in this process (``run_execute``) with stub plugins in the
registry, against the scripted engine; the run is made through the SDK.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from assistants.models import Assistant, Message, Run, RunStep
from assistants.runs import events
from assistants.runs.annotations import Citable, MarkerFilter, annotate, strip_markers
from assistants.runs.executor import run_execute
from assistants.runs.tool_calls import partial_json_string
from tests.conftest import WEATHER
from tools import runtime
from tools.runtime import OutputFile, Source, ToolCallContext, ToolError, ToolOutcome

pytestmark = pytest.mark.live
pytest_plugins = ["tests.fake_engine"]

FAKE_MODEL = "fake-model"
SOURCES = {
    1: Citable("file-a", "Paris is the capital of France."),
    2: Citable("file-b", "Berlin is the capital of Germany."),
}


# -- markers and annotations (pure)


def test_annotate_removes_markers_and_points_at_the_cited_span() -> None:
    raw = "France's capital is Paris [1]. Germany's is Berlin [2]."
    text, annotations = annotate(raw, sources=SOURCES, files={})
    assert text == "France's capital is Paris. Germany's is Berlin."
    first, second = annotations
    assert (
        text[first["start_index"] : first["end_index"]] == "France's capital is Paris"
    )
    assert first["text"] == "France's capital is Paris"
    assert first["file_citation"] == {
        "file_id": "file-a",
        "quote": "Paris is the capital of France.",
    }
    assert text[second["start_index"] : second["end_index"]] == "Germany's is Berlin"
    assert second["file_citation"]["file_id"] == "file-b"


def test_annotate_handles_grouped_markers_and_leaves_unknown_numbers() -> None:
    text, annotations = annotate(
        "Both are capitals [1, 2] but x[7] stays.", sources=SOURCES, files={}
    )
    assert text == "Both are capitals but x[7] stays."
    assert [a["file_citation"]["file_id"] for a in annotations] == ["file-a", "file-b"]
    assert all(a["text"] == "Both are capitals" for a in annotations)


def test_annotate_links_sandbox_paths_to_output_files() -> None:
    text, annotations = annotate(
        "Download [the data](sandbox:/mnt/data/out.csv).",
        sources={},
        files={"/mnt/data/out.csv": "file-out"},
    )
    (link,) = annotations
    assert link["type"] == "file_path"
    assert text[link["start_index"] : link["end_index"]] == "sandbox:/mnt/data/out.csv"
    assert link["file_path"] == {"file_id": "file-out"}


def test_marker_filter_streams_exactly_the_stripped_text_whatever_the_chunking() -> (
    None
):
    rng = random.Random(7)
    raw = "Paris [1] is big [1,2]. Lists x[3] and [ 1 ] and [12 end [2]"
    expected = strip_markers(raw, SOURCES)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(raw)), rng.randint(1, 12)))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        stream = MarkerFilter(SOURCES)
        sent = "".join(stream.feed(p) for p in pieces) + stream.flush()
        assert sent == expected
    assert "[1]" not in expected and "[3]" in expected


def test_partial_json_string_only_grows_and_decodes_escapes() -> None:
    full = json.dumps({"code": 'print("héllo")\n\tx = "\\\\" + "😀"'})
    seen = ""
    for end in range(len(full) + 1):
        value = partial_json_string(full[:end], "code")
        if value is None:
            assert seen == ""
            continue
        assert value.startswith(seen)
        seen = value
    assert seen == json.loads(full)["code"]
    assert partial_json_string('{"other": "x"', "code") is None


# -- the executor with stub plugins


class _StubSearch:
    type: ClassVar[str] = "file_search"
    streamed_argument: ClassVar[str | None] = None
    calls: ClassVar[list[ToolCallContext]] = []

    def engine_function(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": "file_search",
            "description": "Search the user's files.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
                "additionalProperties": False,
            },
        }

    def initial_details(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {
            "ranking_options": {"ranker": "auto", "score_threshold": 0.0},
            "results": [],
        }

    def invoke(self, ctx: ToolCallContext, first_marker: int) -> ToolOutcome:
        self.calls.append(ctx)
        if ctx.arguments["query"] == "fail":
            raise ToolError("the vector store is gone")
        quote = "Paris is the capital of France."
        return ToolOutcome(
            details={
                "results": [
                    {
                        "file_id": "file-paris",
                        "file_name": "paris.txt",
                        "score": 0.9,
                        "content": [{"type": "text", "text": quote}],
                    }
                ]
            },
            model_output=f"[{first_marker}] paris.txt: {quote}",
            sources=[Source(marker=first_marker, file_id="file-paris", quote=quote)],
        )


class _StubCode:
    type: ClassVar[str] = "code_interpreter"
    streamed_argument: ClassVar[str | None] = "code"

    def engine_function(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": "code_interpreter",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string"}},
                "required": ["code"],
            },
        }

    def initial_details(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {"input": "", "outputs": []}

    def invoke(self, ctx: ToolCallContext, first_marker: int) -> ToolOutcome:
        ctx.emit_delta({"outputs": [{"type": "logs", "logs": "partial"}]})
        return ToolOutcome(
            details={
                "outputs": [
                    {"type": "logs", "logs": "4\n"},
                    {"type": "image", "image": {"file_id": "file-chart"}},
                ]
            },
            model_output="4",
            files=[
                OutputFile(file_id="file-chart", path="/mnt/data/c.png", is_image=True)
            ],
        )


@pytest.fixture
def stub_tools() -> Iterator[None]:
    saved = runtime.server_tools()
    _StubSearch.calls.clear()
    runtime.register(_StubSearch())
    runtime.register(_StubCode())
    try:
        yield
    finally:
        runtime._registry.clear()
        runtime._registry.update(saved)


@pytest.fixture
def engine(registered_engine: Any) -> Any:
    """No live worker here: this process executes the runs."""
    return registered_engine


def _queued_run(sdk: Any, tools: list[dict[str, Any]], django_db_blocker: Any) -> Run:
    """A queued run written straight to the database: no Celery wake-up, so
    a live worker left by earlier tests cannot take it from this process
    (whose registry has the stub plugins)."""
    assistant = sdk.beta.assistants.create(model=FAKE_MODEL, tools=tools)
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": "What is the capital of France?"}]
    )
    with django_db_blocker.unblock():
        stored = Assistant.objects.get(pk=assistant.id)
        return Run.objects.create(
            project_id=stored.project_id,
            thread_id=thread.id,
            assistant_id=assistant.id,
            model=FAKE_MODEL,
            tools=stored.tools,
        )


def _events(run_id: str) -> list[tuple[str, Any]]:
    out = []
    for _id, fields in events.client().xrange(events.stream_key(run_id)):
        name = fields[b"event"].decode() if b"event" in fields else ""
        data = fields.get(b"data")
        out.append((name, json.loads(data) if data else None))
    return out


def test_a_server_tool_turn_feeds_the_model_and_the_answer_cites_its_sources(
    sdk: Any, engine: Any, stub_tools: None, django_db_blocker: Any
) -> None:
    engine.script(
        {"tool_calls": [{"name": "file_search", "arguments": {"query": "capital"}}]},
        {"chunks": ["The capital is Par", "is [", "1].", " Nice."]},
    )
    run = _queued_run(sdk, [{"type": "file_search"}], django_db_blocker)
    with django_db_blocker.unblock():
        run_execute(run.id)
        done = Run.objects.get(pk=run.id)
        steps = list(RunStep.objects.filter(run_id=run.id).order_by("seq"))
        answer = Message.objects.get(run_id=run.id, role="assistant")
    assert done.status == "completed", done.last_error
    tool_step, message_step = steps
    assert tool_step.type == "tool_calls" and tool_step.status == "completed"
    (call,) = tool_step.step_details["tool_calls"]
    assert call["type"] == "file_search"
    assert call["file_search"]["results"][0]["file_id"] == "file-paris"
    assert message_step.type == "message_creation"
    (ctx,) = _StubSearch.calls
    assert ctx.arguments == {"query": "capital"} and ctx.thread_id == run.thread_id
    # The second engine call saw the tool's output after the model's call.
    second = engine.requests()[1]["messages"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "file_search"
    assert second[-1] == {
        "role": "tool",
        "tool_call_id": call["id"],
        "content": "[1] paris.txt: Paris is the capital of France.",
    }
    (part,) = answer.content
    assert part["text"]["value"] == "The capital is Paris. Nice."
    (citation,) = part["text"]["annotations"]
    assert citation["type"] == "file_citation"
    assert citation["file_citation"]["file_id"] == "file-paris"
    value = part["text"]["value"]
    assert value[citation["start_index"] : citation["end_index"]] == (
        "The capital is Paris"
    )
    streamed = "".join(
        d["delta"]["content"][0]["text"]["value"]
        for name, d in _events(run.id)
        if name == "thread.message.delta"
    )
    assert streamed == value
    assert done.usage is not None and done.usage["total_tokens"] > 0


def test_a_tool_error_goes_back_to_the_model_and_the_run_goes_on(
    sdk: Any, engine: Any, stub_tools: None, django_db_blocker: Any
) -> None:
    engine.script(
        {"tool_calls": [{"name": "file_search", "arguments": {"query": "fail"}}]},
        {"content": "I could not search."},
    )
    run = _queued_run(sdk, [{"type": "file_search"}], django_db_blocker)
    with django_db_blocker.unblock():
        run_execute(run.id)
        assert Run.objects.get(pk=run.id).status == "completed"
    assert engine.requests()[1]["messages"][-1]["content"] == (
        "Error: the vector store is gone"
    )


def test_code_input_streams_into_the_step_and_images_join_the_answer(
    sdk: Any, engine: Any, stub_tools: None, django_db_blocker: Any
) -> None:
    engine.script(
        {"tool_calls": [{"name": "code_interpreter", "arguments": {"code": "2+2"}}]},
        {"content": "It is 4, see sandbox:/mnt/data/c.png"},
    )
    run = _queued_run(sdk, [{"type": "code_interpreter"}], django_db_blocker)
    with django_db_blocker.unblock():
        run_execute(run.id)
        assert Run.objects.get(pk=run.id).status == "completed"
        step = RunStep.objects.get(run_id=run.id, type="tool_calls")
        answer = Message.objects.get(run_id=run.id, role="assistant")
    (call,) = step.step_details["tool_calls"]
    assert call["code_interpreter"]["input"] == "2+2"
    assert call["code_interpreter"]["outputs"][1]["image"]["file_id"] == "file-chart"
    deltas = [
        d["delta"]["step_details"]["tool_calls"][0]
        for name, d in _events(run.id)
        if name == "thread.run.step.delta"
    ]
    streamed_input = "".join(
        d["code_interpreter"].get("input", "")
        for d in deltas
        if "input" in d.get("code_interpreter", {})
    )
    assert streamed_input.startswith("2+2")
    assert all(d["index"] == 0 and d["id"] == call["id"] for d in deltas)
    text, image = answer.content
    assert image == {
        "type": "image_file",
        "image_file": {"file_id": "file-chart", "detail": "auto"},
    }
    (link,) = text["text"]["annotations"]
    assert link["file_path"]["file_id"] == "file-chart"


def test_server_and_client_calls_in_one_turn_wait_for_the_clients_outputs(
    sdk: Any, engine: Any, stub_tools: None, django_db_blocker: Any
) -> None:
    engine.script(
        {
            "tool_calls": [
                {"name": "file_search", "arguments": {"query": "capital"}},
                {"name": "get_weather", "arguments": {"city": "Paris"}},
            ]
        },
        {"content": "Paris [1], sunny."},
    )
    run = _queued_run(sdk, [{"type": "file_search"}, WEATHER], django_db_blocker)
    with django_db_blocker.unblock():
        run_execute(run.id)
    waiting = sdk.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    assert waiting.status == "requires_action"
    (pending,) = waiting.required_action.submit_tool_outputs.tool_calls
    assert pending.function.name == "get_weather"
    sdk.beta.threads.runs.submit_tool_outputs(
        run.id,
        thread_id=run.thread_id,
        tool_outputs=[{"tool_call_id": pending.id, "output": "sunny"}],
    )
    # The submit wakes a worker: a live one left by earlier tests may take
    # the second turn instead of this process (it has nothing to run on our
    # side then), so execute here and wait for whichever did.
    with django_db_blocker.unblock():
        run_execute(run.id)
        deadline = time.monotonic() + 30
        while Run.objects.get(pk=run.id).status not in ("completed", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert Run.objects.get(pk=run.id).status == "completed"
        answer = Message.objects.get(run_id=run.id, role="assistant")
    replayed = engine.requests()[1]["messages"]
    assert [m["role"] for m in replayed[-3:]] == ["assistant", "tool", "tool"]
    assert replayed[-1]["content"] == "sunny"
    assert answer.content[0]["text"]["value"] == "Paris, sunny."
    assert answer.content[0]["text"]["annotations"][0]["file_citation"]["file_id"] == (
        "file-paris"
    )
    assert len(_StubSearch.calls) == 1  # not run again on the second turn


def test_a_streamed_input_keeps_its_calls_id_beside_a_parallel_function_call(
    sdk: Any, engine: Any, stub_tools: None, django_db_blocker: Any
) -> None:
    engine.script(
        {
            "tool_calls": [
                {"name": "get_weather", "arguments": {"city": "Paris"}},
                {"name": "code_interpreter", "arguments": {"code": "6*7"}},
            ]
        }
    )
    run = _queued_run(sdk, [{"type": "code_interpreter"}, WEATHER], django_db_blocker)
    with django_db_blocker.unblock():
        run_execute(run.id)
        step = RunStep.objects.get(run_id=run.id, type="tool_calls")
    function_call, code_call = step.step_details["tool_calls"]
    assert function_call["type"] == "function"
    assert code_call["code_interpreter"]["input"] == "6*7"
    streamed = [
        c
        for name, d in _events(run.id)
        if name == "thread.run.step.delta"
        for c in d["delta"]["step_details"]["tool_calls"]
        if "input" in c.get("code_interpreter", {})
    ]
    assert streamed and all(
        c["index"] == 1 and c["id"] == code_call["id"] for c in streamed
    )
    waiting = sdk.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    (pending,) = waiting.required_action.submit_tool_outputs.tool_calls
    assert pending.id == function_call["id"]
