"""How stored messages and tool exchanges look to an engine. What of the
thread goes into a prompt is context.py's choice."""

from __future__ import annotations

from typing import Any

from assistants.models import Message, RunStep
from core.net.images import image_part


def _text_of(content: list[dict[str, Any]], *, vision: bool) -> str | list[Any]:
    parts: list[dict[str, Any]] = []
    texts: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            value = part["text"]["value"]
            texts.append(value)
            parts.append({"type": "text", "text": value})
        elif kind == "image_url" and vision:
            # Fetched here through the SSRF-safe fetcher and inlined: the
            # engine must never fetch a user's URL itself (core.net.images).
            parts.append(image_part(part["image_url"]["url"]))
        elif kind in ("image_url", "image_file"):
            texts.append("[image]")
            parts.append({"type": "text", "text": "[image]"})
    if vision and any(p["type"] == "image_url" for p in parts):
        return parts
    return "\n".join(texts)


def call_as_made(call: dict[str, Any]) -> dict[str, Any]:
    """A stored function call as the model made it: without its output.

    The shape of both ``required_action`` and a chat ``tool_calls`` entry.
    """
    return {
        "id": call["id"],
        "type": "function",
        "function": {
            "name": call["function"]["name"],
            "arguments": call["function"]["arguments"],
        },
    }


def tool_exchange(step: RunStep) -> list[dict[str, Any]]:
    """A completed tool_calls step as the engine saw it: the assistant's
    calls, then one ``tool`` message per call with what came back.

    A server-side call (file_search, code_interpreter) is replayed as the
    function the model called, with the output it read (kept in
    ``tool_state``); a call with no stored result is left out.
    """
    state = step.tool_state or {}
    made: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for c in step.step_details.get("tool_calls", []):
        if c.get("type") == "function":
            made.append(call_as_made(c))
            output = c["function"].get("output") or ""
        elif c.get("id") in state:
            done = state[c["id"]]
            made.append(
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": done["name"], "arguments": done["arguments"]},
                }
            )
            output = done.get("model_output") or ""
        else:
            continue
        outputs.append({"role": "tool", "tool_call_id": c["id"], "content": output})
    if not made:
        return []
    return [{"role": "assistant", "content": None, "tool_calls": made}, *outputs]


def render_message(message: Message, *, vision: bool = False) -> dict[str, Any]:
    """A thread message as a chat message (deterministic: the same stored
    message always renders the same bytes)."""
    return {"role": message.role, "content": _text_of(message.content, vision=vision)}
