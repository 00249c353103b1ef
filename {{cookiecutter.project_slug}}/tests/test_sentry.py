"""Sentry, tested without any network: the DSN points at a receiver on localhost."""

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk
from pydantic import SecretStr

from app import __version__
from app.main import create_app
from app.sentry import init_sentry
from app.settings import Settings
from tests.support import client_on, find_fastapi


class Receiver(ThreadingHTTPServer):
    """Collects what the SDK sends, one decoded envelope item per entry."""

    items: list[tuple[str, dict[str, Any]]]

    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.server_address[1]}/1"

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [payload for item_type, payload in self.items if item_type == kind]


class EnvelopeHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        lines = body.split(b"\n")
        for header_line, payload_line in zip(lines[1::2], lines[2::2], strict=False):
            item_type = json.loads(header_line).get("type", "")
            self.server.items.append((item_type, json.loads(payload_line)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads what arrived, not the access log."""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(("127.0.0.1", 0), EnvelopeHandler)
    server.items = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def sentry_reset() -> Iterator[None]:
    """Close the client a test started, leaving the SDK inactive for the next tests."""
    yield
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


@pytest.mark.usefixtures("sentry_reset")
async def test_unhandled_errors_reach_sentry(settings: Settings, receiver: Receiver) -> None:
    configured = settings.model_copy(
        update={
            "sentry_dsn": SecretStr(receiver.dsn()),
            "environment": "staging",
            "sentry_traces_sample_rate": 1.0,
        }
    )
    app = create_app(configured)

    @find_fastapi(app).get("/boom")
    async def boom() -> None:
        raise RuntimeError("reported to sentry")

    async with client_on(app) as client:
        failed = await client.get("/boom")
        await client.get("/health")
        await client.get("/")
    sentry_sdk.flush(timeout=5)

    assert failed.status_code == 500
    errors = [
        event
        for event in receiver.of_type("event")
        if event["exception"]["values"][-1]["type"] == "RuntimeError"
    ]
    assert errors, receiver.items
    assert errors[0]["environment"] == "staging"
    assert errors[0]["release"] == f"{configured.service_name}@{__version__}"
    assert "ip_address" not in errors[0].get("user", {})
    traced = [event["transaction"] for event in receiver.of_type("transaction")]
    assert traced
    assert not [name for name in traced if name.startswith("/health")]


def test_without_a_dsn_sentry_stays_off(settings: Settings) -> None:
    assert init_sentry(settings) is False
    assert not sentry_sdk.get_client().is_active()
