"""Fly.io: fly.toml against a JSON schema of the fields Fly reads (tests/schemas), the
release command past a transaction pooler, and the worker's process group run with the
file's settings.

Its release and start commands run in test_deploy_targets.py, with every target's.
"""

from __future__ import annotations

import shlex
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from toolkit.deploy import (
    WORKER_COMMAND,
    assert_at_head,
    fresh_database,
    image_cmd,
    image_tree,
    params,
    platform_url,
    render_doc,
    secret,
    validate,
    venv_env,
    worker_grace,
    worker_params,
)
from toolkit.features import traces
from toolkit.platforms import launch
from toolkit.processes import free_port, run
from toolkit.servers import serving

WORKERS = worker_params("fly")


@pytest.mark.parametrize("answers", [*params(("fly",)), *WORKERS])
def test_fly_toml_matches_its_schema_and_the_image(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    text = (project / "fly.toml").read_text()
    fly = tomllib.loads(text)
    validate(fly, "fly")
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    worker = answers.get("use_worker", False)

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
    if worker:
        # With [processes], flyctl runs only the groups named: the web server's is the image's CMD.
        assert fly["processes"] == {"app": shlex.join(image_cmd(project)), "worker": WORKER_COMMAND}
        assert service["processes"] == ["app"], "the worker gets no HTTP service, so no traffic"
        # Its only check is its own, on its own port, never the web server's.
        (name,) = fly["checks"]
        check = fly["checks"][name]
        assert check["processes"] == ["worker"] and check["type"] == "http" and check["path"] == "/health"
        assert check["port"] == int(fly["env"]["WORKER_HEALTH_PORT"]) != service["internal_port"]
        assert [rule["policy"] for rule in fly["restart"] if "worker" in rule["processes"]] == ["always"]
        assert fly["kill_timeout"] > worker_grace(project, fly["env"]), "running jobs finish before SIGKILL"
    else:
        assert not {"processes", "checks", "restart"} & set(fly) and "processes" not in service
        assert "worker" not in text.lower() and traces(text, ["use_worker"]) == []


def test_fly_schema_catches_misspelt_keys() -> None:
    good = {"app": "a", "primary_region": "iad", "http_service": {"internal_port": 8080}}
    validate(good, "fly")
    check = {"type": "http", "port": 8001, "path": "/health", "processes": ["worker"]}
    validate(good | {"checks": {"worker": check}, "restart": [{"policy": "always"}]}, "fly")
    for bad in (
        good | {"deploy": {"release_comand": "scripts/migrate"}},
        good | {"http_service": {"internal_port": 8080, "concurrency": {"type": "websockets"}}},
        good | {"http_service": {"internal_port": 8080, "checks": [{"path": "/health", "interval": "15 s"}]}},
        # A top-level check needs its port and type, and has no `process` key.
        good | {"checks": {"worker": {"type": "http", "path": "/health"}}},
        good | {"checks": {"worker": check | {"process": ["worker"]}}},
        good | {"restart": [{"policy": "on_failure"}]},
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


@pytest.mark.parametrize("answers", [*params(("fly",), ("full", "bare")), *WORKERS])
def test_the_readme_scales_and_follows_the_worker(bakery: Any, answers: dict[str, Any]) -> None:
    fly = tomllib.loads((bakery(**answers) / "fly.toml").read_text())
    readme = render_doc("deploy-fly.md", **answers)

    if answers.get("use_worker", False):
        assert f"`{WORKER_COMMAND}`" in readme
        assert "fly scale count worker=2" in readme and "--process-group worker" in readme
        # `fly logs` filters by machine or region only.
        assert "fly logs --machine <id>" in readme and "fly logs --process-group" not in readme
        assert [name for name in fly["env"] if f"`{name}`" not in readme] == []
        # An evicting Redis could drop queued jobs (and without either flag flyctl asks).
        assert "--disable-eviction" in readme and "--enable-eviction" not in readme
    else:
        assert "worker" not in readme.lower() and traces(readme, ["use_worker"]) == []


@pytest.mark.parametrize("answers", WORKERS)
def test_the_worker_group_runs_with_the_files_settings(
    bakery: Any, venv: Path, services: dict[str, str], tmp_path: Path, answers: dict[str, Any]
) -> None:
    """The worker's command, [env] and secrets, as a worker machine starts them: it answers
    its check on the port the check names, and stops within kill_timeout."""
    project = bakery(**answers)
    tree = image_tree(project, tmp_path / "app")
    fly = tomllib.loads((project / "fly.toml").read_text())
    plan = launch("fly", project, services["DATABASE_URL"], services["REDIS_URL"], tmp_path, answers)
    assert plan.serve.command == shlex.split(fly["processes"]["app"])
    check = fly["checks"]["worker"]
    # The machine and its Redis are shared: a free port, and a queue no other test uses.
    port = free_port()
    env = venv_env(
        venv,
        **plan.serve.env | {"WORKER_HEALTH_PORT": str(port), "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex}:"},
    )
    command = shlex.split(fly["processes"]["worker"])

    with serving(command, tree, env, f"http://127.0.0.1:{port}{check['path']}", tmp_path / "worker.log"):
        run([*command, "check"], tree, env)
        stopping = time.monotonic()
    # Stopped cleanly (serving checks the exit code) before Fly's SIGKILL.
    assert time.monotonic() - stopping < fly["kill_timeout"]
