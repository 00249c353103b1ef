"""How each image-based target's files tell its platform to run the app, read in one place.

The host tests run these processes directly, the container tests with `docker run`, and
the client-address tests read their settings; all three read the files only through
`launch`, so a changed deploy file changes every test that depends on it.
"""

from __future__ import annotations

import base64
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from toolkit.auth import ADMIN_PASSWORD
from toolkit.deploy import (
    SLUG,
    by_address,
    by_kind,
    chart_values,
    compose,
    container_env,
    image_healthcheck,
    platform_url,
    prod_env,
    railway_graph,
    render_chart,
    secret,
    secret_values,
)
from toolkit.processes import free_port

# Cloud Run sends SIGKILL 10 s after SIGTERM; the file cannot change it.
CLOUD_RUN_GRACE = 10
# Render sets PORT to 10000 unless the service sets it.
RENDER_PORT = 10000
# Cloud SQL's socket, as Cloud Run mounts it, stood in for by the local server's.
LOCAL_SOCKET_DIR = Path("/var/run/postgresql")
CLOUD_SQL_INSTANCE = "demo-project:europe-west1:main-db"
RAILWAY_DOMAIN = "api-production.up.railway.app"


@dataclass
class Process:
    """One process the platform starts: its environment, what replaces the image's
    ENTRYPOINT and CMD (None: the image's own), and the `docker run` flags its limits
    and security settings amount to."""

    env: dict[str, str]
    command: list[str] | None = None
    entrypoint: list[str] | None = None
    flags: list[str] = field(default_factory=list)


@dataclass
class Launch:
    """A release: the release processes, then the server, with where the platform sends
    traffic and health checks, and how long it waits after SIGTERM."""

    serve: Process
    release: list[Process]
    port: int
    grace: float
    health: str  # the path of the check that gates traffic
    health_host: str  # the Host header that check sends
    public_host: str  # a Host the service answers to for clients
    # The README's first admin, where the platform runs it as a one-off job of its own;
    # None where the README runs it in a serving instance (exec, ssh, a shell).
    create_admin: Process | None = None


def launch(
    target: str, project: Path, database: str, redis: str, home: Path, answers: dict[str, Any] | None = None
) -> Launch:
    """How `target` runs the baked `project` against these database and Redis URLs
    (an empty database URL for a project without PostgreSQL)."""
    return READERS[target](project, database, redis, home, answers or {})


def healthcheck_path(project: Path) -> str:
    """The path the image's HEALTHCHECK requests."""
    command = image_healthcheck(project).command
    path = re.search(r"'(/health[^']*)'", command[-1])
    assert path, command
    return path.group(1)


def duration(text: str | int | float) -> float:
    """Compose's '30s' / '1m30s' in seconds."""
    if isinstance(text, int | float):
        return float(text)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"([\d.]+)(ms|h|m|s)", text)
    assert parts and "".join(number + unit for number, unit in parts) == text, text
    return sum(float(number) * units[unit] for number, unit in parts)


def compose_launch(project: Path, database: str, redis: str, home: Path, answers: dict[str, Any]) -> Launch:
    """compose.prod.yaml's migrate service, then its app service, behind Caddy."""
    services = compose(project, "compose.prod.yaml", prod_env(answers), home)["services"]
    app = services["app"]

    def process(service: dict[str, Any]) -> Process:
        env = {key: value for key, value in service["environment"].items() if value is not None}
        if "DATABASE_URL" in env:
            env["DATABASE_URL"] = platform_url(database, "postgresql")
        if "REDIS_URL" in env:
            env["REDIS_URL"] = redis
        flags = ["--init"] if service.get("init") else []
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        if "memory" in limits:
            flags += ["--memory", str(limits["memory"])]
        return Process(env, service.get("command"), service.get("entrypoint"), flags)

    # Caddy sends traffic to the app's port named in the Caddyfile.
    port = re.search(r"dynamic a app (\d+)", (project / "Caddyfile").read_text())
    assert port
    public = app["environment"]["TRUSTED_HOSTS"].split(",")[0]
    release = [process(services["migrate"])] if "migrate" in services else []
    grace = duration(app["stop_grace_period"])
    return Launch(process(app), release, int(port.group(1)), grace, healthcheck_path(project), public, public)


def railway_launch(project: Path, database: str, redis: str, home: Path, answers: dict[str, Any]) -> Launch:
    """The Railway service's pre-deploy and start commands, its variables resolved."""
    api = by_address(railway_graph(project))["service.api"]
    outputs = {"database.postgres": platform_url(database, "postgresql"), "database.redis": redis}
    env = {}
    for name, value in api["variables"].items():
        if value["type"] == "literal":
            env[name] = value["value"].replace("${{RAILWAY_PUBLIC_DOMAIN}}", RAILWAY_DOMAIN)
        elif value["type"] == "reference":
            env[name] = outputs[value["resource"]]
        elif value["type"] == "preserve":
            env[name] = secret()
    # Railway injects PORT, a port of its choosing.
    port = free_port()
    env["PORT"] = str(port)
    deploy = api["deploy"]
    release = [Process(env, shlex.split(command)) for command in deploy.get("preDeployCommand", [])]
    start = shlex.split(deploy["startCommand"]) if "startCommand" in deploy else None
    return Launch(
        Process(env, start),
        release,
        port,
        deploy["drainingSeconds"],
        deploy["healthcheckPath"],
        "healthcheck.railway.app",
        RAILWAY_DOMAIN,
    )


def fly_launch(project: Path, database: str, redis: str, home: Path, answers: dict[str, Any]) -> Launch:
    """fly.toml's release command, then its app process (or the image's CMD) with its
    [env] and the secrets."""
    fly = tomllib.loads((project / "fly.toml").read_text())
    # Secrets as `fly secrets set` and `fly postgres attach` (postgres://...?sslmode=disable) set them.
    env = {name: str(value) for name, value in fly["env"].items()} | {"SECRET_KEY": secret()}
    if answers.get("use_postgres", True):
        env["DATABASE_URL"] = platform_url(database, "postgres", "?sslmode=disable")
    if answers.get("use_redis", True):
        env["REDIS_URL"] = redis
    processes = fly.get("processes", {})
    start = shlex.split(processes["app"]) if "app" in processes else None
    deploy = fly.get("deploy", {})
    release = [Process(env, shlex.split(deploy["release_command"]))] if "release_command" in deploy else []
    # The image's StopSignal is SIGTERM (Docker's default): what fly.toml asks for.
    assert fly.get("kill_signal", "SIGINT") == "SIGTERM"
    memory = [f"{vm['memory'].removesuffix('mb')}m" for vm in fly.get("vm", []) if "memory" in vm]
    serve = Process(env, start, flags=["--memory", memory[0]] if memory else [])
    service = fly["http_service"]
    port = service["internal_port"]
    # The last check is readiness: a machine failing it gets no traffic.
    health = service["checks"][-1]["path"]
    return Launch(
        serve, release, port, fly["kill_timeout"], health, f"127.0.0.1:{port}", "my-service.fly.dev"
    )


def render_launch(project: Path, database: str, redis: str, home: Path, answers: dict[str, Any]) -> Launch:
    """render.yaml's pre-deploy command, then the web service's command (or the image's
    CMD) with its variables."""
    blueprint = yaml.safe_load((project / "render.yaml").read_text())
    web = next(service for service in blueprint["services"] if service["type"] == "web")
    env = {"PORT": str(RENDER_PORT)}
    for var in web["envVars"]:
        if "value" in var:
            env[var["key"]] = str(var["value"])
        elif var.get("generateValue"):
            env[var["key"]] = secret()
        elif "fromDatabase" in var:
            env[var["key"]] = platform_url(database, "postgres")
        elif "fromService" in var:
            env[var["key"]] = redis
        elif var.get("sync") is False:
            env[var["key"]] = ""  # asked for when the Blueprint is created; may stay empty
    # A docker runtime service's command is dockerCommand (startCommand is for native runtimes).
    start = shlex.split(web["dockerCommand"]) if "dockerCommand" in web else None
    release = [Process(env, shlex.split(web["preDeployCommand"]))] if "preDeployCommand" in web else []
    host = "my-service.onrender.com"
    grace = web.get("maxShutdownDelaySeconds", 30)
    return Launch(Process(env, start), release, RENDER_PORT, grace, web["healthCheckPath"], host, host)


def cloud_run_launch(project: Path, database: str, redis: str, home: Path, answers: dict[str, Any]) -> Launch:
    """The migrate job, then the service, with the secrets its files name."""

    def load(name: str) -> dict[str, Any]:
        text = (project / "deploy" / "cloud-run" / name).read_text().replace("${SERVICE}", SLUG)
        return dict(yaml.safe_load(text))

    flags, database_url = cloud_sql(database)
    secrets_ = {
        f"{SLUG}-secret-key": secret(),
        f"{SLUG}-database-url": database_url,
        f"{SLUG}-redis-url": redis,
        f"{SLUG}-sentry-dsn": "",
    }

    def process(container: dict[str, Any], env: dict[str, str]) -> Process:
        memory = container.get("resources", {}).get("limits", {}).get("memory")
        extra = ["--memory", memory.replace("Mi", "m")] if memory else []
        return Process(env, container.get("args"), container.get("command"), flags + extra)

    container = load("service.yaml")["spec"]["template"]["spec"]["containers"][0]
    # Cloud Run sets PORT to the container port and sends traffic there once the startup probe passes.
    port = container["ports"][0]["containerPort"]
    serve = process(container, container_env(container, secrets_) | {"PORT": str(port)})
    job = load("migrate-job.yaml")["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
    release = [process(job, container_env(job, secrets_))]
    health = container["startupProbe"]["httpGet"]["path"]
    admin = cloud_run_admin_job(project, secrets_ | {f"{SLUG}-admin-password": ADMIN_PASSWORD}, flags)
    return Launch(
        serve,
        release,
        port,
        CLOUD_RUN_GRACE,
        health,
        f"127.0.0.1:{port}",
        "my-service-abc123-ew.a.run.app",
        admin,
    )


def cloud_run_admin_job(project: Path, stored: dict[str, str], flags: list[str]) -> Process | None:
    """The README's `gcloud run jobs create ...-create-admin`: its command, arguments,
    secrets and variables, nothing else (a job gets none of the service's)."""
    readme = (project / "README.md").read_text().replace("\\\n", " ")
    start = f"gcloud run jobs create {SLUG}-create-admin "
    line = next((line for line in readme.splitlines() if line.startswith(start)), None)
    if line is None:
        return None
    words = shlex.split(line)
    options = dict(word.removeprefix("--").partition("=")[::2] for word in words[5:])

    def pairs(option: str) -> dict[str, str]:
        """`NAME=value,NAME=value`, as gcloud writes a list of pairs."""
        return dict(pair.split("=", 1) for pair in options.get(option, "").split(",") if pair)

    secrets = pairs("set-secrets")
    env = {name: stored[reference.removesuffix(":latest")] for name, reference in secrets.items()}
    env |= pairs("set-env-vars")
    assert options["set-cloudsql-instances"] == "$PROJECT_ID:$REGION:main-db"
    return Process(env, options["args"].split(","), [options["command"]], flags)


def cloud_sql(database: str) -> tuple[list[str], str]:
    """Docker flags and a DATABASE_URL that reach the scratch database the way Cloud Run
    reaches Cloud SQL: over a unix socket mounted under /cloudsql/INSTANCE."""
    if not (LOCAL_SOCKET_DIR / ".s.PGSQL.5432").exists() or "@127.0.0.1:5432/" not in database:
        return [], platform_url(database, "postgresql")
    credentials, _, name = database.split("://", 1)[1].partition("@127.0.0.1:5432/")
    target = f"/cloudsql/{CLOUD_SQL_INSTANCE}"
    mount = f"type=bind,source={LOCAL_SOCKET_DIR},target={target},readonly"
    return ["--mount", mount], f"postgresql+asyncpg://{credentials}@/{name}?host={target}"


def kubernetes_launch(
    project: Path, database: str, redis: str, home: Path, answers: dict[str, Any]
) -> Launch:
    """The chart's migration Job, then its Deployment, with the ConfigMap and Secret."""
    values = chart_values(
        **(secret_values({}, database_url=platform_url(database, "postgresql")) | {"REDIS_URL": redis})
    )
    kinds = by_kind(render_chart(project, values))
    settings = dict(kinds["ConfigMap"]["data"])
    settings |= {key: base64.b64decode(value).decode() for key, value in kinds["Secret"]["data"].items()}

    def process(pod: dict[str, Any]) -> Process:
        container = pod["containers"][0]
        env = settings | {item["name"]: item["value"] for item in container.get("env", [])}
        security = pod.get("securityContext", {}) | container.get("securityContext", {})
        assert security["readOnlyRootFilesystem"] is True  # --read-only, always given
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # --tmpfs /tmp
        flags = []
        if "runAsUser" in security:
            flags += [
                "--user",
                f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}",
            ]
        if security.get("allowPrivilegeEscalation") is False:
            flags += ["--security-opt", "no-new-privileges"]
        flags += [
            part for cap in security.get("capabilities", {}).get("drop", []) for part in ("--cap-drop", cap)
        ]
        memory = container.get("resources", {}).get("limits", {}).get("memory")
        if memory:
            flags += ["--memory", memory.replace("Mi", "m").replace("Gi", "g")]
        return Process(env, container.get("args"), container.get("command"), flags)

    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    port = container["ports"][0]["containerPort"]
    # SIGTERM comes after the preStop sleep, within the same grace period.
    grace = pod["terminationGracePeriodSeconds"] - container["lifecycle"]["preStop"]["sleep"]["seconds"]
    release = [process(kinds["Job"]["spec"]["template"]["spec"])]
    health = container["readinessProbe"]["httpGet"]["path"]
    return Launch(process(pod), release, port, grace, health, f"127.0.0.1:{port}", "api.example.com")


READERS: dict[str, Callable[[Path, str, str, Path, dict[str, Any]], Launch]] = {
    "docker-compose": compose_launch,
    "railway": railway_launch,
    "cloud-run": cloud_run_launch,
    "kubernetes": kubernetes_launch,
    "fly": fly_launch,
    "render": render_launch,
}
