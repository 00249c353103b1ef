"""`create_app` wires the service: a FastAPI app that tests and users reach directly."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi import FastAPI

from app.deps import current_settings
from app.main import create_app
from app.settings import Settings
from tests.support import client_on

PROJECT_ROOT = Path(__file__).resolve().parent.parent


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


def test_every_module_imports_on_its_own() -> None:
    """No import cycle hides behind the order in which `app.main` happens to import."""
    modules = sorted(
        ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (PROJECT_ROOT / "app").rglob("*.py")
    )
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(import_alone, modules))

    assert [(module, error) for module, error in zip(modules, results, strict=True) if error] == []


def import_alone(module: str) -> str:
    """The error of importing `module` in a new interpreter, or an empty string."""
    result = subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stderr.strip().splitlines()[-1] if result.returncode else ""
