"""Kubernetes: the Helm chart under deploy/helm, linted (`helm lint --strict`) and
rendered offline with helm-python-sdk; every manifest passes kubernetes-validate
--strict and yamllint, the HTTPRoute and Gateway a schema of the Gateway API
(tests/schemas), and the route attaches to a cluster's Gateway by the Gateway API's
own rule. The migration Job runs with the chart's settings on a scratch database.
"""

from __future__ import annotations

import base64
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from toolkit import services
from toolkit.deploy import (
    BIN,
    SLUG,
    assert_migrated,
    bake_group,
    by_kind,
    chart_values,
    image_command,
    param,
    render_chart,
    render_doc,
    secret_values,
    validate,
    venv_env,
    yamllint,
)
from toolkit.docker import Docker
from toolkit.features import ALL_OFF, ROOT
from toolkit.processes import free_port, run

GROUP = bake_group(deploy_target="kubernetes")
KUBERNETES = [
    param("all-on", deploy_target="kubernetes"),
    param("all-off", deploy_target="kubernetes", **ALL_OFF),
]


def kubernetes_validate(*files: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict against Kubernetes 1.30's schemas."""
    return run([BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", *files], ROOT, check=check)


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
    result = kubernetes_validate(*files)
    kinds = by_kind(manifests)
    validate(kinds["HTTPRoute"], "gateway-httproute")

    # kubernetes-validate has no schema for HTTPRoute (checked above); it checked every other kind.
    assert result.stdout.count("passed for resource") == len(kinds) - 1
    assert set(kinds) == {
        "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "HTTPRoute",
        "HorizontalPodAutoscaler", "PodDisruptionBudget",
        *(["Job", "CronJob", "PersistentVolumeClaim"] if postgres else []),
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


@pytest.mark.xdist_group(GROUP)
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
        for block in re.findall(
            r"```yaml\n(.*?)```", render_doc("deploy-kubernetes.md", deploy_target="kubernetes"), re.DOTALL
        )
        if block.lstrip().startswith("allowedRoutes:")
    ]
    assert len(blocks) == 1
    admitted = a_clusters_gateway(**blocks[0])
    validate(admitted, "gateway-gateway")
    assert attaches(route, SLUG, admitted, "gateway-system", labels)
    assert not attaches(route, "other", admitted, "gateway-system", {"kubernetes.io/metadata.name": "other"})


@pytest.mark.xdist_group(GROUP)
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


@pytest.mark.xdist_group(GROUP)
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


@pytest.mark.xdist_group(GROUP)
def test_helm_chart_options_render_valid_manifests(bakery: Any, tmp_path: Path) -> None:
    project = bakery(deploy_target="kubernetes")
    values = chart_values(**secret_values({})) | {
        "autoscaling": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
        "httpRoute": {"enabled": False},
        "serviceAccount": {"create": False},
        "migrations": {"enabled": False},
        "backup": {"enabled": False},
        "replicaCount": 3,
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "topologySpreadConstraints": [],
    }

    kinds = by_kind(render_chart(project, values, tmp_path / "manifests"))
    files = sorted((tmp_path / "manifests").glob("*.yaml"))
    kubernetes_validate(*files)
    yamllint(*files)

    assert set(kinds) == {"ConfigMap", "Secret", "Service", "Deployment"}
    assert kinds["Deployment"]["spec"]["replicas"] == 3
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "default" and pod["imagePullSecrets"] == [{"name": "registry"}]
    # Without the migration Job, the settings are ordinary release objects, not hooks.
    assert "annotations" not in kinds["ConfigMap"]["metadata"]


@pytest.mark.xdist_group(GROUP)
def test_the_service_monitor_is_off_by_default_and_scrapes_with_the_secrets_token(
    bakery: Any, tmp_path: Path
) -> None:
    project = bakery(deploy_target="kubernetes")
    values = chart_values(**secret_values({}), METRICS_TOKEN="a-scraper-token-of-some-length")

    assert "ServiceMonitor" not in by_kind(render_chart(project, values))
    enabled = values | {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
    kinds = by_kind(render_chart(project, enabled, tmp_path / "manifests"))
    yamllint(*sorted((tmp_path / "manifests").glob("*.yaml")))

    monitor = kinds["ServiceMonitor"]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = kinds["Service"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": kinds["Secret"]["metadata"]["name"], "key": "METRICS_TOKEN"},
    }
    assert "METRICS_TOKEN" in kinds["Secret"]["data"]
    # Without a token the Secret leaves the key out, and /metrics answers 404.
    without_token = by_kind(render_chart(project, chart_values(**secret_values({}))))
    assert "METRICS_TOKEN" not in without_token["Secret"]["data"]


@pytest.mark.xdist_group(GROUP)
def test_validators_reject_what_they_should(bakery: Any, tmp_path: Path) -> None:
    """The validators the tests above rely on do fail on broken input."""
    project = bakery(deploy_target="kubernetes")
    kinds = by_kind(render_chart(project, chart_values(**secret_values({}))))
    broken = kinds["Deployment"]
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    (tmp_path / "broken.yaml").write_text(yaml.safe_dump(broken))
    result = kubernetes_validate(tmp_path / "broken.yaml", check=False)
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


def chart_settings(kinds: dict[str, Any]) -> dict[str, str]:
    """The environment the chart gives its pods: the ConfigMap's data and the Secret's."""
    secret = {key: base64.b64decode(value).decode() for key, value in kinds["Secret"]["data"].items()}
    return dict(kinds["ConfigMap"]["data"]) | secret


@pytest.mark.xdist_group(GROUP)
def test_helm_migration_job_migrates_with_the_charts_settings(
    bakery: Any, venv: Path, empty_database: str
) -> None:
    project = bakery(deploy_target="kubernetes")
    kinds = by_kind(render_chart(project, chart_values(**secret_values({}, database_url=empty_database))))
    job_container = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job_container["envFrom"] == [{"configMapRef": {"name": "demo"}}, {"secretRef": {"name": "demo"}}]
    settings = chart_settings(kinds)
    env = venv_env(venv, **settings)

    run(image_command(job_container["command"], project), project, env)

    assert_migrated(venv / "bin" / "python", project, env)


@pytest.mark.containers
@pytest.mark.xdist_group(GROUP)
def test_the_backup_cronjob_dumps_what_the_readmes_restore_puts_back(
    bakery: Any, venv: Path, docker: Docker, tmp_path: Path
) -> None:
    """The CronJob's container run as a kubelet runs it (image, command, env, user, read-only
    root, the volume at /backups), on the postgres image's stand-in, against a PostgreSQL of
    the image's major version; then the README's pg_restore, from the same image, into the
    emptied database."""
    services.service_images(docker)
    port = free_port()
    password = secrets.token_hex(8)
    server = docker(
        "run", "--detach", "--publish", f"127.0.0.1:{port}:5432",
        "--env", f"POSTGRES_PASSWORD={password}", "postgres:17-alpine",
    ).stdout.strip()  # fmt: skip
    try:
        database = f"postgresql://postgres:{password}@127.0.0.1:{port}/postgres"
        for _ in range(60):
            if docker("exec", server, "pg_isready", "-h", "127.0.0.1", check=False).returncode == 0:
                break
            time.sleep(0.5)
        backup_and_restore(bakery, venv, docker, tmp_path, database)
    finally:
        docker("rm", "--force", server, check=False)


def backup_and_restore(bakery: Any, venv: Path, docker: Docker, tmp_path: Path, database: str) -> None:
    project = bakery(deploy_target="kubernetes")
    kinds = by_kind(render_chart(project, chart_values(**secret_values({}, database_url=database))))
    assert kinds["PersistentVolumeClaim"]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    pod = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [kinds["PersistentVolumeClaim"]["metadata"]["name"]]
    job = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    settings = chart_settings(kinds)
    run(image_command(job["command"], project), project, venv_env(venv, **settings))
    psql = ["psql", database, "-XAtq", "-c"]
    rows = "INSERT INTO items (name, description) SELECT 'row ' || n, '' FROM generate_series(1, 300) n"
    run([*psql, rows], tmp_path)
    checksum = "SELECT count(*) || md5(string_agg(id || name, ',' ORDER BY id)) FROM items"
    before = run([*psql, checksum], tmp_path).stdout
    backups = tmp_path / "backups"
    backups.mkdir()
    backups.chmod(0o777)
    user = pod["securityContext"]
    env = {entry["name"]: entry.get("value", "") for entry in container["env"]}
    env["DATABASE_URL"] = settings[container["env"][0]["valueFrom"]["secretKeyRef"]["key"]]

    def in_the_image(*command: str) -> str:
        return docker(
            "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "--user", f"{user['runAsUser']}:{user['runAsGroup']}",
            "--volume", f"{backups}:/backups",
            *[part for key, value in env.items() for part in ("--env", f"{key}={value}")],
            "--entrypoint", command[0], container["image"], *command[1:],
        ).stdout  # fmt: skip

    written = in_the_image(*container["command"])
    [dump] = backups.glob("*.dump")
    assert f"backup: wrote /backups/{dump.name}" in written
    run([*psql, "DROP SCHEMA public CASCADE; CREATE SCHEMA public"], tmp_path)
    restore = re.search(r"^pg_restore .*$", (project / "README.md").read_text(), re.MULTILINE)
    assert restore, "the README's restore command"
    in_the_image("sh", "-c", restore.group(0).replace("<file>", dump.name))
    assert run([*psql, checksum], tmp_path).stdout == before
