"""core.db: several writes in one statement, all or none; values the
database chose are loaded on access; a non-durable write is that alone."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction

from assistants.models import Message, Thread
from core.db import (
    Sql,
    execute,
    insert_sql,
    insert_together,
    insert_under_lock,
    select_one,
    update_sql,
    write_together,
)
from tests.conftest import Tenant


def _message(thread: Thread, text: str) -> Message:
    return Message(
        thread=thread,
        role=Message.Role.USER,
        content=[{"type": "text", "text": {"value": text, "annotations": []}}],
    )


def test_insert_together_writes_all_rows_and_defers_database_defaults(
    tenant: Tenant,
) -> None:
    thread = Thread.objects.create(project=tenant.project)
    first, second = _message(thread, "a"), _message(thread, "b")
    insert_together(first, second)
    stored = {m.pk: m for m in Message.objects.filter(thread=thread)}
    assert set(stored) == {first.pk, second.pk}
    # seq came from the database's sequence: read back on access, not left
    # as the DEFAULT placeholder a later save() would write.
    assert first.seq == stored[first.pk].seq
    assert second.seq == stored[second.pk].seq


def test_write_together_is_all_or_none(tenant: Tenant) -> None:
    thread = Thread.objects.create(project=tenant.project)
    message = _message(thread, "kept")
    message.save()
    change = update_sql(Message, message.pk, {"status": "incomplete"})
    duplicate = _message(thread, "clash")
    duplicate.pk = message.pk  # the second write fails on the primary key
    with pytest.raises(IntegrityError), transaction.atomic():
        write_together([change], insert_sql(duplicate))
    message.refresh_from_db()
    assert message.status != "incomplete"


def test_update_sql_compare_and_swap_and_sql_values(tenant: Tenant) -> None:
    thread = Thread.objects.create(project=tenant.project)
    message = _message(thread, "x")
    message.save()
    wrong = update_sql(
        Message, message.pk, {"token_count": 1}, where_in=("status", ["in_progress"])
    )
    assert write_together([], wrong) == 0
    right = update_sql(
        Message,
        message.pk,
        {"token_count": Sql("COALESCE({col}, 0) + %s", (5,))},
        where_in=("status", [message.status]),
    )
    assert write_together([], right) == 1
    message.refresh_from_db()
    assert message.token_count == 5


@pytest.mark.django_db(transaction=True)
def test_a_non_durable_write_changes_only_its_own_commit() -> None:
    with execute("SHOW synchronous_commit", [], durable=False) as cursor:
        assert cursor.fetchone() == ("off",)
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone() == ("on",)


def test_insert_under_lock_inserts_only_when_the_row_is_found(
    tenant: Tenant,
) -> None:
    thread = Thread.objects.create(project=tenant.project)
    lock = (
        f'SELECT id FROM "{Thread._meta.db_table}" WHERE id = %s',
        [thread.pk],
    )
    found = _message(thread, "under the lock")
    assert insert_under_lock(found, lock)
    assert Message.objects.filter(pk=found.pk).exists()
    missing = _message(thread, "no row to lock")
    assert not insert_under_lock(missing, (lock[0], ["thread_missing"]))
    assert not Message.objects.filter(pk=missing.pk).exists()


def test_select_one_reads_a_row_as_a_query_would(tenant: Tenant) -> None:
    thread = Thread.objects.create(project=tenant.project, metadata={"k": "v"})
    found = select_one(Thread, id=thread.pk, project_id=tenant.project.id)
    assert isinstance(found, Thread) and found.pk == thread.pk
    assert found.metadata == {"k": "v"}  # JSON decoded, as the ORM does
    assert found.created_at == Thread.objects.get(pk=thread.pk).created_at
    assert not found._state.adding  # a saved row: save() updates it
    # Every equality must hold: another project's id finds nothing.
    assert select_one(Thread, id=thread.pk, project_id="proj_other") is None
