"""Deploy files for Cloud Run, Kubernetes (Helm) and a VM: validated offline, and run.

Every generated file goes through a real validator: jsonschema (Cloud Run has no
offline schema: tests/schemas/ holds the fields the template uses), helm lint and
kubernetes-validate, yamllint, nginx -t and gixy, systemd-analyze verify and
security, gunicorn --check-config, supervisor's own config loader, shellcheck.
Then each target's commands run as the platform would run them: the migration
command, parsed from its file, against a scratch PostgreSQL database, and the
server, parsed from its file, answering /health.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
import yaml

from toolkit.bakery import leftover_jinja
from toolkit.features import CONTEXT, TARGETS
from toolkit.processes import clean_env, free_port, run
from toolkit.servers import drop_scratch_database, scratch, scratch_database, serving

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "tests" / "schemas"
BIN = ROOT / ".venv" / "bin"
SLUG = "my-service"
SECRET_KEY = "k" * 48
FEATURE_OFF = {
    "use_postgres": False,
    "use_redis": False,
    "use_socketio": False,
    "use_rate_limit": False,
    "use_sentry": False,
}
YAMLLINT = "{extends: default, rules: {document-start: disable, line-length: {max: 100}}}"
# Words a feature's files and docs use; none may appear once the feature is off.
FEATURE_WORDS = {
    "use_postgres": ["postgres", "alembic", "database_url", "migrat", "cloudsql", "cloud sql"],
    "use_redis": ["redis", "memorystore"],
    "use_socketio": ["socket.io", "socketio", "websocket"],
    "use_rate_limit": ["rate_limit", "rate limit"],
    "use_sentry": ["sentry"],
}
TARGET_FILES = {
    "cloud-run": ["deploy/cloud-run"],
    "kubernetes": ["deploy/helm"],
    "vm": ["deploy/vm", "gunicorn.conf.py"],
}


def variant(name: str, target: str, **answers: Any) -> Any:
    return pytest.param({"deploy_target": target, **answers}, id=name, marks=pytest.mark.xdist_group(target))


# Each target with every switch on, every switch off, and without each service.
# (Socket.IO without Redis is refused on the multi-instance targets.)
EVERY_VARIANT = [
    *(variant(f"{target}-all-on", target) for target in TARGET_FILES),
    *(variant(f"{target}-all-off", target, **FEATURE_OFF) for target in TARGET_FILES),
    *(variant(f"{target}-no-postgres", target, use_postgres=False) for target in TARGET_FILES),
    variant("cloud-run-no-redis", "cloud-run", use_redis=False, use_socketio=False),
    variant("kubernetes-no-redis", "kubernetes", use_redis=False, use_socketio=False),
    variant("vm-no-redis", "vm", use_redis=False),
]


def validate(instance: Any, schema_name: str) -> None:
    schema = json.loads((SCHEMAS / f"{schema_name}.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(instance)


def yamllint(*paths: Path) -> None:
    run([BIN / "yamllint", "--strict", "-d", YAMLLINT, *paths], ROOT)


def shellcheck(path: Path) -> None:
    run([BIN / "shellcheck", "--severity=style", path], path.parent)


def assert_clean_text(project: Path, paths: list[str]) -> None:
    """No template syntax left; every line ends without spaces; one final newline."""
    files = [
        path
        for name in paths
        for path in ((project / name).rglob("*") if (project / name).is_dir() else [project / name])
    ]
    for path in (path for path in files if path.is_file()):
        text = path.read_text()
        assert not [line for line in text.splitlines() if line != line.rstrip()], f"trailing spaces in {path}"
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{path} must end with one newline"
    assert [name for name in leftover_jinja(project) if any(name.startswith(p) for p in paths)] == []


def assert_no_trace(project: Path, paths: list[str], features: list[str]) -> None:
    found = []
    for name in paths:
        root = project / name
        for path in root.rglob("*") if root.is_dir() else [root]:
            if path.is_file():
                text = path.read_text().lower()
                found += [
                    f"{path.name}: {word}"
                    for feature in features
                    for word in FEATURE_WORDS[feature]
                    if word in text
                ]
    assert found == []


def at_head(python: Path, project: Path, env: dict[str, str]) -> None:
    current = run([python, "-m", "alembic", "current"], project, env).stdout
    heads = run([python, "-m", "alembic", "heads"], project, env).stdout.split()[0]
    assert f"{heads} (head)" in current, current


@pytest.fixture
def database(venv: Path, services: dict[str, str], bakery: Any) -> Iterator[str]:
    """A scratch PostgreSQL database (its URL), dropped afterwards."""
    with scratch(venv / "bin" / "python", bakery(), services["DATABASE_URL"], "deploy") as url:
        yield url


def socket_url(url: str, cloudsql: Path, instance: str) -> str:
    """The Cloud SQL unix-socket URL form, for the same database on the local server.

    Cloud Run mounts the instance's socket as /cloudsql/PROJECT:REGION:INSTANCE/.s.PGSQL.5432;
    here that directory is made under `cloudsql`, linking to the local server's socket.
    """
    parts = urlsplit(url)
    server_socket = Path("/var/run/postgresql/.s.PGSQL.5432")
    if (
        parts.hostname not in {"127.0.0.1", "localhost"}
        or (parts.port or 5432) != 5432
        or not server_socket.exists()
    ):
        pytest.skip("the unix-socket URL form needs the test PostgreSQL on this machine, on port 5432")
    directory = cloudsql / instance
    directory.mkdir(parents=True)
    (directory / ".s.PGSQL.5432").symlink_to(server_socket)
    credentials = parts.netloc.rpartition("@")[0]
    return f"postgresql+asyncpg://{credentials}@{parts.path}?host={directory}"


# --- Generation ----------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_chosen_targets_files_remain(bakery: Any, target: str) -> None:
    project = bakery(deploy_target=target)

    present = {name for names in TARGET_FILES.values() for name in names if (project / name).exists()}
    assert present == set(TARGET_FILES.get(target, []))
    # gunicorn serves only on a VM: its packages and its config's type check come with it.
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    servers = {
        name
        for name in pyproject["project"]["dependencies"]
        if name.startswith(("gunicorn", "uvicorn-worker"))
    }
    assert bool(servers) == (target == "vm") and len(servers) in {0, 2}
    assert ("gunicorn.conf.py" in pyproject["tool"]["mypy"]["files"]) == (target == "vm")


@pytest.mark.parametrize(
    "answers",
    EVERY_VARIANT,
)
def test_files_are_clean_and_features_leave_no_trace(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    paths = TARGET_FILES[answers["deploy_target"]]

    assert_clean_text(project, paths)
    assert_no_trace(project, paths, [feature for feature, value in answers.items() if value is False])
    # The project's own pre-commit check-yaml, with its own exclusions, passes on them.
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    hook = next(hook for repo in config["repos"] for hook in repo["hooks"] if hook["id"] == "check-yaml")
    excluded = re.compile(hook.get("exclude", "(?!)"))
    files = [
        path.relative_to(project).as_posix()
        for name in paths
        for path in ([project / name] if (project / name).is_file() else (project / name).rglob("*"))
        if path.suffix in {".yaml", ".yml"}
    ]
    checked = [name for name in files if not excluded.search(name)]
    if answers["deploy_target"] == "kubernetes":
        assert len(checked) == 2  # Chart.yaml and values.yaml; the templates are Helm's
    if checked:
        run([BIN / "check-yaml", *hook.get("args", []), *checked], project)


def render_doc(target: str, answers: dict[str, Any]) -> str:
    """templates/readme/deploy-<target>.md as the generated README includes it."""
    from cookiecutter.environment import StrictEnvironment
    from jinja2 import FileSystemLoader

    context = {key: value for key, value in CONTEXT.items() if not key.startswith("_")}
    context = {key: value[0] if isinstance(value, list) else value for key, value in context.items()}
    context |= {"project_slug": SLUG, "deploy_target": target, **answers}
    env = StrictEnvironment(
        context={"cookiecutter": CONTEXT},
        loader=FileSystemLoader(str(ROOT / "templates")),
        **CONTEXT["_jinja2_env_vars"],
    )
    return env.get_template(f"readme/deploy-{target}.md").render(cookiecutter=context)


@pytest.mark.parametrize(
    "answers",
    EVERY_VARIANT,
)
def test_deploy_docs_render_for_each_variant(bakery: Any, answers: dict[str, Any]) -> None:
    target = answers["deploy_target"]
    text = render_doc(target, {key: value for key, value in answers.items() if key != "deploy_target"})
    project = bakery(**answers)

    assert not any(marker in text for marker in ("{%", "%}", "{#", "cookiecutter."))
    assert [line for line in text.splitlines() if line != line.rstrip()] == []
    assert "\n\n\n" not in text and text.endswith("\n")
    lower = text.lower()
    off = [feature for feature, value in answers.items() if value is False]
    assert [word for feature in off for word in FEATURE_WORDS[feature] if word in lower] == []
    # Numbered steps count 1, 2, 3... whatever the switches remove.
    steps = [int(number) for number in re.findall(r"^(\d+)\. ", text, re.MULTILINE)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 4
    # Every project file the doc names exists in the project baked with the same answers.
    named = set(re.findall(r"`((?:deploy/|scripts/|gunicorn\.conf)[^`\s]*)`", text))
    assert named
    assert sorted(name for name in named if not (project / name).exists()) == []


# Values a step could ask a user to store that can never work: sentry-sdk raises
# BadDsn on the Sentry one and the service crash-loops; the others are passwords,
# hosts and URLs left for the user to fill in.
PLACEHOLDER_SECRETS = [
    r"https://KEY@",
    r"ingest\.sentry\.io/PROJECT",
    r"\bKEY@ORG\b",
    r"\bUSER:PASSWORD\b",
    r":PASSWORD@",
    r"A-LONG-RANDOM",
    r"redis://HOST\b",
    r"(postgres(ql)?(\+asyncpg)?|redis)://\.\.\.",
    r"=<[^>\n]*>",
    r"\bchange-?me\b",
]
# Where each target's deploy files are, besides the shared ones.
DEPLOY_FILES = {
    "docker-compose": ["compose.prod.yaml", "Caddyfile"],
    "railway": [".railway"],
    "cloud-run": ["deploy/cloud-run"],
    "kubernetes": ["deploy/helm"],
    "vm": ["deploy/vm", "gunicorn.conf.py"],
    "fly": ["fly.toml"],
    "render": ["render.yaml"],
}


def placeholder_secrets(text: str) -> list[str]:
    return [match.group(0) for pattern in PLACEHOLDER_SECRETS for match in re.finditer(pattern, text)]


def code_blocks(markdown: str) -> str:
    """The commands of a README: its fenced blocks and inline code."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.DOTALL)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", markdown, flags=re.DOTALL))
    return "\n".join([*fenced, *inline])


@pytest.mark.parametrize(
    "target", [pytest.param(target, marks=pytest.mark.xdist_group(target)) for target in TARGETS]
)
def test_no_step_or_file_holds_a_placeholder_secret(bakery: Any, target: str) -> None:
    project = bakery(deploy_target=target)
    commands = code_blocks(render_doc(target, {}))
    files = [
        path
        for name in [*DEPLOY_FILES[target], "scripts", "Dockerfile", "compose.yaml"]
        for path in ((project / name).rglob("*") if (project / name).is_dir() else [project / name])
        if path.is_file()
    ]

    assert placeholder_secrets(commands) == [], f"deploy-{target}.md"
    for path in files:
        assert placeholder_secrets(path.read_text()) == [], path.relative_to(project)


def test_the_placeholder_check_finds_the_ones_that_broke_deploys() -> None:
    steps = (
        "```bash\nprintf '%s' 'https://KEY@ORG.ingest.sentry.io/PROJECT' | gcloud secrets create x\n```\n"
        "`fly secrets set REDIS_URL=<the redis:// URL it printed>`\n"
    )
    assert len(placeholder_secrets(code_blocks(steps))) == 4
    assert placeholder_secrets("DATABASE_URL=postgresql://app:PASSWORD@127.0.0.1/app") == [":PASSWORD@"]
    assert placeholder_secrets("SECRET_KEY=$(openssl rand -hex 32)") == []


# --- Cloud Run -----------------------------------------------------------------


def fake_gcloud(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A gcloud stand-in that records its calls and keeps the files it is given."""
    bin_dir, out = tmp_path / "bin", tmp_path / "applied"
    bin_dir.mkdir()
    out.mkdir()
    log = tmp_path / "gcloud.log"
    script = bin_dir / "gcloud"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> "{log}"\n'
        'case "$1 $2 $3" in\n'
        f'"run services replace" | "run jobs replace") cp "$4" "{out}/" ;;\n'
        '"run services describe") echo https://service.example.run.app ;;\n'
        "esac\n"
    )
    script.chmod(0o755)
    return bin_dir, out, log


def deploy_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    return clean_env(
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        PROJECT_ID="demo-project",
        REGION="europe-west1",
        TAG="abc123",
        **extra,
    )


CLOUD_RUN = [variant("all-on", "cloud-run"), variant("all-off", "cloud-run", **FEATURE_OFF)]


@pytest.mark.parametrize("answers", CLOUD_RUN)
def test_cloud_run_deploy_builds_migrates_then_deploys(
    bakery: Any, answers: dict[str, Any], tmp_path: Path
) -> None:
    project = bakery(**answers)
    postgres = answers.get("use_postgres", True)
    deploy = project / "deploy" / "cloud-run" / "deploy.sh"
    shellcheck(deploy)
    yamllint(*(project / "deploy" / "cloud-run").glob("*.yaml"))
    bin_dir, applied, log = fake_gcloud(tmp_path)

    run([deploy], tmp_path, deploy_env(bin_dir, SQL_INSTANCE="main-db"))

    calls = [line.split() for line in log.read_text().splitlines()]
    image = f"europe-west1-docker.pkg.dev/demo-project/containers/{SLUG}:abc123"
    steps = [" ".join(call[:2]) + (f" {call[2]}" if call[0] == "run" else "") for call in calls]
    expected = [
        "builds submit",
        *(["run jobs replace", "run jobs execute"] if postgres else []),
        "run services replace",
        "run services describe",
    ]
    assert steps == expected
    assert calls[0][-2:] == [image, "."]
    if postgres:
        assert calls[2][3] == f"{SLUG}-migrate" and "--wait" in calls[2]
    yamllint(*applied.glob("*.yaml"))
    service = yaml.safe_load((applied / "service.yaml").read_text())
    validate(service, "cloud-run-service")
    assert service["metadata"]["name"] == SLUG
    template = service["spec"]["template"]
    container = template["spec"]["containers"][0]
    assert container["image"] == image
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    for probe in (container["startupProbe"], container["livenessProbe"]):
        assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    annotations = template["metadata"]["annotations"]
    assert annotations["run.googleapis.com/startup-cpu-boost"] == "true"
    assert int(annotations["autoscaling.knative.dev/minScale"]) <= int(
        annotations["autoscaling.knative.dev/maxScale"]
    )
    assert ("run.googleapis.com/cloudsql-instances" in annotations) == postgres
    assert ("run.googleapis.com/sessionAffinity" in annotations) == answers.get("use_socketio", True)
    secrets = {
        env["name"]: env["valueFrom"]["secretKeyRef"] for env in container["env"] if "valueFrom" in env
    }
    expected_secrets = {"SECRET_KEY"} | {
        name
        for name, feature in (("DATABASE_URL", "use_postgres"), ("REDIS_URL", "use_redis"))
        if answers.get(feature, True)
    }
    # Sentry is optional: a secret the file names must exist, so it names none for Sentry.
    assert set(secrets) == expected_secrets
    if answers.get("use_socketio", True):
        assert template["spec"]["timeoutSeconds"] == 3600
    if postgres:
        job = yaml.safe_load((applied / "migrate-job.yaml").read_text())
        validate(job, "cloud-run-job")
        job_container = job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
        assert job_container["image"] == image
        assert job_container["command"] == ["/app/scripts/migrate"]
        cloudsql = job["spec"]["template"]["metadata"]["annotations"]["run.googleapis.com/cloudsql-instances"]
        assert (
            cloudsql
            == annotations["run.googleapis.com/cloudsql-instances"]
            == "demo-project:europe-west1:main-db"
        )
    else:
        assert not (project / "deploy" / "cloud-run" / "migrate-job.yaml").exists()


# max_connections of Cloud SQL for PostgreSQL machine types, from their memory
# (https://cloud.google.com/sql/docs/postgres/quotas#maximum_concurrent_connections).
CLOUD_SQL_MAX_CONNECTIONS = {
    "db-f1-micro": 25,
    "db-g1-small": 50,
    "db-custom-1-3840": 100,
    "db-custom-2-7680": 400,
}
# Left free for Cloud SQL's own connections and an operator's `gcloud sql connect`.
CLOUD_SQL_HEADROOM = 5


@pytest.mark.xdist_group("cloud-run")
def test_cloud_run_pools_fit_the_cloud_sql_tier_the_readme_creates(bakery: Any) -> None:
    project = bakery(deploy_target="cloud-run")
    service = yaml.safe_load((project / "deploy" / "cloud-run" / "service.yaml").read_text())
    template = service["spec"]["template"]
    max_scale = int(template["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"])
    env = {item["name"]: item.get("value") for item in template["spec"]["containers"][0]["env"]}
    pool, overflow = int(env["DB_POOL_SIZE"]), int(env["DB_MAX_OVERFLOW"])
    doc = render_doc("cloud-run", {})
    tiers = re.findall(r"gcloud sql instances create \S+ .*?--tier=(\S+)", doc, re.DOTALL)
    assert len(tiers) == 1, tiers
    limit = CLOUD_SQL_MAX_CONNECTIONS[tiers[0]]

    # Per instance: the request pool and the readiness check's own connection;
    # the migration job holds one more while it runs.
    total = max_scale * (pool + overflow + 1) + 1
    assert total <= limit - CLOUD_SQL_HEADROOM, f"{total} connections for a limit of {limit}"
    # The README's arithmetic is this one.
    flat = re.sub(r"\(\s+", "(", re.sub(r"[ \t]+", " ", doc))
    assert f"{max_scale} \N{MULTIPLICATION SIGN} ({pool} + {overflow} + 1) + 1 = {total} of {limit}" in flat


@pytest.mark.xdist_group("cloud-run")
def test_cloud_run_deploy_stops_before_building_without_its_settings(bakery: Any, tmp_path: Path) -> None:
    project = bakery(deploy_target="cloud-run")
    bin_dir, _, log = fake_gcloud(tmp_path)

    result = run([project / "deploy" / "cloud-run" / "deploy.sh"], tmp_path, deploy_env(bin_dir), check=False)

    assert result.returncode != 0
    assert "SQL_INSTANCE" in result.stderr
    assert not log.exists()


def container_env(container: dict[str, Any], secrets: dict[str, str]) -> dict[str, str]:
    env = {}
    for item in container["env"]:
        env[item["name"]] = (
            item["value"] if "value" in item else secrets[item["valueFrom"]["secretKeyRef"]["name"]]
        )
    return env


def image_command(command: list[str], project: Path) -> list[str]:
    """A command of the image (WORKDIR /app) as a path in the baked project."""
    return [
        str(project / part.removeprefix("/app/")) if part.startswith("/app/") else part for part in command
    ]


@pytest.mark.xdist_group("cloud-run")
def test_cloud_run_job_migrates_over_the_cloud_sql_socket_url_and_the_service_serves(
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    database: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    project = bakery(deploy_target="cloud-run")
    bin_dir, applied, _ = fake_gcloud(tmp_path)
    run(
        [project / "deploy" / "cloud-run" / "deploy.sh"],
        tmp_path,
        deploy_env(bin_dir, SQL_INSTANCE="main-db"),
    )
    service = yaml.safe_load((applied / "service.yaml").read_text())
    instance = service["spec"]["template"]["metadata"]["annotations"]["run.googleapis.com/cloudsql-instances"]
    # A short directory: a unix socket's path may not pass 107 bytes.
    cloudsql = Path(tempfile.mkdtemp(prefix="cloudsql-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(cloudsql))
    database_url = socket_url(database, cloudsql, instance)
    secrets = {
        f"{SLUG}-secret-key": SECRET_KEY,
        f"{SLUG}-database-url": database_url,
        f"{SLUG}-redis-url": services["REDIS_URL"],
        f"{SLUG}-sentry-dsn": "",
    }
    path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    job = yaml.safe_load((applied / "migrate-job.yaml").read_text())
    job_container = job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
    job_env = clean_env(PATH=path, **container_env(job_container, secrets))

    run(image_command(job_container["command"], project), project, job_env)

    at_head(venv / "bin" / "python", project, job_env)
    # The socket directory is really what the URL names: without the socket there, no connection.
    (cloudsql / instance / ".s.PGSQL.5432").unlink()
    assert (
        run(image_command(job_container["command"], project), project, job_env, check=False).returncode != 0
    )
    (cloudsql / instance / ".s.PGSQL.5432").symlink_to("/var/run/postgresql/.s.PGSQL.5432")
    container = service["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    env = clean_env(PATH=path, PORT=str(port), **container_env(container, secrets))
    base = f"http://127.0.0.1:{port}"
    # The image's default command, with the service's environment (PORT set by Cloud Run).
    with serving([project / "scripts" / "serve"], project, env, f"{base}/health", tmp_path / "serve.log"):
        ready = httpx.get(f"{base}/health/ready", timeout=5)
        assert ready.status_code == 200, ready.text


# --- Probes, every target ----------------------------------------------------------

LIVENESS, READINESS = "/health", "/health/ready"
# The readiness route's own checks give up after HEALTH_CHECK_TIMEOUT (1 s by default).
HEALTH_CHECK_TIMEOUT = 1


def probes(project: Path, target: str) -> dict[str, tuple[str, float | None]]:
    """Each probe a target's files declare: kind -> (path, timeout in seconds, if set)."""
    if target == "kubernetes":
        container = by_kind(render_chart(project, chart_values(**secret_values({}))))["Deployment"]
        container = container["spec"]["template"]["spec"]["containers"][0]
        return {
            kind: (container[f"{kind}Probe"]["httpGet"]["path"], container[f"{kind}Probe"]["timeoutSeconds"])
            for kind in ("startup", "readiness", "liveness")
            if f"{kind}Probe" in container
        }
    if target == "cloud-run":
        service = yaml.safe_load((project / "deploy" / "cloud-run" / "service.yaml").read_text())
        container = service["spec"]["template"]["spec"]["containers"][0]
        return {
            kind: (container[f"{kind}Probe"]["httpGet"]["path"], container[f"{kind}Probe"]["timeoutSeconds"])
            for kind in ("startup", "readiness", "liveness")
            if f"{kind}Probe" in container
        }
    if target == "fly":
        checks = tomllib.loads((project / "fly.toml").read_text())["http_service"]["checks"]
        found = {}
        for check in checks:
            kind = "readiness" if check["path"] == READINESS else "liveness"
            found[kind] = (check["path"], float(check["timeout"].removesuffix("s")))
        return found
    if target == "render":
        web = yaml.safe_load((project / "render.yaml").read_text())["services"][0]
        # Render sets its health check's timeout itself.
        return {"liveness": (web["healthCheckPath"], None)}
    if target == "railway":
        from tests.test_deploy_containers import by_address, railway_graph

        deploy = by_address(railway_graph(project))["service.api"]["deploy"]
        # Railway's health check gates a deploy only: readiness, with its whole timeout.
        return {"readiness": (deploy["healthcheckPath"], float(deploy["healthcheckTimeout"]))}
    if target == "docker-compose":
        check = (project / "Dockerfile").read_text()
        path = re.search(r"HEALTHCHECK .*--timeout=(\d+)s.*?'(/health[^']*)'", check, re.DOTALL)
        assert path
        return {"liveness": (path.group(2), float(path.group(1)))}
    install = (project / "deploy" / "vm" / "install.sh").read_text()
    path = re.search(r'url = f"http://localhost:\{sys.argv\[1\]\}(/health[^"]*)"', install)
    assert path
    return {"startup": (path.group(1), 60.0)}


@pytest.mark.parametrize(
    "target", [pytest.param(target, marks=pytest.mark.xdist_group(target)) for target in TARGETS]
)
def test_every_targets_probes_follow_the_health_model(bakery: Any, target: str) -> None:
    """Liveness and startup never depend on the database (only the process answers);
    readiness, where the platform has it, is /health/ready, which fails only without
    the database; every probe waits longer than the readiness checks do."""
    found = probes(bakery(deploy_target=target), target)

    assert found, target
    for kind, (path, timeout) in found.items():
        assert path == (READINESS if kind == "readiness" else LIVENESS), (target, kind)
        assert timeout is None or timeout > HEALTH_CHECK_TIMEOUT, (target, kind, timeout)
    if target in {"kubernetes", "cloud-run"}:
        assert "startup" in found and "liveness" in found


# --- Kubernetes (Helm) -----------------------------------------------------------


def chart_values(**secrets: str) -> dict[str, Any]:
    return {"secret": {"values": {"SECRET_KEY": SECRET_KEY, **secrets}}}


def secret_values(
    answers: dict[str, Any], database_url: str = "postgresql://app:pw@db:5432/app"
) -> dict[str, str]:
    values = {}
    if answers.get("use_postgres", True):
        values["DATABASE_URL"] = database_url
    if answers.get("use_redis", True):
        values["REDIS_URL"] = "redis://redis:6379/0"
    return values


def render_chart(project: Path, values: dict[str, Any], out: Path | None = None) -> list[dict[str, Any]]:
    """Render the chart offline (helm-python-sdk) and return its manifests."""
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


KUBERNETES = [variant("all-on", "kubernetes"), variant("all-off", "kubernetes", **FEATURE_OFF)]


@pytest.mark.parametrize("answers", KUBERNETES)
def test_helm_chart_lints_and_renders_valid_manifests(
    bakery: Any, answers: dict[str, Any], tmp_path: Path
) -> None:
    import helm_python

    project = bakery(**answers)
    chart_dir = project / "deploy" / "helm" / SLUG
    values = chart_values(**secret_values(answers))
    postgres = answers.get("use_postgres", True)

    report = helm_python.lint(chart_dir, values, strict=True, kube_version="v1.30.0")
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
    yamllint(chart_dir / "Chart.yaml", chart_dir / "values.yaml")
    manifests = render_chart(project, values, tmp_path / "manifests")
    files = sorted((tmp_path / "manifests").glob("*.yaml"))
    yamllint(*files)
    result = run([BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", *files], ROOT)
    kinds = by_kind(manifests)
    validate(kinds["HTTPRoute"], "gateway-httproute")

    # kubernetes-validate has no schema for HTTPRoute (checked above); it checked every other kind.
    assert result.stdout.count("passed for resource") == len(kinds) - 1
    assert set(kinds) == {
        "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "HTTPRoute",
        "HorizontalPodAutoscaler", "PodDisruptionBudget", *(["Job"] if postgres else []),
    }  # fmt: skip
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] < pod["terminationGracePeriodSeconds"]
    assert "replicas" not in kinds["Deployment"]["spec"]  # the HPA owns it
    assert kinds["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
    config = kinds["ConfigMap"]["data"]
    assert config["ENVIRONMENT"] == "production"
    assert ("SOCKETIO_TRANSPORTS" in config) == answers.get("use_socketio", True)
    if answers.get("use_socketio", True):
        assert config["SOCKETIO_TRANSPORTS"] == "websocket"
    hooks = {
        kind: manifest["metadata"].get("annotations", {}).get("helm.sh/hook", "")
        for kind, manifest in kinds.items()
    }
    if postgres:
        # The Job is a pre-install hook: what it reads must be hooks created before it.
        job = kinds["Job"]
        assert "pre-install" in hooks["Job"] and "pre-upgrade" in hooks["Job"]
        for kind in ("ConfigMap", "Secret"):
            assert "pre-install" in hooks[kind]
            weight = int(kinds[kind]["metadata"]["annotations"]["helm.sh/hook-weight"])
            assert weight < int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
        assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["/app/scripts/migrate"]
        assert (
            job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"]
            is True
        )
    else:
        assert set(hooks.values()) == {""}


def attaches(
    route: dict[str, Any],
    route_namespace: str,
    gateway: dict[str, Any],
    gateway_namespace: str,
    namespace_labels: dict[str, str],
) -> bool:
    """Whether a listener of `gateway` admits `route`, by the Gateway API's rule: a
    parentRef names the Gateway (and listener), and the listener's
    allowedRoutes.namespaces admits the route's namespace, `Same` when unset
    (gateway-api.sigs.k8s.io/reference/spec/#routenamespaces)."""
    for ref in route["spec"]["parentRefs"]:
        if ref["name"] != gateway["metadata"]["name"]:
            continue
        if ref.get("namespace", route_namespace) != gateway_namespace:
            continue
        for listener in gateway["spec"]["listeners"]:
            if ref.get("sectionName", listener["name"]) != listener["name"]:
                continue
            namespaces = listener.get("allowedRoutes", {}).get("namespaces", {})
            source = namespaces.get("from", "Same")
            wanted = namespaces.get("selector", {}).get("matchLabels", {})
            if (
                source == "All"
                or (source == "Same" and route_namespace == gateway_namespace)
                or (source == "Selector" and all(namespace_labels.get(k) == v for k, v in wanted.items()))
            ):
                return True
    return False


def a_clusters_gateway(**listener: Any) -> dict[str, Any]:
    """A Gateway as an implementation's guide creates it: one HTTPS listener, defaults elsewhere."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "gateway", "namespace": "gateway-system"},
        "spec": {
            "gatewayClassName": "eg",
            "listeners": [
                {
                    "name": "https",
                    "protocol": "HTTPS",
                    "port": 443,
                    "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": "wildcard"}]},
                    **listener,
                }
            ],
        },
    }


@pytest.mark.xdist_group("kubernetes")
def test_the_route_attaches_to_the_clusters_gateway_once_its_listener_admits_the_namespace(
    bakery: Any,
) -> None:
    project = bakery(deploy_target="kubernetes")
    route = by_kind(render_chart(project, chart_values(**secret_values({}))))["HTTPRoute"]
    labels = {"kubernetes.io/metadata.name": SLUG}  # the README installs into namespace SLUG
    default = a_clusters_gateway()
    validate(default, "gateway-gateway")

    # A listener admits its own namespace only by default: the route is never accepted.
    assert not attaches(route, SLUG, default, "gateway-system", labels)

    # The README's allowedRoutes, added to the listener, admits this namespace only.
    blocks = [
        yaml.safe_load(block)
        for block in re.findall(r"```yaml\n(.*?)```", render_doc("kubernetes", {}), re.DOTALL)
        if block.lstrip().startswith("allowedRoutes:")
    ]
    assert len(blocks) == 1
    admitted = a_clusters_gateway(**blocks[0])
    validate(admitted, "gateway-gateway")
    assert attaches(route, SLUG, admitted, "gateway-system", labels)
    assert not attaches(route, "other", admitted, "gateway-system", {"kubernetes.io/metadata.name": "other"})


@pytest.mark.xdist_group("kubernetes")
def test_the_chart_can_create_a_gateway_its_route_attaches_to(bakery: Any, tmp_path: Path) -> None:
    import helm_python

    project = bakery(deploy_target="kubernetes")
    values = chart_values(**secret_values({})) | {
        "gateway": {"create": True, "className": "eg", "tlsSecretName": "api-tls"}
    }

    kinds = by_kind(render_chart(project, values, tmp_path / "manifests"))

    gateway, route = kinds["Gateway"], kinds["HTTPRoute"]
    validate(gateway, "gateway-gateway")
    validate(route, "gateway-httproute")
    assert route["spec"]["parentRefs"] == [{"name": "demo", "sectionName": "https"}]
    assert attaches(route, "prod", gateway, "prod", {"kubernetes.io/metadata.name": "prod"})
    assert gateway["spec"]["listeners"][0]["tls"]["certificateRefs"] == [
        {"kind": "Secret", "name": "api-tls"}
    ]
    yamllint(*sorted((tmp_path / "manifests").glob("*.yaml")))
    for missing in ("className", "tlsSecretName"):
        broken = values | {"gateway": values["gateway"] | {missing: ""}}
        with pytest.raises(helm_python.HelmError, match=f"set gateway.{missing}"):
            render_chart(project, broken)


@pytest.mark.xdist_group("kubernetes")
def test_helm_chart_needs_its_secrets_or_an_existing_secret(bakery: Any) -> None:
    import helm_python

    project = bakery(deploy_target="kubernetes")

    without_key = {"secret": {"values": secret_values({})}}
    with pytest.raises(helm_python.HelmError, match=r"set secret\.values\.SECRET_KEY "):
        render_chart(project, without_key)
    kinds = by_kind(render_chart(project, {"secret": {"existingSecret": "managed-elsewhere"}}))
    assert "Secret" not in kinds
    env_from = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert {"secretRef": {"name": "managed-elsewhere"}} in env_from
    assert {"secretRef": {"name": "managed-elsewhere"}} in kinds["Job"]["spec"]["template"]["spec"][
        "containers"
    ][0]["envFrom"]


@pytest.mark.xdist_group("kubernetes")
def test_helm_chart_options_render_valid_manifests(bakery: Any, tmp_path: Path) -> None:
    project = bakery(deploy_target="kubernetes")
    values = chart_values(**secret_values({})) | {
        "autoscaling": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "httpRoute": {"enabled": False},
        "serviceAccount": {"create": False},
        "migrations": {"enabled": False},
        "replicaCount": 3,
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "topologySpreadConstraints": [],
    }

    kinds = by_kind(render_chart(project, values, tmp_path / "manifests"))
    files = sorted((tmp_path / "manifests").glob("*.yaml"))
    run([BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", *files], ROOT)
    yamllint(*files)

    assert set(kinds) == {"ConfigMap", "Secret", "Service", "Deployment"}
    assert kinds["Deployment"]["spec"]["replicas"] == 3
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default" and pod["imagePullSecrets"] == [{"name": "registry"}]
    # Without the migration Job, the settings are ordinary release objects, not hooks.
    assert "annotations" not in kinds["ConfigMap"]["metadata"]


@pytest.mark.xdist_group("kubernetes")
def test_validators_reject_what_they_should(bakery: Any, tmp_path: Path) -> None:
    """The validators the tests above rely on do fail on broken input."""
    project = bakery(deploy_target="kubernetes")
    kinds = by_kind(render_chart(project, chart_values(**secret_values({}))))
    broken = kinds["Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    result = run(
        [BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", tmp_path / "broken.yaml"], ROOT, check=False
    )
    assert result.returncode != 0
    route = kinds["HTTPRoute"]
    route["spec"]["rules"][0]["backendRefs"][0]["prot"] = 80
    with pytest.raises(jsonschema.ValidationError):
        validate(route, "gateway-httproute")
    for broken_listener in (
        {"allowedRoutes": {"namespaces": {"from": "Everyone"}}},
        {"port": 0},
        {"tsl": {}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate(a_clusters_gateway(**broken_listener), "gateway-gateway")


@pytest.mark.xdist_group("kubernetes")
def test_helm_migration_job_migrates_with_the_charts_settings(bakery: Any, venv: Path, database: str) -> None:
    project = bakery(deploy_target="kubernetes")
    kinds = by_kind(render_chart(project, chart_values(**secret_values({}, database_url=database))))
    job_container = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job_container["envFrom"] == [{"configMapRef": {"name": "demo"}}, {"secretRef": {"name": "demo"}}]
    settings = dict(kinds["ConfigMap"]["data"])
    settings |= {key: base64.b64decode(value).decode() for key, value in kinds["Secret"]["data"].items()}
    env = clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", **settings)

    run(image_command(job_container["command"], project), project, env)

    at_head(venv / "bin" / "python", project, env)


# --- VM ------------------------------------------------------------------------

VM = [
    variant("all-on", "vm"),
    variant("all-off", "vm", **FEATURE_OFF),
    variant("socketio-without-redis", "vm", use_redis=False),
]


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


def vm_ports(project: Path) -> dict[str, list[int]]:
    """The ports each VM file expects the service on: nginx's upstream, install.sh and supervisor."""
    nginx = (project / "deploy" / "vm" / "nginx" / f"{SLUG}.conf").read_text()
    install = (project / "deploy" / "vm" / "install.sh").read_text()
    supervisor = supervisor_processes(project)
    ports = re.search(r"^PORTS=\(([\d ]+)\)$", install, re.MULTILINE)
    assert ports
    return {
        "nginx": [int(port) for port in re.findall(r"server 127\.0\.0\.1:(\d+);", nginx)],
        "install.sh": [int(port) for port in ports.group(1).split()],
        "supervisor": [int(process.environment["PORT"]) for process in supervisor],
    }


def supervisor_processes(project: Path) -> list[Any]:
    """The program file loaded by supervisor itself; only the user lookup is stood in for."""
    from supervisor import options

    config = project.parent / f"supervisord-{project.parent.name}.conf"
    program = project / "deploy" / "vm" / "supervisor" / f"{SLUG}.conf"
    config.write_text(
        f"[supervisord]\nlogfile={project.parent}/supervisord.log\npidfile={project.parent}/supervisord.pid\n"
        f"childlogdir={project.parent}\n\n[include]\nfiles = {program}\n"
    )
    original = options.name_to_uid

    def name_to_uid(name: str) -> int:
        # The service user exists only on the VM (install.sh creates it).
        return 10001 if name == SLUG else int(original(name))

    options.name_to_uid = name_to_uid
    try:
        server = options.ServerOptions()
        server.realize(args=["-c", str(config)])
    finally:
        options.name_to_uid = original
    groups = server.process_group_configs
    assert [group.name for group in groups] == [SLUG]
    return list(groups[0].process_configs)


def nginx_wrapper(site: Path, tmp_path: Path) -> Path:
    """A minimal nginx.conf that includes the site in its http block, as sites-enabled is."""
    prefix = tmp_path / "nginx"
    prefix.mkdir(exist_ok=True)
    wrapper = prefix / "nginx.conf"
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    wrapper.write_text(
        f"pid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\nevents {{}}\n"
        f"http {{\n    access_log {prefix}/access.log;\n{temp_paths}    include {site};\n}}\n"
    )
    return wrapper


def nginx_check(site: Path, tmp_path: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    wrapper = nginx_wrapper(site, tmp_path)
    prefix = wrapper.parent
    return run(
        ["nginx", "-t", "-q", "-p", prefix, "-e", prefix / "error.log", "-c", wrapper], tmp_path, check=check
    )


def gixy(site: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """gixy's findings on the site (as included by the wrapper)."""
    result = run([BIN / "gixy", "-f", "json", nginx_wrapper(site, tmp_path)], tmp_path, check=False)
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


def systemd_root(project: Path, tmp_path: Path) -> Path:
    """A root directory with the units installed where install.sh puts them."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for unit in (project / "deploy" / "vm" / "systemd").iterdir():
        shutil.copy(unit, root / "etc" / "systemd" / "system" / unit.name)
    for executable in (
        f"opt/{SLUG}/current/.venv/bin/gunicorn",
        f"opt/{SLUG}/current/scripts/migrate",
        "bin/kill",
    ):
        path = root / executable
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def units(project: Path) -> list[str]:
    names = [f"{SLUG}@8000.service"]
    if (project / "deploy" / "vm" / "systemd" / f"{SLUG}-migrate.service").exists():
        names.append(f"{SLUG}-migrate.service")
    return names


@pytest.mark.parametrize("answers", VM)
def test_vm_files_pass_their_validators(
    bakery: Any, venv: Path, answers: dict[str, Any], tmp_path: Path
) -> None:
    project = bakery(**answers)
    vm = project / "deploy" / "vm"
    root = systemd_root(project, tmp_path)

    # systemd: both tools exit 0 on unknown keys, so any output at all fails.
    verify = run(["systemd-analyze", "verify", f"--root={root}", *units(project)], tmp_path)
    assert verify.stdout + verify.stderr == ""
    for unit in units(project):
        security = run(
            ["systemd-analyze", "security", "--offline=true", f"--root={root}", "--threshold=15", unit],
            tmp_path,
        )
        assert security.stderr == ""
        exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
        assert exposure and float(exposure.group(1)) <= 1.5, security.stdout
    service = unit_settings(vm / "systemd" / f"{SLUG}@.service")
    assert service["Type"] == ["notify"]
    assert service["Environment"] == ["PORT=%i"]

    # nginx: the site inside a minimal nginx.conf, as sites-enabled would include it.
    nginx_check(vm / "nginx" / f"{SLUG}.conf", tmp_path)
    assert gixy(vm / "nginx" / f"{SLUG}.conf", tmp_path) == []
    site = (vm / "nginx" / f"{SLUG}.conf").read_text()
    assert ("/socket.io/" in site) == answers.get("use_socketio", True)
    assert ("ip_hash" in site) == (answers.get("use_socketio", True) and answers.get("use_redis", True))

    # One set of ports in nginx, install.sh and supervisor.
    ports = vm_ports(project)
    assert ports["nginx"] == ports["install.sh"] == ports["supervisor"], ports
    assert len(ports["nginx"]) == (2 if "ip_hash" in site else 1)

    shellcheck(vm / "install.sh")

    # gunicorn: its own check, the worker class importable, the bind address.
    bin_dir = venv / "bin"
    env = clean_env(PORT="8123")
    run(
        [bin_dir / "gunicorn", "--check-config", "--config", "gunicorn.conf.py", "app.main:app"], project, env
    )
    probe = (
        "import importlib, json, runpy; c = runpy.run_path('gunicorn.conf.py'); "
        "module, _, name = c['worker_class'].rpartition('.'); "
        "getattr(importlib.import_module(module), name); "
        "print(json.dumps({'bind': c['bind'], 'workers': c['workers']}))"
    )
    config = json.loads(run([bin_dir / "python", "-c", probe], project, env).stdout)
    assert config["bind"] == ["[::]:8123"]
    if answers.get("use_socketio", True):
        assert config["workers"] == 1

    # The project's own linters cover gunicorn.conf.py.
    lint_env = clean_env(MYPY_CACHE_DIR=str(tmp_path / ".mypy_cache"))
    run([bin_dir / "ruff", "check", "--no-cache", "gunicorn.conf.py"], project, lint_env)
    run([bin_dir / "ruff", "format", "--check", "--no-cache", "gunicorn.conf.py"], project, lint_env)
    run([bin_dir / "mypy", "gunicorn.conf.py"], project, lint_env)
    run([bin_dir / "deptry", "."], project, lint_env)


@pytest.mark.xdist_group("vm")
def test_systemd_checks_fail_on_a_misspelt_setting(bakery: Any, tmp_path: Path) -> None:
    project = bakery(deploy_target="vm")
    root = systemd_root(project, tmp_path)
    unit = root / "etc" / "systemd" / "system" / f"{SLUG}@.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))

    verify = run(
        ["systemd-analyze", "verify", f"--root={root}", f"{SLUG}@8000.service"], tmp_path, check=False
    )

    assert "ProtectSytem" in verify.stdout + verify.stderr


@pytest.mark.xdist_group("vm")
def test_nginx_checks_fail_on_a_broken_site(bakery: Any, tmp_path: Path) -> None:
    site = bakery(deploy_target="vm") / "deploy" / "vm" / "nginx" / f"{SLUG}.conf"
    broken = tmp_path / "broken.conf"

    # A location's add_header drops every security header of the server.
    broken.write_text(
        site.read_text().replace("    location / {\n", "    location / {\n        add_header X-Extra 1;\n")
    )
    assert "add_header_redefinition" in {finding["plugin"] for finding in gixy(broken, tmp_path)}
    broken.write_text(site.read_text().replace("server_tokens off;", "server_tokens off"))
    assert nginx_check(broken, tmp_path, check=False).returncode != 0


@pytest.mark.parametrize("answers", [variant("all-on", "vm"), variant("all-off", "vm", **FEATURE_OFF)])
def test_vm_migrates_and_serves_with_the_units_commands(
    bakery: Any, venv: Path, services: dict[str, str], answers: dict[str, Any], tmp_path: Path
) -> None:
    project = bakery(**answers)
    python = venv / "bin" / "python"
    postgres = answers.get("use_postgres", True)
    env = {"ENVIRONMENT": "production", "SECRET_KEY": SECRET_KEY}
    if answers.get("use_redis", True):
        env["REDIS_URL"] = services["REDIS_URL"]
    database = (
        scratch_database(python, bakery(), services["DATABASE_URL"], f"vm_{uuid.uuid4().hex[:12]}")
        if postgres
        else None
    )
    try:
        if database:
            env["DATABASE_URL"] = database
            migrate = unit_settings(project / "deploy" / "vm" / "systemd" / f"{SLUG}-migrate.service")
            assert migrate["Type"] == ["oneshot"]
            path = dict(item.partition("=")[::2] for item in migrate["Environment"])["PATH"]
            migrate_env = clean_env(**env, PATH=on_this_machine(path, project, venv))
            run(shlex.split(on_this_machine(migrate["ExecStart"][0], project, venv)), project, migrate_env)
            at_head(python, project, migrate_env)

        exec_start = unit_settings(project / "deploy" / "vm" / "systemd" / f"{SLUG}@.service")["ExecStart"][0]
        supervisor = supervisor_processes(project)
        # supervisor runs the very command systemd runs, from the same directory.
        assert {process.command for process in supervisor} == {exec_start}
        assert {process.directory for process in supervisor} == {f"/opt/{SLUG}/current"}
        assert "app.main:app" in shlex.split(exec_start)
        port = free_port()
        server_env = clean_env(**env, PORT=str(port))
        with serving(
            shlex.split(on_this_machine(exec_start, project, venv)),
            project,
            server_env,
            f"http://127.0.0.1:{port}/health",
            tmp_path / "gunicorn.log",
        ):
            # Dual-stack: the same port answers on IPv6.
            assert httpx.get(f"http://[::1]:{port}/health", timeout=5).status_code == 200
            ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
            assert ready.status_code == 200, ready.text
            if postgres:
                assert ready.json()["checks"]["database"]["status"] == "ok"
        log = (tmp_path / "gunicorn.log").read_text()
        assert "uvicorn_worker.UvicornWorker" in log or "Using worker: uvicorn_worker.UvicornWorker" in log
    finally:
        if database:
            drop_scratch_database(python, bakery(), services["DATABASE_URL"], database)


# --- VM: install.sh ------------------------------------------------------------

SANDBOX = """\
set -euo pipefail
sandbox=$1
shift
mount --bind "$sandbox/opt" /opt
mount --bind "$sandbox/nginx-logs" /var/log/nginx
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$sandbox/etc,workdir=$sandbox/etc-work" /etc
mkdir -p /etc/supervisor/conf.d /etc/nginx/sites-available /etc/nginx/sites-enabled
exec "$@"
"""

STUB = """\
#!/bin/sh
printf '%s\\n' "$(basename "$0") $*" >> "$CALLS"
case "$(basename "$0") $*" in
"useradd "*)
    echo "my-service:x:10001:10001::/opt/my-service:/usr/sbin/nologin" >> /etc/passwd
    echo "my-service:x:10001:" >> /etc/group ;;
"systemctl start my-service-migrate.service" | "runuser "*)
    [ ! -e "$FAIL_MIGRATION" ] || exit 1 ;;
esac
"""

# Stands in for the interpreter the release's virtualenv is made from: the venv's
# pip installs and the health check are recorded, everything else runs for real.
FAKE_PYTHON = """\
#!/bin/sh
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/python"
    exit 0
fi
case "$1 $2" in
"-m pip" | "- "*) printf '%s\\n' "python $*" >> "$CALLS"; exit 0 ;;
esac
exec {python} "$@"
"""


class Installer:
    """Runs deploy/vm/install.sh as root in a mount namespace: /opt, /etc (an overlay)
    and nginx's logs are scratch copies; systemctl, supervisorctl, useradd and runuser
    are recorded stand-ins; nginx -t is the real one, on the installed site."""

    def __init__(self, project: Path, venv: Path, tmp_path: Path) -> None:
        self.project, self.root = project, tmp_path / "sandbox"
        for name in ("opt", "etc", "etc-work", "nginx-logs", "bin"):
            (self.root / name).mkdir(parents=True)
        for name in ("systemctl", "supervisorctl", "useradd", "runuser"):
            (self.root / "bin" / name).write_text(STUB)
            (self.root / "bin" / name).chmod(0o755)
        self.python = self.root / "bin" / "fake-python"
        self.python.write_text(FAKE_PYTHON.format(python=venv / "bin" / "python"))
        self.python.chmod(0o755)
        self.calls_file = self.root / "calls.log"
        self.fail_flag = self.root / "fail-migration"

    def __call__(self, *args: str, expect: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        self.calls_file.write_text("")
        time.sleep(1.1)  # release directories are named by the second
        result = run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "bash",
                "-c",
                SANDBOX,
                "sandbox",
                self.root,
                self.project / "deploy" / "vm" / "install.sh",
                *args,
            ],
            self.project,
            clean_env(
                PATH=f"{self.root / 'bin'}{os.pathsep}{os.environ['PATH']}",
                PYTHON=str(self.python),
                CALLS=str(self.calls_file),
                FAIL_MIGRATION=str(self.fail_flag),
                **env,
            ),
            check=False,
        )
        assert result.returncode == expect, f"{result.stdout}\n{result.stderr}"
        return result

    @property
    def calls(self) -> list[str]:
        return self.calls_file.read_text().splitlines()

    @property
    def releases(self) -> list[str]:
        return sorted(path.name for path in (self.root / "opt" / SLUG / "releases").iterdir())

    @property
    def current(self) -> str:
        return os.readlink(self.root / "opt" / SLUG / "current").rpartition("/")[2]


@pytest.mark.xdist_group("vm")
def test_vm_install_script_installs_updates_and_rolls_back(bakery: Any, venv: Path, tmp_path: Path) -> None:
    project = bakery(deploy_target="vm")
    install = Installer(project, venv, tmp_path)
    etc = install.root / "etc"
    restarts = [f"systemctl restart {SLUG}@8000.service", f"systemctl restart {SLUG}@8001.service"]

    # First run: the user and the settings file, then a stop to fill it in.
    first = install(expect=1)
    assert f"review /etc/{SLUG}/{SLUG}.env" in first.stdout
    settings = (etc / SLUG / f"{SLUG}.env").read_text()
    assert "ENVIRONMENT=production" in settings
    assert len(re.search(r"^SECRET_KEY=(\S+)$", settings, re.MULTILINE).group(1)) >= 32  # type: ignore[union-attr]
    assert "DATABASE_URL=postgresql://" in settings
    assert oct((etc / SLUG / f"{SLUG}.env").stat().st_mode & 0o777) == "0o640"
    assert [call for call in install.calls if call.startswith("useradd")] != []

    # Second run: a release, migrated before the servers restart one by one.
    install()
    assert install.releases == [install.current]
    release = install.root / "opt" / SLUG / "releases" / install.current
    assert os.readlink(release / ".env") == f"/etc/{SLUG}/{SLUG}.env"
    assert (release / "app" / "main.py").exists() and not (release / ".git").exists()
    calls = install.calls
    assert not [call for call in calls if call.startswith("useradd")]
    migrate = calls.index(f"systemctl start {SLUG}-migrate.service")
    assert calls.index("systemctl daemon-reload") < migrate < calls.index(restarts[0])
    assert calls.index(restarts[0]) < calls.index("python - 8000") < calls.index(restarts[1])
    assert calls[-1] == "systemctl reload nginx"
    assert (etc / "systemd" / "system" / f"{SLUG}@.service").exists()
    site = etc / "nginx" / "sites-available" / f"{SLUG}.conf"
    assert (
        os.readlink(etc / "nginx" / "sites-enabled" / f"{SLUG}.conf")
        == f"/etc/nginx/sites-available/{SLUG}.conf"
    )

    # An update keeps the settings and a site certbot has edited.
    site.write_text(site.read_text() + "# managed by Certbot\n")
    update = install()
    assert (etc / SLUG / f"{SLUG}.env").read_text() == settings
    assert site.read_text().endswith("# managed by Certbot\n")
    assert "differs" in update.stdout
    assert len(install.releases) == 2 and install.current == install.releases[-1]

    # A failed migration leaves the previous release current and the servers alone.
    serving_release = install.current
    install.fail_flag.write_text("")
    failed = install(expect=1)
    assert "migrations failed" in failed.stderr
    assert install.current == serving_release
    assert not [call for call in install.calls if "restart" in call]
    install.fail_flag.unlink()

    # Rollback: the release before the current one, servers restarted.
    install("--rollback")
    assert install.current == install.releases[-3]
    assert [call for call in install.calls if "restart" in call] == restarts

    # Old releases are pruned, never the current one.
    install(KEEP_RELEASES="2")
    assert len(install.releases) == 2 and install.current == install.releases[-1]


@pytest.mark.xdist_group("vm")
def test_vm_install_script_with_supervisor(bakery: Any, venv: Path, tmp_path: Path) -> None:
    project = bakery(deploy_target="vm")
    install = Installer(project, venv, tmp_path)
    install("--supervisor", expect=1)

    install("--supervisor")

    program = install.root / "etc" / "supervisor" / "conf.d" / f"{SLUG}.conf"
    assert program.read_text() == (project / "deploy" / "vm" / "supervisor" / f"{SLUG}.conf").read_text()
    calls = install.calls
    migrate = next(i for i, call in enumerate(calls) if call.startswith(f"runuser -u {SLUG} -- env PATH="))
    assert calls[migrate].endswith(" scripts/migrate")
    assert migrate < calls.index(f"supervisorctl restart {SLUG}:*") < calls.index("python - 8000")
    assert not [call for call in calls if call.startswith("systemctl") and "nginx" not in call]
