"""Token counts for prompt budgets: the model's own tokenizer when its engine
offers one, else a calibrated estimate; each message counted once.

The engine's tokenizer is asked over HTTP (the model's ``tokenize``
capability): vLLM's ``POST /tokenize`` or llama-cpp-python's
``POST /extras/tokenize``, both at the server's root (``base_url`` without
``/v1``). A message's count is stored on the message with the model it was
counted for, so a thread's history is tokenized once, not on every run.

The estimate (characters per token) starts at a conservative 3.5 and is
calibrated per model from the prompt sizes the engine reports after each
call (``calibrate``), so that an engine without a tokenize endpoint still
gets budgets within a few percent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections import OrderedDict
from typing import Any

import httpx

from assistants.models import Message
from core.db import Statement, write_together
from core.models import LanguageModel

logger = logging.getLogger(__name__)

# A chat template wraps each message in a few tokens of its own
# (<|im_start|>role\n ... <|im_end|>\n is 5 for ChatML).
MESSAGE_OVERHEAD = 5
DEFAULT_CHARS_PER_TOKEN = 3.5
TOKENIZE_TIMEOUT = httpx.Timeout(5.0)

_lock = threading.Lock()
_chars_per_token: dict[str, float] = {}
_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    if _client is None:
        _client = httpx.Client(timeout=TOKENIZE_TIMEOUT)
    return _client


def chars_per_token(model_id: str) -> float:
    return _chars_per_token.get(model_id, DEFAULT_CHARS_PER_TOKEN)


def estimate_chars(chars: int, model_id: str) -> int:
    """Tokens in ``chars`` characters, by the model's calibrated ratio."""
    if chars <= 0:
        return 0
    return math.ceil(chars / chars_per_token(model_id))


def estimate(text: str, model_id: str) -> int:
    return estimate_chars(len(text), model_id)


def prompt_chars(messages: list[dict[str, Any]]) -> int:
    """The characters of a chat prompt's contents, as the estimate and its
    calibration count them."""
    return sum(len(json.dumps(m.get("content") or "")) for m in messages)


def calibrate(model_id: str, *, estimated_chars: int, reported_tokens: int) -> None:
    """Fold one engine-reported prompt size into the model's estimate (an
    exponential average, bounded to sane ratios)."""
    if estimated_chars <= 0 or reported_tokens <= 0:
        return
    observed = min(8.0, max(1.5, estimated_chars / reported_tokens))
    with _lock:
        current = _chars_per_token.get(model_id, observed)
        _chars_per_token[model_id] = 0.8 * current + 0.2 * observed


def _root(base_url: str) -> str:
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def tokenize(model: LanguageModel, text: str) -> list[int] | None:
    """The engine's token ids for ``text``, or None when it cannot say."""
    kind = model.capability("tokenize", None)
    urls = [u for u in (model.base_urls or []) if u]
    if not kind or not urls:
        return None
    root = _root(str(urls[0]))
    headers = {"Authorization": f"Bearer {model.api_key}"} if model.api_key else {}
    try:
        if kind == "vllm":
            response = _http().post(
                f"{root}/tokenize",
                json={
                    "model": model.served_name or model.id,
                    "prompt": text,
                    "add_special_tokens": False,
                },
                headers=headers,
            )
        elif kind == "llamacpp":
            response = _http().post(
                f"{root}/extras/tokenize",
                json={"input": text},
                headers=headers,
            )
        else:
            return None
        response.raise_for_status()
        tokens = response.json().get("tokens")
    except (httpx.HTTPError, ValueError) as exc:
        logger.info("tokenize on %s failed (%s); estimating", model.id, exc)
        return None
    return [int(t) for t in tokens] if isinstance(tokens, list) else None


# Counts of texts seen again and again (instructions, tool definitions),
# per model: a run's prompt then costs no tokenizer round trip for them.
_COUNT_CACHE_SIZE = 4096
_counts: OrderedDict[tuple[str, str], int] = OrderedDict()


def count(model: LanguageModel, text: str) -> int:
    if not text:
        return 0
    key = (model.id, hashlib.blake2b(text.encode(), digest_size=16).hexdigest())
    with _lock:
        cached = _counts.get(key)
        if cached is not None:
            _counts.move_to_end(key)
            return cached
    tokens = tokenize(model, text)
    if tokens is None:
        return estimate(text, model.id)  # not cached: calibration moves it
    with _lock:
        _counts[key] = len(tokens)
        if len(_counts) > _COUNT_CACHE_SIZE:
            _counts.popitem(last=False)
    return len(tokens)


def message_text(content: list[dict[str, Any]]) -> str:
    """What of a message's content the prompt carries as text."""
    out: list[str] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            out.append(part["text"]["value"])
        elif kind in ("image_url", "image_file"):
            out.append("[image]")
    return "\n".join(out)


def ensure_counted(
    model: LanguageModel,
    messages: list[Message],
    *,
    defer: list[Statement] | None = None,
) -> None:
    """Fill ``token_count`` for messages counted for another model or not
    at all, and store the new counts (one UPDATE for all of them), or, with
    ``defer``, add that UPDATE to it for the caller's next write to carry:
    the counts are a cache, and a run writes its step soon after counting
    its prompt, so they need no round trip of their own."""
    counted: list[Message] = []
    for message in messages:
        if message.token_count is not None and message.token_model == model.id:
            continue
        message.token_count = count(model, message_text(message.content)) + (
            MESSAGE_OVERHEAD
        )
        message.token_model = model.id
        counted.append(message)
    if not counted:
        return
    rows = ", ".join(["(%s, %s)"] * len(counted))
    params: list[Any] = [model.id]
    for message in counted:
        params += [message.pk, message.token_count]
    update: Statement = (
        f'UPDATE "{Message._meta.db_table}" AS m '
        "SET token_count = v.token_count::integer, token_model = %s "
        f"FROM (VALUES {rows}) AS v(id, token_count) WHERE m.id = v.id",
        params,
    )
    if defer is not None:
        defer.append(update)
        return
    # A cache: not durable (core.db), recounted if a crash loses it.
    write_together([], update, durable=False)


def size(message: Message, model: LanguageModel) -> int:
    """A message's prompt size; the estimate where it was never counted."""
    if message.token_count is not None:
        return message.token_count
    return estimate(message_text(message.content), model.id) + MESSAGE_OVERHEAD
