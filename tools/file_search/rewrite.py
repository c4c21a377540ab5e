"""Search query rewriting by the model (``rewrite_query`` on a vector store
search): a question as a user asks it ("where are they fixing the old
lighthouse?") becomes the terms a document would use ("lighthouse
restoration"), which the keyword ranker needs (every word of the question
counts there, the filler ones too) and which the vector ranker matches
against passages rather than against other questions.

The model is ``SEARCH_REWRITE_MODEL`` (a registry id), else
``DEFAULT_MODEL``. A rewrite is only a better query: when there is no such
model, the engine fails or takes longer than ``SEARCH_REWRITE_TIMEOUT``
seconds (all the queries of one search together), or it answers nothing
usable, the query is searched as it was given, and the response's
``search_query`` says which one was.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

from django.conf import settings

from assistants.engine import EngineError, ask
from core.selectors import language_model_cached

logger = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You rewrite questions into search queries for a document search engine. "
    "Answer with the query alone, on one line: the key terms and names of the "
    "question, no explanation, no quotes."
)
# A query is a handful of terms; an answer running past this is not one.
MAX_TOKENS = 48
MAX_CHARS = 256
# What small models put before the query despite being told not to.
_LABEL = re.compile(r"^(?:(?:search|rewritten|new)\s+)?query\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`“”‘’"


def clean(answer: str, question: str = "") -> str:
    """The query in a model's answer: its first non-empty line, without a
    "Query:" label, surrounding quotes or a list marker; "" when nothing is
    left, or the line is too long to be a query: over ``MAX_CHARS``, or
    more words than ``question`` (key terms are fewer than the question's
    words; a model that answers the question instead of rewriting it, as
    small ones do, writes more)."""
    for line in answer.splitlines():
        line = line.strip().lstrip("-*•").strip()
        if line:
            break
    else:
        return ""
    line = _LABEL.sub("", line).strip().strip(_QUOTES).strip()
    words = line.split()
    if len(line) > MAX_CHARS or (question and len(words) > len(question.split())):
        return ""
    return " ".join(words)


def rewrite_queries(queries: Sequence[str]) -> list[str]:
    """Each query rewritten by the model, or as given where it cannot be."""
    name = str(getattr(settings, "SEARCH_REWRITE_MODEL", "") or "") or str(
        settings.DEFAULT_MODEL or ""
    )
    model = language_model_cached(name) if name else None
    if model is None:
        logger.warning("rewrite_query: no model (SEARCH_REWRITE_MODEL, DEFAULT_MODEL)")
        return list(queries)
    deadline = time.monotonic() + float(
        getattr(settings, "SEARCH_REWRITE_TIMEOUT", 10.0)
    )
    out: list[str] = []
    for query in queries:
        answer = ""
        if query.strip() and time.monotonic() < deadline:
            try:
                answer = ask(
                    model, INSTRUCTIONS, query, max_tokens=MAX_TOKENS, deadline=deadline
                )
            except EngineError as exc:
                logger.warning("rewrite_query: the model failed: %s", exc.message)
                # The others would fail the same way, each after its wait.
                deadline = 0.0
        out.append(clean(answer, query) or query)
    return out
