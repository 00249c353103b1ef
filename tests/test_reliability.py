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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import pytest

from tests.events import EventProcess
from tests.lb_proxy import LoadBalancer
from tests.load import DATABASE_OPS, Sample, Traffic, describe, first_after, probe, trickle
from tests.report import Figures
from tests.tcp_proxy import TcpProxy
from toolkit.features import ROOT, TARGETS
from toolkit.processes import clean_env, free_port, run
from toolkit.servers import drop_scratch_database, scratch_database, wait_until_serving

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
def stopped_at_exit(*servers: Server | list[Server]) -> Iterator[None]:
    """Kill whatever is still running at the end of the block (lists are read at the end)."""
    try:
        yield
    finally:
        for entry in servers:
            for server in entry if isinstance(entry, list) else [entry]:
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
    settings = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CACHE_KEY_PREFIX": f"rel-{uuid.uuid4().hex[:10]}:",
        "TRUSTED_HOSTS": "127.0.0.1,localhost",
        # Per client: the virtual clients each have an address; POST /items keeps its 10/minute.
        "RATE_LIMIT_DEFAULT": "6000/minute",
        # Readiness checks get 5 s: a busy shared machine is not a failed dependency.
        "HEALTH_CHECK_TIMEOUT": "5",
    }
    return clean_env(**(settings | extra))


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
    migrated = run([python, "-m", "alembic", "upgrade", "head"], project, clean_env(DATABASE_URL=url))
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
    figures.add(scenario, "5xx answers (readiness excluded)", failed)
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
    figures.note(
        "Every scenario runs baked projects in production mode (all features, PostgreSQL, Redis) over "
        "loopback for a few seconds at a time; the client runs in the test process on the same machine, "
        "so throughput and latency depend on the machine and are reported, never asserted."
    )
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
    """Redis stopped under load: readiness says degraded and stays 200, everything answers
    (from the database, with per-process limits); Redis back: cache, shared limits and
    cross-instance emits return."""
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
    degraded = first_after(ready, times["down"], 200, '"degraded"')
    healthy = first_after(ready, times["up"], 200, '"status":"ok"')
    figures.add(scenario_name, "readiness degraded after Redis stopped (s)", degraded)
    figures.add(scenario_name, "readiness ok after Redis started (s)", healthy)
    for feature in ("cache", "shared rate limits", "cross-instance emits"):
        figures.add(scenario_name, f"{feature} back after Redis started (s)", recovered.get(feature))
    figures.add(
        scenario_name, "answers while Redis was down", dict(Counter(f"{s.op} {s.status}" for s in during))
    )

    # Nothing says 503: Redis is not required, so the instance stays in service.
    wrong = outside(samples, EXPECTED)
    assert not wrong, f"unexpected answers:\n{show(wrong)}"
    check_error_bodies(samples)
    for sample in [s for s in ready if '"degraded"' in s.body]:
        checks = json.loads(sample.body)["checks"]
        assert checks["redis"]["status"] == "error" and checks["database"]["status"] == "ok", sample.body
        assert sample.started + sample.elapsed >= times["down"], "degraded before the outage"
    assert [s.status for s in ready + live] == [200] * len(ready + live), "a probe failed during the outage"
    assert degraded is not None and degraded < 5, "readiness did not report degraded within 5 s"
    assert healthy is not None, "readiness did not report ok again"
    # Reads kept coming from the database; limits failed open: writes still went through.
    assert any(s.op == "read" and s.status == 200 for s in during)
    assert any(s.op == "create" and s.status == 201 for s in during)
    assert set(recovered) == {"cache", "shared rate limits", "cross-instance emits"}, recovered
    check_writes([traffic], database.rows())
    assert codes == [codes[0]] * 2 and codes[0] in (0, -signal.SIGTERM), codes
    assert "Redis unavailable" in check_log(a, database)
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


# --- Graceful shutdown ----------------------------------------------------------------


async def slow_create(base: str, name: str, seconds: float) -> Sample:
    """POST /items with the body sent over `seconds`: a request in flight for that long."""
    body = json.dumps({"name": name}).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    headers["x-forwarded-for"] = f"10.98.{random.randrange(256)}.{random.randrange(1, 255)}"
    sample = Sample("slow create", time.monotonic(), 0.0)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        try:
            response = await client.post("/items", content=trickle(body, seconds), headers=headers)
            sample.status, sample.body = response.status_code, response.text[:300]
        except httpx.HTTPError as error:
            sample.error = f"{type(error).__name__}: {error}"
    sample.elapsed = time.monotonic() - sample.started
    return sample


def never_reached_the_app(sample: Sample, log: str) -> bool:
    """A request without an answer that the server turned away unread (no log line has its id)."""
    return sample.status is None and sample.request_id not in log


def test_sigterm_under_load_finishes_in_flight_requests_and_exits_cleanly(
    project: Path,
    python: Path,
    database: Database,
    services: dict[str, str],
    figures: Figures,
    tmp_path: Path,
) -> None:
    """SIGTERM in the middle of load and slow uploads: every request the app had started is
    answered, Socket.IO clients (websocket and long-polling) are let go at once, the database
    pool is closed properly, and the process exits in time with no task cancelled."""
    grace = serve_grace(project)
    scenario_name = f"Graceful shutdown (SIGTERM under {FAULT_CLIENTS} clients, grace {grace} s)"
    times: dict[str, float] = {}
    clients: list[EventProcess] = []
    with TcpProxy(*urlsplit(database.url).netloc.rpartition("@")[2].split(":")) as proxy:
        port = free_port()
        env = app_env(database.via(proxy.port), services["REDIS_URL"])
        server = Server(uvicorn(python, project, port), project, env, tmp_path / "server.log", port)

        async def scenario(traffic: Traffic) -> list[Sample]:
            await traffic.seed(10)
            load = asyncio.create_task(traffic.run())
            await asyncio.sleep(BEFORE_FAULT - 1.5)
            uploads = [
                asyncio.create_task(slow_create(server.base, f"slow-{traffic.tag}-{n}", 3.0))
                for n in range(10)
            ]
            await asyncio.sleep(1.5)  # the uploads are half-way through their bodies
            times["sigterm"] = time.monotonic()
            times["sigterm_wall"] = time.time()
            server.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(1.0)
            traffic.stop.set()
            await load
            return list(await asyncio.gather(*uploads))

        with stopped_at_exit(server):
            server.wait_healthy()
            clients = [
                listener(python, server.base, "lobby", transport) for transport in ("websocket", "polling")
            ]
            try:
                traffic = Traffic(server.base, clients=FAULT_CLIENTS, network=50, writers=2)
                uploads = asyncio.run(scenario(traffic))
                code = server.process.wait(timeout=grace + 10)
                stopped_after = time.monotonic() - times["sigterm"]
                disconnects = [client.wait_for("disconnected", timeout=5) for client in clients]
            finally:
                for client in clients:
                    client.stop()
        proxy.stop()
        closed = proxy.of("closed")

    log = check_log(server, database)
    samples = traffic.samples
    before = [s for s in samples if s.started + s.elapsed < times["sigterm"]]
    unanswered = [s for s in samples if s.status is None]
    turned_away = [s for s in unanswered if never_reached_the_app(s, log)]
    report_run(figures, scenario_name, samples)
    figures.add(
        scenario_name,
        "slow uploads in flight at SIGTERM, answered 201",
        sum(s.status == 201 for s in uploads),
    )
    figures.add(scenario_name, "requests refused after SIGTERM (never reached the app)", len(turned_away))
    figures.add(scenario_name, "exit code / seconds after SIGTERM", f"{code} / {stopped_after:.2f}")
    figures.add(
        scenario_name,
        "Socket.IO clients let go after SIGTERM (s)",
        {
            transport: round(event["at"] - times["sigterm_wall"], 2)
            for transport, event in zip(("websocket", "polling"), disconnects, strict=True)
        },
    )
    terminated = [event for event in closed if event["terminate"]]
    figures.add(
        scenario_name,
        "database connections closed with Terminate / all",
        f"{len(terminated)} / {len(closed)}",
    )

    # In flight at SIGTERM: answered, and the writes are in the database.
    assert [s.status for s in uploads] == [201] * len(uploads), show(uploads)
    rows = database.rows()
    names = set(rows.values())
    assert all(f"slow-{traffic.tag}-{n}" in names for n in range(len(uploads)))
    # No answer is a 5xx; a request without an answer never reached the app (refused or
    # turned away unread by the stopping server), and its write is not in the database.
    assert not [s for s in samples if s.status is not None and s.status >= 500], show(samples)
    assert not outside(before, EXPECTED), show(outside(before, EXPECTED))
    assert turned_away == unanswered, f"requests cut off after the app started them:\n{show(unanswered)}"
    assert not (traffic.unacknowledged & names), "a write the client never saw acknowledged was kept"
    check_writes([traffic], rows)
    # The process: in time, no task cancelled, the lifespan ran to its end.
    assert code in (0, -signal.SIGTERM), code
    assert stopped_after < grace, f"the stop took {stopped_after:.1f} s (grace {grace} s)"
    assert "Cancel" not in log and "Application shutdown complete" in log
    # Socket.IO clients were let go at the signal, not at the end of the grace period.
    assert all(event["at"] - times["sigterm_wall"] < 5 for event in disconnects), disconnects
    # The pool was disposed: each database connection ended with the protocol's Terminate.
    assert closed and terminated == closed, closed


# --- Rolling restart ----------------------------------------------------------------


def gunicorn(python: Path, port: int) -> list[str | Path]:
    """The VM target's start command (gunicorn.conf.py), bound to the loopback address only."""
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


def wait_in_rotation(balancer: LoadBalancer, port: int, after: int = 0, timeout: float = 60) -> None:
    """Wait until the balancer has seen the instance on `port` ready (after event `after`)."""
    deadline = time.monotonic() + timeout
    while not [
        event
        for event in balancer.events[after:]
        if event["event"] == "health" and event["healthy"] and event["backend"].endswith(f":{port}")
    ]:
        assert time.monotonic() < deadline, f"the balancer never saw port {port} ready"
        time.sleep(0.05)


def test_rolling_restart_behind_a_balancer_fails_no_request(
    bakery: Any, python: Path, database: Database, services: dict[str, str], figures: Figures, tmp_path: Path
) -> None:
    """Two gunicorn instances behind a round-robin balancer that checks readiness and retries
    requests a stopping instance turned away: restart one, then the other, under load."""
    project = Path(bakery(deploy_target="vm"))
    env = app_env(database.url, services["REDIS_URL"], WEB_CONCURRENCY="1")
    ports = [free_port(), free_port()]
    generations = {port: 0 for port in ports}

    def start(port: int) -> Server:
        log = tmp_path / f"{port}-{generations[port]}.log"
        generations[port] += 1
        return Server(gunicorn(python, port), project, env, log, port)

    servers = {port: start(port) for port in ports}
    every: list[Server] = list(servers.values())
    restarts: list[dict[str, Any]] = []
    scenario_name = f"Rolling restart (2 gunicorn instances, {FAULT_CLIENTS} clients)"

    async def scenario(traffic: Traffic, balancer: LoadBalancer) -> None:
        await traffic.seed(10)
        load = asyncio.create_task(traffic.run())
        await asyncio.sleep(3)
        for port in ports:
            old = servers[port]
            mark = len(balancer.events)
            started = time.monotonic()
            code = await asyncio.to_thread(old.terminate, 40)
            servers[port] = new = start(port)
            every.append(new)
            await asyncio.to_thread(new.wait_healthy)
            await asyncio.to_thread(wait_in_rotation, balancer, port, mark)
            restarts.append(
                {
                    "port": port,
                    "exit code": code,
                    "stop s": old.stop_seconds,
                    "back s": round(time.monotonic() - started, 2),
                }
            )
            await asyncio.sleep(1)
        await asyncio.sleep(2)
        traffic.stop.set()
        await load

    with stopped_at_exit(every):
        for server in servers.values():
            server.wait_healthy()
        with LoadBalancer([f"127.0.0.1:{port}" for port in ports]) as balancer:
            for port in ports:
                wait_in_rotation(balancer, port)
            traffic = Traffic(
                f"http://127.0.0.1:{balancer.port}", clients=FAULT_CLIENTS, network=60, writers=2
            )
            asyncio.run(scenario(traffic, balancer))
            stats = balancer.stats()
        final_codes = [server.terminate(40) for server in servers.values()]

    samples = traffic.samples
    report_run(figures, scenario_name, samples)
    figures.add(
        scenario_name,
        "restarts (exit code, seconds to stop, seconds until back in rotation)",
        "; ".join(f"{r['exit code']}, {r['stop s']}, {r['back s']}" for r in restarts),
    )
    figures.add(scenario_name, "requests the balancer retried on the other instance", stats["retries"])
    figures.add(scenario_name, "requests the balancer could not deliver", stats["failed"])
    wrong = outside(samples, EXPECTED)
    assert not wrong, f"{len(wrong)} failed requests:\n{show(wrong)}"
    check_error_bodies(samples)
    assert stats["failed"] == 0, stats
    assert [r["exit code"] for r in restarts] == [0, 0], restarts
    assert final_codes == [0, 0]
    check_writes([traffic], database.rows())
    for server in every:
        check_log(server, database)


# --- Bad input ----------------------------------------------------------------------

MAX_BODY = 65536  # MAX_BODY_BYTES of the server under fuzzing


@dataclass
class Case:
    label: str
    method: str
    path: str
    params: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    expect: int | None = None  # a status the case must get, else any non-5xx


class Raw(str):
    """A JSON token written as is (NaN, 1e999, a lone surrogate escape...)."""


def render(body: Any) -> bytes:
    """JSON text of `body`, with `Raw` values written verbatim."""
    raws: list[str] = []

    def mark(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(str(value))
            return f"__raw_{len(raws) - 1}__"
        if isinstance(value, dict):
            return {key: mark(item) for key, item in value.items()}
        if isinstance(value, list):
            return [mark(item) for item in value]
        return value

    text = json.dumps(mark(body), ensure_ascii=False)
    for number, raw in enumerate(raws):
        text = text.replace(f'"__raw_{number}__"', raw)
    return text.encode("utf-8", "surrogatepass")


def nested(depth: int, kind: str = "list") -> str:
    """JSON nested `depth` deep: lists ("l") or objects ("o")."""
    return "[" * depth + "]" * depth if kind.startswith("l") else '{"a":' * depth + "1" + "}" * depth


def bad_scalars(rng: random.Random) -> list[str]:
    """Path and query values of the wrong type, size or alphabet."""
    noise = "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(40))
    return [
        "abc", "", " ", "-1", "0", "1.5", "1e309", "NaN", "-Infinity", "9" * 40, "-" + "9" * 40,
        "\x00", "😀", "\u202e", "ｱ", "a" * 5000, "../../etc/passwd", "' OR 1=1 --", "<script>",
        "null", "[]", "%ff", noise,
    ]  # fmt: skip


def bad_values(rng: random.Random) -> list[Any]:
    """JSON values of the wrong type, size, range or encoding."""
    return [
        None, True, False, 0, -1, 1.5, -(2**63), 2**64, 1e308, Raw("1e999"), Raw("NaN"), Raw("-Infinity"),
        Raw("1" + "0" * 5000), "", " ", "x" * 5000, "x" * (MAX_BODY - 200), "😀" * 50, "\x00", "a\x00b",
        Raw('"\\ud800"'), Raw('"x\\udfff\\ud800"'), "\u202e\u0301", [], {}, [1, "a", None],
        {"$ne": 1}, "<script>alert(1)</script>", "".join(chr(rng.randrange(0x80, 0xFFFF)) for _ in range(64)),
        json.loads(nested(40)), json.loads(nested(40, "object")),
    ]  # fmt: skip


def resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def valid_value(schema: dict[str, Any], spec: dict[str, Any], known_id: int) -> Any:
    schema = resolve(schema, spec)
    kind = schema.get("type")
    if kind == "integer":
        return known_id
    if kind == "string":
        return "fuzz-" + uuid.uuid4().hex[:8] if "pattern" not in schema else "room1"
    if kind == "object":
        return {
            name: valid_value(prop, spec, known_id)
            for name, prop in schema.get("properties", {}).items()
            if name in schema.get("required", [])
        }
    return None


# Bodies no JSON parser should accept, and nesting around the parser's recursion limit.
MALFORMED = [
    b"", b"{", b'{"a": 1,}', b"{'name': 'x'}", b"\xef\xbb\xbf{}", b"\xff\xfe\x00", b"null", b"[]",
    b'"text"', b"0", b"true", b"NaN",
    *(nested(depth, kind).encode() for depth in (50, 500, 900, 990, 1000, 1500, 20000) for kind in "lo"),
]  # fmt: skip
CONTENT_TYPES = [
    None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "application/json; charset=utf-16", "application/vnd.api+json", "garbage/;;",
]  # fmt: skip


def fill(template: str, values: dict[str, str]) -> str:
    return template.format(**{name: quote(value, safe="") for name, value in values.items()})


def fuzz_cases(spec: dict[str, Any], known_id: int, rng: random.Random) -> list[Case]:
    """Invalid requests for every operation of the OpenAPI document."""
    cases: list[Case] = []
    json_type = {"content-type": "application/json"}
    for template, operations in spec["paths"].items():
        for verb, operation in operations.items():
            method, where = verb.upper(), f"{verb.upper()} {template}"
            parameters = operation.get("parameters", [])
            valid_path = {
                p["name"]: str(valid_value(p["schema"], spec, known_id))
                for p in parameters
                if p["in"] == "path"
            }
            path = fill(template, valid_path)
            for parameter in parameters:
                name = parameter["name"]
                for value in bad_scalars(rng):
                    label = f"{where} {parameter['in']} {name}={value[:20]!r}"
                    if parameter["in"] == "path":
                        cases.append(Case(label, method, fill(template, valid_path | {name: value})))
                    elif parameter["in"] == "query":
                        cases.append(Case(label, method, path, {name: value}))
            cases.append(Case(f"{where} unknown query", method, path, {"zzz": "1", "limit[]": "x"}))
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                cases.append(Case(f"{where} unexpected body", method, path, None, b'{"x": NaN}', json_type))
                continue
            schema = resolve(body["schema"], spec)
            valid = valid_value(schema, spec, known_id)
            for name in schema.get("properties", {}):
                for value in bad_values(rng):
                    content = render({**valid, name: value})
                    cases.append(
                        Case(
                            f"{where} body {name}={str(value)[:20]!r}", method, path, None, content, json_type
                        )
                    )
            for name in schema.get("required", []):
                content = render({key: item for key, item in valid.items() if key != name})
                cases.append(Case(f"{where} body without {name}", method, path, None, content, json_type))
            malformed = [*MALFORMED, render(valid) + b"garbage", render(valid)[:-1]]
            for number, content in enumerate(malformed):
                cases.append(
                    Case(f"{where} malformed body #{number}", method, path, None, content, json_type)
                )
            for content_type in CONTENT_TYPES:
                headers = {} if content_type is None else {"content-type": content_type}
                label = f"{where} content type {content_type}"
                cases.append(Case(label, method, path, None, render(valid), headers))
            utf16 = json.dumps(valid).encode("utf-16")
            cases.append(Case(f"{where} JSON as UTF-16", method, path, None, utf16, json_type))
            huge = render({**valid, "padding": "x" * (MAX_BODY + 1)})
            cases.append(
                Case(f"{where} body over the limit", method, path, None, huge, json_type, expect=413)
            )
    return cases


def check_answer(case: Case, response: httpx.Response, password: str) -> str | None:
    """What is wrong with the answer to `case`, if anything."""
    if case.expect is not None and response.status_code != case.expect:
        return f"expected {case.expect}"
    if response.status_code >= 500:
        return "server error"
    if password in response.text or "Traceback" in response.text:
        return "leaks internals"
    if response.status_code < 400:
        return None
    if not response.headers.get("content-type", "").startswith("application/json"):
        return "not JSON"
    detail = response.json().get("detail")
    if isinstance(detail, str):
        return None if detail.strip() else "empty detail"
    if isinstance(detail, list) and detail:
        clear = all(isinstance(item.get("msg"), str) and item["msg"] and item.get("loc") for item in detail)
        return None if clear else "a problem without msg or loc"
    return "no detail"


async def send_cases(base: str, cases: list[Case], concurrency: int = 8) -> list[httpx.Response | Exception]:
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:

        async def send(case: Case) -> httpx.Response | Exception:
            async with semaphore:
                try:
                    return await client.request(
                        case.method, case.path, params=case.params, content=case.content, headers=case.headers
                    )
                except httpx.HTTPError as error:
                    return error

        return list(await asyncio.gather(*(send(case) for case in cases)))


async def chunked_upload(base: str, size: int) -> httpx.Response:
    async def chunks() -> Any:
        yield b'{"name": "'
        for _ in range(size // 8192 + 1):
            yield b"x" * 8192
        yield b'"}'

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return await client.post("/items", content=chunks(), headers={"content-type": "application/json"})


@pytest.fixture(scope="module")
def production(
    project: Path,
    python: Path,
    database: Database,
    services: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """One production instance for the bad-input and header checks: docs on (for the
    OpenAPI document), rate limits off (so every case reaches validation), a small body limit."""
    port = free_port()
    env = app_env(
        database.url,
        services["REDIS_URL"],
        DOCS_ENABLED="true",
        RATE_LIMIT_ENABLED="false",
        MAX_BODY_BYTES=str(MAX_BODY),
        TRUSTED_HOSTS="127.0.0.1,api.example.com",
    )
    server = Server(
        uvicorn(python, project, port),
        project,
        env,
        tmp_path_factory.mktemp("production") / "server.log",
        port,
    )
    with stopped_at_exit(server):
        server.wait_healthy()
        yield server
        assert server.terminate(serve_grace(project) + 10) in (0, -signal.SIGTERM)
    check_log(server, database)


def test_invalid_input_on_every_operation_is_4xx_json(
    production: Server, database: Database, figures: Figures
) -> None:
    """Generated invalid requests for every operation in the OpenAPI document: never a 5xx,
    every error a JSON body with a message; bodies over MAX_BODY_BYTES are 413."""
    spec = httpx.get(f"{production.base}/openapi.json", timeout=10).json()
    created = httpx.post(f"{production.base}/items", json={"name": f"fuzz-{uuid.uuid4().hex}"}, timeout=10)
    assert created.status_code == 201
    cases = fuzz_cases(spec, created.json()["id"], random.Random(20261122))
    started = time.monotonic()
    answers = asyncio.run(send_cases(production.base, cases))
    chunked = asyncio.run(chunked_upload(production.base, MAX_BODY * 2))
    elapsed = time.monotonic() - started

    problems = []
    for case, answer in zip(cases, answers, strict=True):
        if isinstance(answer, Exception):
            problems.append(f"{case.label}: {type(answer).__name__}: {answer}")
        elif (problem := check_answer(case, answer, database.password)) is not None:
            problems.append(f"{case.label}: {problem}: {answer.status_code} {answer.text[:200]}")
    operations = sum(len(operations) for operations in spec["paths"].values())
    statuses = Counter(answer.status_code for answer in answers if isinstance(answer, httpx.Response))
    scenario = "Bad input (generated from the OpenAPI document)"
    figures.add(scenario, "operations / requests", f"{operations} / {len(cases) + 1} in {elapsed:.1f} s")
    figures.add(scenario, "answers by status", dict(sorted(statuses.items())))
    figures.add(scenario, "5xx or answers without a JSON message", len(problems))
    assert not problems, "\n".join(problems[:30])
    assert chunked.status_code == 413, chunked.text
    assert chunked.json() == {"detail": f"Request body over {MAX_BODY} bytes"}


# --- Security defaults --------------------------------------------------------------


def test_production_refuses_unsafe_settings_and_names_only_the_variable(
    project: Path, python: Path, tmp_path: Path
) -> None:
    """ENVIRONMENT=production with an unsafe value: the server never starts, and its output
    names the variable without showing the secret it was given."""
    password = f"pw-{secrets.token_hex(8)}"
    short_key = f"short-{secrets.token_hex(6)}"
    safe = {
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": f"postgresql://app:{password}@127.0.0.1:{free_port()}/app",
    }
    unsafe = {
        "DEBUG": {"DEBUG": "true"},
        "SECRET_KEY": {"SECRET_KEY": "change-me"},
        "SECRET_KEY (short)": {"SECRET_KEY": short_key},
        "CORS_ORIGINS": {"CORS_ORIGINS": "*"},
        "DATABASE_URL (SQLite)": {"DATABASE_URL": "sqlite:///./production.db"},
        "DATABASE_URL (bad sslmode)": {"DATABASE_URL": f"postgres://app:{password}@db/app?sslmode=sometimes"},
    }
    started = {
        name: subprocess.Popen(
            [str(part) for part in uvicorn(python, project, free_port())],
            cwd=project,
            env=clean_env(**(safe | change)),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for name, change in unsafe.items()
    }
    outputs = {}
    for name, process in started.items():
        try:
            output, _ = process.communicate(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        outputs[name] = (process.returncode, output.decode(errors="replace"))
    for name, (code, output) in outputs.items():
        variable = name.split()[0]
        assert code != 0, f"{name}: the server started"
        assert f"{variable} " in output or f"{variable}=" in output, f"{name}: {output[-1500:]}"
        assert password not in output and short_key not in output, f"{name} shows a secret:\n{output[-1500:]}"


def test_live_answers_carry_security_headers_and_trusted_hosts_hold(production: Server) -> None:
    base = production.base
    answers = {
        "liveness": httpx.get(f"{base}/health", timeout=10),
        "list": httpx.get(f"{base}/items", timeout=10),
        "404": httpx.get(f"{base}/no/such/route", timeout=10),
        "422": httpx.post(f"{base}/items", json={}, timeout=10),
        "413": httpx.post(f"{base}/items", content=b"x" * (MAX_BODY + 1), timeout=10),
        "untrusted host": httpx.get(f"{base}/items", headers={"host": "evil.example"}, timeout=10),
        "trusted host": httpx.get(f"{base}/items", headers={"host": "api.example.com"}, timeout=10),
    }
    https = httpx.get(f"{base}/health", headers={"x-forwarded-proto": "https"}, timeout=10)
    docs = httpx.get(f"{base}/docs", timeout=10)

    assert {name: answer.status_code for name, answer in answers.items()} == {
        "liveness": 200,
        "list": 200,
        "404": 404,
        "422": 422,
        "413": 413,
        "untrusted host": 400,
        "trusted host": 200,
    }
    assert answers["untrusted host"].json() == {"detail": "Invalid host header"}
    for name, answer in [*answers.items(), ("docs", docs), ("https", https)]:
        for header, value in SECURITY_HEADERS.items():
            assert answer.headers.get(header) == value, (name, header)
    for name, answer in answers.items():
        assert answer.headers["content-security-policy"].startswith("default-src 'none'"), name
        assert "strict-transport-security" not in answer.headers, name
    assert https.headers["strict-transport-security"].startswith("max-age=")
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers


def test_database_password_never_shows_and_docs_can_be_turned_off(
    project: Path, python: Path, services: dict[str, str], figures: Figures, tmp_path: Path
) -> None:
    """Production with DOCS_ENABLED=false and a database that refuses connections: the docs
    are gone, database routes and readiness say 503, and the password in DATABASE_URL is in
    no answer and no log line."""
    password = f"pw-{secrets.token_hex(12)}"
    port = free_port()
    env = app_env(
        f"postgresql://app:{password}@127.0.0.1:{free_port()}/app",
        services["REDIS_URL"],
        DOCS_ENABLED="false",
    )
    server = Server(uvicorn(python, project, port), project, env, tmp_path / "server.log", port)
    with stopped_at_exit(server):
        server.wait_healthy()
        answers = {
            path: httpx.get(f"{server.base}{path}", timeout=30)
            for path in (
                "/docs",
                "/openapi.json",
                "/redoc",
                "/",
                "/health",
                "/health/ready",
                "/items",
                "/items/1",
            )
        }
        answers["POST /items"] = httpx.post(f"{server.base}/items", json={"name": "x"}, timeout=30)
        code = server.terminate(serve_grace(project) + 10)

    statuses = {path: answer.status_code for path, answer in answers.items()}
    assert statuses == {
        "/docs": 404,
        "/openapi.json": 404,
        "/redoc": 404,
        "/": 200,
        "/health": 200,
        "/health/ready": 503,
        "/items": 503,
        "/items/1": 503,
        "POST /items": 503,
    }
    assert answers["/"].json()["docs"] is None
    assert answers["/health/ready"].json()["checks"]["database"]["status"] == "error"
    log = server.text()
    assert "Database unavailable" in log
    for text in [log, *(answer.text for answer in answers.values())]:
        assert password not in text
    assert code in (0, -signal.SIGTERM)
    figures.add(
        "Security defaults", "docs off in production (DOCS_ENABLED=false)", "404 on /docs and /openapi.json"
    )
    figures.add("Security defaults", "database password in answers or log lines", 0)


def dockerfile_steps(project: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (project / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def test_the_container_runs_as_a_non_root_user(bakery: Any) -> None:
    """The image's last stage switches to a numeric, non-zero user and group before CMD, and
    the port it serves needs no privilege."""
    steps = dockerfile_steps(Path(bakery()))
    runtime = steps[max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM") :]
    users = [argument for keyword, argument in runtime if keyword == "USER"]
    assert users, "the runtime stage never leaves root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0 and (not group or (group.isdigit() and int(group) > 0)), users
    keywords = [keyword for keyword, _ in runtime]
    assert keywords.index("USER") < keywords.index("CMD")
    assert all(
        int(port) >= 1024 for keyword, argument in runtime if keyword == "EXPOSE" for port in argument.split()
    )


# Values that are obviously not secrets: local-development defaults and placeholders.
PLACEHOLDERS = {"", "postgres", "password", "secret", "change-me", "changeme", "p", "pw"}
CREDENTIAL_IN_URL = re.compile(r"[a-z+]+://[^/\s:@'\"]*:([^@\s/'\"]+)@")
# An environment-style assignment (not `${NAME:?message}`) of a secret-sounding variable.
SECRET_ASSIGNMENT = re.compile(
    r"(?<![{\w])[A-Z0-9_]*(?:SECRET|PASSWORD|TOKEN|API_KEY)[A-Z0-9_]*\s*[=:]\s*[\"']?([^\s\"'#]+)"
)
KNOWN_TOKENS = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|sk_live_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20}"
)
RANDOM_LOOKING = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def secrets_in(project: Path) -> list[str]:
    found = []
    for path in sorted(project.rglob("*")):
        if not path.is_file():
            continue
        name = str(path.relative_to(project))
        text = path.read_text(errors="replace")
        is_test = name.startswith("tests/")
        found += [f"{name}: {match.group(0)[:40]}" for match in KNOWN_TOKENS.finditer(text)]
        found += [
            f"{name}: random-looking {token[:12]}..."
            for token in RANDOM_LOOKING.findall(text)
            if entropy(token) > 4.5 and not re.fullmatch(r"[0-9a-f]+", token)
        ]
        if is_test:
            continue  # tests hold made-up credentials on purpose
        # Code and prose name secrets (secret_key: SecretStr, --set-secrets SECRET_KEY=name:latest);
        # configuration must not hold one. Keys and random-looking values are caught above.
        patterns = [CREDENTIAL_IN_URL]
        if path.suffix not in (".py", ".md"):
            patterns.append(SECRET_ASSIGNMENT)
        for pattern in patterns:
            for match in pattern.finditer(text):
                value = match.group(1)
                placeholder = value.lower() in PLACEHOLDERS or not re.search(r"[A-Za-z0-9]", value)
                if not placeholder and not value.startswith(("$", "{", "<", "...")):
                    found.append(f"{name}: {match.group(0)[:60]}")
    return found


def test_the_generated_repository_holds_no_secret(bakery: Any, figures: Figures) -> None:
    """For every deploy target: no .env, .env ignored by git (and Docker), no key or token,
    and every credential a placeholder or a reference to the environment."""
    scanned = 0
    for target in TARGETS:
        project = Path(bakery(deploy_target=target))
        assert not (project / ".env").exists(), target
        assert ".env" in (project / ".gitignore").read_text().split(), target
        if (project / ".dockerignore").exists():
            rules = [line.strip() for line in (project / ".dockerignore").read_text().splitlines()]
            # Either .env is listed, or everything is ignored and .env is not let back in.
            let_back = [rule for rule in rules if rule.startswith("!.env")]
            assert ".env" in rules or ("*" in rules and not let_back), target
        found = secrets_in(project)
        assert not found, f"{target}:\n" + "\n".join(found)
        scanned += sum(1 for path in project.rglob("*") if path.is_file())
    figures.add("Security defaults", "files scanned for secrets (every deploy target)", scanned)
