"""ASGI entry point: Django behind the body-size guard."""

from __future__ import annotations

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
# Tells the settings this is the web process: it uses a connection pool.
os.environ.setdefault("AGENTS_ASGI", "1")
django.setup(set_prefix=False)

# After setup: both need settings and the app registry.
from core.asgi_handler import SyncChainASGIHandler  # noqa: E402
from core.asgi_limits import BodySizeLimit  # noqa: E402

application = BodySizeLimit(SyncChainASGIHandler())
