"""The Celery app. Postgres is the source of truth; the broker only wakes workers."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_init

from core.broker import (
    cap_broker_reconnect_interval,
    patch_redis_detached_channel,
    reuse_channel_clients,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Before any connection exists: a Redis restart must not end the worker,
# and the worker must be back soon after Redis (core/broker.py).
patch_redis_detached_channel()
cap_broker_reconnect_interval()
reuse_channel_clients()

app = Celery("agents")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _lower_priority(**_: object) -> None:
    """WORKER_NICE (settings): before the pool starts, so that prefork
    children and pool threads inherit it."""
    from django.conf import settings

    if settings.WORKER_NICE > 0:
        os.nice(settings.WORKER_NICE)


# The request id in task headers, the worker's log format, its metrics files.
import core.observability.celery  # noqa: E402, F401
