# A chunk's embedding in half precision, in a narrow row: the text and its
# search_vector leave the row for the TOAST table, the vector stays.
#
# Why: a search reads a chunk's row for its vector and its filter columns
# (store, attributes) and nothing else, but the row held the text (~2 kB)
# and its search_vector (~2 kB) inline too (migration 0006), one chunk per
# 8 kB page. An exact search over the 10,000 chunks of a 1 % filter at 1M
# chunks fetched 9,600 pages: 11 ms for a store, 16-17 ms for an attribute
# filter (p50). The same rows in a table of (id, store, attributes,
# halfvec) took 1.8-2.6 and 3.1-4.8 ms: nine rows a page instead of one,
# and pgvector computes halfvec distances with the CPU's F16C/FMA
# instructions where its float vector loops are plain C (0.47 against
# 0.13 us a distance here). The top 10 over those 10,000 rows were the
# same in half precision for 80 of 80 searches.
#
# The row now: the 776-byte halfvec (STORAGE PLAIN: never compressed or
# moved out), the ids, attributes; a row over ~2 kB (any chunk of real
# text) has its largest values moved out until it is under
# toast_tuple_target, 1024 bytes: the text and the search_vector go, the
# short ids and attributes stay (with a lower target PostgreSQL would move
# those too, and every filter would read them through the TOAST index).
# What reads them now pays a TOAST fetch: the keyword ranker for the
# search_vectors of the chunks it scores (a hybrid search's pool of ~140),
# the hits for their text (max_num_results).
#
# ALTER COLUMN TYPE rewrites the table, and the HNSW graph is built again
# for halfvec_cosine_ops, both under an ACCESS EXCLUSIVE lock: searches and
# ingestion wait for it (README, "Retrieval", gives the time at 1M chunks;
# give the session a maintenance_work_mem of ~1.5 GB per million chunks, as
# with PGOPTIONS="-c maintenance_work_mem=2GB", or the build spills to disk
# and takes far longer).

import pgvector.django
from django.db import migrations

FORWARD = [
    "DROP INDEX IF EXISTS chunk_embedding_hnsw",
    "ALTER TABLE tools_chunk SET (toast_tuple_target = 1024)",
    # SET STORAGE after the TYPE (which resets it to the type's default);
    # both are applied before the one rewrite.
    "ALTER TABLE tools_chunk "
    "ALTER COLUMN embedding TYPE halfvec(384) USING embedding::halfvec(384), "
    "ALTER COLUMN embedding SET STORAGE PLAIN",
    "CREATE INDEX chunk_embedding_hnsw ON tools_chunk "
    "USING hnsw (embedding halfvec_cosine_ops) WITH (m = 16, ef_construction = 128)",
]

BACKWARD = [
    "DROP INDEX IF EXISTS chunk_embedding_hnsw",
    "ALTER TABLE tools_chunk SET (toast_tuple_target = 8160)",
    "ALTER TABLE tools_chunk "
    "ALTER COLUMN embedding TYPE vector(384) USING embedding::vector(384), "
    "ALTER COLUMN embedding SET STORAGE MAIN",
    "CREATE INDEX chunk_embedding_hnsw ON tools_chunk "
    "USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 128)",
]


class Migration(migrations.Migration):
    dependencies = [("tools", "0007_keyword_statistics")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL(FORWARD, reverse_sql=BACKWARD)],
            state_operations=[
                migrations.RemoveIndex(model_name="chunk", name="chunk_embedding_hnsw"),
                migrations.AlterField(
                    model_name="chunk",
                    name="embedding",
                    field=pgvector.django.HalfVectorField(dimensions=384),
                ),
                migrations.AddIndex(
                    model_name="chunk",
                    index=pgvector.django.HnswIndex(
                        ef_construction=128,
                        fields=["embedding"],
                        m=16,
                        name="chunk_embedding_hnsw",
                        opclasses=["halfvec_cosine_ops"],
                    ),
                ),
            ],
        ),
    ]
