"""The tools the platform knows, by ``type``. One folder per tool."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from tools.code_interpreter.schema import CodeInterpreterTool
from tools.file_search.schema import FileSearchTool
from tools.function.schema import FunctionTool

ToolInput = Annotated[
    FunctionTool | FileSearchTool | CodeInterpreterTool, Field(discriminator="type")
]
ToolsInput = Annotated[list[ToolInput], Field(max_length=128)]


def tools_to_wire(tools: list[ToolInput]) -> list[dict[str, Any]]:
    """Normalised tool definitions as stored and returned (defaults filled the
    way OpenAI returns them)."""
    out: list[dict[str, Any]] = []
    for tool in tools:
        if isinstance(tool, FunctionTool):
            fn = tool.function
            out.append(
                {
                    "type": "function",
                    "function": {
                        "name": fn.name,
                        "description": fn.description,
                        "parameters": fn.parameters
                        if fn.parameters is not None
                        else {},
                        "strict": bool(fn.strict),
                    },
                }
            )
        elif isinstance(tool, FileSearchTool):
            opts = tool.file_search
            ranking = opts.ranking_options if opts else None
            out.append(
                {
                    "type": "file_search",
                    "file_search": {
                        "max_num_results": (opts.max_num_results if opts else None)
                        or 20,
                        "ranking_options": {
                            "ranker": (ranking.ranker if ranking else None)
                            or "default_2024_08_21",
                            "score_threshold": ranking.score_threshold
                            if ranking
                            else 0.0,
                        },
                    },
                }
            )
        else:
            out.append({"type": "code_interpreter"})
    names = [t["function"]["name"] for t in out if t["type"] == "function"]
    if len(names) != len(set(names)):
        from core.errors import InvalidRequestError

        raise InvalidRequestError("Function names must be unique.", param="tools")
    return out
