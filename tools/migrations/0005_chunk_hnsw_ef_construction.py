# The chunks' HNSW graph is rebuilt with ef_construction 128 (tools/models.py
# says why). Built under a new name while the old one keeps serving searches,
# then swapped: CONCURRENTLY, so ingestion goes on writing chunks during the
# build (a plain build over a million chunks took 665 s on 2 cores; give a
# maintenance_work_mem of about 2 GB per million chunks, or the build spills
# to disk and takes far longer).

import pgvector.django
from django.db import migrations

NEW = (
    "CREATE INDEX CONCURRENTLY chunk_embedding_hnsw_next ON tools_chunk "
    "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = {ef})"
)


def _swap(ef: int) -> list[str]:
    return [
        # A build interrupted earlier leaves an invalid index of this name.
        "DROP INDEX CONCURRENTLY IF EXISTS chunk_embedding_hnsw_next",
        NEW.format(ef=ef),
        "DROP INDEX CONCURRENTLY IF EXISTS chunk_embedding_hnsw",
        "ALTER INDEX chunk_embedding_hnsw_next RENAME TO chunk_embedding_hnsw",
    ]


class Migration(migrations.Migration):
    # CREATE/DROP INDEX CONCURRENTLY cannot run inside a transaction.
    atomic = False

    dependencies = [
        ("tools", "0004_chunk_attributes_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(_swap(128), reverse_sql=_swap(64)),
            ],
            state_operations=[
                migrations.RemoveIndex(model_name="chunk", name="chunk_embedding_hnsw"),
                migrations.AddIndex(
                    model_name="chunk",
                    index=pgvector.django.HnswIndex(
                        ef_construction=128,
                        fields=["embedding"],
                        m=16,
                        name="chunk_embedding_hnsw",
                        opclasses=["vector_cosine_ops"],
                    ),
                ),
            ],
        ),
    ]
