"""code_interpreter: the plugin (tools/code_interpreter/runtime.py) against
the real sandbox, and runs in which the scripted engine calls it.

Needs a Docker engine and the sandbox image; skipped without them, failed
instead when AGENTS_REQUIRE_REAL_SERVICES=1 (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest
from django.conf import settings
from django.core.files.base import ContentFile

from sandbox import SandboxUnavailable, SessionManager, docker_client
from tools.code_interpreter import runtime as ci
from tools.models import File
from tools.runtime import ToolCallContext, ToolError, server_tool

pytest_plugins = ["tests.fake_engine"]
FAKE_MODEL = "fake-model"


def _require_docker() -> None:
    try:
        client = docker_client()
        client.images.get(settings.SANDBOX_IMAGE)
    except (SandboxUnavailable, docker.errors.ImageNotFound) as exc:
        message = f"the code interpreter needs Docker and its image: {exc}"
        if os.environ.get("AGENTS_REQUIRE_REAL_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def sandbox_ready() -> None:
    _require_docker()


def _ctx(
    project_id: str,
    thread_id: str,
    code: str,
    file_ids: list[str] | None = None,
    attachments: list[str] | None = None,
) -> ToolCallContext:
    return ToolCallContext(
        run_id="run_x",
        thread_id=thread_id,
        project_id=project_id,
        assistant_id="asst_x",
        call_id=f"call_{uuid.uuid4().hex[:8]}",
        tool={"type": "code_interpreter"},
        resources={"code_interpreter": {"file_ids": file_ids or []}},
        attachment_file_ids=attachments or [],
        arguments={"code": code},
        emit_delta=lambda _: None,
        should_stop=lambda: False,
    )


@pytest.fixture
def thread_key(tenant: Any) -> Iterator[str]:
    thread_id = f"thread_{uuid.uuid4().hex}"
    yield thread_id
    with contextlib.suppress(SandboxUnavailable):
        ci.session_manager().close(ci.session_key(tenant.project.id, thread_id))


def _input_file(tenant: Any, name: str, data: bytes) -> File:
    file = File(project=tenant.project, filename=name, purpose="assistants")
    file.bytes = len(data)
    file.content.save(name, ContentFile(data), save=False)
    file.save()
    return file


def test_the_plugin_declares_code_and_streams_it() -> None:
    plugin = server_tool("code_interpreter")
    assert plugin is not None
    assert plugin.streamed_argument == "code"
    function = plugin.engine_function({"type": "code_interpreter"})
    assert function["name"] == "code_interpreter"
    assert function["parameters"]["required"] == ["code"]
    assert plugin.initial_details({}) == {"input": "", "outputs": []}


@pytest.mark.django_db(transaction=True)
def test_the_plugin_runs_code_with_files_in_and_out_and_keeps_state(
    tenant: Any, thread_key: str, sandbox_ready: None
) -> None:
    plugin = server_tool("code_interpreter")
    assert plugin is not None
    data = _input_file(tenant, "sales.csv", b"month,amount\n1,10\n2,32\n")
    first = plugin.invoke(
        _ctx(
            tenant.project.id,
            thread_key,
            "import pandas as pd\n"
            "df = pd.read_csv('/mnt/data/sales.csv')\n"
            "total = int(df.amount.sum())\n"
            "print(total)\n"
            "df.to_csv('/mnt/data/report.csv', index=False)",
            file_ids=[data.id],
        ),
        1,
    )
    assert first.details["outputs"] == [{"type": "logs", "logs": "42"}]
    assert "/mnt/data/sales.csv" in first.model_output
    assert "42" in first.model_output
    (report,) = first.files
    assert report.path == "/mnt/data/report.csv" and not report.is_image
    row = File.objects.get(pk=report.file_id)
    assert row.purpose == "assistants_output" and row.filename == "report.csv"
    assert row.project_id == tenant.project.id
    with row.content.open("rb") as fh:
        assert fh.read() == b"month,amount\n1,10\n2,32\n"
    assert "sandbox:/mnt/data/report.csv" in first.model_output

    notes = _input_file(tenant, "notes.txt", b"attached")
    second = plugin.invoke(
        _ctx(
            tenant.project.id,
            thread_key,
            "print(total * 2, open('/mnt/data/notes.txt').read())",
            file_ids=[data.id],
            attachments=[notes.id],
        ),
        1,
    )
    assert second.details == {
        "input": "print(total * 2, open('/mnt/data/notes.txt').read())",
        "outputs": [{"type": "logs", "logs": "84 attached"}],
    }
    # Only the new attachment is copied in; neither input is an output.
    assert second.model_output.startswith("Input files: /mnt/data/notes.txt\n")
    assert second.files == []


@pytest.mark.django_db(transaction=True)
def test_a_chart_comes_back_as_an_image_output(
    tenant: Any, thread_key: str, sandbox_ready: None
) -> None:
    plugin = server_tool("code_interpreter")
    assert plugin is not None
    outcome = plugin.invoke(
        _ctx(
            tenant.project.id,
            thread_key,
            "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()",
        ),
        1,
    )
    (image,) = [o for o in outcome.details["outputs"] if o["type"] == "image"]
    (figure,) = outcome.files
    assert figure.is_image and image["image"]["file_id"] == figure.file_id
    row = File.objects.get(pk=figure.file_id)
    assert row.purpose == "assistants_output" and row.mime_type == "image/png"
    with row.content.open("rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.django_db(transaction=True)
def test_errors_and_timeouts_go_back_to_the_model(
    tenant: Any, thread_key: str, sandbox_ready: None, settings: Any
) -> None:
    settings.SANDBOX_TIMEOUT_SECONDS = 1
    plugin = server_tool("code_interpreter")
    assert plugin is not None
    failed = plugin.invoke(_ctx(tenant.project.id, thread_key, "int('x')"), 1)
    assert "ValueError" in failed.model_output
    assert "ValueError" in failed.details["outputs"][0]["logs"]
    slow = plugin.invoke(_ctx(tenant.project.id, thread_key, "while True: pass"), 1)
    assert "timed out" in slow.model_output


def test_without_docker_the_call_fails_with_a_clear_permanent_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setattr(ci, "_manager", None)
    plugin = server_tool("code_interpreter")
    assert plugin is not None
    with pytest.raises(ToolError) as caught:
        plugin.invoke(_ctx("proj_x", "thread_x", "print(1)"), 1)
    assert caught.value.permanent
    assert "Docker" in caught.value.message
    assert ci._manager is None


# -- runs ----------------------------------------------------------------------


def _code_call(code: str) -> dict[str, Any]:
    return {
        "tool_calls": [
            {"name": "code_interpreter", "arguments": json.dumps({"code": code})}
        ]
    }


@pytest.mark.live
def test_a_run_calls_the_code_interpreter_and_answers(
    sdk: Any, engine: Any, sandbox_ready: None, live_tenant: Any
) -> None:
    upload = sdk.files.create(
        file=("numbers.csv", b"n\n20\n22\n"), purpose="assistants"
    )
    assistant = sdk.beta.assistants.create(
        model=FAKE_MODEL,
        tools=[{"type": "code_interpreter"}],
        tool_resources={"code_interpreter": {"file_ids": [upload.id]}},
    )
    engine.script(
        _code_call(
            "import pandas as pd\n"
            "n = int(pd.read_csv('/mnt/data/numbers.csv').n.sum())\n"
            "print(n)"
        ),
        {"content": "The sum is 42."},
        _code_call(
            "print(open('/mnt/data/extra.txt').read())\n"
            "import matplotlib.pyplot as plt\nplt.bar(['a'], [n])\nplt.show()"
        ),
        {"content": "Here is the chart."},
        _code_call("print(n + 1)"),
        {"content": "43."},
    )
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": "Sum the numbers."}]
    )
    try:
        _two_runs(sdk, engine, assistant, thread)
    finally:
        # The worker's session of this thread: not left for the reaper.
        key = ci.session_key(live_tenant.project.id, thread.id)
        manager = SessionManager(ci.sandbox_config(), docker_client())
        manager.close(key)


def _two_runs(sdk: Any, engine: Any, assistant: Any, thread: Any) -> None:
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
    )
    assert run.status == "completed", run.last_error
    steps = sdk.beta.threads.runs.steps.list(
        run_id=run.id, thread_id=thread.id, order="asc"
    ).data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    (call,) = steps[0].step_details.tool_calls
    assert call.type == "code_interpreter"
    assert call.code_interpreter.input.startswith("import pandas")
    assert [o.type for o in call.code_interpreter.outputs] == ["logs"]
    assert call.code_interpreter.outputs[0].logs == "42"
    # The model read the output back.
    tool_messages = [
        m for m in engine.requests()[-1]["messages"] if m["role"] == "tool"
    ]
    assert "42" in tool_messages[-1]["content"]

    # The second run of the thread sees the first one's variables and a
    # file attached to a new message.
    extra = sdk.files.create(file=("extra.txt", b"attached!"), purpose="assistants")
    sdk.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="Chart it.",
        attachments=[{"file_id": extra.id, "tools": [{"type": "code_interpreter"}]}],
    )
    run = sdk.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=100
    )
    assert run.status == "completed", run.last_error
    steps = sdk.beta.threads.runs.steps.list(
        run_id=run.id, thread_id=thread.id, order="asc"
    ).data
    (call,) = steps[0].step_details.tool_calls
    logs, image = call.code_interpreter.outputs
    assert logs.type == "logs" and logs.logs == "attached!"
    assert image.type == "image"
    assert sdk.files.retrieve(image.image.file_id).purpose == "assistants_output"
    answer = sdk.beta.threads.messages.list(thread_id=thread.id).data[0]
    kinds = [part.type for part in answer.content]
    assert "image_file" in kinds and "text" in kinds

    # Streamed: the code arrives as input deltas while the model writes it,
    # then the outputs.
    inputs: list[str] = []
    logs: list[str] = []
    events: list[str] = []
    with sdk.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, stream=True
    ) as stream:
        for event in stream:
            events.append(event.event)
            if event.event != "thread.run.step.delta":
                continue
            details = event.data.delta.step_details
            for delta in getattr(details, "tool_calls", None) or []:
                if delta.type != "code_interpreter" or not delta.code_interpreter:
                    continue
                if delta.code_interpreter.input:
                    inputs.append(delta.code_interpreter.input)
                for output in delta.code_interpreter.outputs or []:
                    if output.type == "logs":
                        logs.append(output.logs)
    assert events[-1] == "thread.run.completed"
    assert "".join(inputs).endswith("print(n + 1)")
    assert logs == ["43"]
