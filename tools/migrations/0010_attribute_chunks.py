# Per store, attribute key and value: the chunks carrying it, with their
# vectors and attributes, in one covering btree, for the exact plan of a
# filtered vector query (tools/file_search/search.py, _posting_ranking).
#
# Why: an exact scan over the rows an `eq`/`in` filter keeps fetched them
# from tools_chunk through the attributes' GIN index: a bitmap heap scan, a
# page per row when the rows lie apart, and per row the tuple's deforming,
# the jsonb recheck, the store test. At 1M chunks, over the 10,000 rows of
# a 1 % filter scattered through the table, 15 ms (psql, one query; perf: a
# fifth of it the buffer mapping's lookups, the distances a tenth); over
# the 10,000 rows of a file-grouped 1 %, 7-8 ms. Here the same rows are one
# range of this table's primary key, read by an index-only scan: 3.7-4.0
# and 3.9-5.2 ms. In the search's own loop (bench/retrieval_bench.py's
# 1M chunks, 225 queries, p50 / p95): shard = 7 16.8 / 19.5 -> 4.56 / 4.88
# ms, bucket = 7 8.47 / 9.32 -> 4.81 / 5.13, with the list packed as this
# migration fills it; as ingestion leaves it (pages split as rows come,
# ~57 % full) 7.47 / 7.96 and 5.59 / 6.13. What it costs: a second copy
# of a chunk's vector per attribute key it carries, in the heap and in the
# index (~2.1 kB a key and chunk: 4.2 GB for the 2M pairs of 1M chunks
# with two keys, filled in 40 s); chunks without attributes cost nothing.
#
# Statement-level triggers keep it, as migration 0009's keep the counts (one
# INSERT ... SELECT per COPY), after them in name order. An update that
# changes a chunk's attributes, store or vector replaces its rows.

from django.db import migrations, models

import pgvector.django

TABLE = """
CREATE TABLE tools_attribute_chunk (
    vector_store_id varchar(64) NOT NULL,
    key text NOT NULL,
    value jsonb NOT NULL,
    chunk_id bigint NOT NULL,
    attributes jsonb NOT NULL,
    embedding halfvec(384) NOT NULL,
    -- INCLUDE: the exact scan reads the vector and the attributes (for the
    -- rest of a compound filter) from the index alone.
    CONSTRAINT tools_attribute_chunk_pkey
        PRIMARY KEY (vector_store_id, key, value, chunk_id)
        INCLUDE (attributes, embedding)
);
-- Never compressed or moved out of line (as tools_chunk's, migration 0008).
ALTER TABLE tools_attribute_chunk ALTER COLUMN embedding SET STORAGE PLAIN;
"""

FUNCTIONS = """
CREATE FUNCTION tools_attribute_chunk_rows_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (
            SELECT 1 FROM old_chunks o JOIN new_chunks n USING (id)
            WHERE o.attributes IS DISTINCT FROM n.attributes
               OR o.vector_store_id IS DISTINCT FROM n.vector_store_id
               OR o.embedding IS DISTINCT FROM n.embedding
        ) THEN
            RETURN NULL;
        END IF;
    END IF;

    IF TG_OP <> 'INSERT' THEN
        DELETE FROM tools_attribute_chunk p
        USING old_chunks c, jsonb_each(
            CASE WHEN jsonb_typeof(c.attributes) = 'object'
                 THEN c.attributes ELSE '{}' END) AS a
        WHERE p.vector_store_id = c.vector_store_id
          AND p.key = a.key AND p.value = a.value AND p.chunk_id = c.id;
    END IF;

    IF TG_OP <> 'DELETE' THEN
        INSERT INTO tools_attribute_chunk
            (vector_store_id, key, value, chunk_id, attributes, embedding)
        SELECT c.vector_store_id, a.key, a.value, c.id, c.attributes, c.embedding
        FROM new_chunks c, jsonb_each(
            CASE WHEN jsonb_typeof(c.attributes) = 'object'
                 THEN c.attributes ELSE '{}' END) AS a;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tools_vectors_attributes_added AFTER INSERT ON tools_chunk
REFERENCING NEW TABLE AS new_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_attribute_chunk_rows_changed();

CREATE TRIGGER tools_vectors_attributes_removed AFTER DELETE ON tools_chunk
REFERENCING OLD TABLE AS old_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_attribute_chunk_rows_changed();

CREATE TRIGGER tools_vectors_attributes_updated AFTER UPDATE ON tools_chunk
REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_attribute_chunk_rows_changed();

-- The chunks already stored (no writer in between: SHARE blocks them). In
-- key order, so the index is built as one sorted pass.
LOCK TABLE tools_chunk IN SHARE MODE;
INSERT INTO tools_attribute_chunk
    (vector_store_id, key, value, chunk_id, attributes, embedding)
SELECT c.vector_store_id, a.key, a.value, c.id, c.attributes, c.embedding
FROM tools_chunk c, jsonb_each(
    CASE WHEN jsonb_typeof(c.attributes) = 'object'
         THEN c.attributes ELSE '{}' END) AS a
ORDER BY 1, 2, 3, 4;
"""

REVERSE = """
DROP TRIGGER IF EXISTS tools_vectors_attributes_updated ON tools_chunk;
DROP TRIGGER IF EXISTS tools_vectors_attributes_removed ON tools_chunk;
DROP TRIGGER IF EXISTS tools_vectors_attributes_added ON tools_chunk;
DROP FUNCTION IF EXISTS tools_attribute_chunk_rows_changed();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tools", "0009_attribute_statistics"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AttributeChunk",
                    fields=[
                        (
                            "pk",
                            models.CompositePrimaryKey(
                                "vector_store_id",
                                "key",
                                "value",
                                "chunk_id",
                                blank=True,
                                editable=False,
                                primary_key=True,
                                serialize=False,
                            ),
                        ),
                        ("vector_store_id", models.CharField(max_length=64)),
                        ("key", models.TextField()),
                        ("value", models.JSONField()),
                        ("chunk_id", models.BigIntegerField()),
                        ("attributes", models.JSONField()),
                        (
                            "embedding",
                            pgvector.django.HalfVectorField(dimensions=384),
                        ),
                    ],
                    options={
                        "db_table": "tools_attribute_chunk",
                    },
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    TABLE, reverse_sql="DROP TABLE IF EXISTS tools_attribute_chunk"
                ),
            ],
        ),
        migrations.RunSQL(FUNCTIONS, reverse_sql=REVERSE),
    ]
