"""Fixtures: the app driven through its lifespan, on real services when the env names them.

{% if cookiecutter.use_postgres and cookiecutter.use_redis %}
With DATABASE_URL and REDIS_URL set (CI, or `make test` next to the compose
stack) the tests run against PostgreSQL and Redis; without them, on the embedded
SQLite database and in-process cache.
{% elif cookiecutter.use_postgres %}
With DATABASE_URL set (CI, or `make test` next to the compose stack) the tests
run against PostgreSQL; without it, on the embedded SQLite database.
{% elif cookiecutter.use_redis %}
With REDIS_URL set (CI, or `make test` next to the compose stack) the tests run
against Redis; without it, on the in-process cache.
{% else %}
The service has no external dependency, so the tests need nothing running.
{% endif %}
{% if cookiecutter.use_postgres %}
Each test session gets its own PostgreSQL database, migrated with Alembic and
dropped at the end; tables are emptied after every test.
{% endif %}
"""

{% if cookiecutter.use_postgres %}
import asyncio
{% endif %}
{% if cookiecutter.use_postgres or cookiecutter.use_redis %}
import os
import uuid
{% endif %}
from collections.abc import AsyncIterator{{ ", Iterator" if cookiecutter.use_postgres else "" }}
from pathlib import Path

import httpx
import pytest
{% if cookiecutter.use_redis %}
from redis.asyncio.client import Pipeline
{% endif %}

from app.settings import Settings
{% if cookiecutter.use_auth %}
from tests.auth import writer_headers
{% endif %}
{% if cookiecutter.use_postgres %}
from tests.postgres import create_database, drop_database, migrate, truncate_all
{% endif %}
from tests.support import client_for
{% if cookiecutter.use_postgres %}


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A fresh, migrated database on the server DATABASE_URL names, or None."""
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        yield None
        return
    url = asyncio.run(create_database(server_url, f"test_{uuid.uuid4().hex[:12]}"))
    migrate(url, "head")
    yield url
    asyncio.run(drop_database(server_url, url))
{% endif %}


@pytest.fixture
{% if cookiecutter.use_postgres %}
def settings(tmp_path: Path, postgres_url: str | None) -> Settings:
{% else %}
def settings(tmp_path: Path) -> Settings:
{% endif %}
    """Settings for one test, isolated from every other test and from `.env`."""
    return Settings(
        _env_file=None,
        environment="test",
{% if cookiecutter.use_rate_limit %}
        # Tests about rate limits turn them on (tests/test_ratelimit.py).
        rate_limit_enabled=False,
{% endif %}
{% if cookiecutter.use_postgres %}
        database_url=postgres_url or f"sqlite+aiosqlite:///{tmp_path / 'test.db'}",
{% endif %}
{% if cookiecutter.use_redis %}
        redis_url=os.environ.get("REDIS_URL") or None,
        # Keys of its own, so tests sharing a Redis server never see each other's.
        cache_key_prefix=f"test-{uuid.uuid4().hex[:12]}:",
{% endif %}
    )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
{% if cookiecutter.use_auth %}
    """An HTTP client on the app, with the app's lifespan run around the test, signed in
    as a user who may write items (tests/test_auth.py drops the header)."""
    async with client_for(settings) as client:
        client.headers.update(writer_headers(settings))
        yield client
{% else %}
    """An HTTP client on the app, with the app's lifespan run around the test."""
    async with client_for(settings) as client:
        yield client
{% endif %}
{% if cookiecutter.use_postgres %}
    if settings.database_url.startswith("postgresql"):
        await truncate_all(settings.database_url)
{% endif %}
{% if cookiecutter.use_redis %}


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of Redis pipelines sent during the test (as `round_trips[0]`)."""
    sent = [0]
    execute = Pipeline.execute

    async def counted(pipeline: Pipeline, raise_on_error: bool = True) -> list[object]:
        sent[0] += 1
        return await execute(pipeline, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", counted)
    return sent
{% endif %}
