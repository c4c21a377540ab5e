"""Small process helpers shared by the embedded services."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

SERVICE_USER = "agents"


def log(message: str) -> None:
    print(f"[agents] {message}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def running_as_root() -> bool:
    return os.geteuid() == 0


def service_user() -> pwd.struct_passwd:
    """The unprivileged account PostgreSQL runs as when we are root.

    PostgreSQL refuses to run as root, and CI runs as root.
    """
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/false",
                SERVICE_USER,
            ],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def make_traversable(path: Path) -> None:
    """Let the service user reach ``path``: add o+x to every ancestor.

    Only the search bit is added (not read), so directory listings stay
    private; without it a checkout under /root is unreachable for the
    service account.
    """
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def make_readable_tree(root: Path) -> None:
    """Give others read (and search on directories) below ``root``."""
    for dirpath, _dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        d.chmod(d.stat().st_mode | stat.S_IROTH | stat.S_IXOTH)
        for name in filenames:
            f = d / name
            mode = f.stat().st_mode
            extra = stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0)
            if mode & extra != extra:
                f.chmod(mode | extra)


def chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chown(dirpath, user.pw_uid, user.pw_gid)
        for name in filenames:
            os.chown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)


def stop_process(
    process: subprocess.Popen[bytes] | None,
    name: str,
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 10,
) -> None:
    """Ask a child to stop with ``sig``; kill it after ``timeout`` seconds."""
    if process is None or process.poll() is not None:
        return
    log(f"stopping {name}")
    process.send_signal(sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"{name} did not stop in {timeout:.0f}s; killing it")
        process.kill()
        process.wait()


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the launcher dies, even
    by SIGKILL, so no PostgreSQL, Redis or engine outlives it. (Linux; a
    no-op elsewhere.) Runs after the switch to the service user, so the
    setting survives it."""

    def set_signal() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, sig)

    return set_signal
