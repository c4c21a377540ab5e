from __future__ import annotations

from django.urls import path

from tools.api.v1.files import FileContentApi, FileDetailApi, FileListCreateApi
from tools.api.v1.uploads import (
    UploadCancelApi,
    UploadCompleteApi,
    UploadCreateApi,
    UploadPartCreateApi,
)

urlpatterns = [
    path("files", FileListCreateApi.as_view()),
    path("files/<str:file_id>", FileDetailApi.as_view()),
    path("files/<str:file_id>/content", FileContentApi.as_view()),
    path("uploads", UploadCreateApi.as_view()),
    path("uploads/<str:upload_id>/parts", UploadPartCreateApi.as_view()),
    path("uploads/<str:upload_id>/complete", UploadCompleteApi.as_view()),
    path("uploads/<str:upload_id>/cancel", UploadCancelApi.as_view()),
]
