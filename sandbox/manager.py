"""Sessions by key, a warm pool, and the reaper.

A key (the platform uses ``<project id>:<thread id>``) owns at most one
container, named after a hash of the key. Taking a pooled container renames
it to that name: Docker refuses a second container of one name, so two
processes racing for a key end up sharing the winner's container and never
two keys one container. Pool containers are fresh and never used before.

Ownership is in labels: ``agents.sandbox=1`` on every container,
``agents.sandbox.owner=<host>:<pid>`` on the process that started it (pool
containers of a dead process are orphans). Last use is the mtime of
``<state_dir>/<container name>``, so any manager on the host can reap idle
sessions, including those of a crashed worker.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors

from sandbox.config import SandboxConfig
from sandbox.session import (
    ExecResult,
    SandboxError,
    SandboxUnavailable,
    Session,
    SessionDead,
    kernel_idle,
)

logger = logging.getLogger(__name__)

# A pooled kernel exits after this long without a ping; its owner pings it
# every POOL_PING_SECONDS, so the pool of a crashed process stops by itself.
POOL_KERNEL_IDLE = 120.0
POOL_PING_SECONDS = 30.0


def docker_client(timeout: float = 60) -> docker.DockerClient:
    """A client from the environment (``DOCKER_HOST`` or the local socket).

    Raises SandboxUnavailable when no engine answers."""
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except docker.errors.DockerException as exc:
        raise SandboxUnavailable(
            "the code interpreter needs a Docker engine and none answers "
            f"({exc.__class__.__name__}: {exc})"
        ) from exc
    return client


class SessionManager:
    """Hands out one session per key. Thread-safe."""

    def __init__(
        self, config: SandboxConfig, client: docker.DockerClient | None = None
    ) -> None:
        self.config = config
        self.client = client or docker_client()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._sessions: dict[str, Session] = {}
        self._pool: collections.deque[Session] = collections.deque()
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = collections.defaultdict(
            threading.Lock
        )
        self._pruned = time.monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._filler: threading.Thread | None = None
        # Counters for the benchmark and the logs.
        self.pool_hits = 0
        self.pool_misses = 0
        # Called with (sessions held, sessions pooled) after either changes:
        # the worker wires it to its metrics (this library stays free of
        # them). Must be cheap and must not raise.
        self.on_change: Callable[[int, int], None] | None = None

    def _report(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self._sessions), len(self._pool))

    # -- names and labels --------------------------------------------------

    def name_for(self, key: str) -> str:
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        return f"{self.config.name_prefix}-{digest}"

    def _labels(self, pool: bool) -> dict[str, str]:
        return {
            self.config.label: "1",
            f"{self.config.label}.owner": self.owner,
            f"{self.config.label}.pool": "1" if pool else "0",
        }

    # -- sessions ----------------------------------------------------------

    def _forget_idle_local(self) -> None:
        """Drop this process's handles on sessions idle for longer than
        ``idle_seconds`` (the reaper removes their containers), so a
        long-lived worker does not keep one per thread ever served."""
        now = time.monotonic()
        if now - self._pruned < 60:
            return
        self._pruned = now
        with self._lock:
            for key, session in list(self._sessions.items()):
                if now - session.last_used > self.config.idle_seconds:
                    del self._sessions[key]
                    lock = self._key_locks.get(key)
                    if lock is not None and not lock.locked():
                        del self._key_locks[key]

    def session_for(self, key: str) -> Session:
        """The live session of ``key``, adopting the container another
        process started for it, else a pooled one, else a new one."""
        self._forget_idle_local()
        with self._lock:
            key_lock = self._key_locks[key]
        with key_lock:
            session = self._sessions.get(key)
            # A session unused for a while may have been reaped by another
            # process: check (one inspect) before handing it out.
            if (
                session is not None
                and not session.dead
                and (
                    time.monotonic() - session.last_used
                    < min(5.0, self.config.idle_seconds / 2)
                    or session.alive()
                )
            ):
                return session
            name = self.name_for(key)
            session = self._adopt(name)
            if session is None:
                session = self._claim_pooled(name)
                if session is not None:
                    self.pool_hits += 1
            if session is None:
                self.pool_misses += 1
                session = self._start(name, pool=False)
            session.key = key
            session.touch()
            self._sessions[key] = session
            self._wake.set()
            self._report()
            return session

    def run(self, key: str, code: str, timeout: float | None = None) -> ExecResult:
        """Run ``code`` in ``key``'s session; a session that died is replaced
        (the result of the call that killed it says so)."""
        session = self.session_for(key)
        try:
            return session.run(code, timeout)
        except SessionDead:
            # It ended between calls (reaped while idle): start afresh.
            self.session_for(key)
            return self._sessions[key].run(code, timeout)

    def close(self, key: str) -> None:
        """End ``key``'s session: its container and every process in it."""
        with self._lock:
            key_lock = self._key_locks[key]
        with key_lock:
            session = self._sessions.pop(key, None)
            if session is None:
                session = self._adopt(self.name_for(key))
            if session is not None:
                session.remove()
                self._forget(session.name)
        self._report()

    def _adopt(self, name: str) -> Session | None:
        try:
            container = self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        session = Session(self.client, container, self.config)
        if session.alive() and session.ping():
            return session
        session.remove()
        return None

    def _start(self, name: str, *, pool: bool) -> Session:
        try:
            return Session.start(
                self.client,
                self.config,
                name=name,
                labels=self._labels(pool),
                idle=POOL_KERNEL_IDLE if pool else None,
            )
        except docker.errors.APIError as exc:
            if exc.status_code == 409 and not pool:
                # Another process just started this key's container.
                adopted = self._adopt(name)
                if adopted is not None:
                    return adopted
            raise SandboxError(f"cannot start a sandbox: {exc}") from exc

    # -- the warm pool -----------------------------------------------------

    def _claim_pooled(self, name: str) -> Session | None:
        while True:
            with self._lock:
                if not self._pool:
                    return None
                session = self._pool.popleft()
            if self._stale(session):
                session.remove()
                continue
            try:
                session.container.rename(name)
            except docker.errors.APIError as exc:
                session.remove()
                if exc.status_code == 409:
                    adopted = self._adopt(name)
                    if adopted is not None:
                        return adopted
                continue
            except Exception:
                session.remove()
                continue
            try:
                session.set_idle(kernel_idle(self.config))
            except (SandboxError, TimeoutError):
                session.remove()
                continue
            session.container.reload()
            return session

    def _stale(self, session: Session) -> bool:
        # Not pinged for most of POOL_KERNEL_IDLE: the kernel may be exiting.
        return time.monotonic() - session.last_used > POOL_KERNEL_IDLE / 2

    def prune_pool(self) -> None:
        """Keep pool kernels alive (a ping resets their short idle exit,
        so the pool of a process that died stops by itself) and replace
        those that stopped."""
        with self._lock:
            pooled = list(self._pool)
        for session in pooled:
            if time.monotonic() - session.last_used < POOL_PING_SECONDS:
                continue
            if self._stale(session) or not session.ping():
                with self._lock:
                    if session in self._pool:
                        self._pool.remove(session)
                session.remove()

    def start_pool(self) -> None:
        """Keep ``pool_size`` sessions started ahead, from a daemon thread."""
        if self.config.pool_size <= 0 or self._filler is not None:
            return
        self._filler = threading.Thread(
            target=self._fill_forever, name="sandbox-pool", daemon=True
        )
        self._filler.start()

    def fill_pool(self) -> None:
        """Start pool sessions until there are ``pool_size`` (blocking)."""
        while not self._stop.is_set():
            with self._lock:
                missing = self.config.pool_size - len(self._pool)
            if missing <= 0:
                return
            name = f"{self.config.name_prefix}-pool-{uuid.uuid4().hex[:16]}"
            session = self._start(name, pool=True)
            with self._lock:
                self._pool.append(session)

    def pool_ready(self) -> int:
        with self._lock:
            return len(self._pool)

    def _fill_forever(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self.prune_pool()
                self.fill_pool()
                self._report()
                backoff = 1.0
            except Exception:
                logger.exception("sandbox pool: cannot start a container")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60)
                continue
            self._wake.wait(5)
            self._wake.clear()

    # -- reaping -----------------------------------------------------------

    def _forget(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (Path(self.config.state_dir) / name).unlink()

    def reap(self) -> int:
        """Remove idle sessions (any process's, by last use), stopped
        containers, and pool containers whose process is gone. Returns how
        many containers were removed."""
        removed = 0
        now = time.time()
        pooled = {session.id for session in list(self._pool)}
        try:
            containers = self.client.containers.list(
                all=True, filters={"label": f"{self.config.label}=1"}
            )
        except docker.errors.DockerException:
            logger.exception("sandbox reaper: cannot list containers")
            return 0
        for container in containers:
            labels = container.labels or {}
            name = str(container.name)
            # Only this configuration's containers (tests use their own
            # prefix so as not to reap each other's sessions).
            if container.id in pooled or not name.startswith(
                f"{self.config.name_prefix}-"
            ):
                continue
            reason = None
            if container.status not in ("running", "created", "restarting"):
                reason = f"status {container.status}"
            elif labels.get(f"{self.config.label}.pool") == "1" and name.startswith(
                f"{self.config.name_prefix}-pool-"
            ):
                if not self._owner_alive(labels.get(f"{self.config.label}.owner", "")):
                    reason = "orphaned pool container"
            else:
                idle = now - self._last_used(name, container)
                if idle > self.config.idle_seconds:
                    reason = f"idle for {idle:.0f}s"
            if reason is None:
                continue
            logger.info("sandbox reaper: removing %s (%s)", name, reason)
            try:
                container.remove(force=True)
                removed += 1
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError:
                logger.exception("sandbox reaper: cannot remove %s", name)
            self._forget(name)
            with self._lock:
                for key, session in list(self._sessions.items()):
                    if session.name == name:
                        session.dead = True
                        del self._sessions[key]
        self._report()
        return removed

    def _last_used(self, name: str, container: object) -> float:
        try:
            return (Path(self.config.state_dir) / name).stat().st_mtime
        except FileNotFoundError:
            # Never touched on this host: count from its creation.
            session_created = getattr(container, "attrs", {}).get("Created", "")
            return _parse_docker_time(session_created)

    def _owner_alive(self, owner: str) -> bool:
        host, _, pid = owner.rpartition(":")
        if host != socket.gethostname():
            return True  # another host's: not ours to judge
        if not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def shutdown(self) -> None:
        """Stop the pool and remove its containers. Sessions stay for the
        next process (the reaper removes them once idle)."""
        self._stop.set()
        self._wake.set()
        if self._filler is not None:
            self._filler.join(30)
            self._filler = None
        with self._lock:
            pooled, self._pool = list(self._pool), collections.deque()
        for session in pooled:
            session.remove()
        self._report()


def _parse_docker_time(value: str) -> float:
    from datetime import datetime

    try:
        # Docker's RFC 3339 with nanoseconds: keep microseconds.
        head, _, frac = value.rstrip("Z").partition(".")
        stamp = datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")
        return stamp.timestamp()
    except ValueError:
        return 0.0
