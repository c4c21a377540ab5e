"""core.db: several writes in one statement, all or none; values the
database chose are loaded on access; a non-durable write is that alone."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import IntegrityError, connection, transaction
from psycopg.pq import TransactionStatus

from assistants.models import Assistant, Message, Run, Thread
from assistants.selectors import active_run_sql, thread_row_sql
from core.db import (
    Sql,
    Statement,
    execute,
    insert_after_lock,
    insert_sql,
    insert_together,
    insert_under_lock,
    select_one,
    update_sql,
    write_together,
)
from tests.conftest import TEST_MODEL, Tenant, ensure_test_model, make_tenant


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


def _active_run(tenant: Tenant, thread: Thread) -> Run:
    ensure_test_model()
    assistant = Assistant.objects.create(project=tenant.project, model=TEST_MODEL)
    return Run.objects.create(
        project=tenant.project,
        thread=thread,
        assistant_id=assistant.pk,
        model=TEST_MODEL,
        status="queued",
    )


def _locked_insert_setup() -> tuple[Tenant, Thread, Statement, Statement]:
    """A new tenant's thread, and what message create passes to
    ``insert_after_lock``: the thread's row to lock, the active-run check."""
    tenant = make_tenant()
    thread = Thread.objects.create(project=tenant.project)
    lock = thread_row_sql(project=tenant.project, thread_id=thread.pk)
    return tenant, thread, lock, active_run_sql(thread_id=thread.pk)


@pytest.mark.django_db(transaction=True)
def test_insert_after_lock_inserts_unless_the_check_finds_a_row() -> None:
    tenant, thread, lock, unless = _locked_insert_setup()
    first = _message(thread, "no run on the thread")
    assert insert_after_lock(first, lock, unless) is True
    assert Message.objects.filter(pk=first.pk).exists()
    assert first.seq == Message.objects.get(pk=first.pk).seq  # loaded on access
    # Another project's thread: the lock finds no row.
    stranger = _message(thread, "not yours")
    other = thread_row_sql(project=make_tenant().project, thread_id=thread.pk)
    assert insert_after_lock(stranger, other, unless) is False
    # An active run: the check finds it.
    _active_run(tenant, thread)
    blocked = _message(thread, "a run is active")
    assert insert_after_lock(blocked, lock, unless) is False
    assert not Message.objects.filter(pk__in=[stranger.pk, blocked.pk]).exists()
    # Inside a transaction it does nothing: BEGIN and COMMIT are the caller's.
    with transaction.atomic():
        assert insert_after_lock(_message(thread, "x"), lock, unless) is None


@pytest.mark.django_db(transaction=True)
def test_insert_after_lock_leaves_no_open_transaction_after_an_error() -> None:
    _, thread, lock, unless = _locked_insert_setup()
    kept = _message(thread, "kept")
    kept.save()
    clash = _message(thread, "same id")
    clash.pk = kept.pk
    with pytest.raises(IntegrityError):
        insert_after_lock(clash, lock, unless)
    # The aborted transaction was rolled back: the connection works, and
    # holds no lock on the thread.
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection.info.transaction_status == TransactionStatus.IDLE
    assert insert_after_lock(_message(thread, "after"), lock, unless) is True


@pytest.mark.django_db(transaction=True)
def test_insert_after_lock_sees_a_run_started_while_it_waited() -> None:
    # The race the two statements exist for: a run is inserted by the
    # lock's holder and committed while the message waits for the lock. A
    # check in the statement that waited would read the snapshot from
    # before; the INSERT's own snapshot sees the run.
    tenant, thread, lock, unless = _locked_insert_setup()
    holding, release = threading.Event(), threading.Event()

    def start_run() -> None:
        try:
            with transaction.atomic():
                Thread.objects.select_for_update().get(pk=thread.pk)
                _active_run(tenant, thread)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    starter = threading.Thread(target=start_run)
    starter.start()
    assert holding.wait(10)
    message = _message(thread, "while a run starts")
    result: list[bool | None] = []
    waiter = threading.Thread(
        target=lambda: (
            result.append(insert_after_lock(message, lock, unless)),
            connection.close(),
        )
    )
    waiter.start()
    time.sleep(0.3)  # the message waits on the thread's lock
    assert waiter.is_alive()
    release.set()
    starter.join(10)
    waiter.join(10)
    assert result == [False]
    assert not Message.objects.filter(pk=message.pk).exists()


def test_a_compare_and_swap_finds_its_row_by_primary_key(tenant: Tenant) -> None:
    """The claim's UPDATE must not walk the reaper's partial index on the
    runs' status: that index holds every active run (and, between vacuums,
    the dead entries of finished ones), so a claim through it cost time in
    proportion to the runs in flight."""
    from assistants.runs.state import _update

    runs = []
    for _ in range(30):
        thread = Thread.objects.create(project=tenant.project)
        runs.append(_active_run(tenant, thread))
    # The statistics of a quiet moment (no active run), then a burst: the
    # planner then thinks the partial index nearly empty.
    ids = [run.pk for run in runs]
    Run.objects.filter(pk__in=ids).update(status="completed")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE assistants_run")
    Run.objects.filter(pk__in=ids).update(status="queued")
    sql, params = _update(
        runs[0].pk,
        source=["queued"],
        target="in_progress",
        now=None,
        fields={"worker": "w"},
    )
    with connection.cursor() as cursor:
        # A table this small is read whole; the choice under test is between
        # its indexes, which a real table's size forces.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "assistants_run_pkey" in plan, plan
    assert "run_active_heartbeat" not in plan, plan
    # The same compare-and-swap as before: only from the listed statuses.
    assert write_together([], (sql, params)) == 1
    assert write_together([], (sql, params)) == 0
