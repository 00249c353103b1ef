"""A loopback round-robin HTTP/1.1 proxy with health checks and retries, for rolling restarts.

`python -m tests.lb_proxy HOST:PORT [HOST:PORT ...]` listens on a free loopback
port and prints `{"event": "listening", "port": N}`. Each client request goes
to the next healthy backend over a fresh connection (`Connection: close`).
A backend is healthy while GET /health/ready answers 200 (checked every 0.2 s).
A request that could not be delivered - the connection was refused, or closed
before a single byte of the answer came back, which is how a draining server
turns away work it never started - is sent to the next backend, within a time
budget. An answer that breaks off half-way is not retried: the client gets 502.

It is what a platform's load balancer does during a rolling restart; it speaks
just enough HTTP/1.1 for the tests (Content-Length bodies, keep-alive to clients).
SIGTERM stops it and prints a `stats` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.events import EventProcess

ROOT = Path(__file__).resolve().parents[1]
HEALTH_INTERVAL = 0.2
HEALTH_REQUEST = b"GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
RETRY_BUDGET_SECONDS = 20.0
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"proxy-connection"}


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


class NotDelivered(Exception):
    """The backend took nothing: safe to send the request elsewhere."""


@dataclass
class Backend:
    host: str
    port: int
    healthy: bool = False
    served: int = 0
    transitions: list[tuple[float, bool]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


async def read_head(reader: asyncio.StreamReader) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    raw = await reader.readuntil(b"\r\n\r\n")
    first, *lines = raw[:-4].split(b"\r\n")
    headers = []
    for line in lines:
        name, _, value = line.partition(b":")
        headers.append((name.strip().lower(), value.strip()))
    return first, headers


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    return next((value for key, value in headers if key == name), None)


class Balancer:
    def __init__(self, backends: list[Backend]) -> None:
        self.backends = backends
        self.next = 0
        self.requests = 0
        self.retries = 0
        self.failed = 0

    def pick(self, tried: set[str]) -> Backend:
        healthy = [b for b in self.backends if b.healthy and b.name not in tried]
        pool = healthy or [b for b in self.backends if b.name not in tried] or self.backends
        self.next += 1
        return pool[self.next % len(pool)]

    async def check_health(self, backend: Backend) -> None:
        while True:
            ok = False
            with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError):
                async with asyncio.timeout(2):
                    reader, writer = await asyncio.open_connection(backend.host, backend.port)
                    writer.write(
                        b"GET /health/ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                    )
                    await writer.drain()
                    status_line = await reader.readline()
                    ok = status_line.split(b" ")[1:2] == [b"200"]
                    writer.close()
            if ok != backend.healthy:
                backend.healthy = ok
                backend.transitions.append((time.time(), ok))
                emit("health", backend=backend.name, healthy=ok)
            await asyncio.sleep(HEALTH_INTERVAL)

    async def forward(self, request: bytes) -> bytes:
        """Deliver `request` to a backend and return its whole answer."""
        deadline = time.monotonic() + RETRY_BUDGET_SECONDS
        tried: set[str] = set()
        while True:
            backend = self.pick(tried)
            try:
                answer = await self.exchange(backend, request)
            except NotDelivered as reason:
                tried.add(backend.name)
                if len(tried) >= len(self.backends):
                    tried.clear()
                    await asyncio.sleep(0.05)
                self.retries += 1
                emit("retry", backend=backend.name, reason=str(reason))
                if time.monotonic() > deadline:
                    raise
                continue
            backend.served += 1
            return answer

    async def exchange(self, backend: Backend, request: bytes) -> bytes:
        try:
            reader, writer = await asyncio.open_connection(backend.host, backend.port)
        except OSError as error:
            raise NotDelivered(f"connect: {type(error).__name__}") from None
        try:
            writer.write(request)
            with contextlib.suppress(OSError):
                await writer.drain()
            answer = b""
            try:
                while chunk := await reader.read(65536):
                    answer += chunk
            except OSError as error:
                if not answer:
                    raise NotDelivered(f"read: {type(error).__name__}") from None
                raise
            if not answer:
                raise NotDelivered("closed before answering")
            return answer
        finally:
            writer.close()

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    first, headers = await read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = int(header(headers, b"content-length") or b"0")
                body = await reader.readexactly(length) if length else b""
                keep_alive = (header(headers, b"connection") or b"").lower() != b"close"
                upstream = [first, *(k + b": " + v for k, v in headers if k not in HOP_BY_HOP)]
                request = b"\r\n".join([*upstream, b"Connection: close", b"", b""]) + body
                self.requests += 1
                try:
                    answer = await self.forward(request)
                    writer.write(self.to_client(answer, keep_alive))
                except (NotDelivered, OSError, ValueError) as error:
                    self.failed += 1
                    emit("failed", error=f"{type(error).__name__}: {error}")
                    message = b'{"detail": "Bad gateway"}'
                    writer.write(
                        b"HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\n"
                        b"content-length: %d\r\n\r\n%s" % (len(message), message)
                    )
                    keep_alive = False
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    @staticmethod
    def to_client(answer: bytes, keep_alive: bool) -> bytes:
        """The backend's answer, re-framed with Content-Length for a keep-alive client."""
        head, _, body = answer.partition(b"\r\n\r\n")
        first, *lines = head.split(b"\r\n")
        headers = [line for line in lines if line.split(b":", 1)[0].strip().lower() not in HOP_BY_HOP]
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        declared = [line for line in headers if line.lower().startswith(b"content-length:")]
        if declared and int(declared[0].split(b":", 1)[1]) != len(body):
            raise ValueError("the answer broke off")
        headers = [line for line in headers if line not in declared]
        headers.append(b"content-length: %d" % len(body))
        headers.append(b"connection: " + (b"keep-alive" if keep_alive else b"close"))
        return b"\r\n".join([first, *headers, b"", b""]) + body


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2 :]
    raise ValueError("the chunked answer broke off")


async def main(targets: list[str]) -> None:
    backends = [Backend(host, int(port)) for host, _, port in (t.rpartition(":") for t in targets)]
    balancer = Balancer(backends)
    checks = [asyncio.create_task(balancer.check_health(backend)) for backend in backends]
    server = await asyncio.start_server(balancer.serve_client, "127.0.0.1", 0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    emit("listening", port=server.sockets[0].getsockname()[1])
    async with server:
        await stop.wait()
    for check in checks:
        check.cancel()
    emit(
        "stats",
        requests=balancer.requests,
        retries=balancer.retries,
        failed=balancer.failed,
        served={backend.name: backend.served for backend in backends},
    )


class LoadBalancer(EventProcess):
    """The proxy as a subprocess in front of `backends` ("host:port")."""

    def __init__(self, backends: list[str]) -> None:
        super().__init__([sys.executable, "-m", "tests.lb_proxy", *backends], ROOT)
        self.port = int(self.wait_for("listening")["port"])

    def stats(self) -> dict[str, Any]:
        self.stop()
        return self.wait_for("stats", timeout=5)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
