"""The Django project: settings, URLs, ASGI/WSGI entry points, the Celery app.

Named ``config`` and not ``platform``: a top-level ``platform`` package hides
Python's standard-library module of that name (``uuid``, Celery and pytest
import it), so the project breaks on Python 3.11. ``tests/test_layout.py``
keeps every top-level package name out of ``sys.stdlib_module_names``.
"""

from __future__ import annotations

from config.celery import app as celery_app

__all__ = ["celery_app"]
