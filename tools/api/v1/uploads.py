"""``/v1/uploads``: thin views that validate and delegate."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.auth import project_of
from core.schemas import ERRORS
from core.validation import parse
from tools.api.v1.multipart import file_required, multipart_split
from tools.api.v1.schemas import UploadObject, UploadPartForm, UploadPartObject
from tools.api.v1.serializers import upload_part_to_wire, upload_to_wire
from tools.selectors import upload_get
from tools.services.upload import (
    UploadCompleteInput,
    UploadCreateInput,
    UploadPartCreateInput,
    upload_cancel,
    upload_complete,
    upload_create,
    upload_part_create,
)


class UploadCreateApi(APIView):
    @extend_schema(
        operation_id="createUpload",
        request=UploadCreateInput,
        responses={200: UploadObject, **ERRORS},
        tags=["uploads"],
    )
    def post(self, request: Request) -> Response:
        data = parse(UploadCreateInput, request.data)
        return Response(
            upload_to_wire(upload_create(project=project_of(request), data=data))
        )


class UploadPartCreateApi(APIView):
    parser_classes = [MultiPartParser]

    @extend_schema(
        operation_id="addUploadPart",
        request={"multipart/form-data": UploadPartForm},
        responses={200: UploadPartObject, **ERRORS},
        tags=["uploads"],
    )
    def post(self, request: Request, upload_id: str) -> Response:
        upload = upload_get(project=project_of(request), upload_id=upload_id)
        form, data = multipart_split(request, file_field="data")
        parse(UploadPartCreateInput, form)
        part = upload_part_create(
            upload=upload, content=file_required(data, param="data")
        )
        return Response(upload_part_to_wire(part))


class UploadCompleteApi(APIView):
    @extend_schema(
        operation_id="completeUpload",
        request=UploadCompleteInput,
        responses={200: UploadObject, **ERRORS},
        tags=["uploads"],
    )
    def post(self, request: Request, upload_id: str) -> Response:
        upload = upload_get(project=project_of(request), upload_id=upload_id)
        data = parse(UploadCompleteInput, request.data)
        return Response(upload_to_wire(upload_complete(upload=upload, data=data)))


class UploadCancelApi(APIView):
    @extend_schema(
        operation_id="cancelUpload",
        request=None,
        responses={200: UploadObject, **ERRORS},
        tags=["uploads"],
    )
    def post(self, request: Request, upload_id: str) -> Response:
        upload = upload_get(project=project_of(request), upload_id=upload_id)
        return Response(upload_to_wire(upload_cancel(upload=upload)))
