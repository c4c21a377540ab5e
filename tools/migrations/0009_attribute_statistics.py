# How many chunks of a store carry each value of each attribute key, for the
# vector query's plan choice (tools/file_search/search.py, _counted_probe).
#
# Why: the plan (exact over the rows a filter leaves, or the HNSW graph with
# a beam as wide as the filter's selectivity asks) follows an estimate of
# the rows passing. PostgreSQL estimates `attributes @> {"k": v}` and the
# jsonpath range tests from the statistics of the whole jsonb value: its
# most common values and a histogram of the values sorted, and jsonb sorts
# an object by its keys in their stored order. With one key per chunk that
# was right; with two, the histogram samples the first key's values evenly
# and the second's hardly at all. At 1M synthetic chunks with attributes
# {"bucket", "shard"} the planner put `shard = 7` at 10,058 rows (10,000
# pass) and `bucket = 7` at 40,231 (10,000), `bucket < 10` at 432,484
# (100,000): `bucket = 7`, which the exact plan should answer, went to a
# graph walk, 31 ms p50 against 7.7 exact (bench loop). Counts per value
# are exact whatever the keys.
#
# Statement-level triggers keep the counts, as migration 0007's keep the
# keyword statistics (one grouped upsert per COPY), named so they fire
# after those (PostgreSQL fires a statement's triggers in name order): the
# keyword trigger has locked the stores' rows of tools_keyword_store by
# then, so writers of one store queue there rather than deadlock here. An
# update counts out the old rows and in the new ones unless no attributes
# or store changed.

from django.db import migrations, models

FUNCTIONS = """
CREATE FUNCTION tools_attribute_chunks_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NOT EXISTS (
            SELECT 1 FROM old_chunks o JOIN new_chunks n USING (id)
            WHERE o.attributes IS DISTINCT FROM n.attributes
               OR o.vector_store_id IS DISTINCT FROM n.vector_store_id
        ) THEN
            RETURN NULL;
        END IF;
    END IF;

    IF TG_OP <> 'INSERT' THEN
        IF EXISTS (SELECT 1 FROM old_chunks) THEN
            -- An attributes update passed the keyword trigger without a
            -- lock: take the stores' rows here, in the same order.
            PERFORM 1 FROM tools_keyword_store
            WHERE vector_store_id IN (SELECT vector_store_id FROM old_chunks)
            ORDER BY vector_store_id FOR UPDATE;

            UPDATE tools_attribute_value v SET chunks = v.chunks - o.chunks
            FROM (
                SELECT c.vector_store_id, a.key, a.value, count(*) AS chunks
                FROM old_chunks c, jsonb_each(
                    CASE WHEN jsonb_typeof(c.attributes) = 'object'
                         THEN c.attributes ELSE '{}' END) AS a
                GROUP BY 1, 2, 3
            ) o
            WHERE v.vector_store_id = o.vector_store_id
              AND v.key = o.key AND v.value = o.value;
            DELETE FROM tools_attribute_value
            WHERE vector_store_id IN (SELECT vector_store_id FROM old_chunks)
              AND chunks <= 0;
        END IF;
    END IF;

    IF TG_OP <> 'DELETE' THEN
        INSERT INTO tools_attribute_value AS v (vector_store_id, key, value, chunks)
        SELECT c.vector_store_id, a.key, a.value, count(*)
        FROM new_chunks c, jsonb_each(
            CASE WHEN jsonb_typeof(c.attributes) = 'object'
                 THEN c.attributes ELSE '{}' END) AS a
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (vector_store_id, key, value)
        DO UPDATE SET chunks = v.chunks + excluded.chunks;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tools_stats_attributes_added AFTER INSERT ON tools_chunk
REFERENCING NEW TABLE AS new_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_attribute_chunks_changed();

CREATE TRIGGER tools_stats_attributes_removed AFTER DELETE ON tools_chunk
REFERENCING OLD TABLE AS old_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_attribute_chunks_changed();

CREATE TRIGGER tools_stats_attributes_updated AFTER UPDATE ON tools_chunk
REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_attribute_chunks_changed();

-- The chunks already stored (no writer in between: SHARE blocks them).
LOCK TABLE tools_chunk IN SHARE MODE;
INSERT INTO tools_attribute_value (vector_store_id, key, value, chunks)
SELECT c.vector_store_id, a.key, a.value, count(*)
FROM tools_chunk c, jsonb_each(
    CASE WHEN jsonb_typeof(c.attributes) = 'object'
         THEN c.attributes ELSE '{}' END) AS a
GROUP BY 1, 2, 3;
"""

REVERSE = """
DROP TRIGGER IF EXISTS tools_stats_attributes_updated ON tools_chunk;
DROP TRIGGER IF EXISTS tools_stats_attributes_removed ON tools_chunk;
DROP TRIGGER IF EXISTS tools_stats_attributes_added ON tools_chunk;
DROP FUNCTION IF EXISTS tools_attribute_chunks_changed();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tools", "0008_chunk_embedding_halfvec"),
    ]

    operations = [
        migrations.CreateModel(
            name="AttributeValue",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "vector_store_id",
                        "key",
                        "value",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("vector_store_id", models.CharField(max_length=64)),
                ("key", models.TextField()),
                ("value", models.JSONField()),
                ("chunks", models.BigIntegerField()),
            ],
            options={
                "db_table": "tools_attribute_value",
            },
        ),
        migrations.RunSQL(FUNCTIONS, reverse_sql=REVERSE),
    ]
