"""Tools that run on our side (file_search, code_interpreter): the contract
between the run executor and a tool's plugin folder.

The model sees each server tool as one function named after the tool's type
(``file_search``, ``code_interpreter``) with the parameters the plugin
declares. When the model calls it, the executor (assistants/runs/executor.py),
outside any transaction:

1. writes the turn's ``tool_calls`` run step (keyed ``<turn>:tools``) with the
   call in its wire shape and publishes ``thread.run.step.created``;
2. calls ``plugin.invoke(ctx)``; the plugin may publish partial results with
   ``ctx.emit_delta`` (sent as ``thread.run.step.delta`` for this call);
3. stores the returned ``ToolOutcome``: ``details`` become the call's wire
   body (``step_details.tool_calls[i][<type>]``), ``model_output`` is what the
   model reads back as the tool's result on the next engine call, ``sources``
   and ``files`` are kept with the step (never on the wire) so that the final
   answer gets its annotations;
4. asks the engine again (the next turn), until the model answers in text or
   calls a client function (then the run goes to ``requires_action``).

A plugin's ``invoke`` must be safe to call twice for one call id (a worker
killed mid-call re-runs the turn) and must not hold a database transaction
across slow work. A ``ToolError`` is not a run failure: its message goes back
to the model as the tool's output (so it can fix its query or code) and, when
``permanent`` is false, the step says so. Anything else raised fails the run.

Citations: a plugin that returns ``sources`` tells the model to cite them with
their marker (``[1]``, ``[2]`` …, see ``Source.marker``). The executor removes
the markers from the answer (also while streaming) and turns each into a
``file_citation`` annotation over the cited span (the text between the
previous sentence boundary and the marker) whose quote is the source's text.
Output files: each ``OutputFile`` that is an image becomes an ``image_file``
content part of the answer; a file the answer mentions as
``sandbox:/mnt/data/<name>`` gets a ``file_path`` annotation over that text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol


class ToolError(Exception):
    """The tool could not do what the model asked; told to the model."""

    def __init__(self, message: str, *, permanent: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


@dataclass(frozen=True)
class ToolCallContext:
    run_id: str
    thread_id: str
    project_id: str
    assistant_id: str
    call_id: str
    # The run's tool entry as stored, e.g. {"type": "file_search",
    # "file_search": {"max_num_results": 20, "ranking_options": {...}}}.
    tool: dict[str, Any]
    # The run's resolved tool_resources merged from assistant and thread:
    # {"file_search": {"vector_store_ids": [...]},
    #  "code_interpreter": {"file_ids": [...]}} (keys present when set).
    resources: dict[str, Any]
    # File ids attached to the thread's messages for this tool type
    # (message ``attachments`` naming it), newest last.
    attachment_file_ids: list[str]
    # The model's arguments, parsed and checked against ``parameters``.
    arguments: dict[str, Any]
    # Publish a partial wire body for this call, e.g. {"outputs": [...]}.
    emit_delta: Callable[[dict[str, Any]], None]
    # True once the run is being cancelled: stop early, raise nothing.
    should_stop: Callable[[], bool]


@dataclass(frozen=True)
class Source:
    """One citable result. ``marker`` is the number the model cites as
    ``[marker]``; numbers are unique within a run (see ``first_marker``)."""

    marker: int
    file_id: str
    quote: str


@dataclass(frozen=True)
class OutputFile:
    """A File (purpose ``assistants_output``) the tool produced."""

    file_id: str
    path: str  # as the code saw it, e.g. /mnt/data/chart.png
    is_image: bool


@dataclass
class ToolOutcome:
    details: dict[str, Any]
    model_output: str
    sources: list[Source] = field(default_factory=list)
    files: list[OutputFile] = field(default_factory=list)


class ServerTool(Protocol):
    type: ClassVar[str]
    # The model's argument whose string value streams into the call's
    # ``input`` as the model writes it (code_interpreter's code), or None.
    # The executor also sets ``input`` to its final value before invoke().
    streamed_argument: ClassVar[str | None]

    def engine_function(self, tool: dict[str, Any]) -> dict[str, Any]:
        """The function definition the model sees: ``{"name": <type>,
        "description": ..., "parameters": <JSON schema>}``."""
        ...

    def initial_details(self, tool: dict[str, Any]) -> dict[str, Any]:
        """The call's wire body before it ran (e.g. ``{"input": "",
        "outputs": []}``), shown in ``thread.run.step.created``."""
        ...

    def invoke(self, ctx: ToolCallContext, first_marker: int) -> ToolOutcome:
        """Do the call. ``first_marker`` is the first free citation number."""
        ...


_registry: dict[str, ServerTool] = {}


def register(tool: ServerTool) -> None:
    _registry[tool.type] = tool


def server_tool(type_: str) -> ServerTool | None:
    """The plugin for ``type_``; plugins register when their folder's
    ``runtime`` module is imported (``tools.apps.ToolsConfig.ready``)."""
    return _registry.get(type_)


def server_tools() -> dict[str, ServerTool]:
    return dict(_registry)
