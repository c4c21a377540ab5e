"""pytest: the base settings against the embedded PostgreSQL, faster hashing."""

from __future__ import annotations

import os
import tempfile

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The live server and worker inherit the suite's directory through FILES_DIR
# (tests/conftest.py), so a test can see what the server stored.
MEDIA_ROOT = os.environ.get("FILES_DIR") or tempfile.mkdtemp(
    prefix="agents-test-files-"
)
