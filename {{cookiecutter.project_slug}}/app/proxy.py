"""The client's address and scheme, as the proxy in front of the service saw them.

Behind a proxy, the peer of every connection is the proxy, and the client's own
address arrives in a header. Which header, and which entry of it, depends on
the platform, so three settings say it:

- FORWARDED_ALLOW_IPS: the peers whose headers are believed (addresses, CIDR
  networks, or `*` for any peer where only the platform's edge can connect).
  From any other peer the headers are ignored and the peer is the client.
- CLIENT_IP_HEADER: a header the edge sets to the client's address itself,
  replacing whatever the client sent (Fly.io's `Fly-Client-IP`, Railway's
  `X-Real-IP`). When set, it is used instead of X-Forwarded-For.
- FORWARDED_HOPS: how many proxies in front of the service append to
  X-Forwarded-For. Each appends the address it received the request from, so
  the client is that many entries from the right; entries further left were
  written by the client and are never used.

The scheme comes from the last entry of X-Forwarded-Proto, from the same
trusted peers. A header that cannot be read leaves the peer's address: a
malformed value never fails the request.
"""

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Peers whose trust has been worked out; a service sees few distinct proxies.
_TRUST_CACHE_SIZE = 1024
_SCHEMES = {"http": "http", "https": "https", "ws": "http", "wss": "https"}


def parse_address(text: str) -> IPAddress | None:
    """An address from a header entry or a peer: `1.2.3.4`, `1.2.3.4:80`, `::1`,
    `[::1]:80`; IPv4-mapped IPv6 addresses as IPv4. None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text, closed, port = text[1:].partition("]")
        if not closed or (port and not port.startswith(":")):
            return None
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_trusted(entries: Iterable[str]) -> list[IPNetwork] | None:
    """FORWARDED_ALLOW_IPS (checked by the settings) as networks, an address being a
    network of one; None for `*`."""
    networks: list[IPNetwork] = []
    for entry in entries:
        if entry.strip() == "*":
            return None
        networks.append(ipaddress.ip_network(entry.strip(), strict=False))
    return networks


class ForwardedMiddleware:
    """Sets the request's client address and scheme from a trusted proxy's headers.

    Pure ASGI; it changes `scope["client"]` and `scope["scheme"]` in place, so the
    server's access log and everything in the app see the same client.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.trusted = parse_trusted(settings.forwarded_allow_ips)
        self.hops = settings.forwarded_hops
        header = settings.client_ip_header
        self.client_header = header.lower().encode("latin-1") if header else None
        self._trust: dict[str, bool] = {}

    def trusts(self, peer: str | None) -> bool:
        if self.trusted is None:
            return True
        if peer is None:
            return False
        known = self._trust.get(peer)
        if known is None:
            address = parse_address(peer)
            known = address is not None and any(address in net for net in self.trusted)
            if len(self._trust) >= _TRUST_CACHE_SIZE:
                self._trust.clear()
            self._trust[peer] = known
        return known

    def client_from(self, forwarded_for: list[bytes], client_header: bytes | None) -> str | None:
        """The client's address from the headers, or None to keep the peer's."""
        if self.client_header is not None:
            chosen = client_header
        else:
            entries = b",".join(forwarded_for).split(b",")
            entries = [entry for entry in (item.strip() for item in entries) if entry]
            if not entries:
                return None
            # Fewer entries than hops: every entry there was added by a proxy in
            # front of the service (the client's own would make the list longer),
            # so the leftmost is the furthest address a trusted proxy saw. The
            # peer, a proxy, would make all such clients one.
            chosen = entries[-self.hops] if len(entries) >= self.hops else entries[0]
        if chosen is None:
            return None
        address = parse_address(chosen.decode("latin-1"))
        return str(address) if address is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            peer = scope.get("client")
            if self.trusts(peer[0] if peer else None):
                self.apply(scope)
        await self.app(scope, receive, send)

    def apply(self, scope: Scope) -> None:
        forwarded_for: list[bytes] = []
        client_header: bytes | None = None
        proto: bytes | None = None
        for name, value in scope["headers"]:
            if name == self.client_header:
                client_header = value
            elif name == b"x-forwarded-for":
                forwarded_for.append(value)
            elif name == b"x-forwarded-proto":
                proto = value
        client = self.client_from(forwarded_for, client_header)
        if client is not None:
            scope["client"] = (client, 0)
        if proto is not None:
            # The last entry: the one the proxy nearest the service wrote.
            last = proto.rpartition(b",")[2].strip().decode("latin-1").lower()
            scheme = _SCHEMES.get(last)
            if scheme is not None:
                websocket = scope["type"] == "websocket"
                scope["scheme"] = scheme.replace("http", "ws") if websocket else scheme
