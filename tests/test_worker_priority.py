"""WORKER_NICE: a worker lowers its own CPU priority as it starts."""

from __future__ import annotations

import os
import subprocess
import sys

from django.conf import settings

SNIPPET = """
import os
import django
django.setup()
from celery.signals import worker_init
import config.celery
before = os.getpriority(os.PRIO_PROCESS, 0)
worker_init.send(sender=None)
print(before, os.getpriority(os.PRIO_PROCESS, 0))
"""


def _priorities(nice: str) -> tuple[int, int]:
    env = {
        **os.environ,
        "WORKER_NICE": nice,
        "DJANGO_SETTINGS_MODULE": os.environ.get(
            "DJANGO_SETTINGS_MODULE", "config.settings.local"
        ),
    }
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    return int(out[-2]), int(out[-1])


def test_the_worker_lowers_its_priority_by_worker_nice() -> None:
    before, after = _priorities("3")
    assert after == min(19, before + 3)
    before, after = _priorities("0")
    assert after == before
