"""The tools of a run as the engine sees them, and the execution of the
server-side ones (file_search, code_interpreter) in the worker.

See tools/runtime.py for the plugin contract. A turn whose model output calls
tools writes one ``tool_calls`` step (key ``<turn>:tools``) holding every call
of the turn: server calls are executed here, one after the other, each result
saved before the next starts (so a re-executed turn skips what is done);
client function calls are left for ``submit_tool_outputs``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Q

from assistants.api.v1.serializers import run_step_to_wire
from assistants.models import Assistant, Message, Run, RunStep, Thread
from assistants.runs import events
from assistants.runs.annotations import Citable
from core.ids import new_tool_call_id
from tools.runtime import ServerTool, ToolCallContext, ToolError, server_tool

logger = logging.getLogger(__name__)

# Message attachments looked at for a run's files: the newest messages only.
ATTACHMENT_WINDOW = 200


@dataclass(frozen=True)
class EngineTools:
    """The function definitions sent to the engine, and which names are
    server tools (name → plugin and the run's tool entry)."""

    functions: list[dict[str, Any]]
    server: dict[str, tuple[ServerTool, dict[str, Any]]]

    def definition(self, name: str) -> dict[str, Any] | None:
        for tool in self.functions:
            if tool["function"]["name"] == name:
                fn: dict[str, Any] = tool["function"]
                return fn
        return None


def engine_tools(run: Run) -> EngineTools:
    """The run's tools as function definitions, in the run's order."""
    entries: list[tuple[bool, dict[str, Any]]] = []  # (is a server tool, def)
    server: dict[str, tuple[ServerTool, dict[str, Any]]] = {}
    for tool in run.tools or []:
        if tool.get("type") == "function":
            entries.append((False, tool))
            continue
        plugin = server_tool(tool["type"])
        if plugin is None:
            continue  # a tool type with nothing to run on our side
        fn = dict(plugin.engine_function(tool))
        # Server tools are always validated like strict functions: their
        # arguments go to our own code.
        fn["strict"] = True
        server[fn["name"]] = (plugin, tool)
        entries.append((True, {"type": "function", "function": fn}))
    # A client function named like a server tool of the run would be
    # ambiguous: the server tool's definition is the one the model sees.
    functions = [
        definition
        for is_server, definition in entries
        if is_server or definition["function"]["name"] not in server
    ]
    return EngineTools(functions=functions, server=server)


@dataclass
class ToolResults:
    """What this run's server calls left for its answer."""

    sources: dict[int, Citable] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # path -> file id
    images: list[str] = field(default_factory=list)  # file ids

    def add(self, state: dict[str, Any]) -> None:
        for s in state.get("sources", []):
            self.sources[int(s["marker"])] = Citable(s["file_id"], s["quote"])
        for f in state.get("files", []):
            self.files[f["path"]] = f["file_id"]
            if f.get("is_image") and f["file_id"] not in self.images:
                self.images.append(f["file_id"])

    @property
    def next_marker(self) -> int:
        return max(self.sources, default=0) + 1


def run_tool_results(run: Run) -> ToolResults:
    results = ToolResults()
    for step in RunStep.objects.filter(run=run, type=RunStep.Type.TOOL_CALLS).order_by(
        "seq"
    ):
        for state in (step.tool_state or {}).values():
            results.add(state)
    return results


def tool_resources_of(run: Run) -> dict[str, Any]:
    """The assistant's and the thread's tool_resources, merged (ids of both,
    assistant's first, without repeats)."""
    merged: dict[str, Any] = {}
    sources = [
        Assistant.objects.filter(pk=run.assistant_id).values_list(
            "tool_resources", flat=True
        ),
        Thread.objects.filter(pk=run.thread_id).values_list(
            "tool_resources", flat=True
        ),
    ]
    for rows in sources:
        resources = next(iter(rows), None) or {}
        for tool, key in (
            ("file_search", "vector_store_ids"),
            ("code_interpreter", "file_ids"),
        ):
            ids = (resources.get(tool) or {}).get(key) or []
            if not ids:
                continue
            bucket = merged.setdefault(tool, {key: []})[key]
            bucket.extend(i for i in ids if i not in bucket)
    return merged


def attachment_file_ids(run: Run, tool_type: str) -> list[str]:
    """Files attached to the thread's recent messages for ``tool_type``,
    oldest first (through the (thread, seq) index: bounded, never the whole
    thread)."""
    rows = (
        Message.objects.filter(thread_id=run.thread_id)
        .filter(~Q(attachments=[]))
        .order_by("-seq")
        .values_list("attachments", flat=True)[:ATTACHMENT_WINDOW]
    )
    ids: list[str] = []
    for attachments in reversed(list(rows)):
        for item in attachments or []:
            kinds = {t.get("type") for t in item.get("tools") or []}
            if tool_type in kinds and item.get("file_id") not in ids:
                ids.append(item["file_id"])
    return ids


def _call_wire(
    call_id: str, call: dict[str, str], engine: EngineTools
) -> dict[str, Any]:
    """A call as it appears in ``step_details.tool_calls`` before it ran."""
    entry = engine.server.get(call["name"])
    if entry is None:
        return {
            "id": call_id,
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": call["arguments"] or "{}",
                "output": None,
            },
        }
    plugin, tool = entry
    details = dict(plugin.initial_details(tool))
    if plugin.streamed_argument:
        try:
            args = json.loads(call["arguments"] or "{}")
        except ValueError:
            args = {}
        value = args.get(plugin.streamed_argument) if isinstance(args, dict) else None
        details["input"] = value if isinstance(value, str) else ""
    return {"id": call_id, "type": plugin.type, plugin.type: details}


def write_tool_step(
    run: Run,
    *,
    turn: int,
    calls: list[dict[str, str]],
    engine: EngineTools,
    step_usage: dict[str, Any],
    step: RunStep | None = None,
) -> RunStep:
    """Create or update the turn's tool_calls step with every call.

    Call ids are ours and stable across a re-executed turn; a server call
    that already ran keeps its stored result.
    """
    key = f"{turn}:tools"
    existing = step or RunStep.objects.filter(run=run, key=key).first()
    old_calls = existing.step_details.get("tool_calls", []) if existing else []
    tool_calls: list[dict[str, Any]] = []
    for i, call in enumerate(calls):
        call_id = old_calls[i]["id"] if i < len(old_calls) else new_tool_call_id()
        done = existing is not None and call_id in (existing.tool_state or {})
        tool_calls.append(old_calls[i] if done else _call_wire(call_id, call, engine))
    details = {"type": "tool_calls", "tool_calls": tool_calls}
    if existing is None:
        created, _ = RunStep.objects.get_or_create(
            run=run,
            key=key,
            defaults={
                "thread_id": run.thread_id,
                "assistant_id": run.assistant_id,
                "type": RunStep.Type.TOOL_CALLS,
                "step_details": details,
                "usage": step_usage,
            },
        )
        return created
    RunStep.objects.filter(pk=existing.pk).update(
        step_details=details, usage=step_usage, status=RunStep.Status.IN_PROGRESS
    )
    existing.step_details, existing.usage = details, step_usage
    existing.status = RunStep.Status.IN_PROGRESS
    return existing


def publish_step_delta(
    run: Run, step: RunStep, calls: list[tuple[int, dict[str, Any]]]
) -> None:
    """One ``thread.run.step.delta`` with ``calls`` as (index in the step,
    the call's new or changed fields)."""
    events.publish(
        run.id,
        "thread.run.step.delta",
        {
            "id": step.id,
            "object": "thread.run.step.delta",
            "delta": {
                "step_details": {
                    "type": "tool_calls",
                    "tool_calls": [{"index": i, **call} for i, call in calls],
                }
            },
        },
    )


def execute_server_calls(
    run: Run,
    step: RunStep,
    *,
    calls: list[dict[str, str]],
    engine: EngineTools,
    results: ToolResults,
    should_stop: Callable[[], bool],
) -> None:
    """Run each server call of ``step`` that has no stored result yet.

    Each result is saved (details on the wire, private state in
    ``tool_state``) before the next call starts. Stops early, leaving the
    rest undone, when ``should_stop`` turns true.
    """
    resources: dict[str, Any] | None = None
    for index, (call, wire) in enumerate(
        zip(calls, step.step_details["tool_calls"], strict=True)
    ):
        entry = engine.server.get(call["name"])
        if entry is None or wire["id"] in (step.tool_state or {}):
            continue
        if should_stop():
            return
        plugin, tool = entry
        if resources is None:
            resources = tool_resources_of(run)
        arguments = json.loads(call["arguments"] or "{}")

        def emit(
            partial: dict[str, Any],
            _i: int = index,
            _id: str = wire["id"],
            _type: str = plugin.type,
        ) -> None:
            publish_step_delta(
                run, step, [(_i, {"id": _id, "type": _type, _type: partial})]
            )

        ctx = ToolCallContext(
            run_id=run.id,
            thread_id=run.thread_id,
            project_id=run.project_id,
            assistant_id=run.assistant_id,
            call_id=wire["id"],
            tool=tool,
            resources=resources,
            attachment_file_ids=attachment_file_ids(run, plugin.type),
            arguments=arguments,
            emit_delta=emit,
            should_stop=should_stop,
        )
        state: dict[str, Any] = {
            "name": call["name"],
            "arguments": call["arguments"] or "{}",
        }
        try:
            outcome = plugin.invoke(ctx, results.next_marker)
        except ToolError as exc:
            logger.info("run %s: %s call failed: %s", run.id, plugin.type, exc.message)
            details = dict(wire[plugin.type])
            state["model_output"] = f"Error: {exc.message}"
            state["error"] = {"message": exc.message, "permanent": exc.permanent}
        else:
            details = {**wire[plugin.type], **outcome.details}
            state["model_output"] = outcome.model_output
            state["sources"] = [
                {"marker": s.marker, "file_id": s.file_id, "quote": s.quote}
                for s in outcome.sources
            ]
            state["files"] = [
                {"file_id": f.file_id, "path": f.path, "is_image": f.is_image}
                for f in outcome.files
            ]
        results.add(state)
        wire_call = {"id": wire["id"], "type": plugin.type, plugin.type: details}
        step.step_details["tool_calls"][index] = wire_call
        step.tool_state = {**(step.tool_state or {}), wire["id"]: state}
        RunStep.objects.filter(pk=step.pk).update(
            step_details=step.step_details, tool_state=step.tool_state
        )
        publish_step_delta(run, step, [(index, wire_call)])


def publish_step_opened(run: Run, step: RunStep) -> None:
    events.publish_many(
        run.id,
        [
            ("thread.run.step.created", run_step_to_wire(step)),
            ("thread.run.step.in_progress", run_step_to_wire(step)),
        ],
    )


class InputStream:
    """Streams a server call's ``input`` (the code of code_interpreter) into
    the turn's step while the model is still writing it.

    Opens the step at the first streamed call with every call known so far
    (in index order, so ids match positions), adds calls that appear later,
    and ``write_tool_step`` fills it in with the finished calls (same ids,
    same key).
    """

    def __init__(self, run: Run, turn: int, engine: EngineTools) -> None:
        self.run = run
        self.turn = turn
        self.engine = engine
        self.step: RunStep | None = None
        self.ids: dict[int, str] = {}
        self.sent: dict[int, int] = {}

    def update(self, index: int, calls: dict[int, dict[str, str]]) -> None:
        """``calls``: the turn's calls so far by index; ``index`` changed."""
        call = calls[index]
        entry = self.engine.server.get(call["name"])
        if entry is None or not entry[0].streamed_argument:
            return
        plugin = entry[0]
        value = partial_json_string(call["arguments"], entry[0].streamed_argument or "")
        if value is None:
            return
        if index not in self.ids:
            self._write(calls)
        assert self.step is not None
        already = self.sent.get(index, 0)
        if len(value) > already:
            self.sent[index] = len(value)
            publish_step_delta(
                self.run,
                self.step,
                [
                    (
                        index,
                        {
                            "id": self.ids[index],
                            "type": plugin.type,
                            plugin.type: {"input": value[already:]},
                        },
                    )
                ],
            )

    def _write(self, calls: dict[int, dict[str, str]]) -> None:
        opening = self.step is None
        order = sorted(calls)
        step = write_tool_step(
            self.run,
            turn=self.turn,
            calls=[{"name": calls[i]["name"], "arguments": ""} for i in order],
            engine=self.engine,
            step_usage={},
            step=self.step,
        )
        wire = step.step_details["tool_calls"]
        self.ids = {i: wire[position]["id"] for position, i in enumerate(order)}
        self.step = step
        if opening:
            publish_step_opened(self.run, step)
        else:
            # Calls the step did not have yet, as the SDK's handler expects.
            publish_step_delta(
                self.run,
                step,
                [(i, wire[position]) for position, i in enumerate(order)],
            )


def partial_json_string(arguments: str, key: str) -> str | None:
    """The decoded prefix of the string value of ``key`` in a JSON object
    that is still being written, or None when the value has not started.

    Stops before an escape sequence that is not complete yet, so that what
    it returns only ever grows.
    """
    if not key:
        return None
    marker = json.dumps(key)
    at = arguments.find(marker)
    if at < 0:
        return None
    i = at + len(marker)
    n = len(arguments)
    while i < n and arguments[i] in " \t\r\n":
        i += 1
    if i >= n or arguments[i] != ":":
        return None
    i += 1
    while i < n and arguments[i] in " \t\r\n":
        i += 1
    if i >= n or arguments[i] != '"':
        return None
    i += 1
    out: list[str] = []
    escapes = {
        '"': '"',
        "\\": "\\",
        "/": "/",
        "b": "\b",
        "f": "\f",
        "n": "\n",
        "r": "\r",
        "t": "\t",
    }
    while i < n:
        ch = arguments[i]
        if ch == '"':
            break
        if ch != "\\":
            out.append(ch)
            i += 1
            continue
        if i + 1 >= n:
            break
        nxt = arguments[i + 1]
        if nxt == "u":
            code = _hex4(arguments, i + 2)
            if code is None:
                break
            if 0xD800 <= code < 0xDC00:
                # A high surrogate counts only with its low half (a lone
                # one cannot be encoded in an event).
                low = (
                    _hex4(arguments, i + 8)
                    if arguments[i + 6 : i + 8] == "\\u"
                    else None
                )
                if low is None or not 0xDC00 <= low < 0xE000:
                    break
                out.append(chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)))
                i += 12
                continue
            if 0xDC00 <= code < 0xE000:
                break
            out.append(chr(code))
            i += 6
            continue
        out.append(escapes.get(nxt, nxt))
        i += 2
    return "".join(out)


def _hex4(text: str, at: int) -> int | None:
    digits = text[at : at + 4]
    if len(digits) < 4:
        return None
    try:
        return int(digits, 16)
    except ValueError:
        return None
