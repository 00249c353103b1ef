"""`create_app` wires the service: a FastAPI app that tests and users reach directly."""

import ast
import subprocess
import sys
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


# Imports the libraries once, then each module named in a fork of its own, so that a
# module costs its own import only; prints one line per module that fails.
IMPORT_EACH_ALONE = """
import importlib, os, sys

for library in sys.argv[1].split(","):
    try:
        importlib.import_module(library)
    except ImportError:  # Left for the module that needs it to report.
        pass
for module in sys.argv[2:]:
    if os.fork() == 0:
        try:
            importlib.import_module(module)
        except Exception as error:
            print(f"{module}: {error!r}", flush=True)
        os._exit(0)
    os.wait()
"""


def test_every_module_imports_on_its_own() -> None:
    """No import cycle hides behind the order in which `app.main` happens to import."""
    files = sorted((PROJECT_ROOT / "app").rglob("*.py"))
    modules = [
        ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in files
    ]
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, ",".join(libraries(files)), *modules],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.splitlines() == []


def libraries(files: list[Path]) -> list[str]:
    """The top-level packages, other than the app, that `files` import."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return sorted(names - {"app"})
