"""Realtime: clients spread over two instances sharing Redis, broadcasts through one HTTP route.

Socket.IO clients get the broadcasts of `POST /realtime/rooms/{room}/emit`; listeners on
the app's plain WebSocket path (`/realtime/ws/{room}`), those of `.../broadcast`.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.config import BENCH, Settings
from bench.load import rotated
from bench.project import Project
from bench.servers import Pinning, Server, serving


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure_socketio(
    pair: tuple[Server, Server], python: Path, settings: Settings, pinning: Pinning, plain: bool = False
) -> dict[str, Any]:
    """Connect clients spread over two instances, then broadcast to them through one instance's HTTP route.

    With `plain`, the clients listen on the plain WebSocket path instead of speaking Socket.IO.
    """
    room = f"bench-{uuid.uuid4().hex[:8]}"
    urls = [server.url for server in pair]
    counts = [settings.sio_clients // settings.sio_processes] * settings.sio_processes
    counts[0] += settings.sio_clients - sum(counts)
    processes = []
    for index, count in enumerate(counts):
        order = urls[index % 2 :] + urls[: index % 2]
        processes.append(
            subprocess.Popen(
                [
                    *pinning.client(),
                    str(python),
                    str(BENCH / "sio_clients.py"),
                    "--urls",
                    ",".join(order),
                    "--clients",
                    str(count),
                    "--room",
                    room,
                    *(["--plain"] if plain else []),
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
                url = f"{urls[index % 2]}/realtime/rooms/{room}/{'broadcast' if plain else 'emit'}"
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


def measure_realtime(project: Project, settings: Settings) -> dict[str, Any]:
    """The app's Socket.IO, bare python-socketio and the app's plain WebSocket path, two instances
    each, in rotating rounds."""
    # Two instances and their clients: more processes than CPUs here, so none is pinned.
    free = Pinning(False)

    def pair(name: str, target: str) -> tuple[Server, Server]:
        return (project.server(f"{name}-1", target, pin=free), project.server(f"{name}-2", target, pin=free))

    pairs = {
        "app": pair("sio-app", "app.main:app"),
        "ceiling": pair("sio-bare", "ceilings:socketio_app"),
        "plain": pair("ws-app", "app.main:app"),
    }
    rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in pairs}
    for round_ in range(settings.sio_rounds):
        for kind in rotated(list(pairs), round_):
            with serving(*pairs[kind]):
                found = measure_socketio(pairs[kind], project.python, settings, free, plain=kind == "plain")
            rounds[kind].append(found)
            print(
                f"  round {round_ + 1}: {kind:<8} {found['connects_per_s']:6.0f} connects/s  "
                f"{found['deliveries_per_s']:7.0f} deliveries/s  "
                f"p50 {found['latency_p50_ms']:6.1f} ms  p99 {found['latency_p99_ms']:6.1f} ms  "
                f"lost {found['lost']}",
                flush=True,
            )
    medians = {
        kind: {key: statistics.median(r[key] for r in found) for key in found[0]}
        for kind, found in rounds.items()
    }
    return medians | {"rounds": rounds}
