"""Cloud Run: deploy/cloud-run/deploy.sh run against a stand-in gcloud, the files it
applies validated offline (Cloud Run has no offline schema: tests/schemas/ holds the
fields the template uses), the pools sized for the Cloud SQL tier the README creates,
and the migration job, the service and the jobs' worker pool run with the files'
settings, over the Cloud SQL unix-socket URL.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from toolkit.deploy import (
    SLUG,
    assert_migrated,
    bake_group,
    container_env,
    image_command,
    param,
    render_doc,
    secret,
    shellcheck,
    validate,
    venv_env,
    worker_params,
    yamllint,
)
from toolkit.features import ALL_OFF, traces
from toolkit.processes import clean_env, free_port, run
from toolkit.servers import serving

GROUP = bake_group(deploy_target="cloud-run")
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
# The local PostgreSQL's socket, standing in for the one Cloud Run mounts.
SERVER_SOCKET = Path("/var/run/postgresql/.s.PGSQL.5432")
# Seconds Cloud Run gives a container between SIGTERM and SIGKILL.
CLOUD_RUN_STOP_SECONDS = 10
# Longest a worker pool's startup probe may keep failing (failureThreshold x periodSeconds).
WORKER_POOL_STARTUP_LIMIT = 240
# Settings only the service's web server reads: the worker pool leaves them out.
WEB_ONLY_SETTINGS = {
    "WEB_CONCURRENCY",
    "GRACEFUL_SHUTDOWN_SECONDS",
    "FORWARDED_ALLOW_IPS",
    "FORWARDED_HOPS",
    "TRUSTED_HOSTS",
    "CORS_ORIGINS",
    "SOCKETIO_TRANSPORTS",
    "RATE_LIMIT_DEFAULT",
}
# Settings the worker pool sets for itself, whatever the service's values.
WORKER_OWN_SETTINGS = {"DB_POOL_SIZE", "DB_MAX_OVERFLOW"}
WORKER_SETTING_PREFIXES = ("WORKER_", "JOBS_")


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
        f'"run services replace" | "run jobs replace" | "run worker-pools replace") cp "$4" "{out}/" ;;\n'
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


def env_values(container: dict[str, Any]) -> dict[str, str]:
    """A container's plain settings, by name."""
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


def env_secrets(container: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A container's settings read from Secret Manager, by name."""
    return {
        item["name"]: item["valueFrom"]["secretKeyRef"] for item in container["env"] if "valueFrom" in item
    }


def check_worker_pool(worker_pool: dict[str, Any], service: dict[str, Any], image: str) -> None:
    """The worker pool runs the worker from the service's image, as the service runs."""
    validate(worker_pool, "cloud-run-worker-pool")
    assert worker_pool["metadata"]["name"] == f"{SLUG}-worker"
    # `worker-pools replace` has no --region: the region comes from this label alone.
    assert worker_pool["metadata"]["labels"] == service["metadata"]["labels"]
    scaling = worker_pool["metadata"]["annotations"]
    assert scaling["run.googleapis.com/scalingMode"] == "manual"
    assert int(scaling["run.googleapis.com/manualInstanceCount"]) >= 1
    assert worker_pool["spec"]["instanceSplits"] == [{"percent": 100, "latestRevision": True}]
    template, web_template = worker_pool["spec"]["template"], service["spec"]["template"]
    assert template["spec"]["serviceAccountName"] == web_template["spec"]["serviceAccountName"]
    # The same Cloud SQL socket and VPC access as the service, and nothing it cannot read.
    web_annotations = web_template["metadata"]["annotations"]
    assert template["metadata"]["annotations"] == {
        name: value
        for name, value in web_annotations.items()
        if name
        in {
            "run.googleapis.com/cloudsql-instances",
            "run.googleapis.com/network-interfaces",
            "run.googleapis.com/vpc-access-egress",
        }
    }
    assert "run.googleapis.com/network-interfaces" in template["metadata"]["annotations"]
    (container,) = template["spec"]["containers"]
    (web,) = web_template["spec"]["containers"]
    assert container["image"] == web["image"] == image
    assert container["command"] == ["python", "-m", "app.jobs"]
    assert "args" not in container and "workingDir" not in container
    assert container["resources"] == web["resources"]
    assert env_secrets(container) == env_secrets(web)
    env, web_env = env_values(container), env_values(web)
    for name, value in web_env.items():
        if name in WEB_ONLY_SETTINGS:
            assert name not in env, name
        elif name in WORKER_OWN_SETTINGS:
            assert name in env, name
        else:
            assert env.get(name) == value, name
    extra = set(env) - set(web_env)
    assert all(name.startswith(WORKER_SETTING_PREFIXES) for name in extra), extra
    # Running jobs get their grace period, and the worker its own shutdown, before SIGKILL.
    assert int(env["WORKER_SHUTDOWN_GRACE_SECONDS"]) < CLOUD_RUN_STOP_SECONDS
    port = int(env["WORKER_HEALTH_PORT"])
    for probe in (container["startupProbe"], container["livenessProbe"]):
        assert probe["httpGet"] == {"path": "/health", "port": port}
        assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    startup = container["startupProbe"]
    assert startup["failureThreshold"] * startup["periodSeconds"] <= WORKER_POOL_STARTUP_LIMIT
    if "DB_POOL_SIZE" in env:
        # A running job holds at most one connection: none waits for the pool.
        assert int(env["WORKER_CONCURRENCY"]) <= int(env["DB_POOL_SIZE"]) + int(env["DB_MAX_OVERFLOW"])


def worker_traces(text: str) -> list[str]:
    """What of the worker `text` holds: its feature words, or its worker pool."""
    found = traces(text, ["use_worker"])
    return found + [word for word in ("worker pool", "worker-pool") if word in text.lower()]


@pytest.mark.parametrize(
    "answers",
    [
        param("all-on", deploy_target="cloud-run"),
        *worker_params("cloud-run"),
        param("all-off", deploy_target="cloud-run", **ALL_OFF),
    ],
)
def test_cloud_run_deploy_builds_migrates_then_deploys(
    bakery: Any, answers: dict[str, Any], tmp_path: Path
) -> None:
    project = bakery(**answers)
    postgres = answers.get("use_postgres", True)
    # Off unless asked for, unlike the other switches.
    worker = answers.get("use_worker", False)
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
        # After the migrations, before the service that may queue the new code's tasks.
        *(["run worker-pools replace"] if worker else []),
        "run services replace",
        "run services describe",
    ]
    assert steps == expected
    assert calls[0][-2:] == [image, "."]
    if postgres:
        assert calls[2][3] == f"{SLUG}-migrate" and "--wait" in calls[2]
    if worker:
        (replace,) = [call for call in calls if call[:3] == ["run", "worker-pools", "replace"]]
        # gcloud refuses --region here (the file names its region); --async would not wait.
        assert replace[4:] == ["--project", "demo-project"]
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
    if worker:
        check_worker_pool(yaml.safe_load((applied / "worker-pool.yaml").read_text()), service, image)
    else:
        assert not (project / "deploy" / "cloud-run" / "worker-pool.yaml").exists()
        assert not (applied / "worker-pool.yaml").exists()
        doc = render_doc("deploy-cloud-run.md", **answers)
        for path in (project / "deploy" / "cloud-run").iterdir():
            assert worker_traces(path.read_text()) == [], path.name
        assert worker_traces(doc) == []


@pytest.mark.parametrize(
    "answers",
    [
        param("all-on", deploy_target="cloud-run"),
        param("worker", deploy_target="cloud-run", use_worker=True),
    ],
)
def test_cloud_run_pools_fit_the_cloud_sql_tier_the_readme_creates(
    bakery: Any, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    service = yaml.safe_load((project / "deploy" / "cloud-run" / "service.yaml").read_text())
    template = service["spec"]["template"]
    max_scale = int(template["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"])
    env = env_values(template["spec"]["containers"][0])
    pool, overflow = int(env["DB_POOL_SIZE"]), int(env["DB_MAX_OVERFLOW"])
    doc = render_doc("deploy-cloud-run.md", **answers)
    tiers = re.findall(r"gcloud sql instances create \S+ .*?--tier=(\S+)", doc, re.DOTALL)
    assert len(tiers) == 1, tiers
    limit = CLOUD_SQL_MAX_CONNECTIONS[tiers[0]]

    # Per instance: the request pool and the readiness check's own connection;
    # the migration job holds one more while it runs.
    total = max_scale * (pool + overflow + 1) + 1
    arithmetic = f"{max_scale} \N{MULTIPLICATION SIGN} ({pool} + {overflow} + 1) + "
    if answers.get("use_worker", False):
        # Per worker instance: its own pool; it runs no readiness check.
        worker_pool = yaml.safe_load((project / "deploy" / "cloud-run" / "worker-pool.yaml").read_text())
        instances = int(worker_pool["metadata"]["annotations"]["run.googleapis.com/manualInstanceCount"])
        worker_env = env_values(worker_pool["spec"]["template"]["spec"]["containers"][0])
        worker_pool_size, worker_overflow = (
            int(worker_env["DB_POOL_SIZE"]),
            int(worker_env["DB_MAX_OVERFLOW"]),
        )
        total += instances * (worker_pool_size + worker_overflow)
        arithmetic += f"{instances} \N{MULTIPLICATION SIGN} ({worker_pool_size} + {worker_overflow}) + "
    assert total <= limit - CLOUD_SQL_HEADROOM, f"{total} connections for a limit of {limit}"
    # The README's arithmetic is this one.
    flat = re.sub(r"\(\s+", "(", re.sub(r"[ \t]+", " ", doc))
    assert f"{arithmetic}1 = {total} of {limit}" in flat
    assert f"leaves {limit - total} for Cloud SQL" in flat


@pytest.mark.xdist_group(GROUP)
def test_cloud_run_deploy_stops_before_building_without_its_settings(bakery: Any, tmp_path: Path) -> None:
    project = bakery(deploy_target="cloud-run")
    bin_dir, _, log = fake_gcloud(tmp_path)

    result = run([project / "deploy" / "cloud-run" / "deploy.sh"], tmp_path, deploy_env(bin_dir), check=False)

    assert result.returncode != 0
    assert "SQL_INSTANCE" in result.stderr
    assert not log.exists()


def socket_url(url: str, cloudsql: Path, instance: str) -> str:
    """The Cloud SQL unix-socket URL form, for the same database on the local server.

    Cloud Run mounts the instance's socket as /cloudsql/PROJECT:REGION:INSTANCE/.s.PGSQL.5432;
    here that directory is made under `cloudsql`, linking to the local server's socket.
    """
    parts = urlsplit(url)
    if (
        parts.hostname not in {"127.0.0.1", "localhost"}
        or (parts.port or 5432) != 5432
        or not SERVER_SOCKET.exists()
    ):
        pytest.skip("the unix-socket URL form needs the test PostgreSQL on this machine, on port 5432")
    directory = cloudsql / instance
    directory.mkdir(parents=True)
    (directory / ".s.PGSQL.5432").symlink_to(SERVER_SOCKET)
    credentials = parts.netloc.rpartition("@")[0]
    return f"postgresql+asyncpg://{credentials}@{parts.path}?host={directory}"


@pytest.mark.xdist_group(GROUP)
def test_cloud_run_job_migrates_over_the_cloud_sql_socket_url_and_the_service_serves(
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    empty_database: str,
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
    database_url = socket_url(empty_database, cloudsql, instance)
    secrets = {
        f"{SLUG}-secret-key": secret(),
        f"{SLUG}-database-url": database_url,
        f"{SLUG}-redis-url": services["REDIS_URL"],
        f"{SLUG}-sentry-dsn": "",
    }
    job = yaml.safe_load((applied / "migrate-job.yaml").read_text())
    job_container = job["spec"]["template"]["spec"]["template"]["spec"]["containers"][0]
    job_env = venv_env(venv, **container_env(job_container, secrets))

    run(image_command(job_container["command"], project), project, job_env)

    assert_migrated(venv / "bin" / "python", project, job_env)
    # The socket directory is really what the URL names: without the socket there, no connection.
    (cloudsql / instance / ".s.PGSQL.5432").unlink()
    assert (
        run(image_command(job_container["command"], project), project, job_env, check=False).returncode != 0
    )
    (cloudsql / instance / ".s.PGSQL.5432").symlink_to(SERVER_SOCKET)
    container = service["spec"]["template"]["spec"]["containers"][0]
    port = free_port()
    env = venv_env(venv, PORT=str(port), **container_env(container, secrets))
    base = f"http://127.0.0.1:{port}"
    # The image's default command, with the service's environment (PORT set by Cloud Run).
    with serving([project / "scripts" / "serve"], project, env, f"{base}/health", tmp_path / "serve.log"):
        ready = httpx.get(f"{base}/health/ready", timeout=5)
        assert ready.status_code == 200, ready.text


@pytest.mark.xdist_group(GROUP)
def test_cloud_run_worker_pool_runs_the_worker_with_its_settings(
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    project = bakery(deploy_target="cloud-run", use_worker=True)
    bin_dir, applied, _ = fake_gcloud(tmp_path)
    run(
        [project / "deploy" / "cloud-run" / "deploy.sh"],
        tmp_path,
        deploy_env(bin_dir, SQL_INSTANCE="main-db"),
    )
    template = yaml.safe_load((applied / "worker-pool.yaml").read_text())["spec"]["template"]
    instance = template["metadata"]["annotations"]["run.googleapis.com/cloudsql-instances"]
    # A short directory: a unix socket's path may not pass 107 bytes.
    cloudsql = Path(tempfile.mkdtemp(prefix="cloudsql-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(cloudsql))
    # Only the secrets the file names: a missing one is a KeyError here, a failed deploy there.
    secrets = {
        f"{SLUG}-secret-key": secret(),
        f"{SLUG}-database-url": socket_url(services["DATABASE_URL"], cloudsql, instance),
        f"{SLUG}-redis-url": services["REDIS_URL"],
    }
    (container,) = template["spec"]["containers"]
    # The machine and its Redis are shared: a free port, and a queue no other test uses.
    port = free_port()
    env = venv_env(
        venv,
        **container_env(container, secrets)
        | {"WORKER_HEALTH_PORT": str(port), "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex}:"},
    )
    command = image_command(container["command"], project)
    health = f"http://127.0.0.1:{port}{container['livenessProbe']['httpGet']['path']}"

    # The image's WORKDIR, the worker pool's command and settings, as Cloud Run starts it.
    with serving(command, project, env, health, tmp_path / "worker.log"):
        run([*command, "check"], project, env)
        stopping = time.monotonic()
    # Stopped cleanly (serving checks the exit code) before Cloud Run's SIGKILL.
    assert time.monotonic() - stopping < CLOUD_RUN_STOP_SECONDS
