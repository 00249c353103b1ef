{% if cookiecutter.use_postgres or cookiecutter.use_redis %}
import time
{% endif %}
from datetime import datetime

import httpx

from app import __version__
{% if cookiecutter.use_postgres or cookiecutter.use_redis %}
from app.settings import Settings
from tests.support import client_for
{% endif %}


async def test_liveness_reports_the_service(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["service"] == "{{ cookiecutter.project_slug }}"
    assert body["version"] == __version__
    assert body["environment"] == "test"
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None


{% if cookiecutter.use_postgres or cookiecutter.use_redis %}
async def test_readiness_passes_with_every_dependency_up(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
{% if cookiecutter.use_postgres and cookiecutter.use_redis %}
    expected = {"database", "redis"} if settings.redis_url else {"database"}
{% elif cookiecutter.use_postgres %}
    expected = {"database"}
{% else %}
    expected = {"redis"} if settings.redis_url else set()
{% endif %}
    assert set(body["checks"]) == expected
    for check in body["checks"].values():
        assert check["status"] == "ok"
        assert check["latency_ms"] >= 0
{% if cookiecutter.use_postgres %}
    assert body["checks"]["database"]["required"] is True
{% endif %}
{% else %}
async def test_readiness_passes_with_nothing_to_check(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}}
{% endif %}
{% if cookiecutter.use_postgres %}


async def test_readiness_fails_fast_when_the_database_is_down(settings: Settings) -> None:
    # Port 9 (discard) is closed on any test machine; nothing answers there.
    down = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://app:secret@127.0.0.1:9/app"}
    )
    async with client_for(down) as client:
        started = time.perf_counter()
        response = await client.get("/health/ready")
        elapsed = time.perf_counter() - started
        liveness = await client.get("/health")

    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    check = response.json()["checks"]["database"]
    assert check["status"] == "error"
    assert elapsed < down.health_check_timeout + 1
    assert "secret" not in response.text
    assert liveness.status_code == 200
{% endif %}
{% if cookiecutter.use_redis %}


async def test_readiness_reports_redis_down_as_degraded_but_ready(settings: Settings) -> None:
    # Whatever uses Redis falls back while it fails: the instance can still serve.
    down = settings.model_copy(update={"redis_url": "redis://:secret@127.0.0.1:9/0"})
    async with client_for(down) as client:
        started = time.perf_counter()
        response = await client.get("/health/ready")
        elapsed = time.perf_counter() - started

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["redis"]["status"] == "error"
    assert body["checks"]["redis"]["required"] is False
    assert body["checks"]["redis"]["error"]
    assert elapsed < down.health_check_timeout + 1
    assert "secret" not in response.text
{% endif %}
