from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "core"
    verbose_name = "Tenancy, keys and models"

    def ready(self) -> None:
        # Registers the OpenAPI extension for our authentication class.
        from core import schema_extensions  # noqa: F401
