"""``tool_resources``: which files and vector stores a tool may use."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from core.errors import InvalidRequestError
from core.models import Project
from core.validation import Id, Input, Metadata
from tools.selectors import files_require, vector_stores_require
from tools.services.vector_store import (
    ChunkingInput,
    VectorStoreCreateInput,
    vector_store_create,
)


class CodeInterpreterResources(Input):
    file_ids: Annotated[list[Id], Field(max_length=20)] | None = None


class VectorStoreSpec(Input):
    file_ids: Annotated[list[Id], Field(max_length=500)] | None = None
    chunking_strategy: ChunkingInput | None = None
    metadata: Metadata | None = None


class FileSearchResources(Input):
    vector_store_ids: Annotated[list[Id], Field(max_length=1)] | None = None
    vector_stores: Annotated[list[VectorStoreSpec], Field(max_length=1)] | None = None


class ToolResourcesInput(Input):
    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResources | None = None


def tool_resources_resolve(
    *,
    project: Project,
    resources: ToolResourcesInput | None,
    param: str = "tool_resources",
) -> dict[str, Any]:
    """Check ownership of every referenced object and return the stored shape.

    Raises InvalidRequestError (400, naming the field) for an id that is not
    the project's. Inline ``vector_stores`` (create only) are created here,
    with their files queued for ingestion when the caller's transaction
    commits; call this inside the transaction that saves the owner so that
    a failed create leaves no store behind.
    """
    if resources is None:
        return {}
    out: dict[str, Any] = {}
    if resources.code_interpreter is not None:
        file_ids = list(resources.code_interpreter.file_ids or [])
        files_require(
            project=project,
            file_ids=file_ids,
            param=f"{param}.code_interpreter.file_ids",
        )
        out["code_interpreter"] = {"file_ids": file_ids}
    if resources.file_search is not None:
        fs = resources.file_search
        vs_ids = list(fs.vector_store_ids or [])
        if fs.vector_stores:
            if vs_ids:
                raise InvalidRequestError(
                    "Provide either 'vector_store_ids' or 'vector_stores', not both.",
                    param=f"{param}.file_search",
                )
            spec = fs.vector_stores[0]
            store = vector_store_create(
                project=project,
                data=VectorStoreCreateInput(
                    file_ids=spec.file_ids,
                    chunking_strategy=spec.chunking_strategy,
                    metadata=spec.metadata,
                ),
                param=f"{param}.file_search.vector_stores[0].file_ids",
            )
            vs_ids = [store.id]
        vector_stores_require(
            project=project,
            vector_store_ids=vs_ids,
            param=f"{param}.file_search.vector_store_ids",
        )
        out["file_search"] = {"vector_store_ids": vs_ids}
    return out
