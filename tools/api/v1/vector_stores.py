"""``/v1/vector_stores``: stores, their files, file batches and search.
Thin views that validate and delegate."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from pydantic import Field
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import project_of
from core.errors import InvalidRequestError
from core.pagination import PageParams, page_params, paginate
from core.schemas import ERRORS, PAGE_PARAMS
from core.validation import Input, parse
from tools.api.v1.vector_store_serializers import (
    file_batch_to_wire,
    search_result_to_wire,
    vector_store_file_to_wire,
    vector_store_to_wire,
)
from tools.file_search.rewrite import rewrite_queries
from tools.file_search.search import Filter, FilterError, chunks_search, filter_sql
from tools.models import Chunk, VectorStore, VectorStoreFile, VectorStoreFileBatch
from tools.selectors import (
    file_batch_get,
    vector_store_file_get,
    vector_store_files_of,
    vector_store_get,
    vector_store_is_expired,
    vector_stores_with_counts,
)
from tools.services.vector_store import (
    FileBatchCreateInput,
    VectorStoreCreateInput,
    VectorStoreFileCreateInput,
    VectorStoreFileUpdateInput,
    VectorStoreUpdateInput,
    file_batch_cancel,
    file_batch_create,
    vector_store_create,
    vector_store_delete,
    vector_store_file_add,
    vector_store_file_delete,
    vector_store_file_update,
    vector_store_touch,
    vector_store_update,
)

TAGS = ["vector_stores"]
OBJECT = {200: OpenApiTypes.OBJECT, **ERRORS}
LIST_PARAMS = [
    *PAGE_PARAMS,
]
FILE_LIST_PARAMS = [
    *LIST_PARAMS,
    OpenApiParameter(
        "filter", str, enum=["in_progress", "completed", "failed", "cancelled"]
    ),
]
# SDK polling helpers (upload_and_poll, create_and_poll) wait this long
# between two reads of an object still in progress.
POLL_AFTER_MS = "500"


def _polled(body: dict[str, Any]) -> Response:
    response = Response(body)
    if body.get("status") == "in_progress":
        response["openai-poll-after-ms"] = POLL_AFTER_MS
    return response


def _store(request: Request, vector_store_id: str) -> VectorStore:
    return vector_store_get(
        project=project_of(request), vector_store_id=vector_store_id
    )


def _store_refreshed(store: VectorStore) -> VectorStore:
    return vector_store_get(project=store.project, vector_store_id=store.id)


class VectorStoreListCreateApi(APIView):
    @extend_schema(
        operation_id="listVectorStores",
        parameters=LIST_PARAMS,
        responses=OBJECT,
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        params = page_params(request.query_params)
        stores = vector_stores_with_counts(project=project_of(request))
        return Response(paginate(stores, params, vector_store_to_wire))

    @extend_schema(
        operation_id="createVectorStore",
        request=VectorStoreCreateInput,
        responses=OBJECT,
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        data = parse(VectorStoreCreateInput, request.data)
        store = vector_store_create(project=project_of(request), data=data)
        return _polled(vector_store_to_wire(_store_refreshed(store)))


class VectorStoreDetailApi(APIView):
    @extend_schema(operation_id="getVectorStore", responses=OBJECT, tags=TAGS)
    def get(self, request: Request, vector_store_id: str) -> Response:
        return _polled(vector_store_to_wire(_store(request, vector_store_id)))

    @extend_schema(
        operation_id="modifyVectorStore",
        request=VectorStoreUpdateInput,
        responses=OBJECT,
        tags=TAGS,
    )
    def post(self, request: Request, vector_store_id: str) -> Response:
        store = _store(request, vector_store_id)
        data = parse(VectorStoreUpdateInput, request.data)
        vector_store_update(vector_store=store, data=data)
        return Response(vector_store_to_wire(_store_refreshed(store)))

    @extend_schema(operation_id="deleteVectorStore", responses=OBJECT, tags=TAGS)
    def delete(self, request: Request, vector_store_id: str) -> Response:
        store = _store(request, vector_store_id)
        return Response(vector_store_delete(vector_store=store))


class RankingOptionsInput(Input):
    # "vector" and "keyword" are this server's extensions: one ranker alone
    # (the benchmark compares them with the hybrid default).
    ranker: (
        Literal["auto", "default-2024-11-15", "default_2024_08_21", "none", "hybrid"]
        | Literal["vector", "keyword"]
        | None
    ) = None
    score_threshold: Annotated[float, Field(ge=0, le=1)] | None = None


class SearchInput(Input):
    query: (
        Annotated[str, Field(min_length=1, max_length=4096)]
        | Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=10)]
    )
    filters: Filter | None = None
    max_num_results: Annotated[int, Field(ge=1, le=50)] | None = None
    ranking_options: RankingOptionsInput | None = None
    rewrite_query: bool | None = None


def search_mode(ranker: str | None) -> Literal["hybrid", "vector", "keyword"]:
    if ranker == "vector":
        return "vector"
    if ranker == "keyword":
        return "keyword"
    return "hybrid"


class VectorStoreSearchApi(APIView):
    @extend_schema(
        operation_id="searchVectorStore",
        request=SearchInput,
        responses=OBJECT,
        tags=TAGS,
    )
    def post(self, request: Request, vector_store_id: str) -> Response:
        store = _store(request, vector_store_id)
        data = parse(SearchInput, request.data)
        if vector_store_is_expired(store):
            raise InvalidRequestError(
                f"Vector store '{store.id}' has expired.", param="vector_store_id"
            )
        queries = [data.query] if isinstance(data.query, str) else list(data.query)
        ranking = data.ranking_options
        try:
            if data.rewrite_query:
                filter_sql(data.filters, [])  # a bad filter fails before the model
                queries = rewrite_queries(queries)
            hits = chunks_search(
                vector_store_ids=[store.id],
                queries=queries,
                filters=data.filters,
                max_num_results=data.max_num_results or 10,
                score_threshold=(ranking.score_threshold or 0.0) if ranking else 0.0,
                mode=search_mode(ranking.ranker if ranking else None),
            )
        except FilterError as exc:
            raise InvalidRequestError(
                f"Invalid 'filters': {exc}.", param="filters"
            ) from None
        vector_store_touch(vector_store=store)
        return Response(
            {
                "object": "vector_store.search_results.page",
                "search_query": queries,
                "data": [search_result_to_wire(h) for h in hits],
                "has_more": False,
                "next_page": None,
            }
        )


def _file_page_params(request: Request, files: Any, params: PageParams) -> PageParams:
    """The wire cursors are file ids; the list keys on the row's own id."""

    def translate(file_id: str | None, param: str) -> str | None:
        if not file_id:
            return None
        pk = files.filter(file_id=file_id).values_list("pk", flat=True).first()
        if pk is None:
            raise InvalidRequestError(
                f"Invalid '{param}': no object with id '{file_id}' in this list.",
                param=param,
            )
        return str(pk)

    return dataclasses.replace(
        params,
        after=translate(params.after, "after"),
        before=translate(params.before, "before"),
    )


def _files_page(
    request: Request, store: VectorStore, batch: VectorStoreFileBatch | None
) -> dict[str, Any]:
    files = vector_store_files_of(vector_store=store, batch=batch)
    status = request.query_params.get("filter")
    if status:
        if status not in VectorStoreFile.Status.values:
            raise InvalidRequestError(
                f"Invalid 'filter': '{status}'. Expected one of "
                "'in_progress', 'completed', 'failed', 'cancelled'.",
                param="filter",
            )
        files = files.filter(status=status)
    params = _file_page_params(request, files, page_params(request.query_params))
    return paginate(files, params, vector_store_file_to_wire)


class VectorStoreFileListCreateApi(APIView):
    @extend_schema(
        operation_id="listVectorStoreFiles",
        parameters=FILE_LIST_PARAMS,
        responses=OBJECT,
        tags=TAGS,
    )
    def get(self, request: Request, vector_store_id: str) -> Response:
        store = _store(request, vector_store_id)
        return Response(_files_page(request, store, None))

    @extend_schema(
        operation_id="createVectorStoreFile",
        request=VectorStoreFileCreateInput,
        responses=OBJECT,
        tags=TAGS,
    )
    def post(self, request: Request, vector_store_id: str) -> Response:
        store = _store(request, vector_store_id)
        data = parse(VectorStoreFileCreateInput, request.data)
        row = vector_store_file_add(vector_store=store, data=data)
        return _polled(vector_store_file_to_wire(row))


class VectorStoreFileDetailApi(APIView):
    @extend_schema(operation_id="getVectorStoreFile", responses=OBJECT, tags=TAGS)
    def get(self, request: Request, vector_store_id: str, file_id: str) -> Response:
        store = _store(request, vector_store_id)
        row = vector_store_file_get(vector_store=store, file_id=file_id)
        return _polled(vector_store_file_to_wire(row))

    @extend_schema(
        operation_id="updateVectorStoreFileAttributes",
        request=VectorStoreFileUpdateInput,
        responses=OBJECT,
        tags=TAGS,
    )
    def post(self, request: Request, vector_store_id: str, file_id: str) -> Response:
        store = _store(request, vector_store_id)
        row = vector_store_file_get(vector_store=store, file_id=file_id)
        data = parse(VectorStoreFileUpdateInput, request.data)
        row = vector_store_file_update(vector_store_file=row, data=data)
        return Response(vector_store_file_to_wire(row))

    @extend_schema(operation_id="deleteVectorStoreFile", responses=OBJECT, tags=TAGS)
    def delete(self, request: Request, vector_store_id: str, file_id: str) -> Response:
        store = _store(request, vector_store_id)
        row = vector_store_file_get(vector_store=store, file_id=file_id)
        return Response(vector_store_file_delete(vector_store_file=row))


class VectorStoreFileContentApi(APIView):
    @extend_schema(
        operation_id="retrieveVectorStoreFileContent", responses=OBJECT, tags=TAGS
    )
    def get(self, request: Request, vector_store_id: str, file_id: str) -> Response:
        store = _store(request, vector_store_id)
        row = vector_store_file_get(vector_store=store, file_id=file_id)
        texts = (
            Chunk.objects.filter(vector_store_file=row)
            .order_by("position")
            .values_list("text", flat=True)
        )
        return Response(
            {
                "object": "vector_store.file_content.page",
                "data": [{"type": "text", "text": t} for t in texts],
                "has_more": False,
                "next_page": None,
            }
        )


class FileBatchCreateApi(APIView):
    @extend_schema(
        operation_id="createVectorStoreFileBatch",
        request=FileBatchCreateInput,
        responses=OBJECT,
        tags=TAGS,
    )
    def post(self, request: Request, vector_store_id: str) -> Response:
        store = _store(request, vector_store_id)
        data = parse(FileBatchCreateInput, request.data)
        batch = file_batch_create(vector_store=store, data=data)
        return _polled(file_batch_to_wire(batch))


class FileBatchDetailApi(APIView):
    @extend_schema(operation_id="getVectorStoreFileBatch", responses=OBJECT, tags=TAGS)
    def get(self, request: Request, vector_store_id: str, batch_id: str) -> Response:
        store = _store(request, vector_store_id)
        batch = file_batch_get(vector_store=store, batch_id=batch_id)
        return _polled(file_batch_to_wire(batch))


class FileBatchCancelApi(APIView):
    @extend_schema(
        operation_id="cancelVectorStoreFileBatch",
        request=None,
        responses=OBJECT,
        tags=TAGS,
    )
    def post(self, request: Request, vector_store_id: str, batch_id: str) -> Response:
        store = _store(request, vector_store_id)
        batch = file_batch_get(vector_store=store, batch_id=batch_id)
        return Response(file_batch_to_wire(file_batch_cancel(batch=batch)))


class FileBatchFilesApi(APIView):
    @extend_schema(
        operation_id="listFilesInVectorStoreBatch",
        parameters=FILE_LIST_PARAMS,
        responses=OBJECT,
        tags=TAGS,
    )
    def get(self, request: Request, vector_store_id: str, batch_id: str) -> Response:
        store = _store(request, vector_store_id)
        batch = file_batch_get(vector_store=store, batch_id=batch_id)
        return Response(_files_page(request, store, batch))
