"""Nothing stays stuck: the periodic sweep over active runs.

- in_progress/cancelling runs whose worker stopped heart-beating: re-queued
  (up to RUN_MAX_ATTEMPTS claims), cancelled, or failed with server_error;
- requires_action runs past ``expires_at``: expired;
- queued runs whose wake-up was lost (broker restart, worker killed before
  it claimed) or never sent (the broker was down when the run was created:
  ``heartbeat_at`` is stamped at creation, so such a run is due here too):
  enqueued again. A duplicate wake-up is harmless: the claim is a
  compare-and-swap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from assistants.api.v1.serializers import run_to_wire
from assistants.models import Run, RunStatus, RunStep
from assistants.runs import events
from assistants.runs.state import transition
from core.db import update_sql, write_together

logger = logging.getLogger(__name__)


@dataclass
class ReapReport:
    requeued: int = 0
    failed: int = 0
    cancelled: int = 0
    expired: int = 0
    rewoken: int = 0


def _publish(run_id: str, event: str) -> None:
    run = Run.objects.filter(pk=run_id).first()
    if run is not None:
        events.publish(run_id, event, run_to_wire(run))


def runs_reap() -> ReapReport:
    from assistants.tasks import run_wake

    now = timezone.now()
    report = ReapReport()
    stale = now - timedelta(seconds=float(settings.RUN_HEARTBEAT_TIMEOUT_SECONDS))
    max_attempts = int(settings.RUN_MAX_ATTEMPTS)

    for run in Run.objects.filter(status=RunStatus.CANCELLING, heartbeat_at__lt=stale):
        RunStep.objects.filter(run=run, status=RunStep.Status.IN_PROGRESS).update(
            status=RunStep.Status.CANCELLED, cancelled_at=now
        )
        if transition(
            run.id, source=[RunStatus.CANCELLING], target=RunStatus.CANCELLED, now=now
        ):
            report.cancelled += 1
            _publish(run.id, "thread.run.cancelled")

    for run in Run.objects.filter(status=RunStatus.IN_PROGRESS, heartbeat_at__lt=stale):
        if run.attempts < max_attempts:
            if transition(
                run.id,
                source=[RunStatus.IN_PROGRESS],
                target=RunStatus.QUEUED,
                heartbeat_at=now,
                worker="",
            ):
                logger.warning(
                    "run %s: worker %s stopped; re-queued", run.id, run.worker
                )
                report.requeued += 1
                run_wake(run.id)
            continue
        error = {
            "code": "server_error",
            "message": f"The run's worker stopped responding {run.attempts} "
            "times; giving up.",
        }
        RunStep.objects.filter(run=run, status=RunStep.Status.IN_PROGRESS).update(
            status=RunStep.Status.FAILED, failed_at=now, last_error=error
        )
        if transition(
            run.id,
            source=[RunStatus.IN_PROGRESS],
            target=RunStatus.FAILED,
            now=now,
            last_error=error,
        ):
            report.failed += 1
            _publish(run.id, "thread.run.failed")

    for run in Run.objects.filter(status=RunStatus.REQUIRES_ACTION, expires_at__lt=now):
        RunStep.objects.filter(run=run, status=RunStep.Status.IN_PROGRESS).update(
            status=RunStep.Status.EXPIRED, expired_at=now
        )
        if transition(
            run.id,
            source=[RunStatus.REQUIRES_ACTION],
            target=RunStatus.EXPIRED,
            now=now,
        ):
            report.expired += 1
            _publish(run.id, "thread.run.expired")

    lost = now - timedelta(seconds=float(settings.RUN_REQUEUE_AFTER_SECONDS))
    for run_id in Run.objects.filter(
        status=RunStatus.QUEUED, heartbeat_at__lt=lost
    ).values_list("id", flat=True):
        # core.db's compare-and-swap: by primary key, not through the partial
        # status index (which holds every queued run: many, right when
        # wake-ups get lost under overload).
        write_together(
            [],
            update_sql(
                Run,
                run_id,
                {"heartbeat_at": now},
                where_in=("status", [RunStatus.QUEUED]),
            ),
        )
        report.rewoken += 1
        run_wake(run_id)
    return report
