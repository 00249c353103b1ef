"""Production-mode instances of a baked project, the services they use, and how the
tests that drive them judge what came back.

Faults only hit servers a test owns: a private `redis-server` on a port of its own,
and a cuttable TCP proxy (toolkit/tcp_proxy.py) in front of the shared PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from redis import Redis
from redis.exceptions import RedisError
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as websocket

from toolkit.events import EventProcess
from toolkit.features import ROOT
from toolkit.load import Sample, Traffic, describe
from toolkit.processes import clean_env, free_port, run
from toolkit.report import Figures
from toolkit.servers import wait_until_serving

# Answers each operation may give when nothing is wrong (429: the per-route write limit).
EXPECTED = {
    "health": {200},
    "ready": {200},
    "root": {200},
    "list": {200},
    "read": {200},
    "create": {201, 429},
    "delete": {204},
    "emit": {202},
}
UNAVAILABLE = {"detail": "Database unavailable"}
# Readiness checks in the tests get 5 s (1 s by default): on a busy shared machine a slow
# answer is not a failed dependency.
BUSY_HEALTH_CHECK_TIMEOUT = "5"
# MAX_BODY_BYTES of the production instance the bad-input tests use.
MAX_BODY = 65536
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


class Server:
    """A server process of a baked project, listening on a loopback port."""

    def __init__(self, command: list[str | Path], cwd: Path, env: dict[str, str], log: Path, port: int):
        self.command, self.cwd, self.env = command, cwd, env
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("ab") as output:
            self.process = subprocess.Popen(
                [str(part) for part in command], cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
            )
        self.stop_seconds: float | None = None

    def wait_healthy(self, timeout: float = 120) -> None:
        wait_until_serving(f"{self.base}/health", self.process, timeout)

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        kib = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE).group(1))  # type: ignore[union-attr]
        return round(kib / 1024, 1)

    def terminate(self, timeout: float) -> int:
        """SIGTERM, then the exit code; fails if the process outlives `timeout`."""
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running {timeout} s after SIGTERM:\n{self.text()[-3000:]}") from None
        self.stop_seconds = round(time.monotonic() - started, 2)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def stopped_at_exit(*servers: Server | list[Server]) -> Iterator[None]:
    """Kill whatever is still running at the end of the block (lists are read at the end)."""
    try:
        yield
    finally:
        for entry in servers:
            for server in entry if isinstance(entry, list) else [entry]:
                server.kill()


def serve_grace(project: Path, env: Mapping[str, str] | None = None) -> int:
    """How long the production start command (scripts/serve) waits for open requests at a
    stop, in `env`: its GRACEFUL_SHUTDOWN_SECONDS, or the script's default."""
    found = re.search(r"GRACEFUL_SHUTDOWN_SECONDS:-(\d+)", (project / "scripts" / "serve").read_text())
    assert found, "scripts/serve reads no GRACEFUL_SHUTDOWN_SECONDS"
    return int((env or {}).get("GRACEFUL_SHUTDOWN_SECONDS", found.group(1)))


def uvicorn(python: Path, project: Path, port: int) -> list[str | Path]:
    """scripts/serve's uvicorn command, on the loopback address only."""
    return [
        python,
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-proxy-headers",
        "--timeout-keep-alive",
        "65",
        "--timeout-graceful-shutdown",
        str(serve_grace(project)),
    ]


class RedisServer:
    """A private redis-server on its own port, stopped and started by the test."""

    def __init__(self, log: Path) -> None:
        if not shutil.which("redis-server"):
            pytest.fail("redis-server is not installed (Debian package redis-server)")
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.client = Redis(port=self.port, socket_timeout=5, decode_responses=True)
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [*command, "--save", "", "--appendonly", "no"], stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(RedisError):
                if self.client.ping():
                    return
            time.sleep(0.05)
        raise AssertionError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        self.client.connection_pool.disconnect()


def gunicorn(python: Path, port: int) -> list[str | Path]:
    """The VM target's start command: gunicorn.conf.py, on `port` of the loopback address."""
    return [
        python,
        "-m",
        "gunicorn",
        "--config",
        "gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{port}",
        "app.main:app",
    ]


def listener(python: Path, base: str, room: str, transport: str = "websocket") -> EventProcess:
    """A Socket.IO client (toolkit/sio_listener.py) joined to `room` on `base`."""
    process = EventProcess([python, ROOT / "toolkit" / "sio_listener.py", base, room, transport], ROOT)
    process.wait_for("joined", timeout=60)
    return process


@dataclass
class Database:
    url: str  # what the app gets: the scratch database, with the password
    server: str  # the server's URL the scratch database was made on
    password: str
    python: Path

    def via(self, port: int) -> str:
        """The app's URL, pointed at `port` on the loopback address (a proxy)."""
        parts = urlsplit(self.url)
        auth = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}"))

    def rows(self) -> dict[int, str]:
        """Every item in the database, read directly (never through the app or its cache)."""
        code = (
            "import asyncio, asyncpg, json, sys\n"
            "async def main():\n"
            "    connection = await asyncpg.connect(sys.argv[1])\n"
            "    rows = await connection.fetch('SELECT id, name FROM items')\n"
            "    await connection.close()\n"
            "    print(json.dumps({row['id']: row['name'] for row in rows}))\n"
            "asyncio.run(main())\n"
        )
        output = run([self.python, "-c", code, self.url.replace("+asyncpg", "")], ROOT).stdout
        return {int(key): name for key, name in json.loads(output).items()}


def with_password(url: str) -> tuple[str, str]:
    """`url` with a password (a unique one when it has none: trust auth ignores it)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    password = f"pw-{secrets.token_hex(12)}"
    netloc = f"{parts.username or 'postgres'}:{password}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc)), password


def app_env(database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    """Production settings for one service instance."""
    settings = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": f"rel-{uuid.uuid4().hex[:10]}:",
        "TRUSTED_HOSTS": "127.0.0.1,localhost",
        # Per client: the virtual clients each have an address; POST /items keeps its 10/minute.
        "RATE_LIMIT_DEFAULT": "6000/minute",
        "HEALTH_CHECK_TIMEOUT": BUSY_HEALTH_CHECK_TIMEOUT,
    }
    return clean_env(**(settings | extra))


def show(samples: list[Sample], limit: int = 8) -> str:
    return "\n".join(
        f"{s.op} {s.status} {s.error or ''} {s.body[:160]!r} (+{s.elapsed:.2f} s)" for s in samples[:limit]
    )


def outside(samples: list[Sample], expected: dict[str, set[int]]) -> list[Sample]:
    return [s for s in samples if s.status not in expected[s.op]]


def check_error_bodies(samples: list[Sample]) -> None:
    """Every 4xx and 5xx is JSON with a `detail`."""
    bad = [
        s
        for s in samples
        if s.status is not None
        and s.status >= 400
        and not (
            s.content_type.startswith("application/json")
            and ('"detail"' in s.body or (s.op in ("ready", "/health/ready") and '"checks"' in s.body))
        )
    ]
    assert not bad, f"error answers that are not JSON with a detail (or readiness checks):\n{show(bad)}"


def check_writes(traffics: list[Traffic], rows: dict[int, str]) -> int:
    """Every acknowledged write is in the database, every acknowledged delete is gone."""
    written = {item: name for traffic in traffics for item, name in traffic.written.items()}
    deleted = {item for traffic in traffics for item in traffic.deleted}
    lost = {item: name for item, name in written.items() if item not in deleted and rows.get(item) != name}
    back = sorted(item for item in deleted if item in rows)
    assert not lost, f"{len(lost)} acknowledged writes are missing: {list(lost.items())[:10]}"
    assert not back, f"acknowledged deletes still present: {back[:10]}"
    return len(written)


def check_log(server: Server, database: Database, *, unhandled: bool = False) -> str:
    text = server.text()
    assert database.password not in text, "the database password is in the server log"
    if not unhandled:
        assert "Unhandled error" not in text, text[text.index("Unhandled error") - 200 :][:3000]
    return text


def report_run(figures: Figures, scenario: str, samples: list[Sample]) -> None:
    summary = describe(samples)
    figures.add(
        scenario, "requests (per second)", f"{summary['requests']} ({summary.get('per_second', 0)}/s)"
    )
    figures.add(scenario, "answers by status", summary.get("statuses", {}))
    failed = sum(1 for s in samples if s.status is not None and s.status >= 500 and s.op != "ready")
    figures.add(scenario, "connection errors", summary.get("errors", 0))
    figures.add(scenario, "5xx answers (readiness excluded)", failed)
    figures.add(scenario, "latency ms", summary.get("latency_ms", {}))


@contextlib.contextmanager
def socketio_client(base: str, **options: Any) -> Iterator[ClientConnection]:
    """A Socket.IO client on the WebSocket transport of the server at `base` (ws:// or
    wss://), connected, open until the block ends; `options` go to websockets' connect
    (`sock=`, `ssl=`)."""
    url = f"{base}/socket.io/?EIO=4&transport=websocket"
    with websocket(url, open_timeout=10, close_timeout=1, **options) as client:
        assert client.recv(timeout=10).startswith("0"), "Engine.IO open packet"
        client.send("40")
        assert client.recv(timeout=10).startswith("40"), "Socket.IO connected"
        yield client
