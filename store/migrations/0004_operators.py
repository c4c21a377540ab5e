"""Operators' tools: versions of assistants' instructions, the report
workflow, uploaded avatars, and re-embedding after a rename.

Versions and staleness are kept by triggers on the assistants table, like
the search vector (0002): the API knows nothing of the store, and a change
through any door (API, admin, store, a shell) must leave a version.

The two indexes on the run table serve the admin's usage per assistant and
the store's trending-by-runs; they are created here because this app is
the one that reads runs that way.
"""

from __future__ import annotations

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

VERSIONS = """
CREATE FUNCTION store_assistant_version() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.instructions IS NOT DISTINCT FROM OLD.instructions THEN
        RETURN NULL;
    END IF;
    -- An update holds the assistant's row lock, so numbers of one
    -- assistant are assigned one at a time (the unique constraint guards).
    INSERT INTO store_assistantversion
        (assistant_id, number, name, model, instructions, source, author,
         created_at)
    SELECT NEW.id, coalesce(max(v.number), 0) + 1, NEW.name, NEW.model,
           NEW.instructions,
           coalesce(nullif(current_setting('agents.change_source', true), ''),
                    'api'),
           coalesce(current_setting('agents.change_author', true), ''),
           clock_timestamp()
    FROM store_assistantversion v WHERE v.assistant_id = NEW.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER store_assistant_version
AFTER INSERT OR UPDATE OF instructions ON assistants_assistant
FOR EACH ROW EXECUTE FUNCTION store_assistant_version();

INSERT INTO store_assistantversion
    (assistant_id, number, name, model, instructions, source, author,
     created_at)
SELECT a.id, 1, a.name, a.model, a.instructions, 'initial', '', a.created_at
FROM assistants_assistant a;

CREATE FUNCTION store_assistant_embedding_stale() RETURNS trigger AS $$
BEGIN
    IF NEW.name IS DISTINCT FROM OLD.name
       OR NEW.description IS DISTINCT FROM OLD.description THEN
        UPDATE store_listing SET embedding_stale = true
        WHERE assistant_id = NEW.id;
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER store_assistant_embedding_stale
AFTER UPDATE OF name, description ON assistants_assistant
FOR EACH ROW EXECUTE FUNCTION store_assistant_embedding_stale();

CREATE INDEX IF NOT EXISTS store_run_assistant_created
    ON assistants_run (assistant_id, created_at);
CREATE INDEX IF NOT EXISTS store_run_created_assistant
    ON assistants_run (created_at, assistant_id);
"""

VERSIONS_BACKWARD = """
DROP INDEX IF EXISTS store_run_created_assistant;
DROP INDEX IF EXISTS store_run_assistant_created;
DROP TRIGGER IF EXISTS store_assistant_embedding_stale ON assistants_assistant;
DROP FUNCTION IF EXISTS store_assistant_embedding_stale();
DROP TRIGGER IF EXISTS store_assistant_version ON assistants_assistant;
DROP FUNCTION IF EXISTS store_assistant_version();
"""

REPORT_STATUS = (
    "UPDATE store_report SET status = 'resolved' WHERE resolved",
    "UPDATE store_report SET resolved = (status <> 'open')",
)


class Migration(migrations.Migration):
    dependencies = [
        ("assistants", "0004_thread_memory"),
        ("store", "0003_listing_embedding"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AssistantVersion",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("name", models.CharField(blank=True, max_length=256, null=True)),
                ("model", models.CharField(blank=True, default="", max_length=256)),
                ("instructions", models.TextField(blank=True, null=True)),
                ("source", models.CharField(default="api", max_length=32)),
                ("author", models.CharField(blank=True, default="", max_length=150)),
                (
                    "created_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, editable=False
                    ),
                ),
                (
                    "assistant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="versions",
                        to="assistants.assistant",
                    ),
                ),
            ],
            options={"ordering": ("-number",)},
        ),
        migrations.AddConstraint(
            model_name="assistantversion",
            constraint=models.UniqueConstraint(
                fields=("assistant", "number"), name="assistant_version_unique"
            ),
        ),
        migrations.AddField(
            model_name="report",
            name="status",
            field=models.CharField(
                choices=[
                    ("open", "Open"),
                    ("resolved", "Resolved"),
                    ("dismissed", "Dismissed"),
                ],
                default="open",
                max_length=16,
            ),
        ),
        migrations.RunSQL(*REPORT_STATUS),
        migrations.RemoveField(model_name="report", name="resolved"),
        migrations.AddField(
            model_name="report",
            name="handled_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="report",
            name="handled_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        migrations.AddIndex(
            model_name="report",
            index=models.Index(
                fields=["listing", "status"], name="report_listing_status"
            ),
        ),
        migrations.AddField(
            model_name="listing",
            name="avatar_image",
            field=models.FileField(
                blank=True, default="", max_length=255, upload_to="store/avatars/"
            ),
        ),
        migrations.AddField(
            model_name="listing",
            name="embedding_stale",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunSQL(VERSIONS, VERSIONS_BACKWARD),
    ]
