# The count that proposes a filter index is no longer of short walks only
# (tools.file_search.search.VectorRanking.costly): renamed to say so.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("tools", "0012_filter_index_automatic"),
    ]

    operations = [
        migrations.RenameField(
            model_name="filterindex",
            old_name="short_searches",
            new_name="searches",
        ),
        migrations.RenameField(
            model_name="filterindex",
            old_name="last_short_at",
            new_name="last_search_at",
        ),
    ]
