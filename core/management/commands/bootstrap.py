"""Migrate, then make sure the default project, its key and models exist."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand

from core.models import ApiKey
from core.services.keys import api_key_create, api_key_ensure
from core.services.models import language_models_seed_from_env
from core.services.tenancy import default_project_ensure


class Command(BaseCommand):
    help = "Apply migrations, ensure the default project, API key and models."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--no-migrate", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        project = default_project_ensure()
        raw = os.environ.get("BOOTSTRAP_API_KEY", "").strip()
        if raw:
            _key, created = api_key_ensure(project=project, raw=raw, name="bootstrap")
            if created:
                self.stdout.write("[agents] BOOTSTRAP_API_KEY registered.")
        elif not ApiKey.objects.filter(
            project=project, revoked_at__isnull=True
        ).exists():
            issued = api_key_create(project=project, name="generated on first start")
            # Printed once: only the hash is stored.
            sys.stdout.write(
                "\n[agents] Created an API key for the default project. It is shown "
                f"only this once:\n\n    {issued.raw}\n\n"
            )
        self._ensure_admin()
        model = language_models_seed_from_env()
        if model is not None:
            self.stdout.write(f"[agents] model '{model.id}' at {model.base_urls}")

    def _ensure_admin(self) -> None:
        """Create the operators' admin login when BOOTSTRAP_ADMIN_PASSWORD is set."""
        password = os.environ.get("BOOTSTRAP_ADMIN_PASSWORD", "")
        if not password:
            return
        from django.contrib.auth import get_user_model

        username = os.environ.get("BOOTSTRAP_ADMIN_USER", "admin")
        users = get_user_model()
        if not users.objects.filter(username=username).exists():
            users.objects.create_superuser(username=username, password=password)
            self.stdout.write(f"[agents] admin user '{username}' created.")
