"""A bounded load generator for a generated service: asyncio virtual clients on httpx.

`Traffic` runs virtual clients, each with an address of its own (sent as
X-Forwarded-For, which the service believes from loopback), over a weighted mix
of routes: health probes, the root, item reads, lists, writes and deletes, and
Socket.IO emits. Every request becomes a `Sample`; acknowledged writes and
deletes are kept so a test can compare them with the database afterwards.
`probe` polls one URL on its own connection, so a probe never waits behind the
load. Nothing here asserts: tests judge the samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import statistics
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

# Operations and their default weights; reads dominate, as in most services.
DEFAULT_MIX = {
    "health": 8,
    "ready": 2,
    "root": 8,
    "list": 12,
    "read": 40,
    "create": 16,
    "delete": 4,
    "emit": 6,
}
# Unused on loopback HTTP, but made once: httpx builds a TLS context per client otherwise.
_TLS = ssl.create_default_context()
# Operations that need the database.
DATABASE_OPS = frozenset({"ready", "list", "read", "create", "delete"})


@dataclass
class Sample:
    op: str
    started: float
    elapsed: float
    status: int | None = None
    error: str | None = None
    content_type: str = ""
    body: str = ""
    # Sent as X-Request-ID: the service logs it with the request, so a test can
    # tell whether a request that got no answer ever reached the application.
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def failed(self) -> bool:
        """No answer, or a server error."""
        return self.status is None or self.status >= 500


@dataclass
class VirtualClient:
    number: int
    address: str
    rng: random.Random
    mix: dict[str, int]
    deletable: list[int] = field(default_factory=list)
    created: int = 0


class Traffic:
    """Virtual clients sending a weighted mix of requests until `stop` is set."""

    def __init__(
        self,
        base: str,
        *,
        clients: int,
        network: int,
        mix: dict[str, int] | None = None,
        seed: int = 0,
        timeout: float = 30.0,
        room: str = "load",
        writers: int = 0,
        headers: dict[str, str] | None = None,
        tls: ssl.SSLContext = _TLS,
    ) -> None:
        """`writers` of the clients only create items, so they run into the route's own limit;
        `headers` go with every request (a signed-in user's, for the writes); `tls` verifies
        an HTTPS server (a proxy's own authority, say)."""
        self.base = base
        self.tls = tls
        self.headers = headers or {}
        self.timeout = timeout
        self.room = room
        self.clients = [
            VirtualClient(
                n,
                f"10.{network}.{n // 200}.{n % 200 + 1}",
                random.Random(seed * 100_003 + n),
                {"create": 1} if n < writers else (mix or DEFAULT_MIX),
            )
            for n in range(clients)
        ]
        self.tag = uuid.uuid4().hex[:8]
        self.readable: list[int] = []
        self.written: dict[int, str] = {}
        self.deleted: set[int] = set()
        # Names of writes that got no acknowledgement (an error or a 5xx).
        self.unacknowledged: set[str] = set()
        self.samples: list[Sample] = []
        self.stop = asyncio.Event()

    async def seed(self, count: int) -> None:
        """Create `count` readable items before the load starts (each from an address of its own)."""
        async with self._client() as client:
            for n in range(count):
                headers = {"X-Forwarded-For": f"10.254.{n // 200}.{n % 200 + 1}"}
                name = f"seed-{self.tag}-{n}"
                response = await client.post("/items", json={"name": name}, headers=headers)
                response.raise_for_status()
                item_id = response.json()["id"]
                self.written[item_id] = name
                self.readable.append(item_id)

    async def run(self, duration: float | None = None) -> None:
        """Send requests until `stop` is set (or `duration` seconds pass)."""
        workers = [asyncio.create_task(self._virtual_client(vc)) for vc in self.clients]
        try:
            if duration is None:
                await self.stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), duration)
        finally:
            self.stop.set()
            await asyncio.gather(*workers)

    def _client(self) -> httpx.AsyncClient:
        # One client (one connection) per virtual client: httpx's pool costs about 15 ms
        # of CPU per request once it holds 100 connections, 1 ms with one.
        return httpx.AsyncClient(
            base_url=self.base, timeout=self.timeout, verify=self.tls, headers=self.headers
        )

    async def _virtual_client(self, vc: VirtualClient) -> None:
        ops, weights = zip(*vc.mix.items(), strict=True)
        async with self._client() as client:
            while not self.stop.is_set():
                op = vc.rng.choices(ops, weights)[0]
                await self._send(client, vc, op)
                # A short think time, so the mix is not all one client's burst.
                await asyncio.sleep(vc.rng.uniform(0, 0.01))

    async def _send(self, client: httpx.AsyncClient, vc: VirtualClient, op: str) -> None:
        headers = {"X-Forwarded-For": vc.address}
        method, url, payload = "GET", "/health", None
        name = ""
        if op == "ready":
            url = "/health/ready"
        elif op == "root":
            url = "/"
        elif op == "list":
            url = f"/items?limit=10&offset={vc.rng.randrange(0, max(1, len(self.readable)))}"
        elif op == "read" and self.readable:
            url = f"/items/{vc.rng.choice(self.readable)}"
        elif op == "create" or (op == "delete" and not vc.deletable):
            op = "create"
            vc.created += 1
            name = f"load-{self.tag}-{vc.number}-{vc.created}"
            method, url, payload = "POST", "/items", {"name": name, "description": "ü ✓ load"}
        elif op == "delete":
            method, url = "DELETE", f"/items/{vc.deletable.pop()}"
        elif op == "emit":
            method, url = "POST", f"/realtime/rooms/{self.room}/emit"
            payload = {"event": "tick", "data": {"from": vc.number}}
        elif op == "read":
            op, url = "list", "/items?limit=10"
        started = time.monotonic()
        sample = Sample(op, started, 0.0)
        headers["X-Request-ID"] = sample.request_id
        try:
            response = await client.request(method, url, json=payload, headers=headers)
        except httpx.HTTPError as error:
            sample.elapsed = time.monotonic() - started
            sample.error = f"{type(error).__name__}: {error}"[:300]
            if op == "create":
                self.unacknowledged.add(name)
            self.samples.append(sample)
            return
        sample.elapsed = time.monotonic() - started
        sample.status = response.status_code
        sample.content_type = response.headers.get("content-type", "")
        if response.status_code >= 400:
            sample.body = response.text[:300]
        if op == "create":
            if response.status_code == 201:
                item_id = response.json()["id"]
                self.written[item_id] = name
                # One write in four is deleted later by its own client; the rest are read.
                if vc.rng.random() < 0.25:
                    vc.deletable.append(item_id)
                else:
                    self.readable.append(item_id)
            elif response.status_code >= 500:
                self.unacknowledged.add(name)
        elif op == "delete" and response.status_code == 204:
            self.deleted.add(int(url.rsplit("/", 1)[1]))
        self.samples.append(sample)


async def probe(base: str, path: str, stop: asyncio.Event, interval: float = 0.2) -> list[Sample]:
    """GET `path` every `interval` seconds on a connection of its own until `stop` is set."""
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=_TLS) as client:
        while not stop.is_set():
            started = time.monotonic()
            sample = Sample(path, started, 0.0)
            try:
                response = await client.get(path)
                sample.status = response.status_code
                sample.content_type = response.headers.get("content-type", "")
                sample.body = response.text[:500]
            except httpx.HTTPError as error:
                sample.error = f"{type(error).__name__}: {error}"[:300]
            sample.elapsed = time.monotonic() - started
            samples.append(sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    return samples


async def write_probe(
    base: str,
    stop: asyncio.Event,
    headers: dict[str, str],
    interval: float = 0.2,
    tls: ssl.SSLContext = _TLS,
) -> list[Sample]:
    """POST /items every `interval` seconds until `stop` is set, each from an address of its
    own, so the route's rate limit never refuses one (where the service believes it)."""
    samples: list[Sample] = []
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=tls, headers=headers) as client:
        while not stop.is_set():
            n = len(samples)
            sample = Sample("create", time.monotonic(), 0.0)
            address = {"X-Forwarded-For": f"10.253.{n // 200}.{n % 200 + 1}"}
            try:
                response = await client.post(
                    "/items", json={"name": f"probe-{uuid.uuid4().hex}"}, headers=address
                )
                sample.status, sample.body = response.status_code, response.text[:500]
                sample.content_type = response.headers.get("content-type", "")
            except httpx.HTTPError as error:
                sample.error = f"{type(error).__name__}: {error}"[:300]
            sample.elapsed = time.monotonic() - sample.started
            samples.append(sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
    return samples


T = TypeVar("T")


def around(
    traffic: Traffic,
    action: Callable[[], T],
    *,
    after: float = 1.0,
    probe: Callable[[asyncio.Event], Awaitable[list[Sample]]] | None = None,
) -> tuple[T, list[Sample]]:
    """Run the blocking `action()` while `traffic` runs (and `probe`, given the event that
    stops it), from a second before it until `after` seconds after; its result, and every
    request's sample."""

    async def scenario() -> tuple[T, list[Sample]]:
        load = asyncio.create_task(traffic.run())
        probing = asyncio.create_task(probe(traffic.stop)) if probe else None
        await asyncio.sleep(1)
        try:
            result = await asyncio.to_thread(action)
            await asyncio.sleep(after)
        finally:
            traffic.stop.set()
            await load
        return result, traffic.samples + (await probing if probing else [])

    return asyncio.run(scenario())


async def trickle(body: bytes, seconds: float, pieces: int = 10) -> AsyncIterator[bytes]:
    """`body` sent in `pieces` spread over `seconds`: a slow upload."""
    size = -(-len(body) // pieces)
    for start in range(0, len(body), size):
        await asyncio.sleep(seconds / pieces)
        yield body[start : start + size]


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """p50, p95, p99 and max of `values`, in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0}
    if len(ordered) == 1:
        cuts = [ordered[0]] * 99
    else:
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
    return {
        "p50": round(cuts[49] * 1000, 1),
        "p95": round(cuts[94] * 1000, 1),
        "p99": round(cuts[98] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }


def describe(samples: list[Sample]) -> dict[str, Any]:
    """Counts, throughput and latency of a run, for the report."""
    if not samples:
        return {"requests": 0}
    span = max(s.started + s.elapsed for s in samples) - min(s.started for s in samples)
    statuses = Counter(str(s.status) if s.status is not None else "error" for s in samples)
    return {
        "requests": len(samples),
        "per_second": round(len(samples) / span, 1) if span > 0 else 0.0,
        "statuses": dict(sorted(statuses.items())),
        "errors": sum(1 for s in samples if s.status is None),
        "5xx": sum(1 for s in samples if s.status is not None and s.status >= 500),
        "latency_ms": percentiles(s.elapsed for s in samples if s.status is not None),
    }


def first_after(samples: list[Sample], moment: float, status: int, body_has: str = "") -> float | None:
    """Seconds from `moment` to the end of the first sample started after it that answered
    `status` with `body_has` in its body."""
    for sample in sorted(samples, key=lambda s: s.started):
        if sample.started >= moment and sample.status == status and body_has in sample.body:
            return round(sample.started + sample.elapsed - moment, 2)
    return None
