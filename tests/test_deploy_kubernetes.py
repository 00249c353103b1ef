"""Kubernetes: the Helm chart under deploy/helm, linted (`helm lint --strict`) and
rendered offline with helm-python-sdk; every manifest passes kubernetes-validate
--strict and yamllint, the HTTPRoute and Gateway a schema of the Gateway API
(tests/schemas), and the route attaches to a cluster's Gateway by the Gateway API's
own rule. The migration Job runs with the chart's settings on a scratch database.
With use_worker, the worker's Deployment, autoscaler and disruption budget and the
scheduler's Deployment pass the same validators and stay out of each other's and the
web objects' selectors; the worker runs from the chart's command and settings until it
has done a job and stopped within its grace, and the scheduler beside it queues a
scheduled job the worker runs.
"""

from __future__ import annotations

import base64
import re
import secrets
import signal
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
from toolkit.features import ALL_OFF, FEATURE_WORDS, ROOT
from toolkit.processes import free_port, run
from toolkit.servers import wait_until_serving

GROUP = bake_group(deploy_target="kubernetes")
WORKER: dict[str, Any] = {"deploy_target": "kubernetes", "use_worker": True}
WORKER_GROUP = bake_group(**WORKER)
KUBERNETES = [
    # The no-input bake: every feature but the worker.
    param("default", deploy_target="kubernetes"),
    param("all-off", deploy_target="kubernetes", **ALL_OFF),
    param("all-on", **WORKER),
]


def kubernetes_validate(*files: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """kubernetes-validate --strict against Kubernetes 1.30's schemas."""
    return run([BIN / "kubernetes-validate", "--strict", "-k", "1.30.0", *files], ROOT, check=check)


def component(manifest: dict[str, Any]) -> str:
    return manifest["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


def split_worker(
    manifests: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The release's objects by kind: the web's and the others, the worker's, the scheduler's."""
    groups: dict[str, list[dict[str, Any]]] = {"": [], "worker": [], "scheduler": []}
    for manifest in manifests:
        groups[component(manifest) if component(manifest) in groups else ""].append(manifest)
    return by_kind(groups[""]), by_kind(groups["worker"]), by_kind(groups["scheduler"])


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Whether a matchLabels selector (or a Service's selector) selects these labels."""
    return selector.items() <= labels.items()


def named_port(container: dict[str, Any], port: int | str) -> int:
    """The number a probe's port means: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == port)


def container_env(container: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry}


def assert_worker_objects(kinds: dict[str, Any], worker: dict[str, Any]) -> None:
    """The worker's objects beside the web's: the web pods' image, settings and security,
    labels no web selector matches, probes on its health port, a grace period longer
    than its jobs' own, and an autoscaler and a disruption budget of its own."""
    assert set(worker) == {"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    web_pod = kinds["Deployment"]["spec"]["template"]
    pod = worker["Deployment"]["spec"]["template"]
    [web_container] = web_pod["spec"]["containers"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", "app.jobs"]
    for key in ("image", "imagePullPolicy", "envFrom", "securityContext", "volumeMounts"):
        assert container[key] == web_container[key], key
    for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "volumes"):
        assert pod["spec"].get(key) == web_pod["spec"].get(key), key
    # A changed setting rolls the worker too.
    assert pod["metadata"]["annotations"] == web_pod["metadata"]["annotations"]
    # Not a hook: Helm creates it after the migration Job, like the web Deployment.
    assert "helm.sh/hook" not in worker["Deployment"]["metadata"].get("annotations", {})

    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == web_pod["metadata"]["labels"]["app.kubernetes.io/instance"]
    web_selectors = [
        kinds["Service"]["spec"]["selector"],
        kinds["Deployment"]["spec"]["selector"]["matchLabels"],
        kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    assert not any(selects(selector, labels) for selector in web_selectors)
    assert all(selects(selector, web_pod["metadata"]["labels"]) for selector in web_selectors)
    worker_selectors = [
        worker["Deployment"]["spec"]["selector"]["matchLabels"],
        worker["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        *[c["labelSelector"]["matchLabels"] for c in pod["spec"].get("topologySpreadConstraints", [])],
    ]
    assert all(selects(selector, labels) for selector in worker_selectors)
    assert not any(selects(selector, web_pod["metadata"]["labels"]) for selector in worker_selectors)

    env = container_env(container)
    health_port = int(env["WORKER_HEALTH_PORT"])
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert named_port(container, container[probe]["httpGet"]["port"]) == health_port
    # It serves no traffic: nothing to be ready for, and no Service.
    assert "readinessProbe" not in container
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(env["WORKER_SHUTDOWN_GRACE_SECONDS"])
    # The autoscaler measures CPU against the request.
    assert container["resources"]["requests"]["cpu"]
    hpa = worker["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["Deployment"]["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in worker["Deployment"]["spec"]  # the HPA owns it
    name = worker["Deployment"]["metadata"]["name"]
    assert name != kinds["Deployment"]["metadata"]["name"]
    assert {manifest["metadata"]["name"] for manifest in worker.values()} == {name}
    # The scheduler's Deployment queues the scheduled jobs; the workers only run them.
    assert env["WORKER_SCHEDULES"] == "false"


def assert_scheduler_objects(
    kinds: dict[str, Any], worker: dict[str, Any], scheduler: dict[str, Any]
) -> None:
    """The scheduler's one Deployment beside the worker's: one pod of the worker's image,
    settings and security running the scheduler command, labels neither the web's nor
    the worker's selectors match (and selectors of its own that match neither's pods),
    probes on the worker's health port, and no autoscaler or disruption budget."""
    assert set(scheduler) == {"Deployment"}
    deployment = scheduler["Deployment"]
    worker_pod = worker["Deployment"]["spec"]["template"]
    pod = deployment["spec"]["template"]
    [worker_container] = worker_pod["spec"]["containers"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", "app.jobs", "scheduler"]
    for key in ("image", "imagePullPolicy", "envFrom", "securityContext", "volumeMounts"):
        assert container[key] == worker_container[key], key
    for key in ("serviceAccountName", "automountServiceAccountToken", "securityContext", "volumes"):
        assert pod["spec"].get(key) == worker_pod["spec"].get(key), key
    assert pod["metadata"]["annotations"] == worker_pod["metadata"]["annotations"]
    assert "helm.sh/hook" not in deployment["metadata"].get("annotations", {})
    assert deployment["spec"]["replicas"] == 1
    # Two schedulers side by side during the rollout queue each run once: no Recreate gap.
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}

    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "scheduler"
    assert (
        labels["app.kubernetes.io/instance"] == worker_pod["metadata"]["labels"]["app.kubernetes.io/instance"]
    )
    others = {"web": kinds["Deployment"]["spec"]["template"], "worker": worker_pod}
    other_selectors = [
        kinds["Service"]["spec"]["selector"],
        kinds["Deployment"]["spec"]["selector"]["matchLabels"],
        kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        worker["Deployment"]["spec"]["selector"]["matchLabels"],
        worker["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        *[
            c["labelSelector"]["matchLabels"]
            for other in others.values()
            for c in other["spec"].get("topologySpreadConstraints", [])
        ],
    ]
    assert not any(selects(selector, labels) for selector in other_selectors)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selects(selector, labels)
    assert not any(selects(selector, other["metadata"]["labels"]) for other in others.values())

    env = container_env(container)
    assert env["WORKER_HEALTH_PORT"] == container_env(worker_container)["WORKER_HEALTH_PORT"]
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health"
        assert named_port(container, container[probe]["httpGet"]["port"]) == int(env["WORKER_HEALTH_PORT"])
    assert "readinessProbe" not in container
    # It runs no jobs: a short grace, and small resources.
    assert pod["spec"]["terminationGracePeriodSeconds"] <= worker_pod["spec"]["terminationGracePeriodSeconds"]
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    names = {
        deployment["metadata"]["name"],
        worker["Deployment"]["metadata"]["name"],
        kinds["Deployment"]["metadata"]["name"],
    }
    assert len(names) == 3


@pytest.mark.parametrize("answers", KUBERNETES)
def test_helm_chart_lints_and_renders_valid_manifests(
    bakery: Any, answers: dict[str, Any], tmp_path: Path
) -> None:
    import helm_python

    project = bakery(**answers)
    chart_dir = project / "deploy" / "helm" / SLUG
    values = chart_values(**secret_values(answers))
    postgres = answers.get("use_postgres", True)
    with_worker = answers.get("use_worker", False)

    report = helm_python.lint(chart_dir, values, strict=True, kube_version="v1.30.0")
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
    yamllint(chart_dir / "Chart.yaml", chart_dir / "values.yaml")
    manifests = render_chart(project, values, tmp_path / "manifests")
    files = sorted((tmp_path / "manifests").glob("*.yaml"))
    yamllint(*files)
    result = kubernetes_validate(*files)
    kinds, worker, scheduler = split_worker(manifests)
    validate(kinds["HTTPRoute"], "gateway-httproute")

    # kubernetes-validate has no schema for HTTPRoute (checked above); it checked every other object.
    assert result.stdout.count("passed for resource") == len(manifests) - 1
    if with_worker:
        assert_worker_objects(kinds, worker)
        assert_scheduler_objects(kinds, worker, scheduler)
    else:
        assert worker == scheduler == {}
        assert "app.jobs" not in "".join(path.read_text() for path in files)
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


@pytest.mark.xdist_group(WORKER_GROUP)
def test_the_workers_options_render_valid_manifests(bakery: Any, tmp_path: Path) -> None:
    import helm_python

    project = bakery(**WORKER)
    worker_values = {
        "replicaCount": 3,
        "healthPort": 9101,
        "shutdownGraceSeconds": 50,
        "terminationGracePeriodSeconds": 60,
        "autoscaling": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
    }
    values = chart_values(**secret_values(WORKER)) | {
        "worker": worker_values,
        "imagePullSecrets": [{"name": "registry"}],
        "topologySpreadConstraints": [],
        "secret": {"existingSecret": "managed-elsewhere"},
    }

    manifests = render_chart(project, values, tmp_path / "manifests")
    files = sorted((tmp_path / "manifests").glob("*.yaml"))
    kubernetes_validate(*files)
    yamllint(*files)

    kinds, worker, scheduler = split_worker(manifests)
    assert set(worker) == {"Deployment"}
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= set(kinds)  # the web's, untouched
    deployment = worker["Deployment"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert pod["imagePullSecrets"] == [{"name": "registry"}]
    assert {"secretRef": {"name": "managed-elsewhere"}} in container["envFrom"]
    assert container_env(container)["WORKER_HEALTH_PORT"] == "9101"
    assert named_port(container, container["livenessProbe"]["httpGet"]["port"]) == 9101
    assert container_env(container)["WORKER_SHUTDOWN_GRACE_SECONDS"] == "50"
    assert pod["terminationGracePeriodSeconds"] == 60
    # The scheduler: the same pull secrets, Secret and health port, still one pod.
    scheduler_pod = scheduler["Deployment"]["spec"]["template"]["spec"]
    [scheduler_container] = scheduler_pod["containers"]
    assert scheduler["Deployment"]["spec"]["replicas"] == 1
    assert scheduler_pod["imagePullSecrets"] == [{"name": "registry"}]
    assert {"secretRef": {"name": "managed-elsewhere"}} in scheduler_container["envFrom"]
    assert container_env(scheduler_container)["WORKER_HEALTH_PORT"] == "9101"
    assert named_port(scheduler_container, scheduler_container["livenessProbe"]["httpGet"]["port"]) == 9101

    # Killed first, the worker could not queue its cancelled jobs again: they would wait for a sweep.
    for grace in (60, 61):
        broken = values | {"worker": worker_values | {"shutdownGraceSeconds": grace}}
        with pytest.raises(helm_python.HelmError, match=r"worker\.shutdownGraceSeconds must be below"):
            render_chart(project, broken)


def selector_in(command: str) -> dict[str, str]:
    """The label selector of a kubectl command line (--selector or -l)."""
    found = re.search(r"(?:--selector|-l)[ =](\S+)", command)
    assert found, command
    return dict(pair.split("=", 1) for pair in found.group(1).split(","))


@pytest.mark.xdist_group(WORKER_GROUP)
def test_the_workers_commands_in_the_notes_and_readme_name_its_pods(bakery: Any) -> None:
    import helm_python

    project = bakery(**WORKER)
    chart = helm_python.Chart.load(project / "deploy" / "helm" / SLUG)
    # Installed as the README installs it: release and namespace named after the project.
    rendered = chart.render(chart_values(**secret_values({})), name=SLUG, namespace=SLUG, is_install=True)
    manifests = [
        doc
        for name, text in rendered.items()
        if name.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]
    kinds, worker, scheduler = split_worker(manifests)
    pods = {
        "web": kinds["Deployment"]["spec"]["template"]["metadata"]["labels"],
        "worker": worker["Deployment"]["spec"]["template"]["metadata"]["labels"],
        "scheduler": scheduler["Deployment"]["spec"]["template"]["metadata"]["labels"],
    }
    name = worker["Deployment"]["metadata"]["name"]
    notes = rendered[f"{SLUG}/templates/NOTES.txt"]
    readme = (project / "README.md").read_text()

    for text in (notes, readme):
        commands = [line.strip() for line in text.splitlines() if line.strip().startswith("kubectl ")]
        for wanted in ("worker", "scheduler"):
            logs = [line for line in commands if " logs " in line and wanted in line]
            assert logs, (wanted, text)
            for line in logs:
                selector = selector_in(line)
                assert [pod for pod, labels in pods.items() if selects(selector, labels)] == [wanted], line
        for deployment in (worker, scheduler):
            assert f"rollout status deployment/{deployment['Deployment']['metadata']['name']}" in text
    assert f"kubectl --namespace {SLUG} scale deployment/{name} --replicas" in readme


@pytest.mark.xdist_group(GROUP)
def test_nothing_of_the_worker_is_generated_without_it(bakery: Any) -> None:
    project = bakery(deploy_target="kubernetes")
    chart_dir = project / "deploy" / "helm" / SLUG

    assert not (chart_dir / "templates" / "worker.yaml").exists()
    assert not (chart_dir / "templates" / "scheduler.yaml").exists()
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    assert "worker" not in values and "scheduler" not in values
    words = ["worker", "scheduler", *FEATURE_WORDS["use_worker"]]
    texts = {path: path.read_text().lower() for path in chart_dir.rglob("*") if path.is_file()}
    texts[Path("README: Kubernetes")] = render_doc("deploy-kubernetes.md", deploy_target="kubernetes").lower()
    assert [(path.name, word) for path, text in texts.items() for word in words if word in text] == []


ENQUEUE = """
import asyncio
from redis.asyncio import Redis
from app.jobs.queue import job_defaults, queue_on
from app.settings import get_settings

async def main():
    settings = get_settings()
    async with Redis.from_url(settings.redis_url) as redis:
        queue = queue_on(redis, settings)
        await queue.connect()
        job = await queue.enqueue("nightly_cleanup", **job_defaults(settings))
        await job.refresh(until_complete=30)
        print(job.status.value, job.result)
        await queue.disconnect()

asyncio.run(main())
"""
# Removes what the worker left in Redis under its own queue's name.
FORGET = """
import sys
from redis import Redis

with Redis.from_url(sys.argv[1]) as redis:
    keys = list(redis.scan_iter(match=f"*{sys.argv[2]}*"))
    if keys:
        redis.delete(*keys)
"""


@pytest.mark.xdist_group(WORKER_GROUP)
def test_the_worker_and_the_scheduler_run_as_kubelet_starts_them_and_stop_within_their_grace(
    bakery: Any, venv: Path, services: dict[str, str], empty_database: str, tmp_path: Path
) -> None:
    """The worker's and the scheduler's container commands and environments (ConfigMap,
    Secret, then each container's own env) run in the image's WORKDIR after the migration
    Job, as a release orders them: their probes answer on both address families, the
    worker takes a job from Redis and does it on the database, a scheduled run the
    scheduler queues is done by the worker (which queues none: WORKER_SCHEDULES is false),
    and SIGTERM stops each within its terminationGracePeriodSeconds."""
    project = bakery(**WORKER)
    ports = {"worker": free_port(), "scheduler": free_port()}
    while ports["scheduler"] == ports["worker"]:
        ports["scheduler"] = free_port()
    prefix = f"k8s-worker-{secrets.token_hex(4)}:"
    urls = secret_values(WORKER, database_url=empty_database) | {"REDIS_URL": services["REDIS_URL"]}
    values = chart_values(**urls) | {
        # A queue of its own on the shared Redis: no other test's jobs reach this worker.
        # The scheduled job every second, so that a scheduled run comes at once.
        "config": {"CACHE_KEY_PREFIX": prefix, "JOBS_CLEANUP_CRON": "* * * * * *"},
    }
    # Each pod has a network of its own; on one host, each process gets a port of its own.
    releases = {
        name: split_worker(render_chart(project, values | {"worker": {"healthPort": port}}))
        for name, port in ports.items()
    }
    kinds = releases["worker"][0]
    pods = {
        "worker": releases["worker"][1]["Deployment"]["spec"]["template"]["spec"],
        "scheduler": releases["scheduler"][2]["Deployment"]["spec"]["template"]["spec"],
    }
    settings = chart_settings(kinds)
    job = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    run(image_command(job["command"], project), project, venv_env(venv, **settings))

    logs = {name: tmp_path / f"{name}.log" for name in pods}
    envs: dict[str, dict[str, str]] = {}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    codes: dict[str, int] = {}
    try:
        for name, pod in pods.items():
            [container] = pod["containers"]
            envs[name] = venv_env(venv, **settings, **container_env(container))
            with logs[name].open("wb") as output:
                processes[name] = subprocess.Popen(
                    image_command(container["command"], project),
                    cwd=project,
                    env=envs[name],
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
        for name, pod in pods.items():
            [container] = pod["containers"]
            for probe in ("startupProbe", "livenessProbe"):
                get = container[probe]["httpGet"]
                port = named_port(container, get["port"])
                assert port == ports[name]
                for host in ("127.0.0.1", "[::1]"):
                    try:
                        wait_until_serving(f"http://{host}:{port}{get['path']}", processes[name])
                    except AssertionError as error:
                        raise AssertionError(f"{name}: {error}\n{logs[name].read_text()[-4000:]}") from None
        done = run([venv / "bin" / "python", "-c", ENQUEUE], project, envs["worker"])
        assert done.stdout.split() == ["complete", "0"], done.stdout
        # A scheduled run is logged with its time; the one enqueued above, with "now".
        scheduled = re.compile(r"nightly_cleanup for \d+")
        deadline = time.monotonic() + 15
        while not scheduled.search(logs["worker"].read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scheduled.search(logs["worker"].read_text()), logs["worker"].read_text()[-4000:]
        assert "nightly_cleanup for" not in logs["scheduler"].read_text()
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        stopping = time.monotonic()
        for name, process in processes.items():
            grace = pods[name]["terminationGracePeriodSeconds"]
            codes[name] = process.wait(timeout=max(0.0, stopping + grace - time.monotonic()))
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        run([venv / "bin" / "python", "-c", FORGET, services["REDIS_URL"], prefix], project)
    assert codes == {"worker": 0, "scheduler": 0}, {
        name: log.read_text()[-4000:] for name, log in logs.items()
    }


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
