"""Socket.IO against a live uvicorn process, with the real python-socketio client."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
{% if cookiecutter.use_auth %}
from pydantic import SecretStr
{% endif %}
from websockets.asyncio.client import connect as websocket_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

{% if cookiecutter.use_auth %}
from app.auth.tokens import issue_access_token
{% endif %}
{% if cookiecutter.use_redis %}
from app.realtime.broadcast import open_broadcaster
{% endif %}
{% if not cookiecutter.use_auth %}
from app.security import issue_token
{% endif %}
{% if cookiecutter.use_redis or cookiecutter.use_auth %}
from app.settings import Settings
{% endif %}
from tests.live import PROJECT_ROOT, free_port, live_server, wait_for

# Every test here talks to a real uvicorn process.
pytestmark = pytest.mark.live

SECRET = "test-secret-" + "x" * 32
{% if cookiecutter.use_auth %}


def issue_token(subject: str, secret: str) -> str:
    """An access token for `subject`, as /auth/token issues them."""
    settings = Settings(_env_file=None, secret_key=SecretStr(secret))
    return issue_access_token(subject, frozenset(), settings)
{% endif %}


def server_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
{% if cookiecutter.use_postgres %}
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
{% endif %}
{% if cookiecutter.use_redis %}
        "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}:",
{% endif %}
        "CORS_ORIGINS": "https://app.example.com",
        # A polling client's disconnect waits for its pending poll, which the server
        # ends after a ping interval and timeout: keep both short here.
        "SOCKETIO_PING_INTERVAL": "1",
        "SOCKETIO_PING_TIMEOUT": "1",
        "SECRET_KEY": SECRET,
        **env,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp_path = tmp_path_factory.mktemp("realtime")
    with live_server(tmp_path / "server.log", **server_env(tmp_path)) as base:
        yield base


@pytest.fixture
async def connected(server: str) -> AsyncIterator[list[socketio.AsyncSimpleClient]]:
    """Clients connected to the shared server; each test connects as many as it needs."""
    clients: list[socketio.AsyncSimpleClient] = []
    yield clients
    for client in clients:
        await client.disconnect()


async def connect(
    url: str, clients: list[socketio.AsyncSimpleClient], **options: Any
) -> socketio.AsyncSimpleClient:
    client = socketio.AsyncSimpleClient()
    await client.connect(url, wait_timeout=5, **options)
    clients.append(client)
    return client


@pytest.mark.parametrize("transport", ["polling", "websocket"])
async def test_handshake_and_join(
    server: str, connected: list[socketio.AsyncSimpleClient], transport: str
) -> None:
    client = await connect(server, connected, transports=[transport])

    assert client.sid
    assert client.transport == transport
    assert await client.call("join", {"room": "lobby"}, timeout=5) == {"ok": True}
    refused = await client.call("join", {"room": "bad room!"}, timeout=5)
    assert refused["ok"] is False


async def test_message_reaches_the_room_only(
    server: str, connected: list[socketio.AsyncSimpleClient]
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    sender, member, outsider = [await connect(server, connected) for _ in range(3)]
    for client in (sender, member):
        assert await client.call("join", {"room": room}, timeout=5) == {"ok": True}

    assert await sender.call("message", {"room": room, "text": "hello"}, timeout=5) == {"ok": True}

    event, payload = await member.receive(timeout=5)
    assert event == "message"
    assert payload == {"room": room, "text": "hello", "from": sender.sid}
    with pytest.raises(socketio.exceptions.TimeoutError):
        await outsider.receive(timeout=0.5)


async def test_http_bridge_emits_to_the_room(
    server: str, connected: list[socketio.AsyncSimpleClient]
) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    member = await connect(server, connected, transports=["websocket"])
    await member.call("join", {"room": room}, timeout=5)

    async with httpx.AsyncClient(base_url=server) as http:
        accepted = await http.post(
            f"/realtime/rooms/{room}/emit", json={"event": "notice", "data": {"n": 1}}
        )
        reserved = await http.post(f"/realtime/rooms/{room}/emit", json={"event": "connect"})

    assert accepted.status_code == 202
    assert await member.receive(timeout=5) == ["notice", {"n": 1}]
    assert reserved.status_code == 422


async def test_emitted_data_nested_too_deep_is_422(server: str) -> None:
    def nested(depth: int) -> dict[str, object]:
        data: dict[str, object] = {}
        for _ in range(depth):
            data = {"a": data}
        return data

    async with httpx.AsyncClient(base_url=server) as http:
        shallow = await http.post("/realtime/rooms/r/emit", json={"data": nested(10)})
        deep = await http.post("/realtime/rooms/r/emit", json={"data": nested(500)})

    assert shallow.status_code == 202
    assert deep.status_code == 422
    assert "deeper than" in deep.json()["detail"][0]["msg"]


def test_a_stop_releases_long_polling_clients_at_once(tmp_path: Path) -> None:
    """SIGTERM closes the Socket.IO sessions first: a pending long poll does not hold the stop."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # Default ping settings: a long poll would stay open up to 25 s.
    env = server_env(tmp_path, SOCKETIO_PING_INTERVAL="25", SOCKETIO_PING_TIMEOUT="20")
    with (tmp_path / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    async def stop_while_polling() -> tuple[float, list[object]]:
        client = socketio.AsyncClient(reconnection=False)
        reasons: list[object] = []
        client.on("disconnect", reasons.append)
        await client.connect(base, transports=["polling"], wait_timeout=5)
        await asyncio.sleep(0.5)  # the client's next poll is now waiting on the server
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 10)
        elapsed = time.monotonic() - started
        await client.disconnect()
        return elapsed, reasons

    try:
        wait_for(f"{base}/health", process)
        elapsed, reasons = asyncio.run(stop_while_polling())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert elapsed < 8
    assert reasons, "the client never saw the session end"
    assert "Cancel" not in (tmp_path / "server.log").read_text()


async def test_cors_headers_are_sent_once(server: str) -> None:
    origin = "https://app.example.com"
    polling = {"EIO": "4", "transport": "polling"}
    async with httpx.AsyncClient(base_url=server) as http:
        handshake = await http.get("/socket.io/", params=polling, headers={"Origin": origin})
        api = await http.get("/health", headers={"Origin": origin})
        stranger = await http.get(
            "/socket.io/", params=polling, headers={"Origin": "https://evil.example"}
        )

    for response in (handshake, api):
        assert response.status_code == 200
        assert response.headers.get_list("access-control-allow-origin") == [origin]
    assert stranger.status_code == 400


def test_tokens_are_required_when_configured(tmp_path: Path) -> None:
    env = server_env(tmp_path, SOCKETIO_AUTH_REQUIRED="true")
    with live_server(tmp_path / "server.log", **env) as base:

        async def attempt(auth: dict[str, str] | None) -> str:
            """Either "connected" or the server's refusal."""
            client = socketio.AsyncClient()
            refusals: list[object] = []
            client.on("connect_error", refusals.append)
            try:
                await client.connect(base, auth=auth, wait_timeout=5)
            except socketio.exceptions.ConnectionError:
                return str(refusals)
            await client.disconnect()
            return "connected"

        assert "missing or invalid token" in asyncio.run(attempt(None))
        assert "missing or invalid token" in asyncio.run(attempt({"token": "alice.forged"}))
        assert asyncio.run(attempt({"token": issue_token("alice", SECRET)})) == "connected"

        bridge = httpx.post(f"{base}/realtime/rooms/r/emit", json={}, timeout=5)
        authorised = httpx.post(
            f"{base}/realtime/rooms/r/emit",
            json={},
            headers={"Authorization": f"Bearer {issue_token('ops', SECRET)}"},
            timeout=5,
        )
    assert bridge.status_code == 401
    assert authorised.status_code == 202


def ws_url(base: str, room: str) -> str:
    return base.replace("http://", "ws://") + f"/realtime/ws/{room}"


async def test_a_broadcast_reaches_the_rooms_plain_websocket_listeners(server: str) -> None:
    room = f"room-{uuid.uuid4().hex[:8]}"
    async with (
        websocket_connect(ws_url(server, room)) as listener,
        websocket_connect(ws_url(server, "elsewhere")) as outsider,
    ):
        # The server registers a listener once the connection is open; give it a moment.
        await asyncio.sleep(0.2)
        async with httpx.AsyncClient(base_url=server) as http:
            accepted = await http.post(
                f"/realtime/rooms/{room}/broadcast", json={"event": "score", "data": {"home": 2}}
            )
        assert accepted.status_code == 202
        message = json.loads(await asyncio.wait_for(listener.recv(), 5))
        assert message == {"event": "score", "data": {"home": 2}}
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(outsider.recv(), 0.5)


async def test_a_bad_room_name_is_refused(server: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with websocket_connect(ws_url(server, "bad!room")):
            pass
    assert refused.value.response.status_code == 403


def test_listeners_send_a_valid_token_first_when_required(tmp_path: Path) -> None:
    env = server_env(tmp_path, SOCKETIO_AUTH_REQUIRED="true")
    with live_server(tmp_path / "server.log", **env) as base:

        async def listen(first: str) -> str:
            """What the listener hears after sending `first`: a broadcast, or its close code."""
            room = f"room-{uuid.uuid4().hex[:8]}"
            try:
                async with websocket_connect(ws_url(base, room)) as listener:
                    await listener.send(first)
                    await asyncio.sleep(0.2)
                    async with httpx.AsyncClient(base_url=base) as http:
                        await http.post(
                            f"/realtime/rooms/{room}/broadcast",
                            json={},
                            headers={"Authorization": f"Bearer {issue_token('ops', SECRET)}"},
                        )
                    return str(await asyncio.wait_for(listener.recv(), 5))
            except ConnectionClosed as closed:
                return f"closed {closed.rcvd.code if closed.rcvd else None}"

        assert asyncio.run(listen('{"token": "alice.forged"}')) == "closed 1008"
        assert asyncio.run(listen("hello")) == "closed 1008"
        heard = asyncio.run(listen(json.dumps({"token": issue_token("alice", SECRET)})))
        assert json.loads(heard) == {"event": "message", "data": {}}
{% if cookiecutter.use_redis %}


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set")
async def test_an_emit_on_one_instance_reaches_clients_of_another(tmp_path: Path) -> None:
    env = server_env(tmp_path, REDIS_URL=os.environ["REDIS_URL"])
    room = f"room-{uuid.uuid4().hex[:8]}"
    with (
        live_server(tmp_path / "a.log", **env) as first,
        live_server(tmp_path / "b.log", **env) as second,
    ):
        client = socketio.AsyncSimpleClient()
        await client.connect(first, transports=["websocket"], wait_timeout=5)
        try:
            await client.call("join", {"room": room}, timeout=5)
            async with httpx.AsyncClient(base_url=second) as http:
                response = await http.post(
                    f"/realtime/rooms/{room}/emit", json={"data": {"via": "b"}}
                )
            assert response.status_code == 202
            assert await client.receive(timeout=5) == ["message", {"via": "b"}]
        finally:
            await client.disconnect()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set")
async def test_a_broadcast_on_one_instance_reaches_listeners_of_another(tmp_path: Path) -> None:
    env = server_env(tmp_path, REDIS_URL=os.environ["REDIS_URL"])
    room = f"room-{uuid.uuid4().hex[:8]}"
    with (
        live_server(tmp_path / "a.log", **env) as first,
        live_server(tmp_path / "b.log", **env) as second,
    ):
        async with websocket_connect(ws_url(first, room)) as listener:
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient(base_url=second) as http:
                response = await http.post(
                    f"/realtime/rooms/{room}/broadcast", json={"data": {"via": "b"}}
                )
            assert response.status_code == 202
            heard = json.loads(await asyncio.wait_for(listener.recv(), 5))
            assert heard == {"event": "message", "data": {"via": "b"}}


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set")
async def test_the_broadcast_subscriber_stops_at_once_whenever_the_app_stops() -> None:
    settings = Settings(
        _env_file=None,
        environment="test",
        redis_url=os.environ["REDIS_URL"],
        cache_key_prefix=f"test-{uuid.uuid4().hex[:12]}:",
    )
    # Stop after 0, 1, 2 ... turns of the event loop: every point of connecting and subscribing.
    for turns in range(40):
        broadcasting = open_broadcaster(settings)
        await broadcasting.__aenter__()
        for _ in range(turns):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(broadcasting.__aexit__(None, None, None))
        # Waited on, not cancelled: a cancellation could be swallowed the same way.
        stopped, _ = await asyncio.wait({stopping}, timeout=2)
        assert stopped, f"the subscriber went on after a stop {turns} turns in"
{% endif %}
