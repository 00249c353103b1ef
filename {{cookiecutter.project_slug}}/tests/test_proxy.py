"""The client's address and scheme behind proxies (app/proxy.py)."""

import pytest
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from app.proxy import ForwardedMiddleware, parse_address
from app.settings import Settings
from tests.support import client_for

EDGE = "10.0.0.7"


def proxied(**settings: object) -> Settings:
    """Settings that believe the edge at 10.0.0.0/8 unless told otherwise."""
    values: dict[str, object] = {"forwarded_allow_ips": ["10.0.0.0/8"], **settings}
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


async def seen(
    settings: Settings,
    headers: list[tuple[str, str]],
    peer: str | None = EDGE,
    kind: str = "http",
) -> tuple[str | None, str]:
    """The client address and scheme the app sees for a request from `peer`."""
    captured: dict[str, object] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        client = scope["client"]
        captured["client"] = client[0] if client else None
        captured["scheme"] = scope["scheme"]

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {
        "type": kind,
        "client": (peer, 50000) if peer is not None else None,
        "scheme": "ws" if kind == "websocket" else "http",
        "headers": [(name.lower().encode(), value.encode("latin-1")) for name, value in headers],
    }
    await ForwardedMiddleware(app, settings)(scope, receive, send)
    return captured["client"], captured["scheme"]  # type: ignore[return-value]


async def test_the_servers_access_log_sees_the_same_client() -> None:
    """uvicorn logs the client of the scope it made: the middleware changes that scope
    itself, not a copy, so the log line and the app name the same address."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        pass

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        pass

    server_scope: Scope = {
        "type": "http",
        "client": (EDGE, 50000),
        "scheme": "http",
        "headers": [(b"x-forwarded-for", b"6.6.6.6, 192.0.2.9")],
    }
    await ForwardedMiddleware(app, proxied())(server_scope, receive, send)

    assert server_scope["client"][0] == "192.0.2.9"


@pytest.mark.parametrize(
    ("hops", "expected"),
    [(1, "192.0.2.3"), (2, "192.0.2.2"), (3, "192.0.2.1"), (4, "192.0.2.1"), (9, "192.0.2.1")],
)
async def test_the_client_is_counted_from_the_right(hops: int, expected: str) -> None:
    # Each proxy appends the address it received the request from.
    chain = [("X-Forwarded-For", "192.0.2.1, 192.0.2.2,192.0.2.3")]

    assert (await seen(proxied(forwarded_hops=hops), chain))[0] == expected


async def test_entries_the_client_wrote_are_never_used() -> None:
    forged = [("X-Forwarded-For", "6.6.6.6, 7.7.7.7"), ("X-Forwarded-For", "198.51.100.4")]

    # Repeated header lines are one list, in order; the edge's entry is the last.
    assert (await seen(proxied(), forged))[0] == "198.51.100.4"


async def test_a_header_the_edge_sets_replaces_x_forwarded_for() -> None:
    settings = proxied(client_ip_header="Fly-Client-IP")
    headers = [("X-Forwarded-For", "6.6.6.6, 198.51.100.4, 66.241.124.11")]

    edge_header = ("fly-client-ip", "198.51.100.4")
    assert (await seen(settings, [*headers, edge_header]))[0] == "198.51.100.4"
    # Without it (a check from inside the platform), the peer stays the client.
    assert (await seen(settings, headers))[0] == EDGE


@pytest.mark.parametrize("allowed", [["192.0.2.99"], ["192.0.2.0/28"], ["2001:db8::/32"]])
async def test_an_untrusted_peer_is_the_client_whatever_it_sends(allowed: list[str]) -> None:
    settings = proxied(forwarded_allow_ips=allowed, client_ip_header="X-Real-IP")
    headers = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
    ]

    assert await seen(settings, headers) == (EDGE, "http")
    # No peer at all (a unix socket): nothing is believed either.
    assert await seen(settings, headers, peer=None) == (None, "http")


async def test_any_peer_is_believed_with_a_star() -> None:
    headers = [("X-Forwarded-For", "198.51.100.4")]

    assert (await seen(proxied(forwarded_allow_ips=["*"]), headers, peer="203.0.113.9"))[0] == (
        "198.51.100.4"
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        " , ,",
        "unknown",
        "not-an-address",
        "999.1.1.1",
        "1.2.3.4.5",
        "[::1",
        "[::1]x",
        "2001:db8::1%eth0%",
        "\xff\xfe",
        "1.2.3.4, " + "x" * 8000,
        "_hidden",
    ],
)
async def test_a_malformed_entry_leaves_the_peer(value: str) -> None:
    assert (await seen(proxied(), [("X-Forwarded-For", value)]))[0] == EDGE
    header = proxied(client_ip_header="X-Real-IP")
    assert (await seen(header, [("X-Real-IP", value)]))[0] == EDGE


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("198.51.100.4:51234", "198.51.100.4"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("::ffff:198.51.100.4", "198.51.100.4"),
        (" 198.51.100.4 ", "198.51.100.4"),
    ],
)
async def test_addresses_are_read_in_every_form_and_normalised(entry: str, expected: str) -> None:
    assert (await seen(proxied(), [("X-Forwarded-For", entry)]))[0] == expected


async def test_ipv6_peers_and_networks() -> None:
    settings = proxied(forwarded_allow_ips=["2001:db8:1::/48", "::1"])
    headers = [("X-Forwarded-For", "2001:db8:ffff::9")]

    assert (await seen(settings, headers, peer="2001:db8:1:2::7"))[0] == "2001:db8:ffff::9"
    assert (await seen(settings, headers, peer="::1"))[0] == "2001:db8:ffff::9"
    assert (await seen(settings, headers, peer="2001:db8:2::7"))[0] == "2001:db8:2::7"
    # A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6 addresses.
    mapped = proxied(forwarded_allow_ips=["10.0.0.0/8"])
    assert (await seen(mapped, headers, peer="::ffff:10.0.0.7"))[0] == "2001:db8:ffff::9"


@pytest.mark.parametrize(
    ("proto", "kind", "expected"),
    [
        ("https", "http", "https"),
        ("HTTPS", "http", "https"),
        ("http, https", "http", "https"),
        ("https", "websocket", "wss"),
        ("gopher", "http", "http"),
        ("", "http", "http"),
    ],
)
async def test_the_scheme_comes_from_the_last_proxy(proto: str, kind: str, expected: str) -> None:
    assert (await seen(proxied(), [("X-Forwarded-Proto", proto)], kind=kind))[1] == expected


async def test_lifespan_scopes_pass_through_untouched() -> None:
    passed: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        passed.append(scope)

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    middleware = ForwardedMiddleware(app, proxied(forwarded_allow_ips=["*"]))
    await middleware({"type": "lifespan"}, receive, send)

    assert passed == [{"type": "lifespan"}]
    assert parse_address("not an address") is None


def test_settings_refuse_what_cannot_work() -> None:
    for bad in (
        {"forwarded_allow_ips": "10.0.0.0/8, proxy.internal"},
        {"forwarded_hops": 0},
        {"client_ip_header": "X Real IP"},
    ):
        with pytest.raises(ValidationError) as refused:
            Settings(_env_file=None, **bad)
        assert next(iter(bad)) in str(refused.value)
    assert Settings(_env_file=None, client_ip_header=" ").client_ip_header is None


async def test_garbage_headers_never_fail_a_request(settings: Settings) -> None:
    behind = settings.model_copy(update={"forwarded_allow_ips": ["*"], "forwarded_hops": 2})
    garbage = {"X-Forwarded-For": ",,[,::::,999.999.999.999", "X-Forwarded-Proto": "\x00"}
    async with client_for(behind) as client:
        answers = [await client.get(path, headers=garbage) for path in ("/", "/health")]

    assert [answer.status_code for answer in answers] == [200, 200]
