"""assistants.engine.transport: kept-alive engine connections are reused, a
connection the engine closed while idle is replaced without failing the
request, and an aborted exchange never goes back to the pool."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import pytest

from assistants.engine import transport

BODY = b"data: [DONE]\n\n"


class _Server:
    """A tiny HTTP/1.1 server: answers each request on a connection, and
    closes the connection after ``answers_per_connection`` answers without
    saying so (what an engine's idle keep-alive timeout looks like)."""

    def __init__(self, answers_per_connection: int) -> None:
        self.answers_per_connection = answers_per_connection
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            reader = conn.makefile("rb")
            for _ in range(self.answers_per_connection):
                length = 0
                while True:
                    line = reader.readline()
                    if not line:
                        return
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                    if line in (b"\r\n", b"\n"):
                        break
                reader.read(length)
                with self._lock:
                    self.requests += 1
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
                )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(autouse=True)
def _empty_pool() -> Iterator[None]:
    transport.clear_pool()
    yield
    transport.clear_pool()


def _exchange(port: int, sockets: list[socket.socket]) -> transport.Exchange:
    return transport.Exchange(
        transport.Target.parse(f"http://127.0.0.1:{port}/v1/chat/completions"),
        connect_timeout=5,
        read_timeout=5,
        tls=ssl.create_default_context,
        on_socket=sockets.append,
    )


def _call(port: int, *, complete: bool = True) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    exchange = _exchange(port, sockets)
    response = exchange.open(b"{}", {"Content-Type": "application/json"})
    assert response.status == 200
    assert response.read() == BODY
    exchange.finish(complete=complete)
    return sockets


def test_a_kept_alive_connection_is_reused() -> None:
    server = _Server(answers_per_connection=100)
    try:
        first = _call(server.port)
        second = _call(server.port)
    finally:
        server.close()
    assert first == second  # the same socket, handed to on_socket each time
    assert server.connections == 1
    assert server.requests == 2


def test_a_connection_closed_while_idle_is_replaced() -> None:
    server = _Server(answers_per_connection=1)
    try:
        _call(server.port)
        _call(server.port)  # the pooled one is dead: sent again on a new one
    finally:
        server.close()
    assert server.connections == 2
    assert server.requests == 2


def test_an_unfinished_exchange_is_not_pooled() -> None:
    server = _Server(answers_per_connection=100)
    try:
        first = _call(server.port, complete=False)
        second = _call(server.port)
    finally:
        server.close()
    assert first != second
    assert server.connections == 2


def test_target_parsing() -> None:
    target = transport.Target.parse("https://engine.internal/v1/chat/completions")
    assert target.origin == ("https", "engine.internal", 443)
    assert target.path == "/v1/chat/completions"
    with pytest.raises(ValueError):
        transport.Target.parse("ftp://x/y")
