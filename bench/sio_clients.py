"""Realtime load: many WebSocket clients in one process, driven over stdin/stdout.

Run by bench/realtime.py with the generated project's virtualenv. The clients speak
the Socket.IO protocol (v5 over Engine.IO v4, WebSocket transport) themselves on
aiohttp WebSockets: python-socketio's own client spends about 1.6 times the
CPU per received event (measured here), and with a thousand clients sharing the
machine with the servers, that cost shows up in the latency being measured.
Each client connects, answers pings, joins one room with an acknowledgement and
records every `tick` event. With `--plain`, each client instead listens on the
app's plain WebSocket path, `/realtime/ws/{room}`, where every message is
`{"event": ..., "data": ...}`. The clients are spread round-robin over the URLs.

Once every client has joined, the process prints one JSON line and reads
commands, one JSON object per line on stdin:

    {"expect": {"latency": 50, "burst": 200}, "timeout": 30}

waits until every client has received that many `tick` events of each phase (or
the timeout passes), prints the report as one JSON line, disconnects and exits.
Each `tick` carries `{"t": <send time, time.time()>, "phase": ...}`; the report
holds every emit-to-receive latency in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import resource
import sys
import time
from collections import defaultdict
from typing import Any

import aiohttp
import uvloop


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


class Recorder:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)
        self.last: dict[str, float] = {}
        self.changed = asyncio.Event()

    def tick(self, data: dict[str, Any]) -> None:
        now = time.time()
        phase = data["phase"]
        self.latencies[phase].append((now - data["t"]) * 1000)
        self.counts[phase] += 1
        self.last[phase] = now
        self.changed.set()


class Client:
    """One Socket.IO client on the default namespace."""

    def __init__(self, session: aiohttp.ClientSession, url: str, recorder: Recorder) -> None:
        base = url.replace("http://", "ws://").replace("https://", "wss://")
        self.url = f"{base}/socket.io/?EIO=4&transport=websocket"
        self.session = session
        self.recorder = recorder
        self.acks: dict[int, asyncio.Future[Any]] = {}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0)
        opened = await self.ws.receive_str(timeout=30)
        if not opened.startswith("0"):
            raise RuntimeError(f"unexpected Engine.IO open packet {opened!r}")
        await self.ws.send_str("40")
        connected = await self.ws.receive_str(timeout=30)
        if not connected.startswith("40"):
            raise RuntimeError(f"namespace connect refused: {connected!r}")
        self.reader = asyncio.create_task(self.read())

    async def read(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            await self.received(message.data)

    async def received(self, text: str) -> None:
        assert self.ws is not None
        if text.startswith("42"):
            name, data = json.loads(text[2:])
            if name == "tick":
                self.recorder.tick(data)
        elif text == "2":
            await self.ws.send_str("3")
        elif text.startswith("43"):
            bracket = text.index("[")
            future = self.acks.pop(int(text[2:bracket]), None)
            if future is not None:
                future.set_result(json.loads(text[bracket:])[0])

    async def call(self, event: str, data: Any, ack: int, timeout: float = 30) -> Any:
        assert self.ws is not None
        future = asyncio.get_running_loop().create_future()
        self.acks[ack] = future
        await self.ws.send_str(f"42{ack}" + json.dumps([event, data]))
        return await asyncio.wait_for(future, timeout)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)


class Listener(Client):
    """One listener on the app's plain WebSocket path: joined by connecting to its room."""

    def __init__(self, session: aiohttp.ClientSession, url: str, recorder: Recorder, room: str) -> None:
        super().__init__(session, url, recorder)
        base = url.replace("http://", "ws://").replace("https://", "wss://")
        self.url = f"{base}/realtime/ws/{room}"

    async def connect(self) -> None:
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0)
        self.reader = asyncio.create_task(self.read())

    async def received(self, text: str) -> None:
        event = json.loads(text)
        if event["event"] == "tick":
            self.recorder.tick(event["data"])


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--urls", required=True, help="comma-separated server URLs")
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--concurrency", type=int, default=50, help="connects in flight")
    parser.add_argument("--plain", action="store_true", help="listen on /realtime/ws/{room} instead")
    args = parser.parse_args()
    urls = args.urls.split(",")
    recorder = Recorder()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        clients = [
            Listener(session, urls[index % len(urls)], recorder, args.room)
            if args.plain
            else Client(session, urls[index % len(urls)], recorder)
            for index in range(args.clients)
        ]
        gate = asyncio.Semaphore(args.concurrency)
        connect_ms: list[float] = []

        async def connect(client: Client) -> None:
            async with gate:
                started = time.perf_counter()
                await client.connect()
                connect_ms.append((time.perf_counter() - started) * 1000)

        connect_start = time.time()
        await asyncio.gather(*(connect(client) for client in clients))
        connect_end = time.time()
        if not args.plain:  # a listener joined its room by connecting
            joined = await asyncio.gather(
                *(client.call("join", {"room": args.room}, ack=1) for client in clients)
            )
            if not all(answer.get("ok") for answer in joined):
                raise SystemExit(f"join refused: {joined[:3]}")
        # The clients measure latency: no pause of their own collector in the middle of
        # it (the process ends after one measurement, so what it holds stays bounded).
        gc.disable()
        say(
            {
                "ready": True,
                "clients": len(clients),
                "connect_start": connect_start,
                "connect_end": connect_end,
                "connect_ms": connect_ms,
            }
        )

        loop = asyncio.get_running_loop()
        command = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
        expect: dict[str, int] = command["expect"]
        deadline = time.monotonic() + command.get("timeout", 30)

        def complete() -> bool:
            return all(recorder.counts[phase] >= n * len(clients) for phase, n in expect.items())

        while not complete() and time.monotonic() < deadline:
            recorder.changed.clear()
            try:
                await asyncio.wait_for(recorder.changed.wait(), timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
        ended = [client.reader for client in clients if client.reader is not None and client.reader.done()]
        dropped = len(ended)
        errors = {repr(task.exception()) for task in ended if task.exception() is not None}
        if errors:
            print(f"client readers failed: {sorted(errors)[:3]}", file=sys.stderr, flush=True)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        say(
            {
                "cpu_seconds": usage.ru_utime + usage.ru_stime,
                "latencies": recorder.latencies,
                "counts": recorder.counts,
                "last": recorder.last,
                "dropped": dropped,
            }
        )
        await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)


if __name__ == "__main__":
    # The servers' event loop (uvicorn's, with uvicorn[standard]): the clients share
    # the machine with the servers, and on asyncio's own loop they take more of it.
    uvloop.run(main())
