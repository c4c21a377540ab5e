from __future__ import annotations

from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import (
    SpectacularJSONAPIView,
    SpectacularRedocView,
    SpectacularSwaggerView,
)

from core.api.v1.models import ModelDetailApi, ModelListApi
from core.observability import views as observability

v1: list[URLPattern | URLResolver] = [
    path("models", ModelListApi.as_view()),
    path("models/<path:model_id>", ModelDetailApi.as_view()),
    path("", include("assistants.api.v1.urls")),
    path("", include("tools.api.v1.urls")),
]

urlpatterns = [
    path("v1/", include(v1)),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="openapi"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="openapi"), name="redoc"),
    path("admin/", admin.site.urls),
    path("store/", include("store.urls")),
    # Probes and the Prometheus scrape: no API key (core/observability/).
    path("healthz", observability.healthz, name="healthz"),
    path("readyz", observability.readyz, name="readyz"),
    path("metrics", observability.metrics, name="metrics"),
]

handler400 = "core.views.bad_request"
# HTML for the store's pages, the API's JSON error body everywhere else.
handler404 = "store.views.page_not_found"
handler500 = "core.views.server_error"
