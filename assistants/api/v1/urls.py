from __future__ import annotations

from django.urls import path

from assistants.api.v1.assistants import AssistantDetailApi, AssistantListCreateApi
from assistants.api.v1.messages import MessageDetailApi, MessageListCreateApi
from assistants.api.v1.runs import (
    RunCancelApi,
    RunDetailApi,
    RunEventsApi,
    RunStepDetailApi,
    RunStepListApi,
    RunSubmitToolOutputsApi,
    ThreadAndRunApi,
    ThreadRunListCreateApi,
)
from assistants.api.v1.threads import ThreadCreateApi, ThreadDetailApi

run = "threads/<str:thread_id>/runs/<str:run_id>"

urlpatterns = [
    path("assistants", AssistantListCreateApi.as_view()),
    path("assistants/<str:assistant_id>", AssistantDetailApi.as_view()),
    path("threads", ThreadCreateApi.as_view()),
    # Above `threads/<thread_id>`, or "runs" would be taken for a thread id.
    path("threads/runs", ThreadAndRunApi.as_view()),
    path("threads/<str:thread_id>", ThreadDetailApi.as_view()),
    path("threads/<str:thread_id>/messages", MessageListCreateApi.as_view()),
    path(
        "threads/<str:thread_id>/messages/<str:message_id>", MessageDetailApi.as_view()
    ),
    path("threads/<str:thread_id>/runs", ThreadRunListCreateApi.as_view()),
    path(run, RunDetailApi.as_view()),
    path(f"{run}/cancel", RunCancelApi.as_view()),
    path(f"{run}/submit_tool_outputs", RunSubmitToolOutputsApi.as_view()),
    path(f"{run}/events", RunEventsApi.as_view()),
    path(f"{run}/steps", RunStepListApi.as_view()),
    path(f"{run}/steps/<str:step_id>", RunStepDetailApi.as_view()),
]
