"""Files, multi-part uploads and vector stores: the data tools work on."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.utils import timezone
from pgvector.django import HalfVectorField, HnswIndex

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


# The chunks table's vector size: all-MiniLM-L6-v2's. Another embedding
# model with another size needs a migration that changes the column (and
# EMBEDDING_DIMENSIONS set to match).
EMBEDDING_COLUMN_DIMENSIONS = 384
# A chunk's vector is stored in half precision (halfvec, migration 0008):
# bytes per dimension, for usage_bytes.
CHUNK_VECTOR_BYTES_PER_DIMENSION = 2


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


class VectorStoreFileBatch(PublicObject):
    """Files added together; its status and counts come from its files."""

    id = models.CharField(
        primary_key=True, max_length=64, default=ids.new_file_batch_id, editable=False
    )
    vector_store = models.ForeignKey(
        VectorStore, on_delete=models.CASCADE, related_name="file_batches"
    )
    cancelled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.id


class VectorStoreFile(PublicObject):
    """A file in a vector store, with its ingestion status. On the wire its
    id is the file's id (one file appears at most once per store)."""

    class Status(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"
        CANCELLED = "cancelled"
        FAILED = "failed"

    id = models.CharField(
        primary_key=True,
        max_length=64,
        default=ids.new_vector_store_file_id,
        editable=False,
    )
    vector_store = models.ForeignKey(
        VectorStore, on_delete=models.CASCADE, related_name="files"
    )
    # Deleting a file takes it out of every store (and its chunks with it).
    file = models.ForeignKey(
        File, on_delete=models.CASCADE, related_name="vector_store_files"
    )
    batch = models.ForeignKey(
        VectorStoreFileBatch,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="files",
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.IN_PROGRESS
    )
    # {"code": "server_error" | "unsupported_file" | "invalid_file", "message"}
    last_error = models.JSONField(null=True, blank=True)
    usage_bytes = models.BigIntegerField(default=0)
    chunking_strategy = models.JSONField(default=dict)
    attributes = models.JSONField(default=dict, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    # Ingestion attempts begun: a file that kills its worker (and so comes
    # back through acks_late) fails for good after a few.
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["vector_store", "file"], name="vsf_one_per_store"
            )
        ]
        indexes = [
            models.Index(fields=["vector_store", "seq"], name="vsf_store_seq"),
            models.Index(
                fields=["vector_store", "status", "seq"], name="vsf_store_status_seq"
            ),
            models.Index(fields=["batch", "seq"], name="vsf_batch_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.file_id} in {self.vector_store_id}"


class Chunk(models.Model):
    """One searchable span of a vector store file: its text, embedding and
    full-text vector.

    The foreign keys are plain columns for Django (``db_constraint=False``,
    DO_NOTHING) and real ``ON DELETE CASCADE`` constraints in the database
    (migration 0003): deleting a file or store then drops its chunks in one
    statement instead of Django loading every chunk, embedding included.
    ``attributes`` is a copy of the file's, so filters apply in the same
    index scan as the vector or text search.
    """

    id = models.BigAutoField(primary_key=True)
    # db_index=False: chunk_store and chunk_file_position (Meta) already
    # lead with these columns; Django's own two indexes per key (btree and
    # varchar_pattern_ops) only cost every chunk insert.
    vector_store = models.ForeignKey(
        VectorStore,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="+",
    )
    vector_store_file = models.ForeignKey(
        VectorStoreFile,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        related_name="chunks",
    )
    file_id = models.CharField(max_length=64)
    position = models.PositiveIntegerField()
    text = models.TextField()
    tokens = models.PositiveIntegerField()
    attributes = models.JSONField(default=dict)
    # Half precision (migration 0008 says why): searches rank by it, and no
    # part of the platform reads a chunk's vector back.
    embedding = HalfVectorField(dimensions=EMBEDDING_COLUMN_DIMENSIONS)
    search_vector = models.GeneratedField(
        expression=SearchVector("text", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        indexes = [
            models.Index(
                fields=["vector_store_file", "position"], name="chunk_file_position"
            ),
            models.Index(fields=["vector_store"], name="chunk_store"),
            # ef_construction 128, not pgvector's 64: a better graph for the
            # same search breadth. bench/retrieval_bench.py's 100k chunks:
            # recall@10 0.968 -> 0.988 unfiltered and 0.980 -> 0.994 with a
            # filter keeping 10 %, at the same latency; the build takes 1.5x
            # as long (62 s for 100k here).
            HnswIndex(
                name="chunk_embedding_hnsw",
                fields=["embedding"],
                m=16,
                ef_construction=128,
                opclasses=["halfvec_cosine_ops"],
            ),
            GinIndex(fields=["search_vector"], name="chunk_search_vector"),
            # Serves eq/in attribute filters (written as `attributes @> ...`)
            # so that a selective filter is searched exactly over its few
            # rows (tools/file_search/search.py); jsonb_path_ops: smaller and
            # faster than the default opclass for containment, all we use.
            GinIndex(
                fields=["attributes"],
                name="chunk_attributes",
                opclasses=["jsonb_path_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.file_id}#{self.position}"


class KeywordStore(models.Model):
    """What the keyword ranker's BM25 needs of a store as a whole: how many
    chunks it holds and their lexemes in total (for the average length).

    Written only by ``tools_chunk``'s triggers (migration 0007), in the
    transaction that adds, changes or deletes the chunks, so it is never
    stale; no foreign key: the row goes when the store's last chunk does.
    """

    vector_store_id = models.CharField(max_length=64, primary_key=True)
    chunks = models.BigIntegerField()
    lexemes = models.BigIntegerField()

    class Meta:
        db_table = "tools_keyword_store"

    def __str__(self) -> str:
        return f"{self.vector_store_id}: {self.chunks} chunks"


class KeywordTerm(models.Model):
    """How many chunks of a store hold a lexeme (BM25's document frequency).
    Written only by ``tools_chunk``'s triggers (migration 0007)."""

    pk = models.CompositePrimaryKey("vector_store_id", "term")
    vector_store_id = models.CharField(max_length=64)
    term = models.TextField()
    df = models.IntegerField()

    class Meta:
        db_table = "tools_keyword_term"

    def __str__(self) -> str:
        return f"{self.vector_store_id}: {self.term} in {self.df}"


class AttributeValue(models.Model):
    """How many chunks of a store carry ``value`` at the attribute ``key``:
    what the vector query's plan choice counts a filter's rows from
    (tools/file_search/search.py). Written only by ``tools_chunk``'s
    triggers (migration 0009), in the transaction that writes the chunks."""

    pk = models.CompositePrimaryKey("vector_store_id", "key", "value")
    vector_store_id = models.CharField(max_length=64)
    key = models.TextField()
    value = models.JSONField()
    chunks = models.BigIntegerField()

    class Meta:
        db_table = "tools_attribute_value"

    def __str__(self) -> str:
        return f"{self.vector_store_id}: {self.key}={self.value} in {self.chunks}"


class AttributeChunk(models.Model):
    """A chunk under one of its attributes: per store, key and value, the
    chunks carrying it, with their vectors and attributes, in the order of
    a covering primary key. The exact plan of a vector query filtered on
    ``eq``/``in`` or a range test reads the rows the comparison keeps as one
    range of that index (tools/file_search/search.py, ``_posting_ranking``).
    Written only by ``tools_chunk``'s triggers (migration 0010, which gives
    the figures and the cost)."""

    pk = models.CompositePrimaryKey("vector_store_id", "key", "value", "chunk_id")
    vector_store_id = models.CharField(max_length=64)
    key = models.TextField()
    value = models.JSONField()
    chunk_id = models.BigIntegerField()
    attributes = models.JSONField()
    embedding = HalfVectorField(dimensions=EMBEDDING_COLUMN_DIMENSIONS)

    class Meta:
        db_table = "tools_attribute_chunk"

    def __str__(self) -> str:
        return f"{self.vector_store_id}: {self.key}={self.value} chunk {self.chunk_id}"


class FilterIndex(models.Model):
    """An HNSW index over the chunks of one store that pass one filter: a
    partial index, which PostgreSQL uses for a search of that store whose
    filter is this one or an ``and`` holding it.

    Why: a graph walk over every chunk finds the rows a filter keeps only
    after passing every nearer row that it drops. A filter scattered
    through the vector space costs the walk ``1 / share`` times as many
    candidates; one that follows the content (a category, a tenant, a set
    of files about one subject) can keep almost nothing near a query, and
    the walk goes thousands of rows deep (bench/retrieval_bench.py's
    ``bucket < 10`` at 1M chunks: p95 ~40 ms). Over its own graph such a
    filter is an unfiltered search of a smaller table. Operators declare
    one for the filters their assistants use (``manage.py filter_index``);
    ``tools.services.filter_index`` builds it, ``CONCURRENTLY`` so that
    ingestion and searches go on meanwhile.

    Without a filter (``filters`` ``{}``) it is a store's own graph: for a
    store sharing the table with others, whose every search would
    otherwise walk everyone's chunks, or scan its own exactly.

    Searches propose them too: a filter (or a store's share of the table)
    that makes a search of one store costly over the table's graph
    (``VectorRanking.costly``: a beam it widened, a walk that came back
    short, a large exact scan) is counted in a ``proposed`` row, and once
    SEARCH_AUTO_FILTER_INDEX_AFTER such searches came within an hour of
    each other, built by a task on the ingestion queue (``automatic``;
    SEARCH_AUTO_FILTER_INDEXES per store at most).

    ``predicate`` is the index's WHERE as the search writes the filter
    (``tools.file_search.search.index_predicate``): a search uses the
    index's statistics only while it would still write the same text, the
    condition under which PostgreSQL's planner proves the index applies.
    """

    class Status(models.TextChoices):
        # Counted searches only: no index exists.
        PROPOSED = "proposed"
        BUILDING = "building"
        READY = "ready"
        FAILED = "failed"

    id = models.BigAutoField(primary_key=True)
    vector_store = models.ForeignKey(
        VectorStore, on_delete=models.CASCADE, related_name="filter_indexes"
    )
    filters = models.JSONField()
    predicate = models.TextField()
    # The index's name in PostgreSQL (at most 63 bytes).
    name = models.CharField(max_length=63, unique=True)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.BUILDING
    )
    # Chunks indexed when the build ended (searches read the live count
    # from pg_class).
    rows = models.BigIntegerField(default=0)
    build_seconds = models.FloatField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Proposed by searches rather than declared by an operator.
    automatic = models.BooleanField(default=False)
    # Searches this filter made costly over the table's graph (what
    # proposes the index), in a row with no hour between two of them, and
    # the last one.
    searches = models.BigIntegerField(default=0)
    last_search_at = models.DateTimeField(null=True, blank=True)
    # When its build was last handed to a task (the reaper hands a build
    # whose task died to another).
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["vector_store", "predicate"], name="filter_index_predicate"
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.vector_store_id}: {self.status})"


def chunk_index_sql(name: str) -> str:
    """The ``CREATE INDEX`` of one of ``Chunk``'s indexes, as the migrations
    make it: for code that drops an index to load many rows and builds it
    once after (the retrieval benchmark, the search-plan tests), so that
    what they measure is the index the platform has."""
    from django.db import connection

    index = next(i for i in Chunk._meta.indexes if i.name == name)
    return str(index.create_sql(Chunk, connection.schema_editor()))
