"""The one way to fetch a URL on a user's behalf: public addresses only.

Every fetch of a user-supplied URL (today: ``image_url`` message parts,
which the worker downloads and inlines as ``data:`` URLs so that no engine
ever fetches them itself) goes through ``fetch``:

- only ``http``/``https``; no credentials in the URL;
- the host is resolved here, once, and every address it resolves to must
  be public: loopback, private (RFC 1918, ULA), link-local (with the cloud
  metadata addresses 169.254.169.254 and fd00:ec2::254), CGNAT, multicast,
  reserved, unspecified and documentation ranges are refused, as are IPv6
  addresses that embed one (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible
  ``::a.b.c.d``, 6to4, Teredo, NAT64). Numeric spellings (``127.1``,
  ``0x7f000001``, ``2130706433``, ``017700000001``) resolve to the address
  they mean and are refused by it;
- the connection goes to the vetted address (the URL's host is sent as
  ``Host`` and as the TLS server name, and the certificate is checked
  against it), so a DNS answer cannot change between check and connect;
- redirects are followed by hand, each hop checked the same way, at most
  ``max_redirects``;
- the body is bounded in bytes and the whole exchange in time, and its
  content type must match ``content_types``.

Tests point ``resolver`` at fixed answers and ``allow`` at a loopback
address of their own; neither exists as a setting.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

# Ranges refused besides what ipaddress calls non-global (it already
# covers loopback, RFC 1918, link-local, CGNAT 100.64/10, ULA fc00::/7,
# documentation, benchmarking and reserved blocks).
_BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::254/128",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = {301, 302, 303, 307, 308}


class FetchRefused(Exception):
    """The URL may not or could not be fetched; ``str()`` says why."""


@dataclass(frozen=True)
class Fetched:
    url: str  # after redirects
    content_type: str
    body: bytes


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))  # IPv4-compatible ::a.b.c.d
    return None


def is_public(ip: IPAddress) -> bool:
    """May a fetch on a user's behalf connect to ``ip``?"""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
        if ip.scope_id:
            return False
    if any(ip in net for net in _BLOCKED):
        return False
    return ip.is_global and not ip.is_multicast


def literal_refusal(host: str) -> str | None:
    """Why ``host`` is refused without any DNS lookup, or None: an address
    literal (any spelling inet_aton accepts) that is not public, or a
    ``localhost`` name. For early 400s; ``vet`` is the real check."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return f"'{host}' is a local host name"
    ip: IPAddress | None = None
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        try:
            ip = ipaddress.IPv4Address(socket.inet_aton(name))
        except OSError:
            return None
    if not is_public(ip):
        return f"'{host}' is not a public address"
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (getaddrinfo, so the numeric
    spellings inet_aton accepts resolve to the address they mean)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchRefused(f"the host '{host}' could not be resolved") from exc
    return [str(info[4][0]) for info in infos]


def vet(
    url: str,
    *,
    resolver: Resolver = system_resolver,
    allow: Sequence[IPNetwork] = (),
) -> tuple[httpx.URL, IPAddress]:
    """Check ``url`` and resolve its host: (the URL, the address to connect
    to). Raises FetchRefused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchRefused("only http and https URLs can be fetched")
    if parts.username is not None or parts.password is not None:
        raise FetchRefused("URLs with credentials are not fetched")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchRefused("the URL's port is invalid") from exc
    addresses = list(resolver(host.rstrip(".") or host, port))
    if not addresses:
        raise FetchRefused(f"the host '{host}' could not be resolved")
    chosen: IPAddress | None = None
    for raw in addresses:
        ip = ipaddress.ip_address(raw.split("%", 1)[0])
        if not (is_public(ip) or any(ip in net for net in allow)):
            # One private answer is enough to refuse: a name that resolves
            # to public and private addresses is a rebinding setup.
            raise FetchRefused(
                f"the host '{host}' resolves to a non-public address ({ip})"
            )
        chosen = chosen or ip
    assert chosen is not None
    try:
        return httpx.URL(url), chosen
    except httpx.InvalidURL as exc:
        raise FetchRefused("the URL is not valid") from exc


def fetch(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    max_redirects: int = 3,
    content_types: Sequence[str] = ("image/",),
    resolver: Resolver = system_resolver,
    allow: Sequence[IPNetwork] = (),
) -> Fetched:
    """GET ``url`` under the rules in the module docstring.

    Raises FetchRefused for a refused address, a redirect too many, a body
    over ``max_bytes``, a wrong content type, a non-2xx answer, or a
    transport error or timeout (``timeout`` bounds the whole exchange).
    """
    deadline = time.monotonic() + timeout
    current = url
    with httpx.Client(
        follow_redirects=False, trust_env=False, timeout=timeout
    ) as client:
        for _hop in range(max_redirects + 1):
            target, ip = vet(current, resolver=resolver, allow=allow)
            host_header = target.netloc.decode("ascii")
            pinned = target.copy_with(
                host=str(ip),
                port=target.port,
            )
            left = deadline - time.monotonic()
            if left <= 0:
                raise FetchRefused("the fetch timed out")
            try:
                with client.stream(
                    "GET",
                    pinned,
                    headers={"Host": host_header, "Accept": ", ".join(content_types)},
                    extensions={
                        "sni_hostname": target.host,
                        "timeout": {
                            "connect": left,
                            "read": left,
                            "write": left,
                            "pool": left,
                        },
                    },
                ) as response:
                    if response.status_code in _REDIRECTS:
                        location = response.headers.get("location")
                        if not location:
                            raise FetchRefused("a redirect without a Location")
                        current = urljoin(current, location)
                        continue
                    return _read(response, current, max_bytes, deadline, content_types)
            except httpx.HTTPError as exc:
                raise FetchRefused(f"the fetch failed: {type(exc).__name__}") from exc
    raise FetchRefused(f"more than {max_redirects} redirects")


def _read(
    response: httpx.Response,
    url: str,
    max_bytes: int,
    deadline: float,
    content_types: Sequence[str],
) -> Fetched:
    if not 200 <= response.status_code < 300:
        raise FetchRefused(f"the server answered {response.status_code}")
    content_type = response.headers.get("content-type", "").split(";")[0].strip()
    if not any(content_type.lower().startswith(t) for t in content_types):
        raise FetchRefused(f"unexpected content type '{content_type or 'none'}'")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise FetchRefused(f"the body is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise FetchRefused("the fetch timed out")
        chunks.append(chunk)
    return Fetched(url=url, content_type=content_type, body=b"".join(chunks))
