"""Files, multi-part uploads and vector stores: the data tools work on."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

from core import ids
from core.models import Project, PublicObject

FILE_PURPOSES = (
    "assistants",
    "assistants_output",
    "vision",
    "user_data",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "evals",
)
# What clients may upload; *_output / *-results are written by the platform.
UPLOADABLE_PURPOSES = (
    "assistants",
    "vision",
    "user_data",
    "batch",
    "fine-tune",
    "evals",
)


def file_storage_path(instance: File, filename: str) -> str:
    # Stored under the object id, never under the client's filename: no path
    # tricks, no collisions, and the original name stays in `filename`.
    return f"files/{instance.project_id}/{instance.id}"


def part_storage_path(instance: UploadPart, filename: str) -> str:
    return f"uploads/{instance.upload_id}/{instance.id}"


class File(PublicObject):
    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_file_id, editable=False
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="files")
    filename = models.CharField(max_length=512)
    purpose = models.CharField(max_length=32, choices=[(p, p) for p in FILE_PURPOSES])
    bytes = models.BigIntegerField(default=0)
    mime_type = models.CharField(max_length=255, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    content = models.FileField(upload_to=file_storage_path, max_length=512)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "seq"], name="file_project_seq"),
            models.Index(
                fields=["project", "purpose", "seq"], name="file_project_purpose_seq"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"


def upload_expiry() -> object:
    return timezone.now() + timedelta(hours=1)


class Upload(PublicObject):
    """A large file assembled from parts (the Uploads API)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        EXPIRED = "expired"

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_upload_id, editable=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="uploads"
    )
    filename = models.CharField(max_length=512)
    purpose = models.CharField(max_length=32)
    bytes = models.BigIntegerField()
    mime_type = models.CharField(max_length=255)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING
    )
    expires_at = models.DateTimeField(default=upload_expiry)
    # The client's expires_after for the File that completion creates; the
    # upload row is the only place it can wait until that file exists.
    file_expires_after = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds after its creation that the completed file expires.",
    )
    file = models.OneToOneField(
        File, null=True, blank=True, on_delete=models.SET_NULL, related_name="upload"
    )

    def __str__(self) -> str:
        return f"{self.id} ({self.filename})"


class UploadPart(PublicObject):
    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_part_id, editable=False
    )
    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="parts")
    data = models.FileField(upload_to=part_storage_path, max_length=512)
    bytes = models.BigIntegerField()

    def __str__(self) -> str:
        return self.id


class VectorStore(PublicObject):
    """A searchable collection of files. The retrieval issue fills it with
    chunks and embeddings; the foundation needs it to validate
    ``tool_resources.file_search.vector_store_ids``."""

    class Status(models.TextChoices):
        EXPIRED = "expired"
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_vector_store_id, editable=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="vector_stores"
    )
    name = models.CharField(max_length=256, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.COMPLETED
    )
    usage_bytes = models.BigIntegerField(default=0)
    expires_after = models.JSONField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_active_at = models.DateTimeField(default=timezone.now)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["project", "seq"], name="vs_project_seq")]

    def __str__(self) -> str:
        return f"{self.id} ({self.name})"
