"""The sandbox kernel: a Python REPL the host talks to over the container's
stdin/stdout, so that variables persist between calls of one session.

Runs inside the container as its main process (under docker-init), as a
non-root user, with the standard library only. Protocol: one JSON object per
line each way. Requests carry an ``id`` echoed in the reply:

    {"id": 1, "op": "ping"}
    {"id": 2, "op": "exec", "code": "...", "timeout": 30}
    {"id": 3, "op": "put", "path": "in.csv", "data": "<base64>"}
    {"id": 4, "op": "get", "path": "out.csv"}
    {"id": 5, "op": "idle", "seconds": 660}

User code never sees the protocol's descriptors: fd 0 is /dev/null and fds 1
and 2 are pipes the kernel drains (so output of child processes is captured
and capped too). The kernel exits when stdin closes or after ``--idle``
seconds without a request; the host still reaps idle containers itself
because code in the session can tamper with anything in this process.
"""

from __future__ import annotations

import base64
import io
import json
import os
import select
import signal
import sys
import threading
import time
import traceback
from typing import Any

DATA_DIR = "/mnt/data"
OUTPUT_CAP = int(os.environ.get("AGENTS_OUTPUT_CAP", "65536"))
IMAGE_CAP = 8 * 1024 * 1024
MAX_IMAGES = 10
MAX_FILES = 200

# Figures passed to plt.show() (see agents_backend.py) wait here.
shown_images: list[bytes] = []


class ExecutionTimeout(BaseException):
    """Raised in user code by the kernel's alarm; a BaseException so that
    ``except Exception`` in the user's code does not swallow it."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise ExecutionTimeout("execution timed out")


class Capture:
    """A pipe dup2'ed onto ``fd`` for one call, drained by a thread that
    keeps the first ``OUTPUT_CAP`` bytes and counts the rest."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.kept = bytearray()
        self.dropped = 0
        self.closing = 0.0
        read_end, write_end = os.pipe()
        self.read_end = read_end
        os.dup2(write_end, fd)
        os.close(write_end)
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            # Read the flag before waiting: if the call was already over
            # then, all its output was in the pipe before this select.
            closing = self.closing
            ready, _, _ = select.select([self.read_end], [], [], 0.05)
            if not ready:
                # A background child holding the pipe open is cut off.
                if closing:
                    break
                continue
            try:
                chunk = os.read(self.read_end, 65536)
            except OSError:
                break
            if not chunk:
                break
            room = OUTPUT_CAP - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))
            if self.closing and time.monotonic() - self.closing > 1.0:
                break
        os.close(self.read_end)

    def finish(self, devnull: int) -> str:
        # Point the fd back at /dev/null (our write end closes), then let
        # the drain thread read what is left in the pipe.
        os.dup2(devnull, self.fd)
        self.closing = time.monotonic()
        self.thread.join()
        text = bytes(self.kept).decode("utf-8", "replace")
        if self.dropped:
            text += f"\n[output truncated: {self.dropped} more bytes]"
        return text


def snapshot() -> dict[str, tuple[int, int]]:
    seen: dict[str, tuple[int, int]] = {}
    for root, dirs, files in os.walk(DATA_DIR):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not os.path.islink(path):
                seen[os.path.relpath(path, DATA_DIR)] = (st.st_size, st.st_mtime_ns)
            if len(seen) >= 10 * MAX_FILES:
                return seen
    return seen


def collect_figures() -> list[bytes]:
    """Shown figures, then figures left open (as Jupyter's inline backend)."""
    images = list(shown_images)
    shown_images.clear()
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        from matplotlib._pylab_helpers import Gcf

        for manager in Gcf.get_all_fig_managers():
            buf = io.BytesIO()
            try:
                manager.canvas.figure.savefig(buf, format="png", bbox_inches="tight")
            except Exception:
                continue
            images.append(buf.getvalue())
        pyplot.close("all")
    return images


class Kernel:
    def __init__(self, proto_in: int, proto_out: int, idle: float) -> None:
        self.proto_in = proto_in
        self.out = os.fdopen(proto_out, "w", encoding="utf-8", buffering=1)
        self.idle = idle
        self.namespace: dict[str, Any] = {"__name__": "__main__"}
        self.devnull = os.open(os.devnull, os.O_RDWR)
        self.files = snapshot()
        self.buffer = b""

    def read_request(self) -> dict[str, Any] | None:
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.proto_in], [], [], self.idle)
            if not ready:
                return None  # idle for too long
            chunk = os.read(self.proto_in, 1 << 20)
            if not chunk:
                return None  # the host went away
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        request: dict[str, Any] = json.loads(line)
        return request

    def reply(self, message: dict[str, Any]) -> None:
        self.out.write(json.dumps(message) + "\n")
        self.out.flush()

    def serve(self) -> None:
        while True:
            request = self.read_request()
            if request is None:
                return
            op = request.get("op")
            try:
                if op == "exec":
                    result = self.execute(request["code"], request.get("timeout"))
                elif op == "put":
                    result = self.put(request["path"], request["data"])
                elif op == "get":
                    result = self.get(request["path"], request.get("limit"))
                elif op == "ping":
                    result = {"pong": True}
                elif op == "idle":
                    # A pooled kernel lives briefly unless its owner pings
                    # it; once handed to a thread it gets the session's idle.
                    self.idle = float(request["seconds"])
                    result = {"idle": self.idle}
                else:
                    result = {"fault": f"unknown op {op!r}"}
            except Exception as exc:  # a protocol fault, not the user's error
                result = {"fault": f"{type(exc).__name__}: {exc}"}
            result["id"] = request.get("id")
            self.reply(result)

    def resolve(self, path: str) -> str:
        full = os.path.realpath(os.path.join(DATA_DIR, path))
        if not full.startswith(DATA_DIR + "/"):
            raise ValueError(f"{path!r} is outside {DATA_DIR}")
        return full

    def put(self, path: str, data: str) -> dict[str, Any]:
        full = self.resolve(path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as fh:
            fh.write(base64.b64decode(data))
        # An input file is not an output of the next call.
        st = os.stat(full)
        self.files[os.path.relpath(full, DATA_DIR)] = (st.st_size, st.st_mtime_ns)
        return {"path": full}

    def get(self, path: str, limit: int | None) -> dict[str, Any]:
        full = self.resolve(path)
        size = os.path.getsize(full)
        if limit is not None and size > limit:
            return {"fault": f"{path} is {size} bytes, more than {limit}"}
        with open(full, "rb") as fh:
            return {"data": base64.b64encode(fh.read()).decode("ascii")}

    def execute(self, code: str, timeout: float | None) -> dict[str, Any]:
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = Capture(1), Capture(2)
        error: dict[str, Any] | None = None
        timed_out = False
        started = time.monotonic()
        pid = os.getpid()
        try:
            compiled = compile(code, "<code>", "exec")
            if timeout:
                signal.setitimer(signal.ITIMER_REAL, float(timeout))
            # SIGINT (the host cancelling the call) interrupts user code only.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            try:
                exec(compiled, self.namespace)
            finally:
                if os.getpid() != pid:
                    # A child forked by the code (os.fork) must not go on to
                    # act as the kernel: it would answer and read requests.
                    os._exit(0)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.setitimer(signal.ITIMER_REAL, 0)
        except ExecutionTimeout:
            timed_out = True
            error = {"name": "TimeoutError", "value": f"timed out after {timeout}s"}
        except BaseException as exc:  # sys.exit() too: the session goes on
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            # Drop the kernel's own frame from the traceback.
            text = "".join(line for line in tb if 'kernel.py"' not in line)
            error = {"name": type(exc).__name__, "value": str(exc), "traceback": text}
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
        stdout, stderr = out.finish(self.devnull), err.finish(self.devnull)
        images = [
            base64.b64encode(image).decode("ascii")
            for image in collect_figures()[:MAX_IMAGES]
            if len(image) <= IMAGE_CAP
        ]
        current = snapshot()
        changed = [
            {"path": f"{DATA_DIR}/{name}", "size": meta[0]}
            for name, meta in sorted(current.items())
            if self.files.get(name) != meta
        ][:MAX_FILES]
        self.files = current
        return {
            "stdout": stdout,
            "stderr": stderr,
            "error": error,
            "timed_out": timed_out,
            "images": images,
            "files": changed,
            "duration_ms": round((time.monotonic() - started) * 1000, 3),
        }


def main() -> None:
    idle = float(sys.argv[1]) if len(sys.argv) > 1 else 3600.0
    # Keep the protocol's descriptors private: user code gets /dev/null as
    # stdin and capture pipes as stdout/stderr (set per call).
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.makedirs(DATA_DIR, exist_ok=True)
    os.chdir(DATA_DIR)
    sys.modules["agents_kernel"] = sys.modules[__name__]
    kernel = Kernel(proto_in, proto_out, idle)
    kernel.reply({"id": 0, "ready": True})
    kernel.serve()


if __name__ == "__main__":
    main()
