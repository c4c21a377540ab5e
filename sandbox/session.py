"""One sandbox container with a live Python kernel (sandbox/image/kernel.py).

The host talks to the kernel over the container's attached stdin/stdout: one
JSON line per request and per reply. A connection is attached per call (a
few milliseconds on the local socket), so whichever worker process serves a
thread's next run can use the same container; no socket is left attached for
the container's output to pile up in.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import socket
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container
from docker.types import LogConfig, Ulimit

from sandbox.config import SANDBOX_UID, SandboxConfig

# Protocol replies larger than this end the session (a program writing to
# the kernel's private descriptor, or a runaway reply).
MAX_REPLY_BYTES = 256 * 1024 * 1024


class SandboxError(Exception):
    """The sandbox could not run the call (no engine, no image, a dead
    container). Not raised for errors in the user's code: those are in
    ``ExecResult.error``."""


class SandboxUnavailable(SandboxError):
    """No Docker engine answers, or the sandbox image is missing."""


class SessionDead(SandboxError):
    """The session's container stopped; its state is gone."""


@dataclass(frozen=True)
class SandboxFile:
    path: str  # as the code sees it: /mnt/data/<name>
    size: int


@dataclass
class ExecResult:
    stdout: str = ""
    stderr: str = ""
    # The error's traceback (or a sandbox message) when the code failed.
    error: str | None = None
    error_name: str | None = None
    timed_out: bool = False
    # The kernel died during the call (timeout kill, out of memory, exit);
    # the session is gone and the next call starts a new one.
    session_lost: bool = False
    images: list[bytes] = field(default_factory=list)
    # Files in /mnt/data created or changed by this call.
    files: list[SandboxFile] = field(default_factory=list)
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def kernel_idle(config: SandboxConfig) -> int:
    """Seconds a session's kernel waits for a call before it exits by
    itself (the host reaper normally removes it first)."""
    return int(config.idle_seconds) + 60


def container_kwargs(
    config: SandboxConfig, idle: float | None = None
) -> dict[str, Any]:
    """The hardening: every container of the platform is created with this.
    ``idle``: the kernel's own idle exit, ``kernel_idle(config)`` by default."""
    return {
        "image": config.image,
        "command": [str(int(idle if idle is not None else kernel_idle(config)))],
        "detach": True,
        "stdin_open": True,
        "tty": False,
        "user": f"{SANDBOX_UID}:{SANDBOX_UID}",
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {
            "/tmp": f"size={config.tmp_mb}m,mode=1777,nosuid,nodev",
            "/mnt/data": (
                f"size={config.data_mb}m,uid={SANDBOX_UID},gid={SANDBOX_UID},"
                "mode=0755,nosuid,nodev,noexec"
            ),
        },
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": f"{config.memory_mb}m",
        "memswap_limit": f"{config.memory_mb}m",
        "nano_cpus": int(config.cpus * 1e9),
        "pids_limit": config.pids,
        "ulimits": [
            Ulimit(name="nofile", soft=config.open_files, hard=config.open_files),
            Ulimit(name="core", soft=0, hard=0),
        ],
        # Nothing of the host's environment: only the image's own ENV.
        "environment": {"AGENTS_OUTPUT_CAP": str(config.output_cap)},
        "hostname": "sandbox",
        # The image's tini is PID 1 (Docker's --init is a host bind mount).
        "init": False,
        # Output nobody is attached to is dropped, not logged on the host.
        "log_config": LogConfig(type=LogConfig.types.NONE),
        "ipc_mode": "private",
        "volumes": {},
        "auto_remove": False,
    }


class Session:
    """A running container and its kernel. Not thread-safe: the caller runs
    one call at a time (a thread has at most one active run)."""

    def __init__(
        self,
        client: docker.DockerClient,
        container: Container,
        config: SandboxConfig,
    ) -> None:
        self.client = client
        self.container = container
        self.config = config
        self.key: str | None = None
        self.created = time.time()
        self.last_used = time.monotonic()
        self.dead = False
        # Paths copied in (by the caller's own ids); see ``put_file``.
        self.copied: dict[str, str] = {}
        # Request ids unique across sessions, so that a reply can never be
        # taken for another session's.
        self._prefix = uuid.uuid4().hex[:12]
        self._ids = itertools.count(1)

    @property
    def id(self) -> str:
        return str(self.container.id)

    @property
    def name(self) -> str:
        return str(self.container.name)

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def start(
        cls,
        client: docker.DockerClient,
        config: SandboxConfig,
        *,
        name: str,
        labels: dict[str, str],
        idle: float | None = None,
    ) -> Session:
        """Create and start a container and wait for its kernel.

        Raises ``SandboxUnavailable`` when the image is missing and
        ``SandboxError`` when the kernel does not come up."""
        try:
            container = client.containers.create(
                name=name, labels=labels, **container_kwargs(config, idle)
            )
        except docker.errors.ImageNotFound as exc:
            raise SandboxUnavailable(
                f"the sandbox image {config.image} is missing; "
                "build it with `make sandbox-image`"
            ) from exc
        session = cls(client, container, config)
        try:
            # Attach before starting so that the ready line is not missed.
            sock = session._attach()
            try:
                container.start()
                reply = session._read_reply(sock, 0, time.monotonic() + 30)
            except (TimeoutError, SessionDead) as exc:
                raise SandboxError(
                    f"the sandbox kernel did not start: {exc!r}"
                ) from exc
            finally:
                sock.close()
            if not reply.get("ready"):
                raise SandboxError(f"the sandbox kernel did not start: {reply}")
        except BaseException:
            session.remove()
            raise
        return session

    def alive(self) -> bool:
        if self.dead:
            return False
        try:
            self.container.reload()
        except docker.errors.NotFound:
            self.dead = True
            return False
        if self.container.status != "running":
            self.dead = True
        return not self.dead

    def remove(self) -> None:
        """Kill and remove the container (every process in it ends)."""
        self.dead = True
        with contextlib.suppress(FileNotFoundError):
            (Path(self.config.state_dir) / self.name).unlink()
        try:
            self.container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            # "removal already in progress" is fine; anything else is not.
            if "in progress" not in str(exc):
                raise

    # -- the protocol ------------------------------------------------------

    def _attach(self) -> socket.socket:
        raw = self.client.api.attach_socket(
            self.container.id, params={"stdin": 1, "stdout": 1, "stream": 1}
        )
        sock: socket.socket = getattr(raw, "_sock", raw)
        return sock

    def _read_reply(
        self,
        sock: socket.socket,
        request_id: int | str,
        deadline: float,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        """Read multiplexed frames until the kernel's reply to
        ``request_id``. Raises TimeoutError at ``deadline`` and SessionDead
        when the stream ends. Once ``should_stop()`` is true the kernel gets
        SIGINT (the user's code stops, the session lives on)."""
        buffer = bytearray()
        pending = b""
        interrupted = False
        while True:
            while len(pending) < 8 or len(pending) < 8 + _frame_size(pending):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(min(remaining, 0.25) if should_stop else remaining)
                try:
                    chunk = sock.recv(1 << 20)
                except TimeoutError:
                    if should_stop and not interrupted and should_stop():
                        interrupted = True
                        self._interrupt()
                        deadline = min(
                            deadline, time.monotonic() + self.config.kill_grace_seconds
                        )
                    continue
                except OSError as exc:
                    raise SessionDead(str(exc)) from exc
                if not chunk:
                    raise SessionDead("the kernel's stream closed")
                pending += chunk
            size = _frame_size(pending)
            stream, payload = pending[0], pending[8 : 8 + size]
            pending = pending[8 + size :]
            if stream != 1:
                continue  # the kernel's own stderr: interpreter crashes only
            buffer += payload
            if len(buffer) > MAX_REPLY_BYTES:
                raise SessionDead("the kernel's reply is too large")
            while b"\n" in buffer:
                line, _, rest = bytes(buffer).partition(b"\n")
                buffer = bytearray(rest)
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                if isinstance(message, dict) and message.get("id") == request_id:
                    return message

    def _interrupt(self) -> None:
        # If it stopped meanwhile, the read sees the stream end.
        with contextlib.suppress(docker.errors.APIError):
            self.container.kill(signal="SIGINT")

    def _call(
        self,
        request: dict[str, Any],
        timeout: float,
        should_stop: Callable[[], bool] | None = None,
    ) -> dict[str, Any]:
        if self.dead:
            raise SessionDead("the session has ended")
        request_id = f"{self._prefix}-{next(self._ids)}"
        request["id"] = request_id
        self.last_used = time.monotonic()
        self.touch()
        try:
            sock = self._attach()
        except docker.errors.APIError as exc:
            self.dead = True
            raise SessionDead(f"cannot reach the sandbox: {exc}") from exc
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            return self._read_reply(
                sock, request_id, time.monotonic() + timeout, should_stop
            )
        finally:
            sock.close()

    def touch(self) -> None:
        """Record the last use where every manager on this host sees it."""
        path = Path(self.config.state_dir) / self.name
        try:
            path.touch()
        except FileNotFoundError:
            os.makedirs(self.config.state_dir, exist_ok=True)
            path.touch()

    def set_idle(self, seconds: float) -> None:
        """Change how long the kernel waits for a call before exiting."""
        reply = self._call({"op": "idle", "seconds": seconds}, 10)
        if "fault" in reply:
            raise SandboxError(f"sandbox protocol fault: {reply['fault']}")

    def ping(self) -> bool:
        try:
            return bool(self._call({"op": "ping"}, 5).get("pong"))
        except (SandboxError, TimeoutError):
            return False

    def run(
        self,
        code: str,
        timeout: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ExecResult:
        """Run ``code`` in the session's namespace.

        Errors in the code, a timeout and the kernel's death are reported in
        the result (``session_lost`` says the state is gone); raises
        ``SessionDead`` if the session had already ended. ``should_stop`` is
        polled while the code runs: once true the code is interrupted
        (``KeyboardInterrupt``) and the session kept."""
        if self.dead:
            raise SessionDead("the session has ended")
        limit = timeout if timeout is not None else self.config.timeout_seconds
        started = time.monotonic()
        try:
            reply = self._call(
                {"op": "exec", "code": code, "timeout": limit},
                limit + self.config.kill_grace_seconds,
                should_stop,
            )
        except TimeoutError:
            self.remove()
            return ExecResult(
                error=(
                    f"Execution timed out after {limit:g} seconds and did not "
                    "stop, so the sandbox was restarted: variables, imports "
                    "and files of earlier calls are lost."
                ),
                error_name="TimeoutError",
                timed_out=True,
                session_lost=True,
                duration_ms=(time.monotonic() - started) * 1000,
            )
        except SessionDead:
            return self._death_result(started)
        if "fault" in reply:
            raise SandboxError(f"sandbox protocol fault: {reply['fault']}")
        error = reply.get("error")
        message = None
        if error:
            message = error.get("traceback") or f"{error['name']}: {error['value']}"
            if reply.get("timed_out"):
                message = (
                    f"TimeoutError: execution timed out after {limit:g} seconds "
                    "(the session's variables are kept)"
                )
        return ExecResult(
            stdout=reply.get("stdout", ""),
            stderr=reply.get("stderr", ""),
            error=message,
            error_name=error["name"] if error else None,
            timed_out=bool(reply.get("timed_out")),
            images=[base64.b64decode(image) for image in reply.get("images", [])],
            files=[SandboxFile(f["path"], int(f["size"])) for f in reply["files"]],
            duration_ms=float(reply.get("duration_ms", 0.0)),
        )

    def _death_result(self, started: float) -> ExecResult:
        reason = "the Python process of the sandbox exited"
        try:
            self.container.reload()
            state = self.container.attrs.get("State", {})
            if state.get("OOMKilled"):
                reason = (
                    f"the sandbox ran out of memory (limit {self.config.memory_mb}"
                    " MB) and was stopped"
                )
            elif state.get("ExitCode") is not None and not state.get("Running"):
                reason += f" (exit code {state.get('ExitCode')})"
        except docker.errors.NotFound:
            pass
        self.remove()
        return ExecResult(
            error=(
                f"{reason}: variables, imports and files of earlier calls are "
                "lost; the next call starts a new session."
            ),
            error_name="SandboxRestarted",
            session_lost=True,
            duration_ms=(time.monotonic() - started) * 1000,
        )

    def put_file(self, name: str, data: bytes) -> str:
        """Write ``data`` as /mnt/data/<name>; returns the path the code
        sees. Raises SandboxError when the file is too large."""
        if len(data) > self.config.max_file_bytes:
            raise SandboxError(
                f"{name} is {len(data)} bytes; the sandbox takes files up to "
                f"{self.config.max_file_bytes} bytes"
            )
        payload = {"op": "put", "path": name, "data": base64.b64encode(data).decode()}
        reply = self._call(payload, 60)
        if "fault" in reply:
            raise SandboxError(f"could not copy {name} in: {reply['fault']}")
        return str(reply["path"])

    def get_file(self, path: str) -> bytes:
        """The content of a file under /mnt/data (absolute or relative)."""
        relative = path.removeprefix("/mnt/data/")
        reply = self._call(
            {"op": "get", "path": relative, "limit": self.config.max_file_bytes}, 60
        )
        if "fault" in reply:
            raise SandboxError(f"could not copy {path} out: {reply['fault']}")
        return base64.b64decode(reply["data"])


def _frame_size(header: bytes) -> int:
    if len(header) < 8:
        return 0
    size: int = struct.unpack(">I", header[4:8])[0]
    return size
