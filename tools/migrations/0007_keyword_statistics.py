# BM25 statistics for the keyword ranker: per store, its chunks and their
# lexemes in total; per store and lexeme, how many chunks hold it.
#
# Statement-level triggers on tools_chunk keep them, in the transaction that
# writes the chunks, whatever writes them: ingestion's COPY, the ON DELETE
# CASCADE from a file or store (migration 0003), the expiry sweep. One
# firing per statement with its rows as a transition table, so a COPY of
# 100k chunks is one grouped upsert, not 100k. An update counts out the old
# rows and in the new ones, unless no search_vector or store changed (an
# attributes update, the only one the platform makes).
#
# Lock order: a trigger first locks its stores' rows (store id order), then
# their terms (term order), so two transactions writing the same store queue
# on the store's row instead of deadlocking on terms.

from django.db import migrations, models


FUNCTIONS = """
CREATE FUNCTION tools_keyword_chunks_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Each branch names only the transition tables its operation has
    -- (PL/pgSQL plans a statement when it first runs it).
    IF TG_OP = 'UPDATE' THEN
        -- An attributes update changes no lexeme: nothing to count.
        IF NOT EXISTS (
            SELECT 1 FROM old_chunks o JOIN new_chunks n USING (id)
            WHERE o.search_vector IS DISTINCT FROM n.search_vector
               OR o.vector_store_id IS DISTINCT FROM n.vector_store_id
        ) THEN
            RETURN NULL;
        END IF;
    END IF;

    -- Ingestion deletes a file's earlier chunks before each COPY: usually
    -- none.
    IF TG_OP <> 'INSERT' THEN
        IF EXISTS (SELECT 1 FROM old_chunks) THEN
            PERFORM 1 FROM tools_keyword_store
            WHERE vector_store_id IN (SELECT vector_store_id FROM old_chunks)
            ORDER BY vector_store_id FOR UPDATE;

            UPDATE tools_keyword_term t SET df = t.df - o.df
            FROM (
                SELECT c.vector_store_id, l.term, count(*) AS df
                FROM old_chunks c,
                     unnest(tsvector_to_array(c.search_vector)) AS l(term)
                GROUP BY 1, 2
            ) o
            WHERE t.vector_store_id = o.vector_store_id AND t.term = o.term;
            DELETE FROM tools_keyword_term
            WHERE vector_store_id IN (SELECT vector_store_id FROM old_chunks)
              AND df <= 0;

            UPDATE tools_keyword_store s
            SET chunks = s.chunks - o.chunks, lexemes = s.lexemes - o.lexemes
            FROM (
                SELECT vector_store_id, count(*) AS chunks,
                       sum(length(search_vector)) AS lexemes
                FROM old_chunks GROUP BY vector_store_id
            ) o
            WHERE s.vector_store_id = o.vector_store_id;
            DELETE FROM tools_keyword_store
            WHERE vector_store_id IN (SELECT vector_store_id FROM old_chunks)
              AND chunks <= 0;
        END IF;
    END IF;

    IF TG_OP <> 'DELETE' THEN
        INSERT INTO tools_keyword_store AS s (vector_store_id, chunks, lexemes)
        SELECT vector_store_id, count(*), sum(length(search_vector))
        FROM new_chunks GROUP BY vector_store_id ORDER BY vector_store_id
        ON CONFLICT (vector_store_id) DO UPDATE
        SET chunks = s.chunks + excluded.chunks,
            lexemes = s.lexemes + excluded.lexemes;

        INSERT INTO tools_keyword_term AS t (vector_store_id, term, df)
        SELECT c.vector_store_id, l.term, count(*)
        FROM new_chunks c, unnest(tsvector_to_array(c.search_vector)) AS l(term)
        GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (vector_store_id, term) DO UPDATE SET df = t.df + excluded.df;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tools_keyword_chunks_added AFTER INSERT ON tools_chunk
REFERENCING NEW TABLE AS new_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_keyword_chunks_changed();

CREATE TRIGGER tools_keyword_chunks_removed AFTER DELETE ON tools_chunk
REFERENCING OLD TABLE AS old_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_keyword_chunks_changed();

-- PostgreSQL allows no column list (UPDATE OF text) with transition tables.
CREATE TRIGGER tools_keyword_chunks_updated AFTER UPDATE ON tools_chunk
REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
FOR EACH STATEMENT EXECUTE FUNCTION tools_keyword_chunks_changed();

-- The chunks already stored (no writer in between: SHARE blocks them).
LOCK TABLE tools_chunk IN SHARE MODE;
INSERT INTO tools_keyword_store (vector_store_id, chunks, lexemes)
SELECT vector_store_id, count(*), sum(length(search_vector))
FROM tools_chunk GROUP BY vector_store_id;
INSERT INTO tools_keyword_term (vector_store_id, term, df)
SELECT c.vector_store_id, l.term, count(*)
FROM tools_chunk c, unnest(tsvector_to_array(c.search_vector)) AS l(term)
GROUP BY 1, 2;
"""

REVERSE = """
DROP TRIGGER IF EXISTS tools_keyword_chunks_updated ON tools_chunk;
DROP TRIGGER IF EXISTS tools_keyword_chunks_removed ON tools_chunk;
DROP TRIGGER IF EXISTS tools_keyword_chunks_added ON tools_chunk;
DROP FUNCTION IF EXISTS tools_keyword_chunks_changed();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("tools", "0006_chunk_embedding_inline"),
    ]

    operations = [
        migrations.CreateModel(
            name="KeywordStore",
            fields=[
                (
                    "vector_store_id",
                    models.CharField(max_length=64, primary_key=True, serialize=False),
                ),
                ("chunks", models.BigIntegerField()),
                ("lexemes", models.BigIntegerField()),
            ],
            options={
                "db_table": "tools_keyword_store",
            },
        ),
        migrations.CreateModel(
            name="KeywordTerm",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "vector_store_id",
                        "term",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("vector_store_id", models.CharField(max_length=64)),
                ("term", models.TextField()),
                ("df", models.IntegerField()),
            ],
            options={
                "db_table": "tools_keyword_term",
            },
        ),
        migrations.RunSQL(FUNCTIONS, reverse_sql=REVERSE),
    ]
