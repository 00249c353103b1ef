"""Pure ASGI middleware: request ids, errors, security headers, trusted hosts, body size."""

import json
import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.log import request_id_var

logger = logging.getLogger(__name__)

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
HEALTH_PATHS = frozenset({"/health", "/health/ready"})


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header `name` (lower case), or None.

    A plain loop over the raw headers, cheaper than building a `Headers` object
    in each middleware for every request.
    """
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def send_json(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    """Send a complete `{"detail": ...}` JSON response."""
    body = json.dumps({"detail": detail}).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    for name, value in (headers or {}).items():
        raw_headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


# Added to every answer; the app's own value wins where it set one.
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
# The API answers JSON: a browser may load and frame nothing. Not on the
# interactive docs (under `/docs`), whose pages run scripts.
CONTENT_SECURITY_POLICY = (
    b"content-security-policy",
    b"default-src 'none'; frame-ancestors 'none'",
)
# Only on requests that came over HTTPS, directly or through a proxy trusted
# with X-Forwarded-Proto (FORWARDED_ALLOW_IPS).
STRICT_TRANSPORT_SECURITY = (b"strict-transport-security", b"max-age=31536000")


class RequestContextMiddleware:
    """Request ids, security headers, and 500 JSON for unhandled errors, in one pass.

    An incoming `X-Request-ID` made of safe characters is kept, so a proxy's id
    follows the request; otherwise a new one is made. Every answer carries it and
    the security headers above. An exception that escapes the app is logged once
    with its traceback and answered without it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id") or ""
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        extra = [*SECURITY_HEADERS, (b"x-request-id", request_id.encode())]
        if not scope["path"].startswith("/docs"):
            extra.append(CONTENT_SECURITY_POLICY)
        if scope.get("scheme") == "https":
            extra.append(STRICT_TRANSPORT_SECURITY)
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message["headers"] = headers + [item for item in extra if item[0] not in present]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("Unhandled error on %s %s", scope["method"], scope["path"])
            if not response_started:
                await send_json(send_with_headers, 500, "Internal server error")
        finally:
            request_id_var.reset(token)


class TrustedHostMiddleware:
    """Answer 400 JSON to requests whose Host header is not allowed.

    Entries are exact host names or `*.example.com` wildcards; `*` allows any.
    The health endpoints answer whatever the Host: platform probes call them by
    IP address (kubelet, Docker's HEALTHCHECK) or by an internal name.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: list[str]) -> None:
        self.app = app
        self.allow_any = "*" in allowed_hosts
        self.exact = {host.lower() for host in allowed_hosts if not host.startswith("*.")}
        self.suffixes = tuple(host[1:].lower() for host in allowed_hosts if host.startswith("*."))

    def is_allowed(self, host: str) -> bool:
        return host in self.exact or (bool(self.suffixes) and host.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.allow_any
            or scope["type"] not in ("http", "websocket")
            or scope["path"] in HEALTH_PATHS
        ):
            await self.app(scope, receive, send)
            return
        host = (header(scope, b"host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if self.is_allowed(host):
            await self.app(scope, receive, send)
        elif scope["type"] == "http":
            await send_json(send, 400, "Invalid host header")
        else:
            await send({"type": "websocket.close", "code": 1008})


class BodySizeLimitMiddleware:
    """Answer 413 JSON when a request body is larger than `max_bytes`.

    A declared `Content-Length` is checked before the app runs; a chunked body is
    counted as it arrives, and the app sees a disconnect once it goes over.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if (
            declared is None
            and scope.get("http_version") in ("1.0", "1.1")
            and header(scope, b"transfer-encoding") is None
        ):
            # HTTP/1 without Content-Length or Transfer-Encoding: no body follows.
            await self.app(scope, receive, send)
            return
        if declared is not None:
            if not declared.isdigit():
                await send_json(send, 400, "Invalid Content-Length header")
            elif int(declared) > self.max_bytes:
                await send_json(send, 413, f"Request body over {self.max_bytes} bytes")
            else:
                # The server holds the body to its declared length.
                await self.app(scope, receive, send)
            return

        received = 0
        too_large = False
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if too_large:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
        if too_large and not response_started:
            await send_json(send, 413, f"Request body over {self.max_bytes} bytes")
