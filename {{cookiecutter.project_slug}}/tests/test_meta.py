import httpx

from app import __version__
from app.settings import Settings
from tests.support import client_for


async def test_root_names_the_service_and_links_the_docs(client: httpx.AsyncClient) -> None:
    response = await client.get("/")

    assert response.json() == {
        "service": "{{ cookiecutter.project_slug }}",
        "version": __version__,
        "docs": "/docs",
    }


async def test_docs_can_be_turned_off(settings: Settings) -> None:
    async with client_for(settings.model_copy(update={"docs_enabled": False})) as client:
        assert (await client.get("/docs")).status_code == 404
        assert (await client.get("/openapi.json")).status_code == 404
        assert (await client.get("/")).json()["docs"] is None
