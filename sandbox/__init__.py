"""Runs untrusted code in a container and returns a result dataclass.

A plain Python library that never imports Django (see the code-interpreter
issue); the platform's ``tools/code_interpreter`` plugin calls it.

    manager = SessionManager(SandboxConfig())
    result = manager.session_for("proj:thread").run("x = 1; print(x)")
"""

from __future__ import annotations

from sandbox.config import SandboxConfig
from sandbox.manager import SessionManager, docker_client
from sandbox.session import (
    ExecResult,
    SandboxError,
    SandboxFile,
    SandboxUnavailable,
    Session,
    SessionDead,
)

__all__ = [
    "ExecResult",
    "SandboxConfig",
    "SandboxError",
    "SandboxFile",
    "SandboxUnavailable",
    "Session",
    "SessionDead",
    "SessionManager",
    "docker_client",
]
