"""Assistants, threads and messages. Runs and run steps join them in the
runs issue."""

from __future__ import annotations

from django.db import models

from core import ids
from core.models import Project, PublicObject


def default_response_format() -> str:
    return "auto"


class Assistant(PublicObject):
    id = models.CharField(primary_key=True, max_length=64,
                          default=ids.new_assistant_id, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE,
                                related_name="assistants")
    name = models.CharField(max_length=256, null=True, blank=True)
    description = models.CharField(max_length=512, null=True, blank=True)
    # The registry entry's id, not a foreign key: an assistant outlives a
    # model being retired, and says which one it was made for.
    model = models.CharField(max_length=256)
    instructions = models.TextField(null=True, blank=True)
    tools = models.JSONField(default=list, blank=True)
    tool_resources = models.JSONField(default=dict, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    response_format = models.JSONField(default=default_response_format, blank=True)

    class Meta:
        indexes = [models.Index(fields=["project", "seq"], name="asst_project_seq")]

    def __str__(self) -> str:
        return f"{self.name or 'Untitled'} ({self.id})"


class Thread(PublicObject):
    id = models.CharField(primary_key=True, max_length=64, default=ids.new_thread_id,
                          editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE,
                                related_name="threads")
    metadata = models.JSONField(default=dict, blank=True)
    tool_resources = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["project", "seq"], name="thread_project_seq")]

    def __str__(self) -> str:
        return self.id


class Message(PublicObject):
    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        INCOMPLETE = "incomplete"
        COMPLETED = "completed"

    id = models.CharField(primary_key=True, max_length=64,
                          default=ids.new_message_id, editable=False)
    thread = models.ForeignKey(Thread, on_delete=models.CASCADE,
                               related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    # Content parts exactly as they go on the wire (text, image_file,
    # image_url, refusal), annotations included.
    content = models.JSONField(default=list)
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices,
                              default=Status.COMPLETED)
    incomplete_details = models.JSONField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    incomplete_at = models.DateTimeField(null=True, blank=True)
    assistant_id = models.CharField(max_length=64, null=True, blank=True)
    run_id = models.CharField(max_length=64, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [
            # Every read of a thread is a keyset walk over this index: the
            # cost of a page never depends on the thread's length.
            models.Index(fields=["thread", "seq"], name="msg_thread_seq"),
            models.Index(fields=["thread", "run_id", "seq"], name="msg_thread_run_seq"),
        ]

    def __str__(self) -> str:
        return self.id
