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

# Memory of the one uvicorn process serving the load (every feature on), measured
# here: about 97 MiB started, 105 MiB after the warm-up, 109 MiB after each run,
# within 1 MiB between runs. The bounds leave room for other machines and versions.
RSS_LIMIT_MIB = 250
RSS_GROWTH_LIMIT_MIB = 15

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
    figures.add(scenario, "5xx (503 on readiness not counted)", failed)
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
            traffic = Traffic(server.base, clients=CLIENTS, network=11 + number, seed=number, writers=2)
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


# --- Redis outage -------------------------------------------------------------------


def emit_reaches(base: str, client: EventProcess, room: str, marker: int) -> bool:
    """An emit through `base` arrives at `client` within a second."""
    mark = len(client.events)
    response = httpx.post(f"{base}/realtime/rooms/{room}/emit", json={"data": {"n": marker}}, timeout=10)
    assert response.status_code == 202, response.text
    with contextlib.suppress(AssertionError):
        while True:
            event = client.wait_for("message", after=mark, timeout=1)
            if event["data"] == {"n": marker}:
                return True
            mark = client.events.index(event) + 1
    return False


def limits_shared(a: str, b: str, attempt: int) -> bool:
    """One client's writes alternate between the instances: only 10 of 12 may pass (10/minute)."""
    headers = {"X-Forwarded-For": f"10.99.{attempt // 200}.{attempt % 200 + 1}"}
    statuses = [
        httpx.post(
            f"{base}/items", json={"name": f"limits-{uuid.uuid4().hex}"}, headers=headers, timeout=10
        ).status_code
        for _ in range(6)
        for base in (a, b)
    ]
    assert set(statuses) <= {201, 429}, statuses
    return statuses.count(201) == 10


def test_redis_outage_degrades_and_recovers_without_a_restart(
    project: Path, python: Path, database: Database, figures: Figures, tmp_path: Path
) -> None:
    """Redis stopped under load: readiness 503, everything else answers (from the database,
    with per-process limits); Redis back: cache, shared limits and cross-instance emits return."""
    redis = RedisServer(tmp_path / "redis.log")
    env = app_env(database.url, redis.url)
    prefix = env["CACHE_KEY_PREFIX"]
    ports = free_port(), free_port()
    a, b = (
        Server(uvicorn(python, project, port), project, env, tmp_path / f"{name}.log", port)
        for name, port in zip("ab", ports, strict=True)
    )
    room = f"room-{uuid.uuid4().hex[:8]}"
    scenario_name = f"Redis outage ({FAULT_CLIENTS} clients, Redis down {FAULT_SECONDS:.0f} s)"
    times: dict[str, float] = {}

    def recover(client: EventProcess, item: int) -> dict[str, float]:
        """Seconds from Redis's restart until each Redis-backed feature works again."""
        recovered: dict[str, float] = {}
        attempt = 0
        while len(recovered) < 3 and time.monotonic() - times["up"] < RECOVERY_DEADLINE:
            attempt += 1
            if "cache" not in recovered:
                assert httpx.get(f"{a.base}/items/{item}", timeout=10).status_code == 200
                if redis.call("KEYS", f"{prefix}items:*"):
                    recovered["cache"] = round(time.monotonic() - times["up"], 2)
            if "shared rate limits" not in recovered and limits_shared(a.base, b.base, attempt):
                recovered["shared rate limits"] = round(time.monotonic() - times["up"], 2)
            if "cross-instance emits" not in recovered and emit_reaches(a.base, client, room, attempt):
                recovered["cross-instance emits"] = round(time.monotonic() - times["up"], 2)
            time.sleep(0.25)
        return recovered

    async def scenario(
        traffic: Traffic, client: EventProcess
    ) -> tuple[list[Sample], list[Sample], dict[str, float]]:
        await traffic.seed(10)
        stop = asyncio.Event()
        probes = asyncio.gather(probe(a.base, "/health/ready", stop), probe(a.base, "/health", stop))
        load = asyncio.create_task(traffic.run())
        await asyncio.sleep(BEFORE_FAULT)
        times["down"] = time.monotonic()
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(FAULT_SECONDS)
        await asyncio.to_thread(redis.start)
        times["up"] = time.monotonic()
        recovery = asyncio.create_task(asyncio.to_thread(recover, client, traffic.readable[0]))
        await asyncio.sleep(AFTER_FAULT)
        traffic.stop.set()
        await load
        recovered = await recovery
        stop.set()
        ready, live = await probes
        return ready, live, recovered

    client: EventProcess | None = None
    try:
        with stopped_at_exit(a, b):
            a.wait_healthy()
            b.wait_healthy()
            client = listener(python, b.base, room)
            assert emit_reaches(a.base, client, room, 0), "no cross-instance emit before the outage"

            traffic = Traffic(a.base, clients=FAULT_CLIENTS, network=30, writers=2)
            ready, live, recovered = asyncio.run(scenario(traffic, client))
            codes = [server.terminate(serve_grace(project) + 10) for server in (a, b)]
    finally:
        if client is not None:
            client.stop()
        redis.stop()

    samples = traffic.samples
    during = [s for s in samples if times["down"] <= s.started and s.started + s.elapsed <= times["up"]]
    report_run(figures, scenario_name, samples)
    readiness_503 = first_after(ready, times["down"], 503)
    readiness_back = first_after(ready, times["up"], 200)
    figures.add(scenario_name, "readiness 503 after Redis stopped (s)", readiness_503)
    figures.add(scenario_name, "readiness 200 after Redis started (s)", readiness_back)
    for feature in ("cache", "shared rate limits", "cross-instance emits"):
        figures.add(scenario_name, f"{feature} back after Redis started (s)", recovered.get(feature))
    figures.add(
        scenario_name, "answers while Redis was down", dict(Counter(f"{s.op} {s.status}" for s in during))
    )

    # Only readiness may say 503, and only because of Redis.
    wrong = outside(samples, {**EXPECTED, "ready": {200, 503}})
    assert not wrong, f"unexpected answers:\n{show(wrong)}"
    check_error_bodies(samples)
    for sample in [s for s in samples + ready if s.status == 503]:
        checks = json.loads(sample.body)["checks"]
        assert checks["redis"]["status"] == "error" and checks["database"]["status"] == "ok", sample.body
        assert sample.started + sample.elapsed >= times["down"], "readiness failed before the outage"
    assert [s.status for s in live] == [200] * len(live), "liveness changed during the outage"
    assert readiness_503 is not None and readiness_503 < 5, "readiness did not turn 503 within 5 s"
    assert readiness_back is not None, "readiness did not come back"
    # Reads kept coming from the database; limits failed open: writes still went through.
    assert any(s.op == "read" and s.status == 200 for s in during)
    assert any(s.op == "create" and s.status == 201 for s in during)
    assert set(recovered) == {"cache", "shared rate limits", "cross-instance emits"}, recovered
    check_writes([traffic], database.rows())
    assert codes == [codes[0]] * 2 and codes[0] in (0, -signal.SIGTERM), codes
    assert "falling back to in-memory storage" in check_log(a, database)
    check_log(b, database)


# --- Database outage ----------------------------------------------------------------


def test_database_outage_is_503_json_and_the_pool_recovers_alone(
    project: Path,
    python: Path,
    database: Database,
    services: dict[str, str],
    figures: Figures,
    tmp_path: Path,
) -> None:
    """PostgreSQL cut off under load (a proxy resets every connection and refuses new ones):
    routes that need it answer 503 JSON, the others 200; back again, the pool recovers and
    every acknowledged write is there."""
    scenario_name = f"Database outage ({FAULT_CLIENTS} clients, PostgreSQL cut {FAULT_SECONDS:.0f} s)"
    times: dict[str, float] = {}
    with TcpProxy(*urlsplit(database.url).netloc.rpartition("@")[2].split(":")) as proxy:
        port = free_port()
        env = app_env(database.via(proxy.port), services["REDIS_URL"])
        server = Server(uvicorn(python, project, port), project, env, tmp_path / "server.log", port)

        async def scenario(traffic: Traffic) -> tuple[list[Sample], list[Sample]]:
            await traffic.seed(10)
            stop = asyncio.Event()
            probes = asyncio.gather(
                probe(server.base, "/health/ready", stop), probe(server.base, "/health", stop)
            )
            load = asyncio.create_task(traffic.run())
            await asyncio.sleep(BEFORE_FAULT)
            times["cut"] = time.monotonic()
            await asyncio.to_thread(proxy.cut)
            await asyncio.sleep(FAULT_SECONDS)
            await asyncio.to_thread(proxy.restore)
            times["back"] = time.monotonic()
            await asyncio.sleep(AFTER_FAULT)
            traffic.stop.set()
            stop.set()
            await load
            ready, live = await probes
            return ready, live

        with stopped_at_exit(server):
            server.wait_healthy()
            traffic = Traffic(server.base, clients=FAULT_CLIENTS, network=40, writers=2)
            ready, live = asyncio.run(scenario(traffic))
            code = server.terminate(serve_grace(project) + 10)
        cut = proxy.of("cut")[0]["connections"]

    samples = traffic.samples
    unavailable = [s for s in samples if s.status == 503]
    after = [s for s in samples if s.started >= times["back"]]
    report_run(figures, scenario_name, samples)
    figures.add(scenario_name, "pooled connections reset by the cut", cut)
    figures.add(scenario_name, "503 Database unavailable answers", len(unavailable))
    figures.add(scenario_name, "readiness 503 after the cut (s)", first_after(ready, times["cut"], 503))
    figures.add(
        scenario_name,
        "readiness 200 after the database came back (s)",
        first_after(ready, times["back"], 200),
    )
    first_write = first_after([s for s in samples if s.op == "create"], times["back"], 201)
    figures.add(scenario_name, "first acknowledged write after it came back (s)", first_write)
    last_503 = max((s.started - times["back"] for s in unavailable), default=None)
    figures.add(scenario_name, "last 503 started after it came back (s)", last_503 and round(last_503, 2))

    # Only routes that need the database may say 503, with the JSON body and no trace of the error.
    wrong = outside(
        samples, {op: codes | ({503} if op in DATABASE_OPS else set()) for op, codes in EXPECTED.items()}
    )
    assert not wrong, f"unexpected answers:\n{show(wrong)}"
    check_error_bodies(samples)
    for sample in unavailable:
        if sample.op == "ready":
            assert json.loads(sample.body)["checks"]["database"]["status"] == "error", sample.body
        else:
            assert json.loads(sample.body) == UNAVAILABLE, sample.body
    assert unavailable, "no request noticed the outage"
    assert [s.status for s in live] == [200] * len(live), "liveness changed during the outage"
    assert first_after(ready, times["cut"] + 0.5, 503) is not None
    assert first_after(ready, times["back"], 200) is not None, "readiness did not come back"
    # Recovered by itself: within a few seconds nothing needs the outage any more.
    assert not [s for s in after if s.status == 503 and s.started > times["back"] + 5], "503s long after"
    assert first_write is not None, "no write succeeded after the database came back"
    check_writes([traffic], database.rows())
    assert code in (0, -signal.SIGTERM)
    log = check_log(server, database)
    assert "Traceback" not in log
