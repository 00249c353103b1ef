"""Benchmark the default generated project against bare Starlette and FastAPI ceilings.

    make bench                                  # the full run, a few minutes
    .venv/bin/python -m bench.run --quick       # seconds per endpoint: checks the script works

It bakes the default project, serves it with uvicorn on real PostgreSQL and Redis
(TEST_DATABASE_URL / TEST_REDIS_URL, as the test suite), and drives it with `wrk`.
Every HTTP figure is measured next to the same handlers on a bare Starlette app and
a bare FastAPI app (bench/ceilings.py), with the same server and options; the
three are measured back to back, alternating, for several rounds, and the median
is kept, so a busy machine moves app and ceilings alike and the ratios hold.

Also measured: Socket.IO connects and broadcasts to clients spread over two
instances sharing Redis, cold start to the first 200 on /health, idle RSS, and
the time to bake the default project. Writes results.json, results.md (printed)
and throughput.png to the output directory (bench/results by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from toolkit.auth import create_admin, log_in, mint_token
from toolkit.bakery import (
    DATABASE_URL,
    REDIS_URL,
    bake,
    runtime_dependencies,
    superset_dependencies,
    venv_for,
)
from toolkit.features import DEFAULT_PYTHON, ROOT
from toolkit.processes import clean_env, free_port, run
from toolkit.servers import drop_scratch_database, scratch_database

BENCH = ROOT / "bench"
CONNECTIONS = 64
# The same for the generated app and every ceiling (the generated scripts/serve
# also turns uvicorn's proxy headers off: the app applies them itself).
SERVER_OPTIONS = [
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--no-proxy-headers",
    "--log-level",
    "warning",
]
# High enough that every request is counted and none is refused.
UNREFUSED_LIMIT = "100000000/minute"
TARGETS = {
    "health_vs_fastapi": 0.85,
    "cache_vs_database": 1.5,
    "limited_vs_unlimited": 0.5,
    "protected_vs_public": 0.8,
    "limited_p99_ms": 50.0,
    "socketio_p99_ms": 50.0,
    "cold_start_s": 1.5,
    "idle_rss_mb": 120.0,
    "bake_s": 1.0,
}


@dataclass
class Settings:
    seconds: int
    warmup: int
    rounds: int
    sio_clients: int
    sio_processes: int
    sio_warmup: int
    sio_emits: int
    sio_interval: float
    sio_burst: int
    sio_rounds: int
    cold_starts: int
    bakes: int
    logins: int


FULL = Settings(
    seconds=4,
    warmup=2,
    rounds=5,
    sio_clients=1000,
    sio_processes=2,
    sio_warmup=5,
    sio_emits=40,
    sio_interval=0.25,
    sio_burst=100,
    sio_rounds=2,
    cold_starts=5,
    bakes=5,
    logins=20,
)
QUICK = Settings(
    seconds=1,
    warmup=0,
    rounds=1,
    sio_clients=20,
    sio_processes=1,
    sio_warmup=1,
    sio_emits=4,
    sio_interval=0.05,
    sio_burst=10,
    sio_rounds=1,
    cold_starts=1,
    bakes=1,
    logins=2,
)


# --- processes -------------------------------------------------------------------


class Pinning:
    """Server processes on one CPU, load generators on another (when there are two)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None

    def server(self) -> list[str]:
        return ["taskset", "-c", "0"] if self.enabled else []

    def client(self) -> list[str]:
        return ["taskset", "-c", "1"] if self.enabled else []


def http_status(
    port: int, path: str = "/health", timeout: float = 1.0, headers: tuple[str, ...] = ()
) -> int | None:
    """The status of one GET, on a fresh connection; None when nothing answers."""
    extra = "".join(f"{header}\r\n" for header in headers)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode()
            )
            return int(sock.recv(64).split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """One uvicorn process serving `target` from `cwd`."""

    def __init__(
        self,
        name: str,
        target: str,
        python: Path,
        cwd: Path,
        env: dict[str, str],
        logs: Path,
        pinning: Pinning,
        extra: list[str] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            *pinning.server(),
            str(python),
            "-m",
            "uvicorn",
            target,
            "--port",
            str(self.port),
            *SERVER_OPTIONS,
            *(extra or []),
        ]
        self.cwd = cwd
        self.env = env
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 60, poll: float = 0.05) -> float:
        """Seconds from start to the first 200 on /health."""
        assert self.process is not None
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if http_status(self.port, timeout=0.5) == 200:
                return time.perf_counter() - self.started_at
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.tail()}")
            time.sleep(poll)
        raise RuntimeError(f"{self.name} did not answer /health within {timeout} s:\n{self.tail()}")

    def rss_mb(self) -> float:
        assert self.process is not None
        return rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextlib.contextmanager
def serving(*servers: Server) -> Iterator[None]:
    """Start the servers together, wait until each answers, stop them all at the end."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield
    finally:
        for server in servers:
            server.stop()


# --- HTTP load ---------------------------------------------------------------------


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    # The server's CPU time per request (user + system): steadier than throughput
    # on a busy machine, since time the server waits for a CPU is not counted.
    cpu_us: float = 0.0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(output: str) -> Load:
    """Throughput and latency percentiles from `wrk --latency` output; errors raise."""
    problems = re.findall(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", output)
    if problems:
        raise RuntimeError(f"wrk reported errors: {problems}\n{output}")
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s|m))\s*$", output, re.MULTILINE))
    return Load(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
    )


def wrk(
    pinning: Pinning,
    server: Server,
    path: str,
    seconds: int,
    script: Path | None = None,
    args: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
) -> Load:
    url = server.url + path
    command = [
        *pinning.client(),
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "5s",
        *(part for header in headers for part in ("-H", header)),
    ]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    if args:
        command += ["--", *args]
    cpu_before = server.cpu_seconds()
    result = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = server.cpu_seconds() - cpu_before
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
    load = parse_wrk(result.stdout)
    load.cpu_us = cpu / max(load.requests, 1) * 1e6
    return load


@dataclass
class Target:
    """One thing wrk drives: a server, a path, and an optional wrk script."""

    server: Server
    path: str
    script: Path | None = None
    # Sent with every request (`-H`), such as a signed-in user's Authorization.
    headers: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.server.name} {'POST' if self.script else 'GET'} {self.path}"


@dataclass
class Row:
    key: str
    label: str
    app: Target
    fastapi: Target
    starlette: Target


@dataclass
class Alternative:
    """A way to apply the same Redis-backed limit, on bare FastAPI, next to the route unlimited."""

    key: str
    label: str
    limited: Target
    unlimited: Target


def targets_of(item: Row | Alternative) -> tuple[Target, ...]:
    if isinstance(item, Row):
        return (item.app, item.fastapi, item.starlette)
    return (item.limited, item.unlimited)


@dataclass
class Measured:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    rounds: list[Load] = field(default_factory=list)


def median_of(loads: list[Load]) -> Measured:
    return Measured(
        rps=statistics.median(load.rps for load in loads),
        p50_ms=statistics.median(load.p50_ms for load in loads),
        p99_ms=statistics.median(load.p99_ms for load in loads),
        cpu_us=statistics.median(load.cpu_us for load in loads),
        rounds=loads,
    )


def rotated(items: list[Any], round_: int) -> list[Any]:
    """`items` starting one further along each round, so no item always goes first."""
    shift = round_ % len(items)
    return items[shift:] + items[:shift]


def describe(item: Row | Alternative) -> dict[str, str]:
    """The item for results.json, each target named by its key."""
    return {name: value.key if isinstance(value, Target) else value for name, value in vars(item).items()}


def paired_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The median over rounds of a's throughput ÷ b's, each pair measured back to back.

    On a shared machine the speed of a CPU drifts by tens of percent within
    seconds; a ratio taken within a round sees both sides at about the same speed.
    """
    # A round where b answered nothing (a --quick run on a busy machine) has no ratio.
    ratios = [x["rps"] / y["rps"] for x, y in zip(a["rounds"], b["rounds"], strict=True) if y["rps"]]
    return statistics.median(ratios) if ratios else math.nan


def measure_http(
    items: list[list[Row | Alternative]], settings: Settings, pinning: Pinning, run_id: str
) -> dict[str, Measured]:
    """Drive every target of each group back to back, alternating the order each round."""
    groups = []
    for group in items:
        targets: dict[str, Target] = {}
        for item in group:
            for target in targets_of(item):
                targets.setdefault(target.key, target)
        groups.append(list(targets.values()))

    def drive(target: Target, seconds: int, tag: str) -> Load:
        args = (f"{run_id}-{tag}-{target.server.name}",) if target.script else ()
        return wrk(pinning, target.server, target.path, seconds, target.script, args, target.headers)

    for group in groups:
        for target in group:
            if target.script is None:
                # Fill caches and connection pools before anything is timed.
                for _ in range(3):
                    if http_status(target.server.port, target.path, 10, target.headers) != 200:
                        raise RuntimeError(f"{target.key} does not answer 200")
            if settings.warmup:
                drive(target, settings.warmup, "warmup")
    loads: dict[str, list[Load]] = {target.key: [] for group in groups for target in group}
    for round_ in range(settings.rounds):
        for group in groups:
            for target in rotated(group, round_):
                load = drive(target, settings.seconds, f"r{round_}")
                loads[target.key].append(load)
                print(
                    f"  round {round_ + 1}: {target.key:<40} {load.rps:8.0f} req/s  "
                    f"p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms  CPU {load.cpu_us:5.0f} µs/req",
                    flush=True,
                )
    return {key: median_of(values) for key, values in loads.items()}


# One argon2 hash with the project's parameters, in ms (the best of five).
_HASH_TIME = (
    "import timeit\n"
    "from app.auth.passwords import HASHER\n"
    "print(min(timeit.repeat(lambda: HASHER.hash('a password'), number=1, repeat=5)) * 1000)\n"
)


def measure_login(python: Path, project: Path, server: Server, logins: int) -> dict[str, float]:
    """What a login costs: POST /auth/token one at a time, and one argon2 hash alone."""
    create_admin(python, project, server.env)
    took = []
    for _ in range(logins):
        started = time.perf_counter()
        log_in(server.url)
        took.append((time.perf_counter() - started) * 1000)
    hashing = run([python, "-c", _HASH_TIME], project, clean_env()).stdout
    return {"logins": logins, "login_p50_ms": statistics.median(took), "hash_ms": float(hashing)}


# --- Socket.IO -------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_socketio(
    pair: tuple[Server, Server], python: Path, settings: Settings, pinning: Pinning
) -> dict[str, Any]:
    """Connect clients spread over two instances, then broadcast to them through one instance's HTTP route."""
    room = f"bench-{uuid.uuid4().hex[:8]}"
    urls = [server.url for server in pair]
    counts = [settings.sio_clients // settings.sio_processes] * settings.sio_processes
    counts[0] += settings.sio_clients - sum(counts)
    processes = []
    for index, count in enumerate(counts):
        rotated = urls[index % 2 :] + urls[: index % 2]
        processes.append(
            subprocess.Popen(
                [
                    *pinning.client(),
                    str(python),
                    str(BENCH / "sio_clients.py"),
                    "--urls",
                    ",".join(rotated),
                    "--clients",
                    str(count),
                    "--room",
                    room,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    try:
        ready = [json.loads(process.stdout.readline() or "{}") for process in processes]  # type: ignore[union-attr]
        if not all(message.get("ready") for message in ready):
            raise RuntimeError("a Socket.IO client process failed to connect its clients")
        connect_seconds = max(m["connect_end"] for m in ready) - min(m["connect_start"] for m in ready)
        connect_ms = [value for m in ready for value in m["connect_ms"]]

        emitted: dict[str, list[float]] = {"warmup": [], "latency": [], "burst": []}
        cpu_before = sum(server.cpu_seconds() for server in pair)
        with httpx.Client(timeout=10) as client:

            def emit(index: int, phase: str) -> None:
                sent = time.time()
                url = f"{urls[index % 2]}/realtime/rooms/{room}/emit"
                answer = client.post(url, json={"event": "tick", "data": {"t": sent, "phase": phase}})
                if answer.status_code != 202:
                    raise RuntimeError(f"emit answered {answer.status_code}: {answer.text}")
                emitted[phase].append(sent)

            # The warm-up is not measured: the first broadcasts run code for the first time.
            for phase, count in (("warmup", settings.sio_warmup), ("latency", settings.sio_emits)):
                for index in range(count):
                    emit(index, phase)
                    time.sleep(settings.sio_interval)
            for index in range(settings.sio_burst):
                emit(index, "burst")

        expect = {"latency": settings.sio_emits, "burst": settings.sio_burst}
        reports = []
        for process in processes:
            process.stdin.write(json.dumps({"expect": expect, "timeout": 60}) + "\n")  # type: ignore[union-attr]
            process.stdin.flush()  # type: ignore[union-attr]
        for process in processes:
            reports.append(json.loads(process.stdout.readline() or "{}"))  # type: ignore[union-attr]
        cpu = sum(server.cpu_seconds() for server in pair) - cpu_before
    finally:
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    latencies = [value for report in reports for value in report["latencies"].get("latency", [])]
    burst = [value for report in reports for value in report["latencies"].get("burst", [])]
    burst_last = max(report["last"].get("burst", 0.0) for report in reports)
    delivered = sum(report["counts"].get("burst", 0) for report in reports)
    expected = settings.sio_clients * (settings.sio_emits + settings.sio_burst)
    dropped = sum(report.get("dropped", 0) for report in reports)
    if dropped:
        raise RuntimeError(f"{dropped} Socket.IO clients were disconnected during the measurement")
    return {
        "clients": settings.sio_clients,
        "connects_per_s": settings.sio_clients / connect_seconds,
        "connect_p50_ms": percentile(connect_ms, 0.5),
        "connect_p99_ms": percentile(connect_ms, 0.99),
        "latency_p50_ms": percentile(latencies, 0.5),
        "latency_p99_ms": percentile(latencies, 0.99),
        "latency_max_ms": max(latencies, default=float("nan")),
        "deliveries_per_s": delivered / (burst_last - emitted["burst"][0]) if delivered else 0.0,
        "burst_p99_ms": percentile(burst, 0.99),
        "lost": expected - len(latencies) - delivered,
        # Both instances' CPU time per event delivered to a client (HTTP emits included).
        "cpu_us_per_delivery": cpu / max(len(latencies) + delivered, 1) * 1e6,
        # The client processes' CPU time per received event (connects included).
        "client_cpu_us_per_delivery": sum(report.get("cpu_seconds", 0.0) for report in reports)
        / max(len(latencies) + delivered, 1)
        * 1e6,
    }


# --- startup and generation --------------------------------------------------------------


def measure_cold_start(make: Any, runs: int) -> dict[str, float]:
    """Process start to the first 200 on /health, and RSS once idle, for fresh processes."""
    starts, cpu, rss = [], [], []
    for index in range(runs):
        server: Server = make(f"cold-{index}")
        server.start()
        try:
            starts.append(server.wait_ready(poll=0.005))
            cpu.append(server.cpu_seconds())
            time.sleep(1.0)
            rss.append(server.rss_mb())
        finally:
            server.stop()
    return {
        "cold_start_s": statistics.median(starts),
        "cold_start_max_s": max(starts),
        "cold_start_cpu_s": statistics.median(cpu),
        "idle_rss_mb": statistics.median(rss),
    }


def measure_bake(work: Path, runs: int) -> dict[str, float]:
    """Baking the default project, in process (what the hooks and templates cost) and with the CLI."""
    in_process, cli, cli_cpu = [], [], []
    cookiecutter = Path(sys.executable).with_name("cookiecutter")
    for index in range(runs):
        started = time.perf_counter()
        bake(work / f"in-process-{index}")
        in_process.append(time.perf_counter() - started)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        run([cookiecutter, ROOT, "--no-input", "--output-dir", work / f"cli-{index}"], ROOT)
        cli.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli_cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "bake_in_process_s": statistics.median(in_process),
        "bake_cli_s": statistics.median(cli),
        "bake_cli_cpu_s": statistics.median(cli_cpu),
    }


# --- report ----------------------------------------------------------------------------------


def versions(python: Path) -> dict[str, str]:
    names = [
        "fastapi",
        "starlette",
        "uvicorn",
        "pydantic",
        "sqlalchemy",
        "asyncpg",
        "redis",
        "python-socketio",
        "slowapi",
        "limits",
        "sentry-sdk",
    ]
    code = (
        "import json, sys, platform; from importlib.metadata import version; "
        "print(json.dumps({'python': platform.python_version(), **{n: version(n) for n in sys.argv[1:]}}))"
    )
    return json.loads(run([python, "-c", code, *names], ROOT).stdout)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(results: dict[str, Any]) -> str:
    """The Markdown report: HTTP table, Socket.IO table, startup table, targets."""
    machine, options = results["machine"], results["settings"]
    versions = machine["versions"]
    pinned = "server pinned to one CPU, load generator to another" if machine["pinned"] else "no CPU pinning"
    lines = [
        f"{results['mode']} run on {machine['cpus']} CPUs (load average {machine['load_before']:.1f} before, "
        f"{machine['load_after']:.1f} after); {pinned}. Python {versions['python']}, "
        f"FastAPI {versions['fastapi']}, Starlette {versions['starlette']}, uvicorn {versions['uvicorn']}, "
        f"python-socketio {versions['python-socketio']}, slowapi {versions['slowapi']}.",
    ]
    http, rows = results.get("http"), results.get("rows")
    if http and rows:
        lines += [
            "",
            f"HTTP: one uvicorn worker, `wrk` with {CONNECTIONS} connections, {options['rounds']} "
            f"rounds of {options['seconds']} s per target, the targets of a row back to back in an order "
            "that rotates each round. Throughput, latency and CPU (the server's CPU time per request) "
            "are medians over rounds; a ratio is the median of the ratios within each round.",
            "",
            "| Endpoint | App req/s | App p50 / p99 ms | App CPU µs/req | Bare FastAPI req/s | App ÷ FastAPI "
            "| Bare Starlette req/s | App ÷ Starlette |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows:
            app, fast, star = (http[row[name]] for name in ("app", "fastapi", "starlette"))
            lines.append(
                f"| {row['label']} | {app['rps']:,.0f} | {app['p50_ms']:.1f} / {app['p99_ms']:.1f} "
                f"| {app['cpu_us']:,.0f} | {fast['rps']:,.0f} | {paired_ratio(app, fast):.2f} "
                f"| {star['rps']:,.0f} | {paired_ratio(app, star):.2f} |"
            )
        lines += [
            "",
            "\\* The reads with rate limiting off, so that they compare the source alone (the limiter's "
            "cost is the GET / pair); the signed-in read is the same route behind the project's bearer "
            "check (`bench/protected.py`), and POST /items sends an access token. Every other row is the "
            "default project as generated; all run with CORS origins, trusted hosts and production "
            "settings, and no Sentry DSN.",
        ]
    auth = results.get("auth")
    if auth:
        lines += [
            "",
            f"Logging in (`POST /auth/token`, one at a time, {auth['logins']} logins): median "
            f"{auth['login_p50_ms']:.0f} ms, of which one argon2 hash takes {auth['hash_ms']:.0f} ms "
            "(in a worker thread: other requests go on meanwhile).",
        ]
    alternatives = results.get("alternatives")
    if http and alternatives:
        lines += [
            "",
            f"Rate limiting, the same Redis-backed limit applied {len(alternatives)} ways to GET / on bare "
            "FastAPI, each against the route unlimited (same rounds as above):",
            "",
            "| Limiter | req/s | p50 / p99 ms | CPU µs/req | ÷ unlimited |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for alternative in alternatives:
            limited, unlimited = http[alternative["limited"]], http[alternative["unlimited"]]
            lines.append(
                f"| {alternative['label']} | {limited['rps']:,.0f} | {limited['p50_ms']:.1f} / "
                f"{limited['p99_ms']:.1f} | {limited['cpu_us']:,.0f} "
                f"| {paired_ratio(limited, unlimited):.2f} |"
            )
    sio = results.get("socketio")
    if sio:
        app, bare, plain = sio["app"], sio["ceiling"], sio["plain"]
        lines += [
            "",
            f"Socket.IO: {app['clients']:,.0f} WebSocket clients spread over two instances sharing Redis; "
            f"{options['sio_emits']} broadcasts {options['sio_interval'] * 1000:.0f} ms apart through "
            f"`POST /realtime/rooms/{{room}}/emit` for latency (after {options['sio_warmup']} unmeasured), "
            f"then {options['sio_burst']} back to back for throughput; "
            f"medians of {options['sio_rounds']} rounds in rotating order; no process pinned. "
            "Plain WebSockets: the same clients and broadcasts on a Starlette WebSocket route that speaks "
            "just enough of the protocol, one send per client, fanned out through Redis pub/sub.",
            "",
            "| Socket.IO | App | Bare python-socketio | App ÷ bare | Plain WebSockets |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for key, label, digits in (
            ("connects_per_s", "Connects per second", 0),
            ("deliveries_per_s", "Broadcast deliveries per second", 0),
            ("latency_p50_ms", "Emit-to-receive p50, ms", 1),
            ("latency_p99_ms", "Emit-to-receive p99, ms", 1),
            ("cpu_us_per_delivery", "Servers' CPU per delivered event, µs", 0),
            ("client_cpu_us_per_delivery", "Clients' CPU per received event, µs", 0),
            ("lost", "Events lost", 0),
        ):
            ratio = f"{app[key] / bare[key]:.2f}" if bare[key] else "-"
            lines.append(
                f"| {label} | {app[key]:,.{digits}f} | {bare[key]:,.{digits}f} | {ratio} "
                f"| {plain[key]:,.{digits}f} |"
            )
    start = results.get("startup")
    if start:
        lines += ["", "| Startup and generation | Wall | CPU |", "| --- | ---: | ---: |"]
        if "cold_start_s" in start:
            lines.append(
                "| Cold start to the first 200 on /health (runtime dependencies only, bytecode "
                "compiled; median) "
                f"| {start['cold_start_s']:.2f} s | {start['cold_start_cpu_s']:.2f} s |"
            )
            after_load = start.get("rss_after_load_mb")
            rss = f"{start['idle_rss_mb']:.0f} MB" + (f" / {after_load:.0f} MB" if after_load else "")
            label = "Idle RSS per worker: after start" + (" / after the HTTP load" if after_load else "")
            lines.append(f"| {label} | {rss} | |")
        lines.append(
            f"| Bake the default project with the cookiecutter CLI (median) | {start['bake_cli_s']:.2f} s "
            f"| {start['bake_cli_cpu_s']:.2f} s |"
        )
        lines.append(
            f"| Bake it in process (templates and hooks only) | {start['bake_in_process_s']:.2f} s | |"
        )
    lines += ["", "| Target | Measured | Verdict |", "| --- | ---: | --- |"]
    for label, value, ok in results["targets"]:
        lines.append(f"| {label} | {value} | {verdict(ok)} |")
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each target of the issue that this run measured: label, value, met."""
    found = []
    http = results.get("http")
    if http:
        by_key = {row["key"]: row for row in results["rows"]}

        def app(row: str) -> dict[str, Any]:
            return http[by_key[row]["app"]]

        health = paired_ratio(app("health"), http[by_key["health"]["fastapi"]])
        cache = paired_ratio(app("item_cache"), app("item_db"))
        protected = paired_ratio(app("item_protected"), app("item_cache"))
        limited = paired_ratio(app("limited"), app("unlimited"))
        p99 = app("limited")["p99_ms"]
        found += [
            (
                "/health, every feature on ÷ bare FastAPI ≥ 0.85",
                f"{health:.2f}",
                health >= TARGETS["health_vs_fastapi"],
            ),
            ("Cached read ÷ database read ≥ 1.5", f"{cache:.2f}", cache >= TARGETS["cache_vs_database"]),
            (
                "Cached read with a bearer token ÷ without ≥ 0.8",
                f"{protected:.2f}",
                protected >= TARGETS["protected_vs_public"],
            ),
            (
                "Rate-limited (Redis) ÷ unlimited ≥ 0.5",
                f"{limited:.2f}",
                limited >= TARGETS["limited_vs_unlimited"],
            ),
            (
                f"Rate-limited p99 at {CONNECTIONS} connections < 50 ms",
                f"{p99:.1f} ms",
                p99 < TARGETS["limited_p99_ms"],
            ),
        ]
    sio = results.get("socketio")
    if sio:
        app_sio = sio["app"]
        found.append(
            (
                f"Socket.IO emit-to-receive p99, {app_sio['clients']:,.0f} clients on two instances < 50 ms",
                f"{app_sio['latency_p99_ms']:.1f} ms",
                app_sio["latency_p99_ms"] < TARGETS["socketio_p99_ms"],
            )
        )
    start = results.get("startup")
    if start:
        if "cold_start_s" in start:
            rss = max(start["idle_rss_mb"], start.get("rss_after_load_mb", 0.0))
            found += [
                (
                    "Cold start to the first 200 < 1.5 s",
                    f"{start['cold_start_s']:.2f} s",
                    start["cold_start_s"] < TARGETS["cold_start_s"],
                ),
                ("Idle RSS per worker < 120 MB", f"{rss:.0f} MB", rss < TARGETS["idle_rss_mb"]),
            ]
        found.append(
            (
                "Baking the default project (CLI) < 1 s",
                f"{start['bake_cli_s']:.2f} s",
                start["bake_cli_s"] < TARGETS["bake_s"],
            )
        )
    return found


def chart(results: dict[str, Any], path: Path) -> None:
    """Each endpoint's throughput next to its two ceilings, labelled with the app's ratio to bare FastAPI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http, rows = results["http"], results["rows"]
    series = [
        ("Generated app", "app", "#1f77b4"),
        ("Bare FastAPI", "fastapi", "#ff7f0e"),
        ("Bare Starlette", "starlette", "#2ca02c"),
    ]
    figure, axes = plt.subplots(figsize=(11, 5.5))
    width = 0.27
    for offset, (name, key, colour) in enumerate(series):
        values = [http[row[key]]["rps"] for row in rows]
        positions = [index + (offset - 1) * width for index in range(len(rows))]
        axes.bar(positions, values, width, label=name, color=colour)
        if key == "app":
            for position, row, value in zip(positions, rows, values, strict=True):
                ratio = paired_ratio(http[row["app"]], http[row["fastapi"]])
                axes.annotate(f"{ratio:.2f}", (position, value), ha="center", va="bottom", fontsize=8)
    axes.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=15, ha="right", fontsize=8)
    axes.set_ylabel("requests per second (median)")
    axes.set_title(
        f"Default project against its ceilings: one uvicorn worker, {CONNECTIONS} connections "
        "(labels: app ÷ bare FastAPI)",
        fontsize=10,
    )
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- main ------------------------------------------------------------------------------------


def check_prerequisites() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)")
    for name, url in (("PostgreSQL", DATABASE_URL), ("Redis", REDIS_URL)):
        parts = httpx.URL(url)
        try:
            socket.create_connection((parts.host or "127.0.0.1", parts.port or 0), timeout=2).close()
        except OSError:
            raise SystemExit(
                f"{name} is not reachable at {url} (set TEST_DATABASE_URL / TEST_REDIS_URL)"
            ) from None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise SystemExit(
            "matplotlib is missing: .venv/bin/uv pip install --python .venv/bin/python --group bench"
        ) from None


def seed(python: Path, database: str) -> int:
    """One item for the read benchmarks; returns its id."""
    code = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    connection = await asyncpg.connect(sys.argv[1])\n"
        '    print(await connection.fetchval("INSERT INTO items (name, description) '
        "VALUES ('benchmark-read', 'read by the benchmark') RETURNING id\"))\n"
        "    await connection.close()\n"
        "asyncio.run(main())\n"
    )
    return int(run([python, "-c", code, database.replace("+asyncpg", "")], ROOT).stdout)


def forget_redis_keys(python: Path, prefix: str) -> None:
    code = (
        "import sys, redis; client = redis.Redis.from_url(sys.argv[1]); "
        "keys = list(client.scan_iter(sys.argv[2] + '*')); keys and client.delete(*keys)"
    )
    run([python, "-c", code, REDIS_URL, prefix], ROOT)


_STARTED = time.perf_counter()


def step(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", flush=True)


PARTS = ("startup", "http", "socketio")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run; its figures mean nothing")
    parser.add_argument("--output", type=Path, default=BENCH / "results", help="where results are written")
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="measure only these parts"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to CPUs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    options = parser.parse_args(argv)
    settings = QUICK if options.quick else FULL
    check_prerequisites()
    pinning = Pinning(not options.no_pin)
    output = options.output.resolve()
    logs = output / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    load_before = os.getloadavg()[0]
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}:"

    step("Building or reusing the generated projects' shared virtualenv")
    venv = venv_for(DEFAULT_PYTHON, superset_dependencies())
    python = venv / "bin" / "python"
    results: dict[str, Any] = {"mode": "Quick" if options.quick else "Full", "settings": asdict(settings)}

    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        work = Path(scratch)
        startup: dict[str, float] = {}
        if "startup" in options.only:
            step("Baking the default project")
            startup |= measure_bake(work / "bakes", settings.bakes)
        project = bake(work / "default")
        no_redis = bake(work / "no-redis", use_redis=False)
        for baked in (project, no_redis):
            run([python, "-m", "compileall", "-q", baked], ROOT)

        step("Scratch database and migrations")
        database = scratch_database(python, project, DATABASE_URL, f"bench_{run_id}")
        try:
            env = clean_env(
                ENVIRONMENT="production",
                SECRET_KEY=secrets.token_urlsafe(48),
                LOG_LEVEL="WARNING",
                DATABASE_URL=database,
                REDIS_URL=REDIS_URL,
                CACHE_KEY_PREFIX=prefix,
                CORS_ORIGINS="https://app.example.com",
                TRUSTED_HOSTS="127.0.0.1,localhost",
                RATE_LIMIT_DEFAULT=UNREFUSED_LIMIT,
                SOCKETIO_TRANSPORTS="websocket",
            )
            run([python, "-m", "alembic", "upgrade", "head"], project, env)
            item = seed(python, database)

            def server(
                name: str,
                target: str = "app.main:app",
                cwd: Path = project,
                pin: Pinning = pinning,
                interpreter: Path = python,
                **extra: str,
            ) -> Server:
                app_dir = ["--app-dir", str(BENCH)] if target.startswith(("ceilings:", "protected:")) else []
                return Server(name, target, interpreter, cwd, env | extra, logs, pin, app_dir)

            if "startup" in options.only:
                step("Cold starts, in a virtualenv with the project's runtime dependencies only")
                # As deployed: the shared virtualenv also holds the test tools, and aiohttp,
                # which python-socketio then imports for its client, adds about 0.3 s.
                deployed = venv_for(DEFAULT_PYTHON, runtime_dependencies()) / "bin" / "python"
                startup |= measure_cold_start(
                    lambda name: server(name, interpreter=deployed), settings.cold_starts
                )

            if "http" in options.only:
                step("HTTP endpoints")
                app = server("app")
                unlimited = server("app-unlimited", RATE_LIMIT_ENABLED="false")
                without_redis = server("app-no-redis", cwd=no_redis, RATE_LIMIT_ENABLED="false")
                protected = server("app-protected", "protected:app", RATE_LIMIT_ENABLED="false")
                fastapi = server("fastapi", "ceilings:fastapi_app")
                starlette = server("starlette", "ceilings:starlette_app")
                post = BENCH / "post.lua"
                signed_in = (f"Authorization: Bearer {mint_token(python, project, env)}",)
                groups: list[list[Row | Alternative]] = [
                    [
                        Row(
                            "health",
                            "GET /health",
                            Target(app, "/health"),
                            Target(fastapi, "/health"),
                            Target(starlette, "/health"),
                        )
                    ],
                    [
                        Row(
                            "item_db",
                            "GET /items/{id} from the database (project without Redis)*",
                            Target(without_redis, f"/items/{item}"),
                            Target(fastapi, f"/db/items/{item}"),
                            Target(starlette, f"/db/items/{item}"),
                        ),
                        Row(
                            "item_cache",
                            "GET /items/{id} from the Redis cache*",
                            Target(unlimited, f"/items/{item}"),
                            Target(fastapi, f"/items/{item}"),
                            Target(starlette, f"/items/{item}"),
                        ),
                        Row(
                            "item_protected",
                            "The same read behind a bearer token (access token checked)*",
                            Target(protected, f"/protected/items/{item}", headers=signed_in),
                            Target(fastapi, f"/items/{item}"),
                            Target(starlette, f"/items/{item}"),
                        ),
                    ],
                    [
                        Row(
                            "write",
                            "POST /items",
                            Target(app, "/items", post, signed_in),
                            Target(fastapi, "/items", post),
                            Target(starlette, "/items", post),
                        )
                    ],
                    [
                        Row(
                            "limited",
                            "GET /, rate-limited (Redis storage)",
                            Target(app, "/"),
                            Target(fastapi, "/"),
                            Target(starlette, "/"),
                        ),
                        Row(
                            "unlimited",
                            "GET /, rate limiting off",
                            Target(unlimited, "/"),
                            Target(fastapi, "/"),
                            Target(starlette, "/"),
                        ),
                        *(
                            Alternative(key, label, Target(fastapi, f"/limited/{key}"), Target(fastapi, "/"))
                            for key, label in (
                                ("slowapi-thread", "slowapi, storage calls in `asyncio.to_thread`"),
                                (
                                    "slowapi-anyio",
                                    "slowapi, storage calls in Starlette's `run_in_threadpool`",
                                ),
                                ("slowapi-loop", "slowapi on the event loop (slowapi's middleware)"),
                                ("limits-async", "`limits` with its async Redis storage (the app)"),
                            )
                        ),
                    ],
                ]
                with serving(app, unlimited, without_redis, protected, fastapi, starlette):
                    results["auth"] = measure_login(python, project, unlimited, settings.logins)
                    http = measure_http(groups, settings, pinning, run_id)
                    time.sleep(1.0)
                    if "startup" in options.only:
                        startup["rss_after_load_mb"] = app.rss_mb()
                results["http"] = {key: asdict(value) for key, value in http.items()}
                items = [item for group in groups for item in group]
                results["rows"] = [describe(item) for item in items if isinstance(item, Row)]
                results["alternatives"] = [describe(item) for item in items if isinstance(item, Alternative)]

            if "socketio" in options.only:
                step("Socket.IO")
                # Two instances and their clients: more processes than CPUs here, so none is pinned.
                free = Pinning(False)
                pairs = {
                    "app": (server("sio-app-1", pin=free), server("sio-app-2", pin=free)),
                    "ceiling": (
                        server("sio-bare-1", "ceilings:socketio_app", pin=free),
                        server("sio-bare-2", "ceilings:socketio_app", pin=free),
                    ),
                    "plain": (
                        server("ws-plain-1", "ceilings:plain_websocket_app", pin=free),
                        server("ws-plain-2", "ceilings:plain_websocket_app", pin=free),
                    ),
                }
                rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in pairs}
                for round_ in range(settings.sio_rounds):
                    for kind in rotated(list(pairs), round_):
                        with serving(*pairs[kind]):
                            found = measure_socketio(pairs[kind], python, settings, free)
                        rounds[kind].append(found)
                        print(
                            f"  round {round_ + 1}: {kind:<8} {found['connects_per_s']:6.0f} connects/s  "
                            f"{found['deliveries_per_s']:7.0f} deliveries/s  "
                            f"p50 {found['latency_p50_ms']:6.1f} ms  p99 {found['latency_p99_ms']:6.1f} ms  "
                            f"lost {found['lost']}",
                            flush=True,
                        )
                results["socketio"] = {
                    kind: {key: statistics.median(r[key] for r in found) for key in found[0]}
                    for kind, found in rounds.items()
                } | {"rounds": rounds}
        finally:
            drop_scratch_database(python, project, DATABASE_URL, database)
            forget_redis_keys(python, prefix)

    if startup:
        results["startup"] = startup
    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "pinned": pinning.enabled,
        "versions": versions(python),
    }
    results["targets"] = targets(results)
    table = render(results)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "results.md").write_text(table)
    written = [output / "results.md", output / "results.json"]
    if "http" in results:
        chart(results, output / "throughput.png")
        written.append(output / "throughput.png")
    print()
    print(table)
    print("Written:", ", ".join(str(path) for path in written))
    missed = [label for label, _, ok in results["targets"] if not ok]
    return 1 if options.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
