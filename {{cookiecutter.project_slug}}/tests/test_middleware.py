"""The edge middleware: host and body checks, request ids, security headers, 500s."""

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Request

from app.main import create_app
from app.settings import Settings
from tests.support import client_for, client_on

EVERY_RESPONSE = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"


async def test_every_answer_carries_the_security_headers(settings: Settings) -> None:
    strict = settings.model_copy(update={"trusted_hosts": ["testserver"], "max_body_bytes": 10})
    async with client_for(strict) as client:
        answers = [
            await client.get("/"),
            await client.get("/no/such/route"),
            await client.post("/", content=b"x" * 11),
            await client.get("/", headers={"host": "evil.example"}),
        ]

    assert [answer.status_code for answer in answers] == [200, 404, 413, 400]
    for answer in answers:
        for name, value in EVERY_RESPONSE.items():
            assert answer.headers.get(name) == value, (answer.request.url, name)
        assert answer.headers["content-security-policy"] == JSON_POLICY
        assert "strict-transport-security" not in answer.headers


async def test_docs_pages_may_run_their_scripts(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")

    assert docs.status_code == 200
    assert "content-security-policy" not in docs.headers
    assert docs.headers["x-frame-options"] == "DENY"


async def test_hsts_only_when_the_client_used_https(settings: Settings) -> None:
    forwarded = {"x-forwarded-proto": "https"}
    async with client_for(settings) as client:
        plain = await client.get("/health")
        behind_proxy = await client.get("/health", headers=forwarded)
    untrusted = settings.model_copy(update={"forwarded_allow_ips": ["192.0.2.1"]})
    async with client_for(untrusted) as client:
        spoofed = await client.get("/health", headers=forwarded)

    assert "strict-transport-security" not in plain.headers
    assert behind_proxy.headers["strict-transport-security"].startswith("max-age=")
    assert "strict-transport-security" not in spoofed.headers


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    generated = await client.get("/health")
    kept = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    replaced = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})

    assert len(generated.headers["x-request-id"]) == 32
    assert kept.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"


async def test_oversized_body_is_413(settings: Settings) -> None:
    app = create_app(settings)

    @app.post("/echo-length")
    async def echo_length(request: Request) -> int:
        return len(await request.body())

    limit = settings.max_body_bytes
    too_big = b"x" * (limit + 1)

    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    async with client_on(app) as client:
        declared = await client.post("/echo-length", content=too_big)
        chunked = await client.post("/echo-length", content=chunks(too_big))
        fits = await client.post("/echo-length", content=chunks(too_big[:limit]))

    for response in (declared, chunked):
        assert response.status_code == 413
        assert response.json() == {"detail": f"Request body over {limit} bytes"}
    assert fits.json() == limit


async def test_untrusted_host_is_400_json(settings: Settings) -> None:
    strict = settings.model_copy(update={"trusted_hosts": ["api.example.com", "*.example.org"]})
    async with client_for(strict) as client:
        allowed = await client.get("/", headers={"host": "api.example.com"})
        wildcard = await client.get("/", headers={"host": "eu.example.org"})
        refused = await client.get("/", headers={"host": "evil.example.net"})

    assert allowed.status_code == wildcard.status_code == 200
    assert refused.status_code == 400
    assert refused.json() == {"detail": "Invalid host header"}


async def test_probes_pass_whatever_the_host(settings: Settings) -> None:
    strict = settings.model_copy(update={"trusted_hosts": ["api.example.com"]})
    ip_host = {"host": "10.1.2.3:8000"}
    async with client_for(strict) as client:
        probes = [await client.get(path, headers=ip_host) for path in ("/health", "/health/ready")]
        other = await client.get("/", headers=ip_host)

    assert [probe.status_code for probe in probes] == [200, 200]
    assert other.status_code == 400


async def test_unhandled_error_is_500_json_and_logged(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings.model_copy(update={"log_json": True}))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    async with client_on(app) as client:
        response = await client.get("/boom")

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error"}
    assert "kaboom" not in response.text
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    errors = [record for record in records if record["level"] == "ERROR"]
    assert errors, records
    assert "RuntimeError: kaboom" in errors[0]["exception"]
    assert errors[0]["request_id"] == response.headers["x-request-id"]
