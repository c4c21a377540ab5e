"""``/v1/assistants``: thin views that validate and delegate."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assistants.api.v1.schemas import AssistantList, AssistantObject
from assistants.api.v1.serializers import assistant_to_wire
from assistants.selectors import assistant_get, assistants_of
from assistants.services.assistant import (
    AssistantCreateInput,
    AssistantUpdateInput,
    assistant_create,
    assistant_delete,
    assistant_update,
)
from core.auth import project_of
from core.pagination import page_params, paginate
from core.schemas import ERRORS, PAGE_PARAMS, DeletedObject
from core.validation import parse

LIST_PARAMS = [
    *PAGE_PARAMS,
]


class AssistantListCreateApi(APIView):
    @extend_schema(
        operation_id="listAssistants",
        parameters=LIST_PARAMS,
        responses={200: AssistantList, **ERRORS},
        tags=["assistants"],
    )
    def get(self, request: Request) -> Response:
        params = page_params(request.query_params)
        return Response(
            paginate(
                assistants_of(project=project_of(request)), params, assistant_to_wire
            )
        )

    @extend_schema(
        operation_id="createAssistant",
        request=AssistantCreateInput,
        responses={200: AssistantObject, **ERRORS},
        tags=["assistants"],
    )
    def post(self, request: Request) -> Response:
        data = parse(AssistantCreateInput, request.data)
        assistant = assistant_create(project=project_of(request), data=data)
        return Response(assistant_to_wire(assistant))


class AssistantDetailApi(APIView):
    @extend_schema(
        operation_id="getAssistant",
        responses={200: AssistantObject, **ERRORS},
        tags=["assistants"],
    )
    def get(self, request: Request, assistant_id: str) -> Response:
        assistant = assistant_get(
            project=project_of(request), assistant_id=assistant_id
        )
        return Response(assistant_to_wire(assistant))

    @extend_schema(
        operation_id="modifyAssistant",
        request=AssistantUpdateInput,
        responses={200: AssistantObject, **ERRORS},
        tags=["assistants"],
    )
    def post(self, request: Request, assistant_id: str) -> Response:
        assistant = assistant_get(
            project=project_of(request), assistant_id=assistant_id
        )
        data = parse(AssistantUpdateInput, request.data)
        return Response(
            assistant_to_wire(assistant_update(assistant=assistant, data=data))
        )

    @extend_schema(
        operation_id="deleteAssistant",
        responses={200: DeletedObject, **ERRORS},
        tags=["assistants"],
    )
    def delete(self, request: Request, assistant_id: str) -> Response:
        assistant = assistant_get(
            project=project_of(request), assistant_id=assistant_id
        )
        return Response(assistant_delete(assistant=assistant))
