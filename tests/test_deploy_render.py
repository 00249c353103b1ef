"""Render: render.yaml against a JSON schema of the Blueprint fields Render reads
(tests/schemas), and the wiring of its database and key-value store.

Its release and start commands run in test_deploy_targets.py, with every target's.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml

from toolkit.deploy import params, validate, yamllint


@pytest.mark.parametrize("answers", params(("render",)))
def test_render_yaml_matches_its_schema_and_wires_its_resources(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    yamllint(project / "render.yaml")
    blueprint = yaml.safe_load((project / "render.yaml").read_text())
    validate(blueprint, "render")
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)

    services = {service["name"]: service for service in blueprint["services"]}
    web = next(service for service in blueprint["services"] if service["type"] == "web")
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


def test_render_schema_catches_misspelt_keys() -> None:
    web = {"type": "web", "name": "a", "runtime": "docker"}
    validate({"services": [web]}, "render")
    for bad in (
        {"services": [web | {"healthcheckPath": "/health"}]},
        {"services": [web, {"type": "keyvalue", "name": "kv"}]},
        {"services": [web | {"envVars": [{"key": "X", "fromDatabase": {"name": "db", "property": "url"}}]}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "render")
