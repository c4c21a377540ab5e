"""file_search as a server tool (the contract is tools/runtime.py): the
model's queries go to the run's vector stores (assistant's and thread's,
merged by the executor into ``ctx.resources``) and come back as numbered
sources the model cites as ``[n]``."""

from __future__ import annotations

from typing import Any, ClassVar

from django.utils import timezone

from tools.file_search.search import Hit, chunks_search
from tools.models import VectorStore
from tools.runtime import Source, ToolCallContext, ToolError, ToolOutcome, register
from tools.services.vector_store import vector_store_touch

DEFAULT_MAX_RESULTS = 20
DEFAULT_RANKING = {"ranker": "default_2024_08_21", "score_threshold": 0.0}

DESCRIPTION = (
    "Search the files the user has provided (documents, notes, code) for "
    "passages relevant to the question. Call it before answering anything "
    "those files may cover. Write short, specific search queries; several "
    "queries may be given at once."
)


def _options(tool: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    opts = tool.get("file_search") or {}
    ranking = {**DEFAULT_RANKING, **(opts.get("ranking_options") or {})}
    return int(opts.get("max_num_results") or DEFAULT_MAX_RESULTS), ranking


def _queries(arguments: dict[str, Any]) -> list[str]:
    raw = arguments.get("queries")
    if raw is None:
        raw = arguments.get("query")
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        return []
    return [q.strip() for q in raw if isinstance(q, str) and q.strip()][:5]


def _usable_stores(ids: list[str], project_id: str) -> list[VectorStore]:
    """The run's stores that still exist, belong to the project and have not
    expired (an expired store is not searched)."""
    now = timezone.now()
    return list(
        VectorStore.objects.filter(id__in=ids, project_id=project_id)
        .exclude(status=VectorStore.Status.EXPIRED)
        .exclude(expires_at__lte=now)
    )


def model_output(hits: list[Hit], first_marker: int) -> str:
    """The results as the model reads them: numbered, each with its file."""
    if not hits:
        return "No results found in the files."
    parts = [
        "Results from the user's files. Answer from them, and cite each source "
        "you use with its number in square brackets right after the sentence "
        "that uses it, for example [1]."
    ]
    for i, hit in enumerate(hits):
        parts.append(f"[{first_marker + i}] (file: {hit.filename})\n{hit.text}")
    return "\n\n".join(parts)


class FileSearchTool:
    type: ClassVar[str] = "file_search"
    streamed_argument: ClassVar[str | None] = None

    def engine_function(self, tool: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": "file_search",
            "description": DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": {
                    "queries": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "One to five search queries.",
                    }
                },
                "required": ["queries"],
                "additionalProperties": False,
            },
        }

    def initial_details(self, tool: dict[str, Any]) -> dict[str, Any]:
        _, ranking = _options(tool)
        return {"ranking_options": ranking, "results": []}

    def invoke(self, ctx: ToolCallContext, first_marker: int) -> ToolOutcome:
        """Search; a read only, so calling it twice is harmless. Raises
        ToolError (told to the model) when it sent no query."""
        queries = _queries(ctx.arguments)
        if not queries:
            raise ToolError("Give at least one non-empty search query in 'queries'.")
        max_results, ranking = _options(ctx.tool)
        store_ids = list(
            (ctx.resources.get("file_search") or {}).get("vector_store_ids") or []
        )
        stores = _usable_stores(store_ids, ctx.project_id)
        hits = chunks_search(
            vector_store_ids=[s.id for s in stores],
            queries=queries,
            max_num_results=max_results,
            score_threshold=float(ranking.get("score_threshold") or 0.0),
        )
        for store in stores:
            # Searching keeps a store alive (its expiry anchors on last use).
            vector_store_touch(vector_store=store)
        results = [
            {
                "file_id": h.file_id,
                "file_name": h.filename,
                "score": h.score,
                "content": [{"type": "text", "text": h.text}],
            }
            for h in hits
        ]
        return ToolOutcome(
            details={"ranking_options": ranking, "results": results},
            model_output=model_output(hits, first_marker),
            sources=[
                Source(marker=first_marker + i, file_id=h.file_id, quote=h.text)
                for i, h in enumerate(hits)
            ],
        )


register(FileSearchTool())
