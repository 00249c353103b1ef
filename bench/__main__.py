"""Benchmark the default generated project against bare Starlette and FastAPI ceilings.

    make bench                                # the full run, about nineteen minutes
    .venv/bin/python -m bench --quick         # seconds per endpoint: checks the script works

It bakes the default project, serves it with uvicorn on real PostgreSQL and Redis
(TEST_DATABASE_URL / TEST_REDIS_URL, as the test suite), and drives it with `wrk`.
Every HTTP figure is measured next to the same handlers on a bare Starlette app and
a bare FastAPI app (bench/ceilings.py), with the same server and options; the
three are measured back to back, alternating, for several rounds, and the median
is kept, so a busy machine moves app and ceilings alike and the ratios hold.

The list, the cached read and the write are also measured against the project the
nearest peer template (s3rius/FastAPI-template) generates, baked with its own CLI
from PyPI (bench/peer.py); `--no-peer` leaves it out.

Also measured: Socket.IO connects and broadcasts to clients spread over two
instances sharing Redis (and the same broadcasts on the app's plain WebSocket
path), background jobs (the generated worker next to SAQ alone),
cold start to the first 200 on /health, idle RSS, and
the time to bake the default project. Writes results.json, results.md (printed)
and throughput.png to the output directory (bench/results by default).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from bench import peer, project
from bench.config import BENCH, FULL, QUICK, Settings
from bench.endpoints import measure_endpoints
from bench.jobs import measure_jobs
from bench.realtime import measure_realtime
from bench.report import chart, render, targets, versions
from bench.servers import Pinning
from bench.startup import measure_startup
from toolkit.bakery import DATABASE_URL, REDIS_URL

PARTS = ("startup", "http", "socketio", "jobs")


def main(argv: list[str] | None = None) -> int:
    options = arguments(argv)
    settings = QUICK if options.quick else FULL
    check_prerequisites()
    output = options.output.resolve()
    logs = output / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    results: dict[str, Any] = {"mode": "Quick" if options.quick else "Full", "settings": asdict(settings)}
    load_before = os.getloadavg()[0]

    step("Baking, migrating and seeding the default project")
    # A smoke run starts every server at once: on one CPU they would start in turn.
    with project.prepared(logs, Pinning(not (options.no_pin or settings.side_by_side))) as baked:
        if options.quick:
            # The smoke run shares PostgreSQL's 100 connections with the rest of the test suite.
            baked.env["DB_POOL_SIZE"] = "4"
        chosen = [part for part in PARTS if part in options.only]

        def measured(part: str) -> dict[str, Any]:
            return measure(part, baked, settings, options.no_peer)

        if settings.side_by_side:
            # A smoke run measures every part at once too: they share no server, queue or Redis key.
            with ThreadPoolExecutor(len(chosen)) as pool:
                found = list(pool.map(measured, chosen))
        else:
            found = [measured(part) for part in chosen]
        for part in found:
            results |= part

    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "pinned": baked.pinning.enabled,
        "versions": versions(baked.python),
    }
    results["targets"] = targets(results)
    write(results, output)
    missed = [label for label, _, ok in results["targets"] if not ok]
    return 1 if options.strict and missed else 0


def measure(part: str, baked: project.Project, settings: Settings, no_peer: bool) -> dict[str, Any]:
    """One of PARTS; returns its results."""
    if part == "startup":
        step("Baking, cold starts and idle memory")
        return {"startup": measure_startup(baked, settings)}
    if part == "http":
        with contextlib.ExitStack() as stack:
            peer_project = None
            if not no_peer:
                step(f"Baking, migrating and seeding the peer template's project ({peer.TEMPLATE})")
                peer_project = stack.enter_context(peer.prepared(baked))
            step("HTTP endpoints")
            return measure_endpoints(baked, settings, peer_project)
    if part == "socketio":
        step("Socket.IO")
        return {"socketio": measure_realtime(baked, settings)}
    step("Background jobs")
    return {"jobs": measure_jobs(baked, settings)}


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run; its figures mean nothing")
    parser.add_argument("--output", type=Path, default=BENCH / "results", help="where results are written")
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, default=list(PARTS), help="measure only these parts"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to CPUs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--no-peer", action="store_true", help="do not bake and measure the peer template's project"
    )
    return parser.parse_args(argv)


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


def write(results: dict[str, Any], output: Path) -> None:
    """results.json, results.md (also printed) and, with HTTP figures, throughput.png."""
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


_STARTED = time.perf_counter()


def step(message: str) -> None:
    print(f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
