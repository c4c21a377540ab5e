"""Fewer indexes on the tables every run step writes.

Each index costs every INSERT and every non-HOT UPDATE (a run's status
changes are non-HOT: status is indexed), and three were plain duplicates of
the leading column of a composite index. Django also adds a
``varchar_pattern_ops`` twin ("_like") to every indexed varchar column, for
LIKE 'prefix%' lookups that nothing here makes (ids and foreign keys are
matched exactly). Dropped: 9 of 26 indexes on runs, steps and messages.
The reverse does not recreate the "_like" twins.

The foreign keys' ``db_index=False`` is applied to the database by name, not
by AlterField: Django's AlterField drops every single-column btree index on
the column that is not in ``Meta.indexes``, and so would drop the partial
unique index of ``one_active_run_per_thread`` (a constraint) with them.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("assistants", "0004_thread_memory"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="thread",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="assistants.thread",
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="thread",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="runs",
                        to="assistants.thread",
                    ),
                ),
                migrations.AlterField(
                    model_name="runstep",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="steps",
                        to="assistants.run",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    # The foreign keys' own indexes (Django names them
                    # <table>_<column>_<hash>, and <...>_like), then every
                    # other "_like" twin on the three tables.
                    sql="""
                    DO $$
                    DECLARE r record;
                    BEGIN
                      FOR r IN
                        SELECT indexname FROM pg_indexes
                        WHERE schemaname = current_schema()
                          AND (
                            indexname ~ '^assistants_run_thread_id_[0-9a-f]{8}(_like)?$'
                            OR indexname ~ '^assistants_message_thread_id_[0-9a-f]{8}(_like)?$'
                            OR indexname ~ '^assistants_runstep_run_id_[0-9a-f]{8}(_like)?$'
                            OR (
                              tablename IN (
                                'assistants_run', 'assistants_runstep',
                                'assistants_message'
                              )
                              AND indexname ~ '_like$'
                            )
                          )
                      LOOP
                        EXECUTE format('DROP INDEX %I', r.indexname);
                      END LOOP;
                    END $$;
                    """,
                    reverse_sql=migrations.RunSQL.noop,
                ),
            ],
        ),
    ]
