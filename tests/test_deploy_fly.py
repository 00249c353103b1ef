"""Fly.io: fly.toml against a JSON schema of the fields Fly reads (tests/schemas), and
the release command past a transaction pooler.

Its release and start commands run in test_deploy_targets.py, with every target's.
"""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from toolkit.deploy import (
    assert_at_head,
    fresh_database,
    image_tree,
    params,
    platform_url,
    secret,
    validate,
    venv_env,
)
from toolkit.processes import run


@pytest.mark.parametrize("answers", params(("fly",)))
def test_fly_toml_matches_its_schema_and_the_image(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    fly = tomllib.loads((project / "fly.toml").read_text())
    validate(fly, "fly")
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)

    assert fly["build"]["dockerfile"] == "Dockerfile"
    assert ("release_command" in fly["deploy"]) == postgres
    if postgres:
        assert fly["deploy"]["release_command"] == "scripts/migrate"
    service = fly["http_service"]
    assert service["internal_port"] == int(fly["env"]["PORT"])
    assert service["concurrency"]["type"] == "connections"
    assert {check["path"] for check in service["checks"]} == {"/health", "/health/ready"}
    assert fly["kill_signal"] == "SIGTERM" and fly["kill_timeout"] > 20, "outlasts the server's 20 s drain"
    transports = fly["env"].get("SOCKETIO_TRANSPORTS")
    if answers.get("use_socketio", True):
        assert transports == ("websocket" if redis else "polling,websocket")
    else:
        assert transports is None
    assert "SECRET_KEY" not in fly["env"] and "DATABASE_URL" not in fly["env"]


def test_fly_schema_catches_misspelt_keys() -> None:
    good = {"app": "a", "primary_region": "iad", "http_service": {"internal_port": 8080}}
    validate(good, "fly")
    for bad in (
        good | {"deploy": {"release_comand": "scripts/migrate"}},
        good | {"http_service": {"internal_port": 8080, "concurrency": {"type": "websockets"}}},
        good | {"http_service": {"internal_port": 8080, "checks": [{"path": "/health", "interval": "15 s"}]}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "fly")


@pytest.mark.parametrize("answers", params(("fly",), ("full",)))
def test_migrations_take_the_direct_url_past_a_transaction_pooler(
    bakery: Any, venv: Path, services: dict[str, str], tmp_path: Path, answers: dict[str, Any]
) -> None:
    """Fly Managed Postgres in transaction mode: DATABASE_URL is the pooled URL, and the
    release command must use MIGRATION_DATABASE_URL, the direct one."""
    project = bakery(**answers)
    tree = image_tree(project, tmp_path / "app")
    release = shlex.split(tomllib.loads((project / "fly.toml").read_text())["deploy"]["release_command"])
    # Nothing listens there: a migration that used it would fail.
    pooled = "postgresql://fly-user:unused@127.0.0.1:9/fly-db"
    with fresh_database(venv, project, services) as database:
        env = venv_env(venv, ENVIRONMENT="production", SECRET_KEY=secret(), DATABASE_URL=pooled)
        assert run(release, tree, env, check=False).returncode != 0

        run(release, tree, env | {"MIGRATION_DATABASE_URL": platform_url(database, "postgresql")})

        assert_at_head(venv, project, database)


def test_the_readme_leads_with_managed_postgres(bakery: Any) -> None:
    readme = (bakery(deploy_target="fly") / "README.md").read_text()

    assert readme.index("fly mpg create") < readme.index("fly postgres create")
    assert "DB_PGBOUNCER" in readme
