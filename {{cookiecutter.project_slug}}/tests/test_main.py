"""`create_app` wires the service: a FastAPI app that tests and users reach directly."""

import httpx
from fastapi import FastAPI

from app.deps import current_settings
from app.main import create_app
from app.settings import Settings
from tests.support import client_on


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/route")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


async def test_the_app_is_fastapi_and_takes_dependency_overrides(settings: Settings) -> None:
    app = create_app(settings)
    assert isinstance(app, FastAPI)
    renamed = settings.model_copy(update={"service_name": "overridden"})

    async def other_settings() -> Settings:
        return renamed

    app.dependency_overrides[current_settings] = other_settings
    async with client_on(app) as client:
        response = await client.get("/")

    assert response.json()["service"] == "overridden"
