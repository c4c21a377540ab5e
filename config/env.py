"""Every setting a user may change, read from the environment in one place.

A secret may also come from a file: ``SECRET_KEY_FILE=/run/secrets/key`` wins
over ``SECRET_KEY`` (the Docker/Kubernetes secrets convention).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()


def secret(name: str, default: str = "") -> str:
    """Read ``NAME`` or, when ``NAME_FILE`` is set, the stripped file content."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return str(env.str(name, default=default))


DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / ".data"))).resolve()


def database(name: str, default: str) -> dict[str, object]:
    """Parse a database URL, accepting libpq's percent-encoded socket paths.

    ``postgres://user@%2Fvar%2Frun%2Fpostgresql/db`` is how libpq spells a unix
    socket directory; django-environ leaves the host encoded.
    """
    config = dict(env.db_url(name, default=default))
    config["HOST"] = unquote(str(config.get("HOST", "")))
    return config
