"""SSRF: every fetch on a user's behalf goes through core.net.fetch, which
refuses non-public addresses however they are spelt, after redirects too,
and connects to the address it checked.

Real loopback HTTP servers stand in for "internal services"; the one test
origin the fetcher may reach is a second loopback address (127.0.0.2),
allowed through the fetcher's ``allow`` argument, which exists only as a
parameter (no setting opens loopback).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from assistants.runs.prompt import render_message
from assistants.services.message import ImageUrlRef
from core.net import FetchRefused, fetch, is_public, literal_refusal
from core.net.fetch import vet

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ORIGIN = ipaddress.ip_network("127.0.0.2/32")


class _Handler(BaseHTTPRequestHandler):
    hits: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        routes = self.server.routes  # type: ignore[attr-defined]
        status, headers, body = routes.get(self.path, (404, {}, b"no"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server:
    def __init__(self, host: str) -> None:
        self.httpd = ThreadingHTTPServer((host, 0), _Handler)
        self.httpd.hits = []  # type: ignore[attr-defined]
        self.httpd.routes = {}  # type: ignore[attr-defined]
        self.host = host
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def hits(self) -> list[str]:
        return self.httpd.hits  # type: ignore[attr-defined, no-any-return]

    def route(
        self, path: str, status: int, headers: dict[str, str], body: bytes
    ) -> None:
        self.httpd.routes[path] = (status, headers, body)  # type: ignore[attr-defined]

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def internal() -> Iterator[_Server]:
    """An "internal service" on 127.0.0.1 that must never be reached."""
    server = _Server("127.0.0.1")
    server.route("/secret", 200, {"Content-Type": "image/png"}, PNG)
    yield server
    server.close()


@pytest.fixture
def origin() -> Iterator[_Server]:
    """The allowed test origin, on 127.0.0.2."""
    server = _Server("127.0.0.2")
    server.route("/cat.png", 200, {"Content-Type": "image/png"}, PNG)
    yield server
    server.close()


def _fetch(url: str, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"max_bytes": 1 << 20, "timeout": 5.0}
    options.update(kwargs)
    return fetch(url, **options)


BYPASS_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "0x7f000001",
    "2130706433",
    "017700000001",
    "0177.0.0.1",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "localhost",
    "localhost.",
    "0.0.0.0",
    "0",
]


@pytest.mark.parametrize("host", BYPASS_SPELLINGS)
def test_it_refuses_every_spelling_of_loopback(host: str, internal: _Server) -> None:
    with pytest.raises(FetchRefused, match="non-public|resolved"):
        _fetch(f"http://{host}:{internal.port}/secret")
    assert internal.hits == []


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CGNAT
        "224.0.0.1",  # multicast
        "240.0.0.1",  # reserved
        "255.255.255.255",
        "198.18.0.1",
        "fd00:ec2::254",  # AWS metadata over IPv6
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::",
        "::ffff:10.0.0.1",  # IPv4-mapped
        "::10.0.0.1",  # IPv4-compatible
        "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ],
)
def test_it_refuses_private_link_local_metadata_and_embedded_addresses(
    address: str,
) -> None:
    assert not is_public(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(FetchRefused, match="non-public"):
        vet(f"http://{host}/x", resolver=lambda h, p: [address])


def test_public_addresses_pass_the_check() -> None:
    for address in ("93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert is_public(ipaddress.ip_address(address)), address


def test_a_dns_name_resolving_to_loopback_is_refused(internal: _Server) -> None:
    with pytest.raises(FetchRefused, match=r"non-public address \(127\.0\.0\.1\)"):
        _fetch(
            f"http://images.example.test:{internal.port}/secret",
            resolver=lambda host, port: ["127.0.0.1"],
        )
    assert internal.hits == []


def test_a_name_with_one_private_answer_among_public_ones_is_refused() -> None:
    with pytest.raises(FetchRefused, match="non-public"):
        vet(
            "http://rebind.example.test/x",
            resolver=lambda host, port: ["93.184.215.14", "10.1.2.3"],
        )


def test_it_connects_to_the_address_it_checked_not_a_second_lookup(
    origin: _Server,
) -> None:
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])  # a rebinding DNS server
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    got = _fetch(
        f"http://cdn.example.test:{origin.port}/cat.png",
        resolver=rebinding,
        allow=[ORIGIN],
    )
    assert got.body == PNG and got.content_type == "image/png"
    assert lookups == ["cdn.example.test"]  # one lookup, then that address
    assert origin.hits == ["/cat.png"]


def test_a_redirect_to_an_internal_address_is_refused(
    origin: _Server, internal: _Server
) -> None:
    for i, target in enumerate(
        [
            internal.url("/secret"),
            f"http://localhost:{internal.port}/secret",
            f"http://0x7f000001:{internal.port}/secret",
            "http://169.254.169.254/latest/meta-data/",
        ]
    ):
        origin.route(f"/r{i}", 302, {"Location": target}, b"")
        with pytest.raises(FetchRefused, match="non-public"):
            _fetch(origin.url(f"/r{i}"), allow=[ORIGIN])
    assert len(origin.hits) == 4
    assert internal.hits == []


def test_redirects_are_followed_checked_and_bounded(origin: _Server) -> None:
    origin.route("/hop", 301, {"Location": "/cat.png"}, b"")
    got = _fetch(origin.url("/hop"), allow=[ORIGIN])
    assert got.body == PNG and got.url.endswith("/cat.png")
    origin.route("/loop", 302, {"Location": "/loop"}, b"")
    with pytest.raises(FetchRefused, match="more than 3 redirects"):
        _fetch(origin.url("/loop"), allow=[ORIGIN], max_redirects=3)


def test_size_and_content_type_are_bounded(origin: _Server) -> None:
    origin.route("/big.png", 200, {"Content-Type": "image/png"}, b"x" * 5000)
    with pytest.raises(FetchRefused, match="larger than 1000 bytes"):
        _fetch(origin.url("/big.png"), allow=[ORIGIN], max_bytes=1000)
    origin.route("/page", 200, {"Content-Type": "text/html"}, b"<html>")
    with pytest.raises(FetchRefused, match="content type 'text/html'"):
        _fetch(origin.url("/page"), allow=[ORIGIN])


def test_schemes_other_than_http_are_refused() -> None:
    for url in ("file:///etc/passwd", "gopher://x/", "ftp://example.com/a.png"):
        with pytest.raises(FetchRefused, match="only http and https"):
            vet(url)
    with pytest.raises(FetchRefused, match="credentials"):
        vet("http://user:pw@example.com/a.png")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1/a.png",
        "http://0x7f000001/a.png",
        "http://2130706433/a.png",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://localhost./a.png",
        "http://169.254.169.254/latest/meta-data/",
    ],
)
def test_message_create_refuses_literal_internal_image_urls(url: str) -> None:
    assert literal_refusal(urlsplit(url).hostname or "") is not None
    with pytest.raises(ValueError, match="public host"):
        ImageUrlRef(url=url)


def test_the_engine_never_gets_a_users_image_url(internal: _Server) -> None:
    """image_url parts reach a vision engine as data: URLs fetched by the
    worker; an internal URL becomes a note, and nothing is fetched."""
    from assistants.models import Message

    message = Message(
        role="user",
        content=[
            {"type": "text", "text": {"value": "look", "annotations": []}},
            {
                "type": "image_url",
                "image_url": {"url": f"http://localhost:{internal.port}/secret"},
            },
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ],
    )
    rendered = render_message(message, vision=True)
    parts = rendered["content"]
    assert parts[0] == {"type": "text", "text": "look"}
    assert parts[1]["type"] == "text"
    assert "image not available" in parts[1]["text"]
    assert parts[2]["image_url"]["url"] == "data:image/png;base64,AAAA"
    urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
    assert all(u.startswith("data:") for u in urls)
    assert internal.hits == []
