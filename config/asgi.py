"""ASGI entry point: Django behind the body-size guard."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
# Tells the settings this is the web process: it uses a connection pool.
os.environ.setdefault("AGENTS_ASGI", "1")
django_application = get_asgi_application()

from core.asgi_limits import BodySizeLimit  # noqa: E402  (needs settings loaded)

application = BodySizeLimit(django_application)
