"""The sandbox's limits and where its containers come from."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field

# The image's non-root user (sandbox/image/Dockerfile.local).
SANDBOX_UID = 10001


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandbox container. Defaults are the platform's defaults
    (the ``SANDBOX_*`` settings in the README)."""

    image: str = "agents-sandbox:latest"
    memory_mb: int = 1024
    cpus: float = 1.0
    pids: int = 128
    tmp_mb: int = 64
    data_mb: int = 256
    # Per call: a call longer than this is stopped (the kernel interrupts it;
    # if it does not stop within ``kill_grace_seconds`` the container is
    # killed and the session's state is lost).
    timeout_seconds: float = 60.0
    kill_grace_seconds: float = 2.0
    # A session unused for this long is stopped and removed.
    idle_seconds: float = 600.0
    # Sessions started ahead of time per SessionManager (0: none).
    pool_size: int = 2
    # Bytes of stdout (and of stderr) kept per call.
    output_cap: int = 64 * 1024
    # Largest file copied in or out.
    max_file_bytes: int = 64 * 1024 * 1024
    open_files: int = 1024
    # Where managers on this host record when a session was last used (one
    # empty file per container), so any worker can reap idle sessions. One
    # directory per Docker engine: every platform process using the engine
    # must see the same one (a session missing here counts as idle since
    # its container was created).
    state_dir: str = field(
        default_factory=lambda: os.path.join(
            tempfile.gettempdir(), "agents-sandbox-last-use"
        )
    )
    # Labels every container of this platform carries; the reaper's filter.
    label: str = "agents.sandbox"
    name_prefix: str = "agents-sbx"
