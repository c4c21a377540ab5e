from __future__ import annotations

import pgvector.django
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("store", "0002_listing_search_vector")]

    operations = [
        migrations.AddField(
            model_name="listing",
            name="embedding",
            field=pgvector.django.VectorField(
                dimensions=384, editable=False, null=True
            ),
        ),
        migrations.AddIndex(
            model_name="listing",
            index=pgvector.django.HnswIndex(
                ef_construction=64,
                fields=["embedding"],
                m=16,
                name="listing_embedding_hnsw",
                opclasses=["vector_cosine_ops"],
            ),
        ),
    ]
