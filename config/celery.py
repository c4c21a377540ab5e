"""The Celery app. Postgres is the source of truth; the broker only wakes workers."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("agents")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
