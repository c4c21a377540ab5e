"""pytest: the base settings against the embedded PostgreSQL, faster hashing."""

from __future__ import annotations

import tempfile

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = tempfile.mkdtemp(prefix="agents-test-files-")
