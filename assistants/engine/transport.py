"""HTTP/1.1 to the engines, on the standard library, with kept-alive connections.

Why not httpx here: the engine client needs to own the socket of every
request so that a cancel can shut it down at any moment, including while
the engine is still reading the prompt (no byte of the answer yet). With
httpx that meant a client per call, and its connection setup cost about
3 ms of latency and 1.6 ms of CPU per engine call on loopback, more than
twice what the engine itself took to answer in the runs benchmark.
``http.client`` on a kept-alive connection costs about 0.75 ms and 0.35 ms,
and its socket is at hand from the start.

Connections are pooled per (scheme, host, port) and process. One goes back
to the pool only after its response was read to the end and neither side
asked to close it; an aborted or failed one is closed. A request on a
reused connection that the engine had closed meanwhile (idle keep-alive
timeout) fails before any answer, and is sent once more on a new one.
Engine connections do not go through HTTP proxies.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

# Idle connections kept per engine address; more concurrent requests than
# this still get connections, only the idle reserve is bounded.
MAX_IDLE_PER_ORIGIN = 32
# After the answer's last event, the rest of the response (the end of the
# chunked body) must arrive within this long, or the connection is closed
# rather than kept.
DRAIN_TIMEOUT = 1.0

# A reused connection that fails with one of these before the answer began
# was closed by the engine while idle: send the request again on a new one.
STALE_ERRORS: tuple[type[BaseException], ...] = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


@dataclass(frozen=True)
class Target:
    """Where a request goes: an origin and the path on it."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return cls(scheme, parts.hostname, port, path)

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


class _Pool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._pid = os.getpid()

    def take(self, origin: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        with self._lock:
            self._forget_if_forked()
            idle = self._idle.get(origin)
            return idle.pop() if idle else None

    def give(
        self, origin: tuple[str, str, int], conn: http.client.HTTPConnection
    ) -> None:
        with self._lock:
            self._forget_if_forked()
            idle = self._idle.setdefault(origin, [])
            if len(idle) < MAX_IDLE_PER_ORIGIN:
                idle.append(conn)
                return
        conn.close()

    def clear(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _forget_if_forked(self) -> None:
        # A forked child (Celery's prefork pool) must not share its parent's
        # sockets: it starts with an empty pool.
        if self._pid != os.getpid():
            self._idle, self._pid = {}, os.getpid()


_pool = _Pool()


def clear_pool() -> None:
    """Close every idle connection (tests; engines that moved)."""
    _pool.clear()


class Exchange:
    """One request and its response on a connection of the pool.

    ``on_socket`` is called with the socket before anything is sent (so a
    cancel can shut it down); ``open`` returns the response once its headers
    are in. ``finish`` gives the connection back when the response was read
    to its end, and closes it otherwise.
    """

    def __init__(
        self,
        target: Target,
        *,
        connect_timeout: float,
        read_timeout: float,
        tls: Callable[[], ssl.SSLContext],
        on_socket: Callable[[socket.socket], None],
    ) -> None:
        self.target = target
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.tls = tls
        self.on_socket = on_socket
        self.conn: http.client.HTTPConnection | None = None
        self.response: http.client.HTTPResponse | None = None

    def open(self, body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
        """Send the request; the response, its headers read.

        Raises OSError (refused, reset, timed out) or http.client's
        HTTPException when no answer came.
        """
        reused = _pool.take(self.target.origin)
        if reused is not None:
            try:
                return self._send(reused, body, headers)
            except STALE_ERRORS:
                self._close()
        return self._send(self._connect(), body, headers)

    def _connect(self) -> http.client.HTTPConnection:
        t = self.target
        conn: http.client.HTTPConnection
        if t.scheme == "https":
            conn = http.client.HTTPSConnection(
                t.host, t.port, timeout=self.connect_timeout, context=self.tls()
            )
        else:
            conn = http.client.HTTPConnection(
                t.host, t.port, timeout=self.connect_timeout
            )
        conn.connect()
        assert conn.sock is not None
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _send(
        self, conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]
    ) -> http.client.HTTPResponse:
        self.conn = conn
        if conn.sock is None:  # the pool only holds connected ones
            conn.connect()
        assert conn.sock is not None
        self.on_socket(conn.sock)
        conn.sock.settimeout(self.read_timeout)
        conn.request("POST", self.target.path, body=body, headers=headers)
        self.response = conn.getresponse()
        return self.response

    def finish(self, *, complete: bool) -> None:
        """End the exchange. ``complete``: the answer was read to its end
        (the last event, or the whole body), so the connection may be kept
        once what is left of the response has been drained."""
        conn, response = self.conn, self.response
        self.conn = self.response = None
        if conn is None:
            return
        if not complete or response is None or response.will_close:
            conn.close()
            return
        try:
            if conn.sock is not None:
                conn.sock.settimeout(DRAIN_TIMEOUT)
            response.read()  # the end of a chunked body, if not seen yet
        except (OSError, http.client.HTTPException):
            conn.close()
            return
        if response.isclosed() and conn.sock is not None:
            _pool.give(self.target.origin, conn)
        else:
            conn.close()

    def _close(self) -> None:
        if self.conn is not None:
            with suppress(OSError):
                self.conn.close()
        self.conn = self.response = None
