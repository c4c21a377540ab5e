"""Assistants, threads and messages. Runs and run steps join them in the
runs issue."""

from __future__ import annotations

from django.db import models
from pgvector.django import HnswIndex, VectorField

from core import ids
from core.models import Project, PublicObject
from tools.models import EMBEDDING_COLUMN_DIMENSIONS


def default_response_format() -> str:
    """``"auto"``: the default of both response_format and tool_choice."""
    return "auto"


class Assistant(PublicObject):
    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_assistant_id, editable=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="assistants"
    )
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
    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_thread_id, editable=False
    )
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="threads"
    )
    metadata = models.JSONField(default=dict, blank=True)
    tool_resources = models.JSONField(default=dict, blank=True)
    # Messages up to this seq reach the model only through the thread's
    # summaries (assistants/runs/context.py). It moves forward, a whole
    # summary block at a time, only when the recent messages no longer fit:
    # between moves every prompt extends the previous one byte for byte.
    context_boundary_seq = models.BigIntegerField(default=0)
    # The summaries (ids, in order) the prompt carries for that history,
    # chosen when the boundary last moved: a merged summary made since
    # replaces them only at the next move, so the prefix stays put.
    context_summary_ids = models.JSONField(default=list, blank=True)

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

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_message_id, editable=False
    )
    # No index of its own: msg_thread_seq (thread_id, seq) serves every
    # lookup by thread, and each index costs every insert and update.
    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    role = models.CharField(max_length=16, choices=Role.choices)
    # Content parts exactly as they go on the wire (text, image_file,
    # image_url, refusal), annotations included.
    content = models.JSONField(default=list)
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.COMPLETED
    )
    incomplete_details = models.JSONField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    incomplete_at = models.DateTimeField(null=True, blank=True)
    assistant_id = models.CharField(max_length=64, null=True, blank=True)
    run_id = models.CharField(max_length=64, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # The message's size in the prompt, counted once with the tokenizer of
    # ``token_model`` (content never changes after a message is complete).
    token_count = models.PositiveIntegerField(null=True, blank=True)
    token_model = models.CharField(max_length=256, blank=True, default="")

    class Meta:
        indexes = [
            # Every read of a thread is a keyset walk over this index: the
            # cost of a page never depends on the thread's length.
            models.Index(fields=["thread", "seq"], name="msg_thread_seq"),
            models.Index(fields=["thread", "run_id", "seq"], name="msg_thread_run_seq"),
        ]

    def __str__(self) -> str:
        return self.id


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"


ACTIVE_RUN_STATUSES = (
    RunStatus.QUEUED,
    RunStatus.IN_PROGRESS,
    RunStatus.REQUIRES_ACTION,
    RunStatus.CANCELLING,
)
TERMINAL_RUN_STATUSES = (
    RunStatus.CANCELLED,
    RunStatus.FAILED,
    RunStatus.COMPLETED,
    RunStatus.INCOMPLETE,
    RunStatus.EXPIRED,
)


class Run(PublicObject):
    """One execution of an assistant on a thread.

    Status changes go through ``assistants.runs.state`` only (compare-and-swap
    updates); nothing else writes ``status``.
    """

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_run_id, editable=False
    )
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    # No index of its own: run_thread_seq (thread_id, seq) serves lookups by
    # thread. A run's status changes are non-HOT updates (status is indexed),
    # so every index of this table is written three times per run.
    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    # A string, not a foreign key: the run keeps naming its assistant after
    # the assistant is deleted, as OpenAI's runs do.
    assistant_id = models.CharField(max_length=64)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED
    )
    model = models.CharField(max_length=256)
    instructions = models.TextField(blank=True, default="")
    tools = models.JSONField(default=list, blank=True)
    tool_resources = models.JSONField(default=dict, blank=True)
    tool_choice = models.JSONField(default=default_response_format)
    parallel_tool_calls = models.BooleanField(default=True)
    response_format = models.JSONField(default=default_response_format)
    truncation_strategy = models.JSONField(default=dict)
    max_prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    max_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    temperature = models.FloatField(null=True, blank=True)
    top_p = models.FloatField(null=True, blank=True)
    seed = models.BigIntegerField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    required_action = models.JSONField(null=True, blank=True)
    last_error = models.JSONField(null=True, blank=True)
    incomplete_details = models.JSONField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    incomplete_at = models.DateTimeField(null=True, blank=True)
    # Execution bookkeeping (never on the wire).
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=256, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        indexes = [
            models.Index(fields=["thread", "seq"], name="run_thread_seq"),
            # The reaper's scans: stale heartbeats, expired actions, lost queues.
            models.Index(
                fields=["status", "heartbeat_at"],
                name="run_active_heartbeat",
                condition=models.Q(status__in=ACTIVE_RUN_STATUSES),
            ),
        ]
        constraints = [
            # One active run per thread, enforced by the database: of 50
            # concurrent creates exactly one INSERT succeeds.
            models.UniqueConstraint(
                fields=["thread"],
                condition=models.Q(status__in=ACTIVE_RUN_STATUSES),
                name="one_active_run_per_thread",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


class RunStep(PublicObject):
    class Type(models.TextChoices):
        MESSAGE_CREATION = "message_creation"
        TOOL_CALLS = "tool_calls"

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        CANCELLED = "cancelled"
        FAILED = "failed"
        COMPLETED = "completed"
        EXPIRED = "expired"

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_step_id, editable=False
    )
    # No index of its own: step_run_seq (run_id, seq) and step_key_unique
    # (run_id, key) serve lookups by run.
    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="steps", db_index=False
    )
    thread_id = models.CharField(max_length=64)
    assistant_id = models.CharField(max_length=64)
    # Idempotency: a step is written once per (run, key); a task that runs
    # twice finds its step instead of adding another.
    key = models.CharField(max_length=64)
    type = models.CharField(max_length=32, choices=Type.choices)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.IN_PROGRESS
    )
    step_details = models.JSONField(default=dict)
    last_error = models.JSONField(null=True, blank=True)
    usage = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Server-side tool calls' private results, by call id: the model's
    # arguments, what the model read back, citable sources and output files
    # (tools/runtime.py). Never on the wire; the prompt and the answer's
    # annotations are built from it.
    tool_state = models.JSONField(default=dict, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["run", "seq"], name="step_run_seq")]
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="step_key_unique"),
        ]

    def __str__(self) -> str:
        return self.id


class ThreadSummary(models.Model):
    """A summary of the thread's messages with ``from_seq < seq <= until_seq``.

    Kept apart from the thread's messages (never listed by the API). Level-1
    blocks tile the thread's history from its start; a block's text never
    changes. When the blocks in the prompt grow too many, the oldest are
    merged into one of a higher ``level`` covering the same span; prompts
    switch to it when the thread's boundary next moves, and the blocks it
    covers are deleted once no prompt uses them.
    """

    thread = models.ForeignKey(
        Thread, on_delete=models.CASCADE, related_name="summaries"
    )
    from_seq = models.BigIntegerField()
    until_seq = models.BigIntegerField()
    level = models.PositiveSmallIntegerField(default=1)
    message_count = models.PositiveIntegerField()
    text = models.TextField()
    token_count = models.PositiveIntegerField()
    model = models.CharField(max_length=256)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "thread summaries"
        indexes = [
            models.Index(fields=["thread", "from_seq"], name="summary_thread_from")
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["thread", "from_seq", "level"], name="summary_block_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.thread_id} ({self.from_seq}, {self.until_seq}]"


class MessageEmbedding(models.Model):
    """A summarised message's embedding, for recall (context.py)."""

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    thread_id = models.CharField(max_length=64)
    seq = models.BigIntegerField()
    embedding = VectorField(dimensions=EMBEDDING_COLUMN_DIMENSIONS)

    class Meta:
        indexes = [
            HnswIndex(
                name="msg_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=64,
                opclasses=["vector_cosine_ops"],
            ),
            models.Index(fields=["thread_id", "seq"], name="msg_embedding_thread_seq"),
        ]

    def __str__(self) -> str:
        return str(self.message_id)
