"""Railway: the service graph .railway/railway.py declares, evaluated with railway-sdk
as `railway config plan` does, from a git checkout of the project.

Its release and start commands run in test_deploy_targets.py, with every target's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toolkit.deploy import bake_group, by_address, params, railway_graph
from toolkit.processes import run

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


@pytest.mark.parametrize("answers", params(("railway",)))
def test_railway_graph_declares_the_service_and_its_databases(
    bakery: Any, venv: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    run([venv / "bin" / "ruff", "check", "--no-cache", ".railway"], project)
    run([venv / "bin" / "ruff", "format", "--check", "--no-cache", ".railway"], project)
    resources = by_address(railway_graph(project))

    expected = (
        {"service.api"}
        | ({"database.postgres"} if postgres else set())
        | ({"database.redis"} if redis else set())
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
