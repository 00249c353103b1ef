"""Bad requests get 4xx JSON; unhandled errors get 500 JSON, logged with their traceback."""

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Request

from app.main import create_app
from app.settings import Settings
from tests.support import client_for, client_on, find_fastapi


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_every_response_has_a_request_id(client: httpx.AsyncClient) -> None:
    generated = await client.get("/health")
    kept = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    replaced = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})

    assert len(generated.headers["x-request-id"]) == 32
    assert kept.headers["x-request-id"] == "abc-123"
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"


async def test_oversized_body_is_413(settings: Settings) -> None:
    app = create_app(settings)

    @find_fastapi(app).post("/echo-length")
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


async def test_docs_can_be_turned_off(settings: Settings) -> None:
    async with client_for(settings.model_copy(update={"docs_enabled": False})) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 404
        assert (await client.get("/")).json()["docs"] is None


async def test_unhandled_error_is_500_json_and_logged(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    app = create_app(settings.model_copy(update={"log_json": True}))
    api = find_fastapi(app)

    @api.get("/boom")
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
