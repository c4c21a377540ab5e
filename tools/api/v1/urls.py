from __future__ import annotations

from django.urls import path

from tools.api.v1.files import FileContentApi, FileDetailApi, FileListCreateApi
from tools.api.v1.uploads import (
    UploadCancelApi,
    UploadCompleteApi,
    UploadCreateApi,
    UploadPartCreateApi,
)
from tools.api.v1.vector_stores import (
    FileBatchCancelApi,
    FileBatchCreateApi,
    FileBatchDetailApi,
    FileBatchFilesApi,
    VectorStoreDetailApi,
    VectorStoreFileContentApi,
    VectorStoreFileDetailApi,
    VectorStoreFileListCreateApi,
    VectorStoreListCreateApi,
    VectorStoreSearchApi,
)

urlpatterns = [
    path("files", FileListCreateApi.as_view()),
    path("files/<str:file_id>", FileDetailApi.as_view()),
    path("files/<str:file_id>/content", FileContentApi.as_view()),
    path("uploads", UploadCreateApi.as_view()),
    path("uploads/<str:upload_id>/parts", UploadPartCreateApi.as_view()),
    path("uploads/<str:upload_id>/complete", UploadCompleteApi.as_view()),
    path("uploads/<str:upload_id>/cancel", UploadCancelApi.as_view()),
    path("vector_stores", VectorStoreListCreateApi.as_view()),
    path("vector_stores/<str:vector_store_id>", VectorStoreDetailApi.as_view()),
    path("vector_stores/<str:vector_store_id>/search", VectorStoreSearchApi.as_view()),
    path(
        "vector_stores/<str:vector_store_id>/files",
        VectorStoreFileListCreateApi.as_view(),
    ),
    path(
        "vector_stores/<str:vector_store_id>/files/<str:file_id>",
        VectorStoreFileDetailApi.as_view(),
    ),
    path(
        "vector_stores/<str:vector_store_id>/files/<str:file_id>/content",
        VectorStoreFileContentApi.as_view(),
    ),
    path(
        "vector_stores/<str:vector_store_id>/file_batches",
        FileBatchCreateApi.as_view(),
    ),
    path(
        "vector_stores/<str:vector_store_id>/file_batches/<str:batch_id>",
        FileBatchDetailApi.as_view(),
    ),
    path(
        "vector_stores/<str:vector_store_id>/file_batches/<str:batch_id>/cancel",
        FileBatchCancelApi.as_view(),
    ),
    path(
        "vector_stores/<str:vector_store_id>/file_batches/<str:batch_id>/files",
        FileBatchFilesApi.as_view(),
    ),
]
