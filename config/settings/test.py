"""pytest: the base settings against the embedded PostgreSQL, faster hashing."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

from config.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# The live server and worker inherit the suite's directory through FILES_DIR
# (tests/conftest.py), so a test can see what the server stored.
MEDIA_ROOT = os.environ.get("FILES_DIR") or ""
if not MEDIA_ROOT:
    # A process of its own (no suite around it): a directory of its own,
    # removed when it exits, so runs of the suite leave no trail in /tmp.
    MEDIA_ROOT = tempfile.mkdtemp(prefix="agents-test-files-")
    atexit.register(shutil.rmtree, MEDIA_ROOT, ignore_errors=True)

# Workers started by tests do not need the embedding model at start (the
# tests that use it load it on demand).
EMBEDDINGS_PRELOAD = False
