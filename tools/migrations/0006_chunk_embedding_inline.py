# A chunk's row keeps its embedding, and up to a page of the rest, inline
# instead of in the TOAST table.
#
# pgvector's type defaults to STORAGE EXTERNAL, and PostgreSQL moves values
# out of a row over ~2 kB: a chunk of real text (the text, its
# search_vector, a 1.5 kB vector of 384 floats) is such a row, and its
# vector, the largest value, is what left. 1,374 of the 1,400 Cranfield
# chunks had their embedding out of line, so an exact search fetched each
# vector through the TOAST index (11-12 ms p50 for that store, 2.7-4 ms
# inline), and the keyword ranker did the same for the search_vectors of
# the rows it ranks.
#
# STORAGE MAIN: the vector is moved out only as a last resort (pgvector
# allows 16,000 dimensions, more than a page). toast_tuple_target 8160 (the
# most PostgreSQL allows): values are compressed or moved out only when the
# row would not fit in a page, so a chunk of up to ~8 kB is read in one
# piece. The table's pages hold fewer rows; no query reads a chunk's row
# for anything but its values.
#
# Metadata only: rows written before keep their layout until rewritten
# (VACUUM FULL tools_chunk rewrites them so; README, "Retrieval").

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("tools", "0005_chunk_hnsw_ef_construction")]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE tools_chunk ALTER COLUMN embedding SET STORAGE MAIN, "
            "SET (toast_tuple_target = 8160)",
            reverse_sql="ALTER TABLE tools_chunk ALTER COLUMN embedding "
            "SET STORAGE EXTERNAL, RESET (toast_tuple_target)",
        )
    ]
