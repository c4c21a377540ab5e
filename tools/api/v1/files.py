"""``/v1/files``: thin views that validate and delegate."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import MultiPartParser
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import project_of
from core.pagination import page_params, paginate
from core.schemas import ERRORS, PAGE_PARAMS
from core.validation import parse
from tools.api.v1.multipart import file_required, multipart_split
from tools.api.v1.schemas import FileCreateForm, FileDeleted, FileList, FileObject
from tools.api.v1.serializers import file_to_wire
from tools.models import FILE_PURPOSES
from tools.selectors import file_content_open, file_get, files_of
from tools.services.file import (
    CHUNK_SIZE,
    FileCreateInput,
    file_create,
    file_delete,
    purpose_require,
)

LIST_PARAMS = [
    *PAGE_PARAMS,
    OpenApiParameter(
        "purpose",
        str,
        enum=list(FILE_PURPOSES),
        description="Only files with this purpose",
    ),
]


class FileListCreateApi(APIView):
    # JSON is not a way to send a file: anything but multipart is a 415.
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="listFiles",
        parameters=LIST_PARAMS,
        responses={200: FileList, **ERRORS},
        tags=["files"],
    )
    def get(self, request: Request) -> Response:
        params = page_params(request.query_params)
        files = files_of(project=project_of(request))
        purpose = request.query_params.get("purpose")
        if purpose:
            files = files.filter(purpose=purpose_require(purpose))
        return Response(paginate(files, params, file_to_wire))

    @extend_schema(
        operation_id="createFile",
        request={"multipart/form-data": FileCreateForm},
        responses={200: FileObject, **ERRORS},
        tags=["files"],
    )
    def post(self, request: Request) -> Response:
        form, upload = multipart_split(
            request,
            file_field="file",
            integer_fields=frozenset({"expires_after.seconds"}),
        )
        data = parse(FileCreateInput, form)
        content = file_required(upload, param="file")
        file = file_create(
            project=project_of(request),
            data=data,
            content=content,
            filename=content.name or "",
            mime_type=content.content_type,
        )
        return Response(file_to_wire(file))


class FileDetailApi(APIView):
    @extend_schema(
        operation_id="retrieveFile",
        responses={200: FileObject, **ERRORS},
        tags=["files"],
    )
    def get(self, request: Request, file_id: str) -> Response:
        return Response(
            file_to_wire(file_get(project=project_of(request), file_id=file_id))
        )

    @extend_schema(
        operation_id="deleteFile",
        responses={200: FileDeleted, **ERRORS},
        tags=["files"],
    )
    def delete(self, request: Request, file_id: str) -> Response:
        file = file_get(project=project_of(request), file_id=file_id)
        return Response(file_delete(file=file))


async def _read_async(filelike: Any) -> AsyncIterator[bytes]:
    """The file's chunks; closes it at the end or when the client goes away
    (the ASGI handler closes the generator)."""
    # Off the thread-sensitive executor that runs every sync view: a slow
    # download must not queue the API's other requests behind it.
    read = sync_to_async(filelike.read, thread_sensitive=False)
    try:
        while chunk := await read(CHUNK_SIZE):
            yield chunk
    finally:
        filelike.close()


def blob_response(filelike: Any, *, filename: str, asynchronous: bool) -> FileResponse:
    """The file as an attachment, streamed in chunks, never read whole.

    Django's ASGI handler drains a *synchronous* streaming iterator into a
    list before sending anything (the whole file in memory); under WSGI an
    asynchronous one gets the same treatment. So the iterator must match the
    handler serving the request, which ``asynchronous`` names.

    Always ``application/octet-stream``: echoing a client-chosen type such as
    text/html from the API's origin would let an uploaded file run script.
    """
    response = FileResponse(
        filelike,
        as_attachment=True,
        filename=filename,
        content_type="application/octet-stream",
    )
    if asynchronous:
        # FileResponse has set Content-Length and Content-Disposition; only
        # the iterator changes.
        response.streaming_content = _read_async(filelike)
    response["X-Content-Type-Options"] = "nosniff"
    return response


class AnyAccept(DefaultContentNegotiation):
    """The content endpoint answers raw bytes whatever ``Accept`` says (the SDK
    sends ``application/binary``, which DRF would refuse with a 406); errors
    still render as JSON."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, str(renderer.media_type)


class FileContentApi(APIView):
    content_negotiation_class = AnyAccept

    @extend_schema(
        operation_id="downloadFile",
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The file's bytes"
            ),
            **ERRORS,
        },
        tags=["files"],
    )
    def get(self, request: Request, file_id: str) -> FileResponse:
        file = file_get(project=project_of(request), file_id=file_id)
        return blob_response(
            file_content_open(file=file),
            filename=file.filename,
            asynchronous=isinstance(request._request, ASGIRequest),
        )
