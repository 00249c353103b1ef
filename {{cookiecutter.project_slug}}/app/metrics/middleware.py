"""Counts every HTTP request by its route template, and serves `/metrics`."""

import asyncio
import hmac
import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics.collectors import IN_FLIGHT, REQUEST_DURATION
from app.paths import METRICS_PATH, PROBE_PATHS
from app.settings import Settings

# The route label of a request no route matched (a 404): one series, not one per path.
UNMATCHED = "<unmatched>"
# A client can send any method name: those outside this set are all counted as OTHER.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# How often the requests in flight are copied to their gauge, at most, in seconds.
IN_FLIGHT_PERIOD = 0.1


class MetricsMiddleware:
    """Requests by method, route template and status, with their duration; those in flight.

    The route label is the matched route's `path` ("/items/{item_id}"), read from
    the scope once routing has run, so ids in URLs never become series of their
    own. `/metrics` itself is answered here, before the app's own middleware and
    never counted, and only with METRICS_TOKEN as a bearer token (404 while unset).
    The health probes are not counted either.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        token = settings.metrics_token
        self.token = None if token is None else token.get_secret_value().encode()
        # Label lookups cost more than the counting: each combination is looked up once.
        self.children: dict[tuple[str, str, int], Histogram] = {}
        self.in_flight = InFlight()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The probes are the platform's requests, not clients': as they are not
        # traced, they are not counted (they would pull every latency quantile down).
        if scope["type"] != "http" or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        if scope["path"] == METRICS_PATH:
            await self.serve(scope, send)
            return
        response = StatusRecorder(send)
        started = time.perf_counter()
        self.in_flight.change(1)
        try:
            await self.app(scope, receive, response.send)
        finally:
            self.in_flight.change(-1)
            self.observe(scope, response.status, time.perf_counter() - started)

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        key = (scope["method"], getattr(route, "path", None) or UNMATCHED, status)
        child = self.children.get(key)
        if child is None:
            method, template, _ = key
            if method not in KNOWN_METHODS:
                method = "OTHER"
            child = self.children[key] = REQUEST_DURATION.labels(method, template, str(status))
        child.observe(seconds)

    async def serve(self, scope: Scope, send: Send) -> None:
        if self.token is None:
            await send_text(send, 404, b'{"detail":"Not Found"}', b"application/json")
            return
        if not bearer_matches(scope, self.token):
            await send_text(
                send,
                401,
                b'{"detail":"A bearer token is required"}',
                b"application/json",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        self.in_flight.publish()
        # In a thread: with several workers it reads every worker's files.
        body = await asyncio.to_thread(exposition)
        await send_text(send, 200, body, CONTENT_TYPE_LATEST.encode())


def bearer_matches(scope: Scope, token: bytes) -> bool:
    """Whether the request's `Authorization` is `Bearer <token>`."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, supplied = value.partition(b" ")
            # Constant time: how much of a wrong token matched must not show.
            return scheme.lower() == b"bearer" and hmac.compare_digest(supplied.strip(), token)
    return False


class InFlight:
    """The requests being answered, counted in a plain int (the app runs on one
    event loop) and copied to their gauge at most every IN_FLIGHT_PERIOD: cheaper
    than updating the gauge, under its lock, twice a request."""

    __slots__ = ("count", "scheduled_on")

    def __init__(self) -> None:
        self.count = 0
        self.scheduled_on: asyncio.AbstractEventLoop | None = None

    def change(self, by: int) -> None:
        self.count += by
        loop = asyncio.get_running_loop()
        # Compared with the loop, not a flag: a copy scheduled on a loop that has
        # closed since (one per test client, say) never runs.
        if self.scheduled_on is not loop:
            self.scheduled_on = loop
            loop.call_later(IN_FLIGHT_PERIOD, self.publish)

    def publish(self) -> None:
        self.scheduled_on = None
        IN_FLIGHT.set(self.count)


class StatusRecorder:
    """Wraps `send` to note the response's status; 500 until one is sent."""

    __slots__ = ("send_next", "status")

    def __init__(self, send: Send) -> None:
        self.send_next = send
        self.status = 500

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send_next(message)


def exposition() -> bytes:
    """Every metric in Prometheus' text format: this process's, or every worker's
    when PROMETHEUS_MULTIPROC_DIR is set."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


async def send_text(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
