"""``/v1/threads/{thread_id}/runs``, ``/v1/threads/runs`` and run steps."""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from assistants.api.v1.assistants import LIST_PARAMS
from assistants.api.v1.schemas import RunList, RunObject, RunStepList, RunStepObject
from assistants.api.v1.serializers import run_step_to_wire, run_to_wire, thread_to_wire
from assistants.runs.streaming import run_events, sse_response
from assistants.selectors import (
    run_get,
    run_step_get,
    run_steps_of,
    runs_of,
    thread_get,
)
from assistants.services.run import (
    RunCreateInput,
    RunUpdateInput,
    ThreadAndRunInput,
    ToolOutputsInput,
    run_cancel,
    run_create,
    run_update,
    thread_and_run_create,
    tool_outputs_submit,
)
from core.auth import project_of
from core.errors import InvalidRequestError
from core.pagination import page_params, paginate
from core.schemas import ERRORS
from core.validation import parse

_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
STEP_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
INCLUDE = OpenApiParameter(
    "include[]",
    str,
    many=True,
    enum=[STEP_CONTENT],
    description="Extra fields to include in run steps.",
)
TAGS = ["runs"]


def _include_content(request: Request) -> bool:
    values = request.query_params.getlist("include[]") + request.query_params.getlist(
        "include"
    )
    for value in values:
        if value != STEP_CONTENT:
            raise InvalidRequestError(
                f"Invalid value for 'include': '{value}'.", param="include"
            )
    return bool(values)


def _request_id(request: Request) -> str:
    return str(request.META.get("REQUEST_ID", ""))


class ThreadRunListCreateApi(APIView):
    @extend_schema(
        operation_id="listRuns",
        parameters=LIST_PARAMS,
        responses={200: RunList, **ERRORS},
        tags=TAGS,
    )
    def get(self, request: Request, thread_id: str) -> Response:
        thread = thread_get(project=project_of(request), thread_id=thread_id)
        return Response(
            paginate(
                runs_of(thread=thread), page_params(request.query_params), run_to_wire
            )
        )

    @extend_schema(
        operation_id="createRun",
        request=RunCreateInput,
        parameters=[INCLUDE],
        responses={200: RunObject, **ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request, thread_id: str) -> HttpResponseBase:
        _include_content(request)
        data = parse(RunCreateInput, request.data)
        run = run_create(
            project=project_of(request),
            thread_id=thread_id,
            data=data,
            request_id=_request_id(request),
        )
        if data.stream:
            return sse_response(run_events(run.id))
        return Response(run_to_wire(run))


class ThreadAndRunApi(APIView):
    @extend_schema(
        operation_id="createThreadAndRun",
        request=ThreadAndRunInput,
        responses={200: RunObject, **ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request) -> HttpResponseBase:
        data = parse(ThreadAndRunInput, request.data)
        run = thread_and_run_create(
            project=project_of(request), data=data, request_id=_request_id(request)
        )
        if data.stream:
            prelude: list[tuple[str, dict[str, Any]]] = [
                ("thread.created", thread_to_wire(run.thread))
            ]
            return sse_response(run_events(run.id, prelude=prelude))
        return Response(run_to_wire(run))


class RunDetailApi(APIView):
    @extend_schema(
        operation_id="getRun", responses={200: RunObject, **ERRORS}, tags=TAGS
    )
    def get(self, request: Request, thread_id: str, run_id: str) -> Response:
        run = run_get(project=project_of(request), thread_id=thread_id, run_id=run_id)
        return Response(run_to_wire(run))

    @extend_schema(
        operation_id="modifyRun",
        request=RunUpdateInput,
        responses={200: RunObject, **ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request, thread_id: str, run_id: str) -> Response:
        run = run_get(project=project_of(request), thread_id=thread_id, run_id=run_id)
        data = parse(RunUpdateInput, request.data)
        return Response(run_to_wire(run_update(run=run, data=data)))


class RunCancelApi(APIView):
    @extend_schema(
        operation_id="cancelRun",
        request=None,
        responses={200: RunObject, **ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request, thread_id: str, run_id: str) -> Response:
        run = run_get(project=project_of(request), thread_id=thread_id, run_id=run_id)
        return Response(run_to_wire(run_cancel(run=run)))


class RunSubmitToolOutputsApi(APIView):
    @extend_schema(
        operation_id="submitToolOuputsToRun",
        request=ToolOutputsInput,
        responses={200: RunObject, **ERRORS},
        tags=TAGS,
    )
    def post(self, request: Request, thread_id: str, run_id: str) -> HttpResponseBase:
        run = run_get(project=project_of(request), thread_id=thread_id, run_id=run_id)
        data = parse(ToolOutputsInput, request.data)
        submitted = tool_outputs_submit(run=run, data=data)
        if data.stream:
            return sse_response(run_events(run.id, after=submitted.stream_after))
        return Response(run_to_wire(submitted.run))


class RunEventsApi(APIView):
    """An extension: (re)attach to a run's event stream.

    OpenAI's API has no way back into a stream once a connection drops; here
    a client sends the last ``id:`` it saw as ``Last-Event-ID`` (or
    ``?after=``) and receives every later event, or the whole stream from the
    start without one. Any web process can serve it.
    """

    @extend_schema(
        operation_id="streamRunEvents",
        parameters=[OpenApiParameter("after", str)],
        responses={(200, "text/event-stream"): str, **ERRORS},
        tags=TAGS,
    )
    def get(self, request: Request, thread_id: str, run_id: str) -> HttpResponseBase:
        run = run_get(project=project_of(request), thread_id=thread_id, run_id=run_id)
        after = (
            request.META.get("HTTP_LAST_EVENT_ID")
            or request.query_params.get("after")
            or "0-0"
        )
        if not _STREAM_ID.match(after):
            raise InvalidRequestError(f"Invalid event id '{after}'.", param="after")
        return sse_response(run_events(run.id, after=after))


class RunStepListApi(APIView):
    @extend_schema(
        operation_id="listRunSteps",
        parameters=[*LIST_PARAMS, INCLUDE],
        responses={200: RunStepList, **ERRORS},
        tags=TAGS,
    )
    def get(self, request: Request, thread_id: str, run_id: str) -> Response:
        run = run_get(project=project_of(request), thread_id=thread_id, run_id=run_id)
        include = _include_content(request)
        return Response(
            paginate(
                run_steps_of(run=run),
                page_params(request.query_params),
                lambda step: run_step_to_wire(step, include_content=include),
            )
        )


class RunStepDetailApi(APIView):
    @extend_schema(
        operation_id="getRunStep",
        parameters=[INCLUDE],
        responses={200: RunStepObject, **ERRORS},
        tags=TAGS,
    )
    def get(
        self, request: Request, thread_id: str, run_id: str, step_id: str
    ) -> Response:
        run = run_get(project=project_of(request), thread_id=thread_id, run_id=run_id)
        step = run_step_get(run=run, step_id=step_id)
        return Response(
            run_step_to_wire(step, include_content=_include_content(request))
        )
