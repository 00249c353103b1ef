"""HTTP load with `wrk`: targets, rows of targets, rounds and medians."""

from __future__ import annotations

import itertools
import math
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import Settings
from bench.rows import CommittedRows
from bench.servers import Pinning, Server, http_status, serving, wait_until_idle


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    # The server's CPU time per request (user + system): steadier than throughput
    # on a busy machine, since time the server waits for a CPU is not counted.
    cpu_us: float = 0.0
    # For a target whose rows are counted: rows committed a second, to the last commit.
    committed_per_s: float | None = None


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
    connections: int,
    script: Path | None = None,
    args: tuple[str, ...] = (),
    headers: tuple[str, ...] = (),
) -> Load:
    url = server.url + path
    command = [
        *pinning.client(),
        "wrk",
        "-t1",
        f"-c{connections}",
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
    # The method of the script's requests (GET without a script).
    method: str = "POST"
    # A write's table, counted to rate it by the rows it stores rather than its responses.
    rows: CommittedRows | None = None

    @property
    def key(self) -> str:
        return f"{self.server.name} {self.method if self.script else 'GET'} {self.path}"


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


@dataclass
class Versus:
    """The same data path on the generated project and on the peer template's project."""

    key: str
    label: str
    app: Target
    peer: Target


@dataclass
class Driver:
    """A database path on asyncpg alone, next to the app's and the SQLAlchemy ceiling's."""

    key: str
    label: str
    app: Target
    sqlalchemy: Target
    asyncpg: Target


Item = Row | Alternative | Versus | Driver


def targets_of(item: Item) -> tuple[Target, ...]:
    if isinstance(item, Row):
        return (item.app, item.fastapi, item.starlette)
    if isinstance(item, Versus):
        return (item.app, item.peer)
    if isinstance(item, Driver):
        return (item.app, item.sqlalchemy, item.asyncpg)
    return (item.limited, item.unlimited)


@dataclass
class Measured:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    committed_per_s: float | None = None
    rounds: list[Load] = field(default_factory=list)


def median_of(loads: list[Load]) -> Measured:
    return Measured(
        rps=statistics.median(load.rps for load in loads),
        p50_ms=statistics.median(load.p50_ms for load in loads),
        p99_ms=statistics.median(load.p99_ms for load in loads),
        cpu_us=statistics.median(load.cpu_us for load in loads),
        committed_per_s=None
        if loads[0].committed_per_s is None
        else statistics.median(load.committed_per_s or 0.0 for load in loads),
        rounds=loads,
    )


def rotated(items: list[Any], round_: int) -> list[Any]:
    """`items` starting one further along each round, so no item always goes first."""
    shift = round_ % len(items)
    return items[shift:] + items[:shift]


def describe(item: Item) -> dict[str, str]:
    """The item for results.json, each target named by its key."""
    return {name: value.key if isinstance(value, Target) else value for name, value in vars(item).items()}


def paired_ratio(a: dict[str, Any], b: dict[str, Any], key: str = "rps") -> float:
    """The median over rounds of a's throughput ÷ b's, each pair measured back to back.

    On a shared machine the speed of a CPU drifts by tens of percent within
    seconds; a ratio taken within a round sees both sides at about the same speed.
    `key` "committed_per_s" compares rows stored instead of responses.
    """
    # A round where b answered nothing (a --quick run on a busy machine) has no ratio.
    ratios = [x[key] / y[key] for x, y in zip(a["rounds"], b["rounds"], strict=True) if y[key]]
    return statistics.median(ratios) if ratios else math.nan


def summary(load: Load) -> str:
    committed = "" if load.committed_per_s is None else f"  {load.committed_per_s:6.0f} rows committed/s"
    return (
        f"{load.rps:8.0f} req/s  p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms  "
        f"CPU {load.cpu_us:5.0f} µs/req{committed}"
    )


@dataclass
class Group:
    """Rows measured in the same rounds, so their ratios pair up, with only their servers running.

    One group at a time keeps the run within PostgreSQL's connection limit: each
    generated app keeps every connection its pool opens.
    """

    items: list[Item]
    # Called once the group's servers answer, before anything is timed.
    ready: Callable[[], None] | None = None
    # Called after the group's last round, before its servers stop.
    done: Callable[[], None] | None = None

    def targets(self) -> list[Target]:
        found: dict[str, Target] = {}
        for item in self.items:
            for target in targets_of(item):
                found.setdefault(target.key, target)
        return list(found.values())

    def servers(self) -> list[Server]:
        return list({target.server.name: target.server for target in self.targets()}.values())


def merged(groups: list[Group]) -> Group:
    """Every group's rows in one, with each group's `ready` and `done` in turn."""

    def each(hooks: list[Callable[[], None] | None]) -> Callable[[], None]:
        def call() -> None:
            for hook in hooks:
                if hook is not None:
                    hook()

        return call

    return Group(
        [item for group in groups for item in group.items],
        ready=each([group.ready for group in groups]),
        done=each([group.done for group in groups]),
    )


def measure_http(
    groups: list[Group], settings: Settings, pinning: Pinning, run_id: str
) -> dict[str, Measured]:
    """Each group in turn: its targets back to back, in an order that rotates each round.

    A smoke run (`settings.side_by_side`) drives them all at once instead, in one group.
    """
    runs = itertools.count()

    def drive(target: Target, seconds: int, tag: str) -> Load:
        # A name prefix no other run uses: a target may be in more than one group.
        prefix = f"{run_id}-{tag}-{next(runs)}-{target.server.name}"
        args = (prefix, target.method) if target.script else ()
        before = target.rows.count() if target.rows is not None else 0
        started = time.perf_counter()
        load = wrk(
            pinning,
            target.server,
            target.path,
            seconds,
            settings.connections,
            target.script,
            args,
            target.headers,
        )
        if target.rows is not None:
            load.committed_per_s = target.rows.rate_since(before, started)
        return load

    def drive_each(targets: list[Target], seconds: int, tag: str, servers: list[Server]) -> Iterator[Load]:
        """Drive `targets` in turn (or at once), each time until none of `servers` is still busy."""
        if not targets:
            return
        if settings.side_by_side:
            with ThreadPoolExecutor(len(targets)) as pool:
                loads = list(pool.map(lambda target: drive(target, seconds, tag), targets))
            wait_until_idle(servers)
            yield from loads
            return
        for target in targets:
            load = drive(target, seconds, tag)
            wait_until_idle(servers)
            yield load

    loads: dict[str, list[Load]] = {}
    for group in [merged(groups)] if settings.side_by_side else groups:
        targets = group.targets()
        servers = group.servers()
        with serving(*servers):
            if group.ready is not None:
                group.ready()
            for target in targets:
                if target.script is None:
                    # Fill caches and connection pools before anything is timed.
                    for _ in range(3):
                        if http_status(target.server.port, target.path, 10, target.headers) != 200:
                            raise RuntimeError(f"{target.key} does not answer 200")
            if settings.warmup:
                list(drive_each(targets, settings.warmup, "warmup", servers))
            else:
                # A write is not warmed by the GETs above: in a --quick run, the first
                # writes on a busy machine can all end after the timed window.
                list(drive_each([target for target in targets if target.script], 1, "warmup", servers))
            for target in targets:
                if target.key in loads:
                    raise ValueError(f"{target.key} is in two groups: their rounds would mix")
                loads[target.key] = []
            for round_ in range(settings.rounds):
                order = rotated(targets, round_)
                driven = drive_each(order, settings.seconds, f"r{round_}", servers)
                for target, load in zip(order, driven, strict=True):
                    loads[target.key].append(load)
                    print(f"  round {round_ + 1}: {target.key:<40} {summary(load)}", flush=True)
            if group.done is not None:
                group.done()
    return {key: median_of(values) for key, values in loads.items()}
