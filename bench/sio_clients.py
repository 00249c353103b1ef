"""Socket.IO load: many python-socketio clients in one process, driven over stdin/stdout.

Run by bench/run.py with the generated project's virtualenv. The clients connect
over WebSocket, spread round-robin over the given URLs, and join one room. Then
the process answers commands, one JSON object per line on stdin:

    {"expect": {"latency": 50, "burst": 200}, "timeout": 30}

waits until every client has received that many `tick` events of each phase (or
the timeout passes), prints the report as one JSON line, disconnects and exits.
Each `tick` carries `{"t": <send time, time.time()>, "phase": ...}`; the report
holds every emit-to-receive latency in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import defaultdict
from typing import Any

import socketio


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True, help="comma-separated server URLs")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--concurrency", type=int, default=50, help="connects in flight")
    args = parser.parse_args()
    urls = args.urls.split(",")

    latencies: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    changed = asyncio.Event()

    def on_tick(data: dict[str, Any]) -> None:
        now = time.time()
        phase = data["phase"]
        latencies[phase].append((now - data["t"]) * 1000)
        counts[phase] += 1
        first.setdefault(phase, now)
        last[phase] = now
        changed.set()

    clients = [socketio.AsyncClient(reconnection=False) for _ in range(args.clients)]
    for client in clients:
        client.on("tick", on_tick)

    gate = asyncio.Semaphore(args.concurrency)
    connect_times: list[float] = []

    async def connect(index: int, client: socketio.AsyncClient) -> None:
        async with gate:
            started = time.perf_counter()
            await client.connect(urls[index % len(urls)], transports=["websocket"], wait_timeout=30)
            connect_times.append((time.perf_counter() - started) * 1000)

    connect_start = time.time()
    await asyncio.gather(*(connect(index, client) for index, client in enumerate(clients)))
    connect_end = time.time()
    joined = await asyncio.gather(*(client.call("join", {"room": args.room}, timeout=30) for client in clients))
    if not all(answer.get("ok") for answer in joined):
        raise SystemExit(f"join refused: {joined[:3]}")
    say(
        {
            "ready": True,
            "clients": len(clients),
            "connect_start": connect_start,
            "connect_end": connect_end,
            "connect_ms": connect_times,
        }
    )

    loop = asyncio.get_running_loop()
    command = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    expect: dict[str, int] = command["expect"]
    deadline = time.monotonic() + command.get("timeout", 30)

    def complete() -> bool:
        return all(counts[phase] >= n * len(clients) for phase, n in expect.items())

    while not complete() and time.monotonic() < deadline:
        changed.clear()
        try:
            await asyncio.wait_for(changed.wait(), timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
    say({"latencies": latencies, "counts": counts, "first": first, "last": last})
    await asyncio.gather(*(client.disconnect() for client in clients), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
