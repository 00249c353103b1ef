"""Render: render.yaml against a JSON schema of the Blueprint fields Render reads
(tests/schemas), the wiring of its database and key-value store, and the background
worker run with the Blueprint's settings.

Its release and start commands run in test_deploy_targets.py, with every target's.
"""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from toolkit.deploy import (
    WORKER_COMMAND,
    image_tree,
    params,
    platform_url,
    render_doc,
    secret,
    validate,
    venv_env,
    worker_grace,
    worker_params,
    yamllint,
)
from toolkit.features import traces
from toolkit.processes import free_port, run
from toolkit.servers import serving

WORKERS = worker_params("render")
# Where the worker answers while it runs (Render itself checks no worker).
WORKER_HEALTH_PATH = "/health"


def service_env(blueprint: dict[str, Any], name: str, database: str, redis: str) -> dict[str, str]:
    """The variables of the service `name` as Render resolves them: generated values made
    up, references followed (a variable another service generated is that service's)."""
    services = {service["name"]: service for service in blueprint["services"]}
    generated: dict[tuple[str, str], str] = {}
    env = {}
    for var in services[name]["envVars"]:
        if "value" in var:
            env[var["key"]] = str(var["value"])
        elif var.get("generateValue"):
            env[var["key"]] = generated.setdefault((name, var["key"]), secret())
        elif "fromDatabase" in var:
            env[var["key"]] = platform_url(database, "postgres")
        elif "envVarKey" in var.get("fromService", {}):
            source = var["fromService"]
            assert services[source["name"]]["type"] == source["type"]
            (origin,) = [
                item for item in services[source["name"]]["envVars"] if item["key"] == source["envVarKey"]
            ]
            assert origin.get("generateValue"), origin
            env[var["key"]] = generated.setdefault((source["name"], source["envVarKey"]), secret())
        elif "fromService" in var:
            env[var["key"]] = redis
        elif var.get("sync") is False:
            env[var["key"]] = ""
    return env


@pytest.mark.parametrize("answers", [*params(("render",)), *WORKERS])
def test_render_yaml_matches_its_schema_and_wires_its_resources(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    yamllint(project / "render.yaml")
    text = (project / "render.yaml").read_text()
    blueprint = yaml.safe_load(text)
    validate(blueprint, "render")
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    worker = answers.get("use_worker", False)

    services = {service["name"]: service for service in blueprint["services"]}
    # The web service comes first: the probe checks read it there.
    web = blueprint["services"][0]
    assert web["type"] == "web"
    assert web["runtime"] == "docker" and (project / web["dockerfilePath"]).exists()
    assert web.get("preDeployCommand") == ("scripts/migrate" if postgres else None)
    assert web["healthCheckPath"] == "/health"
    assert "startCommand" not in web and "dockerCommand" not in web, "the image's CMD starts it"
    keyvalues = [service for service in blueprint["services"] if service["type"] == "keyvalue"]
    assert len(keyvalues) == (1 if redis else 0)
    assert all(service["ipAllowList"] == [] for service in keyvalues)
    databases = {database["name"]: database for database in blueprint.get("databases", [])}
    assert len(databases) == (1 if postgres else 0)
    assert all(database["ipAllowList"] == [] for database in databases.values())
    env = {var["key"]: var for var in web["envVars"]}
    assert env["SECRET_KEY"] == {"key": "SECRET_KEY", "generateValue": True}
    assert env["ENVIRONMENT"]["value"] == "production"
    assert ("DATABASE_URL" in env) == postgres and ("REDIS_URL" in env) == redis
    if postgres:
        source = env["DATABASE_URL"]["fromDatabase"]
        assert source["name"] in databases and source["property"] == "connectionString"
    if redis:
        source = env["REDIS_URL"]["fromService"]
        assert services[source["name"]]["type"] == source["type"] == "keyvalue"
        assert source["property"] == "connectionString"
    workers = [service for service in blueprint["services"] if service["type"] == "worker"]
    assert len(workers) == (1 if worker else 0)
    if worker:
        (job_worker,) = workers
        # The web service's image, built the same way, started as the worker.
        for key in ("runtime", "dockerfilePath", "dockerContext", "region", "autoDeployTrigger"):
            assert job_worker[key] == web[key], key
        assert job_worker["dockerCommand"] == WORKER_COMMAND and "startCommand" not in job_worker
        # Its deploy is not ordered after the web service's: it migrates first too.
        assert job_worker.get("preDeployCommand") == web.get("preDeployCommand")
        assert job_worker["numInstances"] >= 1
        worker_env = {var["key"]: var for var in job_worker["envVars"]}
        assert set(worker_env) == {"ENVIRONMENT", "SECRET_KEY", "REDIS_URL"} | (
            {"DATABASE_URL"} if postgres else set()
        )
        assert worker_env["ENVIRONMENT"] == env["ENVIRONMENT"]
        assert worker_env["SECRET_KEY"]["fromService"] == {
            "type": "web",
            "name": web["name"],
            "envVarKey": "SECRET_KEY",
        }
        for key in ("DATABASE_URL", "REDIS_URL"):
            assert worker_env.get(key) == env.get(key), key
        grace = worker_grace(
            project, {key: str(var["value"]) for key, var in worker_env.items() if "value" in var}
        )
        assert job_worker["maxShutdownDelaySeconds"] > grace, "running jobs finish before SIGKILL"
        # The queue lives in Key Value: full, it evicts only keys with a time to live.
        assert [service["maxmemoryPolicy"] for service in keyvalues] == ["volatile-lru"]
    else:
        assert "worker" not in text.lower() and traces(text, ["use_worker"]) == []
        assert all(service["maxmemoryPolicy"] == "allkeys-lru" for service in keyvalues)


def test_render_schema_catches_misspelt_keys() -> None:
    web = {"type": "web", "name": "a", "runtime": "docker"}
    validate({"services": [web]}, "render")
    worker = {"type": "worker", "name": "w", "runtime": "docker", "dockerCommand": "python -m app.jobs"}
    validate({"services": [web, worker]}, "render")
    for bad in (
        {"services": [web | {"healthcheckPath": "/health"}]},
        {"services": [web, {"type": "keyvalue", "name": "kv"}]},
        {"services": [web | {"envVars": [{"key": "X", "fromDatabase": {"name": "db", "property": "url"}}]}]},
        # A worker has a runtime, and nothing that takes traffic.
        {"services": [web, {"type": "worker", "name": "w"}]},
        {"services": [web, worker | {"healthCheckPath": "/health"}]},
        {"services": [web, worker | {"dockerComand": "python -m app.jobs"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "render")


@pytest.mark.parametrize("answers", [*params(("render",), ("full", "bare")), *WORKERS])
def test_the_readme_scales_and_follows_the_worker(answers: dict[str, Any]) -> None:
    readme = render_doc("deploy-render.md", **answers)

    if answers.get("use_worker", False):
        assert f"`{WORKER_COMMAND}`" in readme and "`numInstances`" in readme
        assert "`maxShutdownDelaySeconds`" in readme and "`volatile-lru`" in readme
        assert "render logs --resources" in readme
    else:
        assert "worker" not in readme.lower() and traces(readme, ["use_worker"]) == []


@pytest.mark.parametrize("answers", WORKERS)
def test_the_worker_runs_with_the_blueprints_settings(
    bakery: Any, venv: Path, services: dict[str, str], tmp_path: Path, answers: dict[str, Any]
) -> None:
    """The worker service's command and variables, as Render starts it: it answers its
    liveness check and stops within maxShutdownDelaySeconds."""
    project = bakery(**answers)
    tree = image_tree(project, tmp_path / "app")
    blueprint = yaml.safe_load((project / "render.yaml").read_text())
    (job_worker,) = [service for service in blueprint["services"] if service["type"] == "worker"]
    env = service_env(blueprint, job_worker["name"], services["DATABASE_URL"], services["REDIS_URL"])
    # The machine and its Redis are shared: a free port, and a queue no other test uses.
    port = free_port()
    env = venv_env(
        venv, **env | {"WORKER_HEALTH_PORT": str(port), "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex}:"}
    )
    command = shlex.split(job_worker["dockerCommand"])

    with serving(command, tree, env, f"http://127.0.0.1:{port}{WORKER_HEALTH_PATH}", tmp_path / "worker.log"):
        run([*command, "check"], tree, env)
        stopping = time.monotonic()
    # Stopped cleanly (serving checks the exit code) before Render's SIGKILL.
    assert time.monotonic() - stopping < job_worker["maxShutdownDelaySeconds"]
