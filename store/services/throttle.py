"""Who the client is behind proxies, and limits on sign-ups and log-ins.

Counters live in Redis (shared by every web process), in fixed windows
named by their start, so they expire on their own.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable

from assistants.runs.events import client

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(trusted: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(t.strip(), strict=False) for t in trusted if t.strip()]


def _is_trusted(address: str, networks: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_ip(*, remote_addr: str, forwarded_for: str, trusted: Iterable[str]) -> str:
    """The client's address. Only a trusted proxy's X-Forwarded-For is
    read, right to left: each trusted hop appended the address it saw, so
    the first address from the right that is not a trusted proxy is the
    client (anything to its left is the client's to forge)."""
    networks = _networks(trusted)
    if not networks or not _is_trusted(remote_addr, networks):
        return remote_addr or "unknown"
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                # A garbled entry, added before any trusted hop: stop here.
                return remote_addr
    # Every hop is a proxy of ours: the left-most is the closest we know.
    return hops[0] if hops else remote_addr


def _key(kind: str, who: str, window: int) -> str:
    return f"store:t:{kind}:{int(time.time()) // window}:{who}"


def attempts_exceeded(*, kind: str, who: str, limit: int, window: int) -> bool:
    """Whether ``who`` used up ``limit`` attempts of ``kind`` in the current
    window (0 = unlimited). Does not count."""
    if limit <= 0:
        return False
    count: bytes | None = client().get(_key(kind, who, window))  # type: ignore[assignment]
    return count is not None and int(count) >= limit


def attempt_count(*, kind: str, who: str, window: int) -> None:
    """Count one attempt of ``kind`` by ``who`` in the current window."""
    key = _key(kind, who, window)
    pipe = client().pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, window)
    pipe.execute()
