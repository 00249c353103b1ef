"""Reliability of a generated service under load, faults and bad input, with real processes.

Each test bakes a project with every feature on, runs it as uvicorn or gunicorn
processes in production mode on PostgreSQL and Redis, and drives it over
loopback HTTP for a bounded time. Faults only hit servers a test owns: a private
`redis-server` on a port of its own, and a cuttable TCP proxy
(tests/tcp_proxy.py) in front of the shared PostgreSQL, so the machine's
services stay up for the rest of the suite. Every process a test starts is
stopped before it ends.

The assertions are about correctness - status codes, bodies, data, exit codes,
leaks - never about speed: latencies and recovery times go to the reliability
report (tests/report.py) that the run prints at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest

from tests.bakery import ROOT, TARGETS, free_port, run
from tests.events import EventProcess
from tests.lb_proxy import LoadBalancer
from tests.load import DATABASE_OPS, Sample, Traffic, describe, first_after, percentiles, probe, trickle
from tests.report import Figures
from tests.servers import drop_scratch_database, env_with, scratch_database, wait_until_serving
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.xdist_group("reliability")

# Traffic. Kept small enough for a shared 2-core machine; the report states them.
CLIENTS = 100  # concurrent virtual clients in the load runs
LOAD_SECONDS = 8.0  # length of each load run
LOAD_RUNS = 3  # load runs after a warm-up, to compare memory between them
FAULT_CLIENTS = 50  # concurrent clients while a fault is injected
BEFORE_FAULT = 4.0  # seconds of load before a fault
FAULT_SECONDS = 6.0  # how long a dependency stays down
AFTER_FAULT = 5.0  # seconds of load after it is back
RECOVERY_DEADLINE = 45.0  # longest wait for a feature to come back (slowapi backs off to 32 s)

# Memory of one uvicorn process serving the load (every feature on), measured on
# this template: about 120 MiB after the warm-up, within a few MiB between runs.
RSS_LIMIT_MIB = 300
RSS_GROWTH_LIMIT_MIB = 30

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
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


# --- Processes ---------------------------------------------------------------------


class Server:
    """A server process of a baked project, listening on a loopback port."""

    def __init__(self, command: list[str | Path], cwd: Path, env: dict[str, str], log: Path, port: int):
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
def stopped_at_exit(*servers: Server) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.kill()


def serve_grace(project: Path) -> int:
    """The graceful-shutdown seconds of the production start command (scripts/serve)."""
    found = re.search(r"--timeout-graceful-shutdown\s+(\d+)", (project / "scripts" / "serve").read_text())
    assert found, "scripts/serve sets no --timeout-graceful-shutdown"
    return int(found.group(1))


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
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.call("PING") == "PONG":
                    return
            time.sleep(0.05)
        raise AssertionError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    def call(self, *args: str) -> Any:
        """One command over RESP."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(
                ("".join([f"*{len(args)}\r\n", *(f"${len(a.encode())}\r\n{a}\r\n" for a in args)])).encode()
            )
            return read_reply(sock.makefile("rb"))


def read_reply(stream: Any) -> Any:
    line = stream.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2].decode()
    if kind == b"*":
        return [read_reply(stream) for _ in range(max(int(rest), 0))]
    raise RuntimeError(f"unexpected reply {line!r}")


def listener(python: Path, base: str, room: str, transport: str = "websocket") -> EventProcess:
    """A Socket.IO client (tests/sio_listener.py) joined to `room` on `base`."""
    process = EventProcess([python, ROOT / "tests" / "sio_listener.py", base, room, transport], ROOT)
    process.wait_for("joined", timeout=60)
    return process


# --- Service configuration and data -------------------------------------------------


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
    return env_with(
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        CACHE_KEY_PREFIX=f"rel-{uuid.uuid4().hex[:10]}:",
        TRUSTED_HOSTS="127.0.0.1,localhost",
        # Per client: the virtual clients each have an address; POST /items keeps its 10/minute.
        RATE_LIMIT_DEFAULT="6000/minute",
        # Readiness checks get 5 s: a busy shared machine is not a failed dependency.
        HEALTH_CHECK_TIMEOUT="5",
        **extra,
    )


@pytest.fixture(scope="module")
def project(bakery: Any) -> Path:
    return Path(bakery())


@pytest.fixture(scope="module")
def python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def database(project: Path, python: Path, services: dict[str, str]) -> Iterator[Database]:
    """A scratch database, migrated, with a password in its URL that no output may show."""
    server, password = with_password(services["DATABASE_URL"])
    url = scratch_database(python, project, server, f"rel_{uuid.uuid4().hex[:12]}")
    migrated = run([python, "-m", "alembic", "upgrade", "head"], project, env_with(DATABASE_URL=url))
    assert password not in migrated.stdout + migrated.stderr
    yield Database(url, server, password, python)
    drop_scratch_database(python, project, server, url)


# --- Judging samples ----------------------------------------------------------------


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
        and not (s.content_type.startswith("application/json") and '"detail"' in s.body)
    ]
    assert not bad, f"error answers that are not JSON with a detail:\n{show(bad)}"


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
    figures.add(scenario, "connection errors / 5xx", f"{summary.get('errors', 0)} / {summary.get('5xx', 0)}")
    figures.add(scenario, "latency ms", summary.get("latency_ms", {}))


# --- Load and memory ----------------------------------------------------------------


def test_load_mix_is_answered_loses_no_write_and_memory_stays_bounded(
    project: Path,
    python: Path,
    database: Database,
    services: dict[str, str],
    figures: Figures,
    tmp_path: Path,
) -> None:
    """Repeated load runs over every route: no 5xx, no connection error, every write kept,
    and the process's memory levels off."""
    port = free_port()
    server = Server(
        uvicorn(python, project, port),
        project,
        app_env(database.url, services["REDIS_URL"]),
        tmp_path / "server.log",
        port,
    )
    memory: list[tuple[str, float]] = []

    async def scenario() -> list[Traffic]:
        warm_up = Traffic(server.base, clients=CLIENTS // 2, network=10)
        await warm_up.seed(20)
        await warm_up.run(3)
        memory.append(("after warm-up", server.rss_mib()))
        runs = [warm_up]
        for number in range(LOAD_RUNS):
            traffic = Traffic(server.base, clients=CLIENTS, network=11 + number, seed=number)
            traffic.readable = list(warm_up.readable)
            await traffic.run(LOAD_SECONDS)
            await asyncio.sleep(1)
            memory.append((f"after run {number + 1}", server.rss_mib()))
            runs.append(traffic)
        return runs

    with stopped_at_exit(server):
        server.wait_healthy()
        memory.append(("started", server.rss_mib()))
        runs = asyncio.run(scenario())
        code = server.terminate(serve_grace(project) + 10)

    samples = [sample for traffic in runs for sample in traffic.samples]
    scenario_name = f"Load ({CLIENTS} clients, {LOAD_RUNS} x {LOAD_SECONDS:.0f} s + warm-up)"
    report_run(figures, scenario_name, samples)
    wrong = outside(samples, EXPECTED)
    assert not wrong, f"{len(wrong)} unexpected answers or errors:\n{show(wrong)}"
    check_error_bodies(samples)
    kept = check_writes(runs, database.rows())
    figures.add(scenario_name, "acknowledged writes, all in the database", kept)
    figures.add(scenario_name, "rate-limited writes (429)", sum(1 for s in samples if s.status == 429))
    assert code in (0, -signal.SIGTERM)
    check_log(server, database)

    rss = dict(memory)
    growth = rss[f"after run {LOAD_RUNS}"] - rss["after run 1"]
    figures.add(
        "Memory (RSS of the uvicorn process)",
        "MiB " + ", ".join(name for name, _ in memory),
        ", ".join(f"{value}" for _, value in memory),
    )
    figures.add(
        "Memory (RSS of the uvicorn process)",
        f"growth run 1 -> run {LOAD_RUNS}",
        f"{growth:+.1f} MiB (bound {RSS_GROWTH_LIMIT_MIB} MiB; total bound {RSS_LIMIT_MIB} MiB)",
    )
    assert max(rss.values()) < RSS_LIMIT_MIB, memory
    assert growth < RSS_GROWTH_LIMIT_MIB, memory
