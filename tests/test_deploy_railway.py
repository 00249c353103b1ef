"""Railway: the service graph .railway/railway.py declares, evaluated with railway-sdk
as `railway config plan` does, from a git checkout of the project, and the worker
service run with the graph's settings.

Its release and start commands run in test_deploy_targets.py, with every target's.
"""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from toolkit.deploy import (
    WORKER_COMMAND,
    bake_group,
    by_address,
    image_tree,
    params,
    platform_url,
    railway_graph,
    render_doc,
    secret,
    venv_env,
    worker_grace,
    worker_params,
)
from toolkit.features import traces
from toolkit.processes import free_port, run
from toolkit.servers import serving

# Keys Railway reads in a service's build and deploy blocks; the SDK passes
# misspelt ones through and Railway drops them silently.
RAILWAY_BUILD_KEYS = {"builder", "dockerfilePath", "buildCommand", "watchPatterns"}
RAILWAY_DEPLOY_KEYS = {
    "startCommand",
    "preDeployCommand",
    "healthcheckPath",
    "healthcheckTimeout",
    "restartPolicyType",
    "restartPolicyMaxRetries",
    "numReplicas",
    "multiRegionConfig",
    "drainingSeconds",
    "overlapSeconds",
    "sleepApplication",
    "cronSchedule",
}
WORKERS = worker_params("railway")
# Where the worker answers while it runs (Railway itself checks no worker).
WORKER_HEALTH_PATH = "/health"


def resolved(resources: dict[str, dict[str, Any]], address: str, database: str, redis: str) -> dict[str, str]:
    """A service's variables as Railway resolves them: preserved values made up once,
    references followed to the database or to the other service's variable."""
    outputs = {"database.postgres": platform_url(database, "postgresql"), "database.redis": redis}
    kept: dict[tuple[str, str], str] = {}

    def value(owner: str, name: str) -> str:
        variable = resources[owner]["variables"][name]
        if variable["type"] == "literal":
            return str(variable["value"])
        if variable["type"] == "preserve":
            return kept.setdefault((owner, name), secret())
        assert variable["type"] == "reference", variable
        if variable["resource"].startswith("database."):
            return outputs[variable["resource"]]
        return value(variable["resource"], variable["output"])

    return {name: value(address, name) for name in resources[address]["variables"]}


@pytest.mark.parametrize("answers", [*params(("railway",)), *WORKERS])
def test_railway_graph_declares_the_service_and_its_databases(
    bakery: Any, venv: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    worker = answers.get("use_worker", False)
    run([venv / "bin" / "ruff", "check", "--no-cache", ".railway"], project)
    run([venv / "bin" / "ruff", "format", "--check", "--no-cache", ".railway"], project)
    resources = by_address(railway_graph(project))

    expected = (
        {"service.api"}
        | ({"database.postgres"} if postgres else set())
        | ({"database.redis"} if redis else set())
        | ({"service.worker"} if worker else set())
    )
    assert set(resources) == expected
    api = resources["service.api"]
    # The source is declared, so a later `railway config apply` keeps it.
    assert api["kind"] == "github"
    assert api["source"] == {"type": "github", "repo": "acme/my-service", "branch": "main"}
    assert api["build"] == {"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"}
    assert set(api["build"]) <= RAILWAY_BUILD_KEYS and set(api["deploy"]) <= RAILWAY_DEPLOY_KEYS
    deploy = api["deploy"]
    assert deploy["startCommand"] == "scripts/serve"
    assert deploy.get("preDeployCommand") == (["scripts/migrate"] if postgres else None)
    assert deploy["healthcheckPath"] == "/health/ready"
    assert deploy["restartPolicyType"] in {"ON_FAILURE", "ALWAYS"} and deploy["restartPolicyMaxRetries"] > 0
    assert deploy["numReplicas"] == 1
    variables = api["variables"]
    assert variables["ENVIRONMENT"] == {"type": "literal", "value": "production"}
    assert variables["SECRET_KEY"] == {"type": "preserve"}
    assert "healthcheck.railway.app" in variables["TRUSTED_HOSTS"]["value"].split(",")
    if postgres:
        assert variables["DATABASE_URL"] == {
            "type": "reference",
            "resource": "database.postgres",
            "output": "DATABASE_URL",
        }
    if redis:
        assert variables["REDIS_URL"] == {
            "type": "reference",
            "resource": "database.redis",
            "output": "REDIS_URL",
        }
    assert ("DATABASE_URL" in variables) == postgres and ("REDIS_URL" in variables) == redis
    if answers.get("use_socketio", True):
        assert variables["SOCKETIO_TRANSPORTS"]["value"] == "polling,websocket"
        scaled = by_address(railway_graph(project, replicas=3))["service.api"]
        assert scaled["deploy"]["numReplicas"] == 3
        assert scaled["variables"]["SOCKETIO_TRANSPORTS"]["value"] == "websocket"
    else:
        assert "SOCKETIO_TRANSPORTS" not in variables
    text = (project / ".railway" / "railway.py").read_text()
    if not worker:
        assert "worker" not in text.lower() and traces(text, ["use_worker"]) == []


@pytest.mark.parametrize("answers", WORKERS)
def test_railway_graph_declares_the_worker_from_the_apis_image(
    bakery: Any, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    resources = by_address(railway_graph(project))
    api, worker = resources["service.api"], resources["service.worker"]

    # The same repository, branch and Dockerfile, started as the worker.
    assert worker["kind"] == "github" and worker["source"] == api["source"]
    assert worker["build"] == api["build"]
    assert set(worker["build"]) <= RAILWAY_BUILD_KEYS and set(worker["deploy"]) <= RAILWAY_DEPLOY_KEYS
    deploy = worker["deploy"]
    assert deploy["startCommand"] == WORKER_COMMAND
    # Its deploy is not ordered after api's: it migrates first too.
    assert deploy.get("preDeployCommand") == api["deploy"].get("preDeployCommand")
    # Railway's health check is a request to PORT while a deploy goes live: none for the worker.
    assert "healthcheckPath" not in deploy and "healthcheckTimeout" not in deploy
    assert "networking" not in worker, "no domain"
    assert deploy["restartPolicyType"] == "ALWAYS" and deploy["numReplicas"] == 1
    variables = worker["variables"]
    literals = {name: value["value"] for name, value in variables.items() if value["type"] == "literal"}
    assert deploy["drainingSeconds"] > worker_grace(project, literals), "running jobs finish before SIGKILL"
    assert variables["ENVIRONMENT"] == api["variables"]["ENVIRONMENT"]
    assert variables["SECRET_KEY"] == {"type": "reference", "resource": "service.api", "output": "SECRET_KEY"}
    for name in ("DATABASE_URL", "REDIS_URL"):
        assert variables.get(name) == api["variables"].get(name), name

    # WORKER_REPLICAS scales the worker alone.
    (tmp_path / ".railway").mkdir()
    source = (project / ".railway" / "railway.py").read_text()
    scaled = source.replace("\nWORKER_REPLICAS = 1\n", "\nWORKER_REPLICAS = 3\n")
    assert scaled != source
    (tmp_path / ".railway" / "railway.py").write_text(scaled)
    scaled_graph = by_address(railway_graph(tmp_path))
    assert scaled_graph["service.worker"]["deploy"]["numReplicas"] == 3
    assert scaled_graph["service.api"]["deploy"]["numReplicas"] == 1


@pytest.mark.parametrize("answers", [*params(("railway",), ("full", "bare")), *WORKERS])
def test_the_readme_scales_and_follows_the_worker(answers: dict[str, Any]) -> None:
    readme = render_doc("deploy-railway.md", **answers)

    if answers.get("use_worker", False):
        assert f"`{WORKER_COMMAND}`" in readme and "`WORKER_REPLICAS`" in readme
        assert "railway logs --service worker" in readme and "`drainingSeconds`" in readme
    else:
        assert "worker" not in readme.lower() and traces(readme, ["use_worker"]) == []


@pytest.mark.parametrize("answers", WORKERS)
def test_the_worker_runs_with_the_graphs_settings(
    bakery: Any, venv: Path, services: dict[str, str], tmp_path: Path, answers: dict[str, Any]
) -> None:
    """The worker service's start command and variables, as Railway starts it: it answers
    its liveness check and stops within drainingSeconds."""
    project = bakery(**answers)
    tree = image_tree(project, tmp_path / "app")
    resources = by_address(railway_graph(project))
    deploy = resources["service.worker"]["deploy"]
    env = resolved(resources, "service.worker", services["DATABASE_URL"], services["REDIS_URL"])
    # The machine and its Redis are shared: a free port, and a queue no other test uses.
    port = free_port()
    env = venv_env(
        venv, **env | {"WORKER_HEALTH_PORT": str(port), "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex}:"}
    )
    command = shlex.split(deploy["startCommand"])

    with serving(command, tree, env, f"http://127.0.0.1:{port}{WORKER_HEALTH_PATH}", tmp_path / "worker.log"):
        run([*command, "check"], tree, env)
        stopping = time.monotonic()
    # Stopped cleanly (serving checks the exit code) before Railway's SIGKILL.
    assert time.monotonic() - stopping < deploy["drainingSeconds"]


@pytest.mark.parametrize(
    ("origin", "repository"),
    [
        ("https://github.com/acme/my-service.git", "acme/my-service"),
        ("https://github.com/acme/my.service", "acme/my.service"),
        ("ssh://git@github.com/acme/api-2.git", "acme/api-2"),
    ],
)
@pytest.mark.xdist_group(bake_group(deploy_target="railway"))
def test_railway_source_is_this_checkouts_github_repository(
    bakery: Any, origin: str, repository: str
) -> None:
    project = bakery(deploy_target="railway")

    api = by_address(railway_graph(project, origin=origin))["service.api"]

    assert api["source"]["repo"] == repository


@pytest.mark.parametrize("origin", [None, "https://gitlab.com/acme/my-service.git"])
@pytest.mark.xdist_group(bake_group(deploy_target="railway"))
def test_railway_plan_stops_without_a_github_origin(bakery: Any, origin: str | None) -> None:
    project = bakery(deploy_target="railway")

    with pytest.raises(SystemExit, match="not a GitHub repository"):
        railway_graph(project, origin=origin)
