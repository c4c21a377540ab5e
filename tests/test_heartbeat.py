"""The worker process's one heartbeat thread stamps every run it holds."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from assistants.models import Run, RunStatus, Thread
from assistants.runs.heartbeat import _Heartbeats
from tests.conftest import Tenant, make_tenant


def _run(tenant: Tenant, status: str, worker: str) -> Run:
    old = timezone.now() - timedelta(hours=1)
    return Run.objects.create(
        project=tenant.project,
        thread=Thread.objects.create(project=tenant.project),
        assistant_id="asst_test",
        model="fake-model",
        status=status,
        worker=worker,
        heartbeat_at=old,
    )


def test_one_update_stamps_the_held_active_runs_of_their_worker(
    tenant: Tenant,
) -> None:
    mine = _run(tenant, RunStatus.IN_PROGRESS, "w1")
    cancelling = _run(tenant, RunStatus.CANCELLING, "w1")
    other_worker = _run(tenant, RunStatus.IN_PROGRESS, "w2")  # re-claimed
    ended = _run(tenant, RunStatus.COMPLETED, "w1")
    not_held = _run(tenant, RunStatus.IN_PROGRESS, "w1")
    before = {r.id: r.heartbeat_at for r in (mine, other_worker, not_held)}

    held = {r.id: "w1" for r in (mine, cancelling, other_worker, ended)}
    assert _Heartbeats.stamp(held) == 2

    for run in (mine, cancelling, other_worker, ended, not_held):
        run.refresh_from_db()
    assert mine.heartbeat_at > before[mine.id]
    assert cancelling.heartbeat_at > before[mine.id]
    assert other_worker.heartbeat_at == before[other_worker.id]
    assert not_held.heartbeat_at == before[not_held.id]


@pytest.fixture
def transactional_tenant(transactional_db: Any) -> Tenant:
    """Committed rows: the heartbeat thread has a connection of its own."""
    return make_tenant()


def test_the_thread_stamps_until_released(
    settings: Any, transactional_tenant: Tenant
) -> None:
    settings.RUN_HEARTBEAT_SECONDS = 0.05
    run = _run(transactional_tenant, RunStatus.IN_PROGRESS, "w1")
    beats = _Heartbeats()
    beats.hold(run.id, "w1")
    try:
        deadline = time.monotonic() + 10
        first = run.heartbeat_at
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.heartbeat_at > first:
                break
            time.sleep(0.02)
        assert run.heartbeat_at > first
    finally:
        beats.release(run.id)
    assert beats.held() == {}


def test_the_reaper_wakes_a_lost_queued_run_again_and_restamps_it(
    tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued run whose wake-up was lost (no worker took it within
    RUN_REQUEUE_AFTER_SECONDS) is woken again, its clock restarted so that
    the next sweep does not wake it twice."""
    from assistants import tasks
    from assistants.runs.reaper import runs_reap

    woken: list[str] = []
    monkeypatch.setattr(tasks, "run_wake", lambda run_id, **_: woken.append(run_id))
    lost = _run(tenant, RunStatus.QUEUED, "")
    before = lost.heartbeat_at
    report = runs_reap()
    assert woken.count(lost.id) == 1 and report.rewoken >= 1
    lost.refresh_from_db()
    assert lost.status == RunStatus.QUEUED and lost.heartbeat_at > before
    woken.clear()
    runs_reap()
    assert lost.id not in woken
