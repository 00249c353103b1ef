"""A baked project served by a real uvicorn process, on real services and on defaults."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolkit.auth import ADMIN_EMAIL, create_admin, log_in
from toolkit.processes import clean_env, free_port, run
from toolkit.servers import drop_scratch_database, scratch_database, serving

pytestmark = pytest.mark.xdist_group("server")


def uvicorn(venv: Path, port: int) -> list[str | Path]:
    return [
        venv / "bin" / "python",
        "-m",
        "uvicorn",
        "app.main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


def item_round_trip(base: str, python: Path, project: Path, env: dict[str, str]) -> None:
    """The README's first steps: create the admin, log in, write, read, refresh, log out."""
    assert create_admin(python, project, env) == f"Created the admin {ADMIN_EMAIL}\n"
    tokens = log_in(base)
    signed_in = {"Authorization": f"Bearer {tokens['access_token']}"}
    name = f"item-{uuid.uuid4().hex}"

    anonymous = httpx.post(f"{base}/items", json={"name": name}, timeout=5)
    created = httpx.post(f"{base}/items", json={"name": name}, headers=signed_in, timeout=5)
    read = httpx.get(f"{base}/items/{created.json()['id']}", timeout=5)
    refreshed = httpx.post(f"{base}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}, timeout=5)
    next_token = refreshed.json()["refresh_token"]
    logged_out = httpx.post(f"{base}/auth/logout", json={"refresh_token": next_token}, timeout=5)
    after = httpx.post(f"{base}/auth/refresh", json={"refresh_token": next_token}, timeout=5)

    assert anonymous.status_code == 401
    assert created.status_code == 201, created.text
    assert read.status_code == 200
    assert read.json() == created.json()
    assert refreshed.status_code == 200
    assert logged_out.status_code == 204
    assert after.status_code == 401


def test_serves_on_real_postgres_and_redis(
    bakery: Any, venv: Path, services: dict[str, str], tmp_path: Path
) -> None:
    project = bakery()
    python = venv / "bin" / "python"
    database = scratch_database(python, project, services["DATABASE_URL"], f"srv_{uuid.uuid4().hex[:12]}")
    try:
        env = clean_env(
            DATABASE_URL=database, REDIS_URL=services["REDIS_URL"], CACHE_KEY_PREFIX=f"{database}:"
        )
        run([python, "-m", "alembic", "upgrade", "head"], project, env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with serving(uvicorn(venv, port), project, env, f"{base}/health", tmp_path / "server.log"):
            ready = httpx.get(f"{base}/health/ready", timeout=5)
            assert ready.status_code == 200, ready.text
            assert set(ready.json()["checks"]) == {"database", "redis"}
            item_round_trip(base, python, project, env)
    finally:
        drop_scratch_database(python, project, services["DATABASE_URL"], database)


def test_readiness_is_503_within_its_timeout_when_the_database_is_down(
    bakery: Any, venv: Path, tmp_path: Path
) -> None:
    project = bakery()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(
        DATABASE_URL=f"postgresql://app:secret@127.0.0.1:{free_port()}/app", HEALTH_CHECK_TIMEOUT="1"
    )
    with serving(uvicorn(venv, port), project, env, f"{base}/health", tmp_path / "server.log"):
        started = time.perf_counter()
        ready = httpx.get(f"{base}/health/ready", timeout=10)
        elapsed = time.perf_counter() - started
        items = httpx.get(f"{base}/items", timeout=15)

    assert ready.status_code == 503
    assert ready.json()["checks"]["database"]["status"] == "error"
    assert elapsed < 1.5
    assert items.status_code == 503
    assert items.json() == {"detail": "Database unavailable"}
    assert "secret" not in ready.text + items.text


def test_serves_on_embedded_defaults(bakery: Any, venv: Path, tmp_path: Path) -> None:
    project = bakery()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with serving(uvicorn(venv, port), project, clean_env(), f"{base}/health", tmp_path / "server.log"):
        ready = httpx.get(f"{base}/health/ready", timeout=5)
        assert ready.status_code == 200
        assert set(ready.json()["checks"]) == {"database"}
        item_round_trip(base, venv / "bin" / "python", project, clean_env())
        root = httpx.get(base, timeout=5).json()
        assert root["docs"] == "/docs"
    assert (project / "local.db").exists()
    (project / "local.db").unlink()
