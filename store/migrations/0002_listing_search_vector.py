"""Full-text search vector on listings, kept by triggers.

The vector mixes the assistant's name (weight A), the listing's short
description (B) and the assistant's description (C). The assistant can be
renamed through the API, which knows nothing of the store, so a trigger on
the assistants table refreshes the listing: the search index never goes
stale, whichever door the change came through.
"""

from __future__ import annotations

import django.contrib.postgres.indexes
import django.contrib.postgres.search
from django.db import migrations

VECTOR = """
    setweight(to_tsvector('english', coalesce({a}.name, '')), 'A')
    || setweight(to_tsvector('english', coalesce({l}.short_description, '')), 'B')
    || setweight(to_tsvector('english', coalesce({a}.description, '')), 'C')
"""

FORWARD = f"""
CREATE FUNCTION store_listing_search_vector() RETURNS trigger AS $$
BEGIN
    SELECT {VECTOR.format(a="a", l="NEW")} INTO NEW.search_vector
    FROM assistants_assistant a WHERE a.id = NEW.assistant_id;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER store_listing_search_vector
BEFORE INSERT OR UPDATE OF short_description, assistant_id ON store_listing
FOR EACH ROW EXECUTE FUNCTION store_listing_search_vector();

CREATE FUNCTION store_assistant_search_vector() RETURNS trigger AS $$
BEGIN
    UPDATE store_listing l SET search_vector = {VECTOR.format(a="NEW", l="l")}
    WHERE l.assistant_id = NEW.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER store_assistant_search_vector
AFTER UPDATE OF name, description ON assistants_assistant
FOR EACH ROW EXECUTE FUNCTION store_assistant_search_vector();

UPDATE store_listing l SET search_vector = {VECTOR.format(a="a", l="l")}
FROM assistants_assistant a WHERE a.id = l.assistant_id;
"""

BACKWARD = """
DROP TRIGGER IF EXISTS store_assistant_search_vector ON assistants_assistant;
DROP FUNCTION IF EXISTS store_assistant_search_vector();
DROP TRIGGER IF EXISTS store_listing_search_vector ON store_listing;
DROP FUNCTION IF EXISTS store_listing_search_vector();
"""


class Migration(migrations.Migration):
    dependencies = [("store", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="listing",
            name="search_vector",
            field=django.contrib.postgres.search.SearchVectorField(
                editable=False, null=True
            ),
        ),
        migrations.AddIndex(
            model_name="listing",
            index=django.contrib.postgres.indexes.GinIndex(
                fields=["search_vector"], name="listing_search"
            ),
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
