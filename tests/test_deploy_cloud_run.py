"""Cloud Run: deploy/cloud-run/deploy.sh run against a stand-in gcloud, the files it
applies validated offline (Cloud Run has no offline schema: tests/schemas/ holds the
fields the template uses), the pools sized for the Cloud SQL tier the README creates,
and the migration job and the service run with the files' settings, over the Cloud SQL
unix-socket URL.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
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
    yamllint,
)
from toolkit.features import ALL_OFF
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


@pytest.mark.parametrize(
    "answers",
    [param("all-on", deploy_target="cloud-run"), param("all-off", deploy_target="cloud-run", **ALL_OFF)],
)
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


@pytest.mark.xdist_group(GROUP)
def test_cloud_run_pools_fit_the_cloud_sql_tier_the_readme_creates(bakery: Any) -> None:
    project = bakery(deploy_target="cloud-run")
    service = yaml.safe_load((project / "deploy" / "cloud-run" / "service.yaml").read_text())
    template = service["spec"]["template"]
    max_scale = int(template["metadata"]["annotations"]["autoscaling.knative.dev/maxScale"])
    env = {item["name"]: item.get("value") for item in template["spec"]["containers"][0]["env"]}
    pool, overflow = int(env["DB_POOL_SIZE"]), int(env["DB_MAX_OVERFLOW"])
    doc = render_doc("deploy-cloud-run.md", deploy_target="cloud-run")
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
