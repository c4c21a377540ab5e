"""A worker's own ``/metrics`` endpoint (``METRICS_PORT``).

A small threaded WSGI server on a daemon thread, with the same access rule
as the web's endpoint (``METRICS_TOKEN`` / ``METRICS_ALLOWED_IPS``).
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a scrape every few seconds is not worth a log line


def allowed(authorization: str, remote_addr: str) -> bool:
    """The rule of ``core.observability.views`` for a worker's endpoint."""
    token: str = getattr(settings, "METRICS_TOKEN", "")
    networks: list[str] = getattr(settings, "METRICS_ALLOWED_IPS", [])
    if not token and not networks:
        return True
    if token:
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return True
    if networks:
        try:
            address = ipaddress.ip_address(remote_addr)
        except ValueError:
            return False
        for network in networks:
            try:
                if address in ipaddress.ip_network(network, strict=False):
                    return True
            except ValueError:
                continue
    return False


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    from core.observability.collectors import registry

    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    if not allowed(
        environ.get("HTTP_AUTHORIZATION", ""), environ.get("REMOTE_ADDR", "")
    ):
        start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer")])
        return [b"unauthorized\n"]
    body = generate_latest(registry(shared=False))
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [body]


def serve(*, addr: str, port: int) -> WSGIServer:
    server = make_server(
        addr, port, app, server_class=_Server, handler_class=_QuietHandler
    )
    threading.Thread(
        target=server.serve_forever, name="metrics-exporter", daemon=True
    ).start()
    return server
