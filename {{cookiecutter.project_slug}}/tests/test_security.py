"""Security defaults: response headers, settings errors that keep values secret, and
hostile input answered with a 4xx JSON body rather than a 500."""

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from app.errors import MAX_ECHO_DEPTH, printable
from app.main import create_app
from app.settings import Settings
from tests.support import client_for, client_on, find_fastapi

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


def test_invalid_settings_name_the_variable_but_never_the_value() -> None:
    secret = "hunter2-too-short"
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, environment="production", secret_key=secret)
    assert "SECRET_KEY" in str(refused.value)
    assert secret not in str(refused.value)
{% if cookiecutter.use_postgres %}

    url = f"postgres://app:{secret}@db/app?sslmode=sometimes"
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, database_url=url)
    assert "DATABASE_URL" in str(refused.value)
    assert secret not in str(refused.value)
{% endif %}


def nested(depth: int) -> object:
    value: object = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "unprintable",
    [float("nan"), float("inf"), "lone \ud800 surrogate", b"\xff\xfe not UTF-8", nested(5000)],
    ids=["nan", "infinity", "surrogate", "bytes", "deep"],
)
async def test_422_survives_input_json_cannot_carry(
    settings: Settings, unprintable: object
) -> None:
    app = create_app(settings)

    @find_fastapi(app).get("/invalid")
    async def invalid() -> None:
        problem = {"type": "bad", "loc": ("body", "field"), "msg": "is bad", "input": unprintable}
        raise RequestValidationError([problem])

    async with client_on(app) as client:
        response = await client.get("/invalid")

    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "is bad"


def test_echoed_input_is_cut_at_a_depth() -> None:
    echoed = printable(nested(100))
    for _ in range(MAX_ECHO_DEPTH):
        (echoed,) = echoed
    assert echoed == "..."


class Payload(BaseModel):
    name: str
    count: int


async def test_malformed_bodies_are_4xx_json(settings: Settings) -> None:
    app = create_app(settings)

    @find_fastapi(app).post("/payload")
    async def accept(payload: Payload) -> int:
        return payload.count

    json_type = {"content-type": "application/json"}
    bodies: list[tuple[str | bytes, dict[str, str]]] = [
        ('{"name": NaN, "count": 1}', json_type),
        ('{"name": ["\\ud800"], "count": 1}', json_type),
        ('{"name": "x", "count": 1', json_type),
        (b"\xff\xfe", {"content-type": "text/plain"}),
        (b"name=x&count=1", {"content-type": "application/x-www-form-urlencoded"}),
    ]
    async with client_on(app) as client:
        answers = [
            await client.post("/payload", content=body, headers=headers) for body, headers in bodies
        ]

    for answer in answers:
        assert 400 <= answer.status_code < 500, answer.text
        assert answer.headers["content-type"] == "application/json"
        assert answer.json()["detail"]
