"""``/v1/threads``: thin views that validate and delegate. There is no thread
list in the contract: a client keeps the ids of its threads."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assistants.api.v1.schemas import ThreadObject
from assistants.api.v1.serializers import thread_to_wire
from assistants.selectors import thread_get
from assistants.services.thread import (
    ThreadCreateInput,
    ThreadUpdateInput,
    thread_create,
    thread_delete,
    thread_update,
)
from core.auth import project_of
from core.schemas import ERRORS, DeletedObject
from core.validation import parse


class ThreadCreateApi(APIView):
    @extend_schema(
        operation_id="createThread",
        request=ThreadCreateInput,
        responses={200: ThreadObject, **ERRORS},
        tags=["threads"],
    )
    def post(self, request: Request) -> Response:
        data = parse(ThreadCreateInput, request.data)
        thread = thread_create(project=project_of(request), data=data)
        return Response(thread_to_wire(thread))


class ThreadDetailApi(APIView):
    @extend_schema(
        operation_id="getThread",
        responses={200: ThreadObject, **ERRORS},
        tags=["threads"],
    )
    def get(self, request: Request, thread_id: str) -> Response:
        thread = thread_get(project=project_of(request), thread_id=thread_id)
        return Response(thread_to_wire(thread))

    @extend_schema(
        operation_id="modifyThread",
        request=ThreadUpdateInput,
        responses={200: ThreadObject, **ERRORS},
        tags=["threads"],
    )
    def post(self, request: Request, thread_id: str) -> Response:
        data = parse(ThreadUpdateInput, request.data)
        thread = thread_update(
            project=project_of(request), thread_id=thread_id, data=data
        )
        return Response(thread_to_wire(thread))

    @extend_schema(
        operation_id="deleteThread",
        responses={200: DeletedObject, **ERRORS},
        tags=["threads"],
    )
    def delete(self, request: Request, thread_id: str) -> Response:
        thread = thread_get(project=project_of(request), thread_id=thread_id)
        return Response(thread_delete(thread=thread))
