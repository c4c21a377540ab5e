from __future__ import annotations

from django.urls import path

from assistants.api.v1.assistants import AssistantDetailApi, AssistantListCreateApi

urlpatterns = [
    path("assistants", AssistantListCreateApi.as_view()),
    path("assistants/<str:assistant_id>", AssistantDetailApi.as_view()),
]
