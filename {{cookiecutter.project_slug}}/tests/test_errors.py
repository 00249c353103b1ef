"""Errors: 422 responses that never fail, whatever the invalid request held."""

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from app.errors import MAX_ECHO_DEPTH, printable
from app.main import create_app
from app.settings import Settings
from tests.support import client_on


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

    @app.get("/invalid")
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

    @app.post("/payload")
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


async def test_422_never_echoes_a_secret_field(settings: Settings) -> None:
    app = create_app(settings)

    class Login(BaseModel):
        name: str = Field(max_length=3)
        password: str = Field(max_length=3)
        secret_key: str = Field(max_length=3)

    @app.post("/login")
    async def login(_login: Login) -> None:
        """Never reached: every field is too long."""

    async with client_on(app) as client:
        response = await client.post(
            "/login", json={"name": "visible", "password": "hunter22", "secret_key": "sesame"}
        )

    inputs = {problem["loc"][-1]: problem["input"] for problem in response.json()["detail"]}
    assert inputs == {"name": "visible", "password": "[hidden]", "secret_key": "[hidden]"}
