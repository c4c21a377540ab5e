"""Build the chat messages an engine sees for one step of a run.

Bounded: reads at most HISTORY_LIMIT of the thread's newest messages through
the (thread, seq) index, never the whole thread. The infinite-threads issue
replaces this window with token budgets, summaries and recall.
"""

from __future__ import annotations

from typing import Any

from assistants.models import Message, Run, RunStep

HISTORY_LIMIT = 200


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
            parts.append(
                {"type": "image_url", "image_url": {"url": part["image_url"]["url"]}}
            )
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


def build_messages(
    run: Run, *, vision: bool = False, tool_steps: bool = True
) -> list[dict[str, Any]]:
    """System instructions, the thread's recent history and this run's tool
    exchanges, merged in creation order (messages and steps share one
    sequence, so ``seq`` orders them exactly)."""
    strategy = run.truncation_strategy or {}
    limit = HISTORY_LIMIT
    if strategy.get("type") == "last_messages" and strategy.get("last_messages"):
        limit = min(limit, int(strategy["last_messages"]))
    history = list(
        Message.objects.filter(thread_id=run.thread_id)
        .exclude(status=Message.Status.IN_PROGRESS)
        .order_by("-seq")
        .only("seq", "role", "content")[:limit]
    )
    history.reverse()
    # ``tool_steps=False`` when the caller knows there are none (a run's
    # first turn): one query fewer on every plain answer.
    steps = (
        list(
            RunStep.objects.filter(
                run=run, type=RunStep.Type.TOOL_CALLS, status=RunStep.Status.COMPLETED
            ).order_by("seq")
        )
        if tool_steps
        else []
    )
    items: list[tuple[int, dict[str, Any] | list[dict[str, Any]]]] = []
    for m in history:
        items.append(
            (m.seq, {"role": m.role, "content": _text_of(m.content, vision=vision)})
        )
    for step in steps:
        exchange = tool_exchange(step)
        if exchange:
            items.append((step.seq, exchange))
    items.sort(key=lambda item: item[0])
    messages: list[dict[str, Any]] = []
    if run.instructions:
        messages.append({"role": "system", "content": run.instructions})
    for _seq, item in items:
        if isinstance(item, list):
            messages.extend(item)
        else:
            messages.append(item)
    return messages
