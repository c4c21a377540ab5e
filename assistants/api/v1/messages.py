"""``/v1/threads/{thread_id}/messages``: thin views that validate and
delegate."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assistants.api.v1.assistants import LIST_PARAMS
from assistants.api.v1.schemas import MessageList, MessageObject
from assistants.api.v1.serializers import message_to_wire
from assistants.selectors import message_get, messages_of_thread_id, thread_get
from assistants.services.message import (
    MessageCreateInput,
    MessageUpdateInput,
    message_create,
    message_delete,
    message_update,
)
from core.auth import project_of
from core.pagination import page_params, paginate
from core.schemas import ERRORS, DeletedObject
from core.validation import parse

MESSAGE_LIST_PARAMS = [
    *LIST_PARAMS,
    OpenApiParameter("run_id", str, description="Only messages this run wrote"),
]


class MessageListCreateApi(APIView):
    @extend_schema(
        operation_id="listMessages",
        parameters=MESSAGE_LIST_PARAMS,
        responses={200: MessageList, **ERRORS},
        tags=["messages"],
    )
    def get(self, request: Request, thread_id: str) -> Response:
        project = project_of(request)
        params = page_params(request.query_params)
        if params.after or params.before:
            # A cursor into a stranger's thread is a 404, not a bad cursor.
            thread_get(project=project, thread_id=thread_id)
        run_id = request.query_params.get("run_id") or None
        messages = messages_of_thread_id(
            project=project, thread_id=thread_id, run_id=run_id
        )
        page = paginate(messages, params, message_to_wire)
        if not page["data"]:
            thread_get(project=project, thread_id=thread_id)  # 404 if not ours
        return Response(page)

    @extend_schema(
        operation_id="createMessage",
        request=MessageCreateInput,
        responses={200: MessageObject, **ERRORS},
        tags=["messages"],
    )
    def post(self, request: Request, thread_id: str) -> Response:
        data = parse(MessageCreateInput, request.data)
        message = message_create(
            project=project_of(request), thread_id=thread_id, data=data
        )
        return Response(message_to_wire(message))


class MessageDetailApi(APIView):
    @extend_schema(
        operation_id="getMessage",
        responses={200: MessageObject, **ERRORS},
        tags=["messages"],
    )
    def get(self, request: Request, thread_id: str, message_id: str) -> Response:
        message = message_get(
            project=project_of(request), thread_id=thread_id, message_id=message_id
        )
        return Response(message_to_wire(message))

    @extend_schema(
        operation_id="modifyMessage",
        request=MessageUpdateInput,
        responses={200: MessageObject, **ERRORS},
        tags=["messages"],
    )
    def post(self, request: Request, thread_id: str, message_id: str) -> Response:
        message = message_get(
            project=project_of(request), thread_id=thread_id, message_id=message_id
        )
        data = parse(MessageUpdateInput, request.data)
        return Response(message_to_wire(message_update(message=message, data=data)))

    @extend_schema(
        operation_id="deleteMessage",
        responses={200: DeletedObject, **ERRORS},
        tags=["messages"],
    )
    def delete(self, request: Request, thread_id: str, message_id: str) -> Response:
        message = message_get(
            project=project_of(request), thread_id=thread_id, message_id=message_id
        )
        return Response(message_delete(message=message))
