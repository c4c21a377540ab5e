from __future__ import annotations

from django.urls import path

from assistants.api.v1.assistants import AssistantDetailApi, AssistantListCreateApi
from assistants.api.v1.messages import MessageDetailApi, MessageListCreateApi
from assistants.api.v1.threads import ThreadCreateApi, ThreadDetailApi

urlpatterns = [
    path("assistants", AssistantListCreateApi.as_view()),
    path("assistants/<str:assistant_id>", AssistantDetailApi.as_view()),
    # `POST threads/runs` (create thread and run) must be routed above
    # `threads/<thread_id>`, or "runs" is taken for a thread id.
    path("threads", ThreadCreateApi.as_view()),
    path("threads/<str:thread_id>", ThreadDetailApi.as_view()),
    path("threads/<str:thread_id>/messages", MessageListCreateApi.as_view()),
    path("threads/<str:thread_id>/messages/<str:message_id>",
         MessageDetailApi.as_view()),
]
