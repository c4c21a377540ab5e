"""The engine layer: chat completions from OpenAI-compatible model servers."""

from __future__ import annotations

from assistants.engine.client import (
    ChatChunk,
    ChatRequest,
    EngineError,
    ToolCallDelta,
    Usage,
    ask,
    chat_stream,
)

__all__ = [
    "ChatChunk",
    "ChatRequest",
    "EngineError",
    "ToolCallDelta",
    "Usage",
    "ask",
    "chat_stream",
]
