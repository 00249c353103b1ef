"""The service's own ASGI middleware: what every request and response gets, in one pass."""

import json
import logging
import random
import re

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.log import request_id_var
from app.paths import DOCS_PATH, PROBE_PATHS
from app.settings import Settings

logger = logging.getLogger(__name__)

_VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")

# Added to every response; the app's own value wins where it set one.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# The API returns JSON: a browser may load and frame nothing. Not on the
# interactive docs, whose pages run scripts.
CONTENT_SECURITY_POLICY = (
    b"content-security-policy",
    b"default-src 'none'; frame-ancestors 'none'",
)
# Only on requests that came over HTTPS, directly or through a trusted proxy.
STRICT_TRANSPORT_SECURITY = (b"strict-transport-security", b"max-age=31536000")
# What CORSMiddleware adds to a response to a request without an Origin.
VARY_ORIGIN = (b"vary", b"Origin")
_ADDED_NAMES = frozenset(
    {name for name, _ in SECURITY_HEADERS}
    | {CONTENT_SECURITY_POLICY[0], STRICT_TRANSPORT_SECURITY[0], VARY_ORIGIN[0], b"x-request-id"}
)


class RequestHeaders:
    """The request headers this middleware reads, found in one pass."""

    __slots__ = ("encoding", "host", "length", "origin", "request_id")

    def __init__(self, scope: Scope) -> None:
        self.host: bytes | None = None
        self.origin: bytes | None = None
        self.length: bytes | None = None
        self.encoding: bytes | None = None
        self.request_id: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                self.host = value
            elif name == b"origin":
                self.origin = value
            elif name == b"content-length":
                self.length = value
            elif name == b"transfer-encoding":
                self.encoding = value
            elif name == b"x-request-id":
                self.request_id = value


class EdgeMiddleware:
    """Checks and headers for every request:

    - Host: a Host not in TRUSTED_HOSTS is answered 400 (a WebSocket is closed
      with 1008); the health probes answer whatever the Host.
    - Body size: over MAX_BODY_BYTES is answered 413, whether declared in
      Content-Length or counted as the body arrives.
    - Request id: a safe incoming `X-Request-ID` is kept (so a proxy's id follows
      the request), else one is made; the response and every log line carry it.
    - Security headers on every response, HSTS over HTTPS, CORS with CORS_ORIGINS.
    - Errors: an exception that escapes the app is logged with its traceback and
      answered 500 JSON without it.

    One middleware rather than one per concern: every ASGI layer costs every
    request (see the benchmark report).
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body_bytes = settings.max_body_bytes
        hosts = [host.lower().encode() for host in settings.trusted_hosts]
        self.any_host = b"*" in hosts
        self.exact_hosts = frozenset(host for host in hosts if not host.startswith(b"*."))
        self.host_suffixes = tuple(host[1:] for host in hosts if host.startswith(b"*."))
        self.cors: ASGIApp | None = None
        if settings.cors_origins:
            self.cors = CORSMiddleware(
                app,
                allow_origins=settings.cors_origins,
                allow_credentials=settings.cors_allow_credentials,
                allow_methods=["*"],
                allow_headers=["*"],
                expose_headers=["X-Request-ID"],
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        headers = RequestHeaders(scope)
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send, headers)
            return
        request_id = self.request_id(headers)
        response = ResponseHeaders(send, self.added_headers(scope, headers, request_id))
        refusal = self.refusal(scope, headers)
        if refusal is not None:
            await send_json(response.send, *refusal)
            return
        app = self.cors if self.cors is not None and headers.origin is not None else self.app
        body = self.counted_body(scope, receive, headers)
        token = request_id_var.set(request_id.decode())
        try:
            await self.call_app(app, scope, receive, response, body)
        finally:
            request_id_var.reset(token)

    async def websocket(
        self, scope: Scope, receive: Receive, send: Send, headers: RequestHeaders
    ) -> None:
        """A WebSocket: only its Host is checked."""
        if self.host_allowed(scope, headers.host):
            await self.app(scope, receive, send)
        else:
            await send({"type": "websocket.close", "code": 1008})

    def request_id(self, headers: RequestHeaders) -> bytes:
        if headers.request_id is not None and _VALID_REQUEST_ID.fullmatch(headers.request_id):
            return headers.request_id
        # A correlation id, not a secret: no need for the slower system randomness.
        return b"%032x" % random.getrandbits(128)

    def added_headers(
        self, scope: Scope, headers: RequestHeaders, request_id: bytes
    ) -> list[tuple[bytes, bytes]]:
        added = [*SECURITY_HEADERS, (b"x-request-id", request_id)]
        if not scope["path"].startswith(DOCS_PATH):
            added.append(CONTENT_SECURITY_POLICY)
        if scope.get("scheme") == "https":
            added.append(STRICT_TRANSPORT_SECURITY)
        if self.cors is not None and headers.origin is None:
            added.append(VARY_ORIGIN)
        return added

    def refusal(self, scope: Scope, headers: RequestHeaders) -> tuple[int, str] | None:
        """The status and reason to refuse the request with before the app sees it, if any."""
        if not self.host_allowed(scope, headers.host):
            return 400, "Invalid host header"
        if headers.length is not None:
            if not headers.length.isdigit():
                return 400, "Invalid Content-Length header"
            if int(headers.length) > self.max_body_bytes:
                return 413, f"Request body over {self.max_body_bytes} bytes"
        return None

    def counted_body(
        self, scope: Scope, receive: Receive, headers: RequestHeaders
    ) -> "CountedBody | None":
        """A counter on a body of unknown length (HTTP/1 with neither header has none)."""
        if headers.length is None and (
            headers.encoding is not None or scope.get("http_version") not in ("1.0", "1.1")
        ):
            return CountedBody(receive, self.max_body_bytes)
        return None

    async def call_app(
        self,
        app: ASGIApp,
        scope: Scope,
        receive: Receive,
        response: "ResponseHeaders",
        body: "CountedBody | None",
    ) -> None:
        """Run the app; answer 500 for an error that escapes it, 413 for a body cut off."""
        send: Send
        if body is None:
            send = response.send
        else:
            receive, send = body.receive, body.guard(response.send)
        try:
            await app(scope, receive, send)
        except Exception:
            if body is None or not body.too_large:
                logger.exception("Unhandled error on %s %s", scope["method"], scope["path"])
                if not response.started:
                    await send_json(response.send, 500, "Internal server error")
        if body is not None and body.too_large and not response.started:
            await send_json(response.send, 413, f"Request body over {self.max_body_bytes} bytes")

    def host_allowed(self, scope: Scope, host: bytes | None) -> bool:
        """Whether the Host header (a name or address, maybe with a port) is trusted."""
        if self.any_host or scope["path"] in PROBE_PATHS:
            return True
        host = host or b""
        # A name or an IPv4 address, or an IPv6 one in brackets; then maybe a port.
        bracketed = host.startswith(b"[")
        name = (host[1:].partition(b"]") if bracketed else host.partition(b":"))[0].lower()
        return name in self.exact_hosts or (
            bool(self.host_suffixes) and name.endswith(self.host_suffixes)
        )


class ResponseHeaders:
    """Wraps `send` to add headers to the response, and notes whether it started."""

    __slots__ = ("added", "send_next", "started")

    def __init__(self, send: Send, added: list[tuple[bytes, bytes]]) -> None:
        self.send_next = send
        self.added = added
        self.started = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
            headers = message.get("headers", [])
            if any(name.lower() in _ADDED_NAMES for name, _ in headers):
                present = {name.lower() for name, _ in headers}
                message["headers"] = [
                    *headers,
                    *(item for item in self.added if item[0] not in present),
                ]
            else:
                message["headers"] = [*headers, *self.added]
        await self.send_next(message)


class CountedBody:
    """A request body of unknown length, cut off once it is over `limit` bytes.

    The app then receives a disconnect, and what it sends is dropped.
    """

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.too_large = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.too_large = True
                return {"type": "http.disconnect"}
        return message

    def guard(self, send: Send) -> Send:
        async def guarded(message: Message) -> None:
            if not self.too_large:
                await send(message)

        return guarded


async def send_json(send: Send, status: int, detail: str) -> None:
    """Send a complete `{"detail": ...}` JSON response."""
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
