"""Sentry, tested without any network: the DSN points at a receiver on localhost."""

import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk
{% if cookiecutter.use_auth %}
from fastapi import Request
{% endif %}
from pydantic import SecretStr
from sentry_sdk.utils import BadDsn, Dsn

from app import __version__
{% if cookiecutter.use_auth %}
from app.auth.principal import USER_SCOPES
from app.auth.tokens import issue_access_token
from app.deps import PrincipalDep
{% endif %}
from app.main import create_app
from app.sentry import init_sentry
from app.settings import Settings, is_sentry_dsn
{% if cookiecutter.use_auth %}
from tests.auth import PASSWORD
{% endif %}
from tests.support import client_on


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

    @app.get("/boom")
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


{% if cookiecutter.use_auth %}
@pytest.mark.usefixtures("sentry_reset")
async def test_tokens_and_passwords_never_reach_sentry(
    settings: Settings, receiver: Receiver
) -> None:
    configured = settings.model_copy(update={"sentry_dsn": SecretStr(receiver.dsn())})
    app = create_app(configured)
    token = issue_access_token("1", USER_SCOPES, configured)

    @app.post("/boom-signed-in")
    async def boom(_principal: PrincipalDep, request: Request) -> None:
        await request.form()
        raise RuntimeError("reported with the request")

    async with client_on(app) as client:
        failed = await client.post(
            "/boom-signed-in",
            data={"password": PASSWORD},
            headers={"Authorization": f"Bearer {token}"},
        )
    sentry_sdk.flush(timeout=5)

    sent = json.dumps(receiver.items)
    assert failed.status_code == 500
    assert "reported with the request" in sent
    assert token not in sent
    assert PASSWORD not in sent


{% endif %}
def test_without_a_dsn_sentry_stays_off(settings: Settings) -> None:
    assert init_sentry(settings) is False
    assert not sentry_sdk.get_client().is_active()


@pytest.mark.parametrize(
    "dsn",
    [
        "https://0123456789abcdef@o1.ingest.us.sentry.io/4500000000000000",
        "http://public@127.0.0.1:9000/1",
        "https://key:secret@sentry.example.com/path/42",
        "https://KEY@ORG.ingest.sentry.io/PROJECT",
        "https://o1.ingest.sentry.io/1",
        "ftp://key@sentry.example.com/1",
        "key@sentry.example.com/1",
    ],
)
def test_settings_accept_exactly_the_dsns_the_sdk_accepts(dsn: str) -> None:
    try:
        Dsn(dsn)
    except BadDsn:
        accepted_by_sdk = False
    else:
        accepted_by_sdk = True
    assert is_sentry_dsn(dsn) is accepted_by_sdk
