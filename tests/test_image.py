"""The generated image, built for real and run the way each platform runs it.

One image per Python version, built with the classic builder (what Cloud
Build's `gcloud builds submit --tag` uses) on a Docker daemon of the tests' own,
from base images made locally (toolkit.images); again with podman, a
BuildKit-style builder, for each Python version; and once from a committed
uv.lock. Every container
target runs the one image of its Python version: its Dockerfile and build
context do not depend on the target (checked below).
For each target, the release command and the server run as the target's own
file says (command, environment, PORT, user, grace period), on the host
network against the real PostgreSQL and Redis, with a read-only root and a
tmpfs /tmp, as non-root; Docker's HEALTHCHECK must pass, readiness answer 200,
and SIGTERM stop the server cleanly within the target's grace period while a
Socket.IO client is connected (and, on Cloud Run's 10 s, while a request is
still open). The background worker (use_worker) runs from its project's image
as compose.prod.yaml starts it: its own health check, a job, a clean stop; then
the scheduler the same way: healthy, it queues the scheduled job the worker no
longer queues, and stops at once.

Not covered: the platforms' own builders and runtimes (Cloud Build, Railway's,
Fly's and Render's builders, Cloud Run, Kubernetes), which cannot run here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tarfile
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from toolkit import images, podman, workflows
from toolkit.auth import ADMIN_EMAIL, ADMIN_PASSWORD, log_in
from toolkit.bakery import CACHE_DIR, lock, render_pyproject
from toolkit.deploy import (
    CONTAINER_TARGETS,
    assert_at_head,
    build_context,
    compose,
    fresh_database,
    platform_url,
    prod_env,
)
from toolkit.docker import Docker
from toolkit.features import DEFAULT_PYTHON, PYTHONS
from toolkit.live import serve_grace, socketio_client
from toolkit.locks import locked
from toolkit.platforms import CLOUD_RUN_GRACE, Process, duration, launch
from toolkit.report import Figures

SLUG = images.APP_REPOSITORY
UID = 10001
# What the app's own shutdown may take after the server stopped waiting for open requests.
SHUTDOWN_MARGIN = 2
# Lines of uvicorn's graceful shutdown, in order.
SHUTDOWN_LINES = ("Shutting down", "Waiting for application shutdown.", "Application shutdown complete.")
# Only BuildKit accepts these: a `# syntax=` line (it makes BuildKit fetch a
# frontend image from a registry), RUN --mount/--network/--security, heredocs.
BUILDKIT_ONLY = re.compile(
    r"^\s*#\s*syntax\s*=|^\s*RUN\b.*\s--(mount|network|security)\b|<<-?\s*[\"']?\w+", re.I
)


def group(version: str) -> Any:
    """The tests of one Python version share a worker, so its image is built once."""
    return pytest.mark.xdist_group(f"image-{version}")


BY_VERSION = [pytest.param(version, id=f"python-{version}", marks=group(version)) for version in PYTHONS]
BY_VERSION_AND_TARGET = [
    pytest.param(version, target, id=f"python-{version}-{target}", marks=group(version))
    for version in PYTHONS
    for target in CONTAINER_TARGETS
]


def buildkit_only(dockerfile: str) -> list[str]:
    """Lines of a Dockerfile (continuations joined) that the classic builder rejects."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [line for line in joined.splitlines() if BUILDKIT_ONLY.search(line)]


# --- Without a daemon -----------------------------------------------------------------


@pytest.mark.parametrize("version", BY_VERSION)
def test_no_generated_dockerfile_needs_buildkit(bakery: Any, version: str) -> None:
    for target in CONTAINER_TARGETS:
        project = bakery(deploy_target=target, python_version=version)
        assert buildkit_only((project / "Dockerfile").read_text()) == [], target


def test_the_buildkit_check_catches_cache_mounts_and_syntax_lines() -> None:
    # The Dockerfile before the fix, abridged.
    old = (
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.12-slim AS build\n"
        "RUN --mount=type=cache,target=/root/.cache/uv \\\n"
        "    uv sync --frozen --no-dev\n"
        "RUN pip install --no-cache-dir uv\n"
    )
    assert len(buildkit_only(old)) == 2


@pytest.mark.parametrize("version", BY_VERSION)
def test_one_image_serves_every_target(bakery: Any, version: str) -> None:
    """What `docker build` sends is the same whatever the target, so the runs below
    reuse one build per Python version honestly. Differences are allowed only in
    pyproject.toml's dev dependencies and tool settings (Railway's adds
    railway-sdk), which the image never installs or reads."""
    contexts = {}
    for target in CONTAINER_TARGETS:
        project = bakery(deploy_target=target, python_version=version)
        context: dict[str, Any] = {path: (project / path).read_bytes() for path in build_context(project)}
        assert "Dockerfile" not in context, ".dockerignore keeps the Dockerfile out; compared on its own"
        context["Dockerfile"] = (project / "Dockerfile").read_bytes()
        pyproject = tomllib.loads(context.pop("pyproject.toml").decode())
        assert set(pyproject) == {"project", "build-system", "dependency-groups", "tool"}
        assert set(pyproject["dependency-groups"]) == {"dev"}
        context["pyproject.toml: project, build-system"] = [pyproject["project"], pyproject["build-system"]]
        contexts[target] = context
    first = contexts[CONTAINER_TARGETS[0]]
    for target, context in contexts.items():
        differing = sorted(
            path for path in first.keys() | context.keys() if first.get(path) != context.get(path)
        )
        assert differing == [], f"{target}'s build context differs"


# --- Building ---------------------------------------------------------------------------


def megabytes(docker: Docker, tag: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e6


@pytest.mark.containers
@pytest.mark.parametrize("version", BY_VERSION)
def test_the_image_builds_with_the_classic_builder(
    docker: Docker, app_images: images.AppImages, figures: Figures, version: str
) -> None:
    built = app_images(version)

    # The classic builder numbers its steps; BuildKit prints none of that.
    assert re.search(r"^Step 1/\d+ : FROM python:", built.output, re.MULTILINE), built.output[:2000]
    assert f"Successfully tagged {built.tag}" in built.output
    size, base = megabytes(docker, built.tag), megabytes(docker, f"python:{version}-slim")
    figures.add(f"Image, Python {version}", "size (base image)", f"{size:.0f} MB ({base:.0f} MB)")
    figures.add(
        f"Image, Python {version}",
        "build seconds (base image; Debian root)",
        f"{built.seconds:.0f} s ({built.base_seconds:.0f} s; {built.root_seconds:.0f} s)",
    )


@pytest.mark.containers
@pytest.mark.xdist_group(f"image-{DEFAULT_PYTHON}")
def test_the_classic_builder_refuses_a_cache_mount(
    docker: Docker, app_images: images.AppImages, tmp_path: Path
) -> None:
    """The build test above fails on the Dockerfile as it was, with a cache mount."""
    project = shutil.copytree(app_images(DEFAULT_PYTHON).project, tmp_path / "project")
    dockerfile = project / "Dockerfile"
    text = dockerfile.read_text()
    assert "RUN if [ -f uv.lock ]" in text
    dockerfile.write_text(
        text.replace(
            "RUN if [ -f uv.lock ]", "RUN --mount=type=cache,target=/root/.cache/uv if [ -f uv.lock ]"
        )
    )

    with pytest.raises(RuntimeError, match="--mount"):
        images.build(docker, project, f"{SLUG}:refused")


@pytest.mark.containers
@pytest.mark.parametrize("version", BY_VERSION)
def test_the_image_holds_only_what_runs(
    docker: Docker, app_images: images.AppImages, tmp_path: Path, version: str
) -> None:
    built = app_images(version)
    files = image_files(docker, built.tag, tmp_path)

    compilers = [
        path for path in files if re.search(r"(^|/)(s?bin)/((\w+-)*(gcc|cc|g\+\+|c\+\+|clang)(-\d+)?)$", path)
    ]
    assert compilers == [] and not [path for path in files if re.search(r"/gcc/.*/cc1$", path)]
    assert [path for path in files if re.search(r"(^|/)\.cache/|/uv$|/uvx$", path)] == [], "caches or uv"
    app_files = [path for path in files if path.startswith("app/")]
    assert app_files, "WORKDIR /app"
    assert not [
        path for path in app_files if re.match(r"app/(tests|\.git|\.venv|\.env|\.pytest_cache)(/|$)", path)
    ]
    assert not [path for path in files if re.search(r"(^|/)\.env$", path)]
    # Every module of the app and its migrations compiled at build time (the root is read-only).
    tag = f"cpython-{version.replace('.', '')}"
    sources = [
        path
        for path in app_files
        if path.endswith(".py") and path.startswith(("app/app/", "app/migrations/"))
    ]
    assert sources
    missing = [
        source
        for source in sources
        if str(Path(source).parent / "__pycache__" / f"{Path(source).stem}.{tag}.pyc") not in files
    ]
    assert missing == [], "sources without bytecode"
    # The standard library too: the base image ships no bytecode, and nothing can write it at run time.
    stdlib = f"usr/local/lib/python{version}/"
    uncompiled = [
        path
        for path in files
        if path.startswith(stdlib)
        and path.endswith(".py")
        and "/site-packages/" not in path
        and str(Path(path).parent / "__pycache__" / f"{Path(path).stem}.{tag}.pyc") not in files
    ]
    assert f"{stdlib}urllib/request.py" in files and uncompiled == [], uncompiled[:20]
    # No dev dependencies in the virtualenv.
    pyproject = render_pyproject(python_version=version)
    dev = {
        re.split(r"[<>=\[ ]", spec)[0].lower().replace("-", "_")
        for spec in pyproject["dependency-groups"]["dev"]
    }
    runtime = {
        re.split(r"[<>=\[ ]", spec)[0].lower().replace("-", "_")
        for spec in pyproject["project"]["dependencies"]
    }
    installed = {
        match.group(1).lower()
        for path in files
        if (
            match := re.match(
                r"opt/venv/lib/python[\d.]+/site-packages/(\w+)-[^/]*\.dist-info/METADATA$", path
            )
        )
    }
    assert {"fastapi", "uvicorn", "alembic"} <= installed, installed
    assert installed & (dev - runtime) == set(), "dev dependencies in the image"
    # The dependencies were compiled too (UV_COMPILE_BYTECODE).
    packages = [
        path for path in files if re.match(r"opt/venv/lib/python[\d.]+/site-packages/\w+/__init__\.py$", path)
    ]
    assert packages and not [
        path
        for path in packages
        if str(Path(path).parent / "__pycache__" / f"__init__.{tag}.pyc") not in files
    ]
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", built.tag).stdout)
    assert config["User"] == f"{UID}:{UID}" and config["Cmd"] == ["scripts/serve"]
    assert config["Healthcheck"]["Test"][0] == "CMD" and "PORT=8000" in config["Env"]


def image_files(docker: Docker, tag: str, tmp_path: Path) -> set[str]:
    """Every path in the image's filesystem, read from `docker export`."""
    container = docker("create", tag).stdout.strip()
    archive = tmp_path / "image.tar"
    try:
        with archive.open("wb") as out:
            subprocess.run(docker.argv("export", container), env=docker.env, stdout=out, check=True)
    finally:
        docker("rm", container)
    with tarfile.open(archive) as tar:
        return {member.name.removeprefix("./").rstrip("/") for member in tar.getmembers()}


@pytest.mark.containers
@pytest.mark.xdist_group("image-podman")
@pytest.mark.parametrize("version", [pytest.param(v, id=f"python-{v}") for v in PYTHONS])
def test_the_image_builds_with_podman(docker: Docker, bakery: Any, figures: Figures, version: str) -> None:
    """podman (buildah) stands for the BuildKit-style builders of Fly, Render and Railway."""
    reason = podman.unavailable()
    if reason:
        # As for the daemon: a failure in CI, a skip with the reason elsewhere.
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    engine = podman.connect()
    base = images.python_image(docker, version)
    podman.copy_from_docker(docker, engine, base)
    project = bakery(python_version=version)
    tag = images.content_tag(docker, project, f"podman-{version}-")

    seconds, _ = podman.build(engine, project, tag)

    built = json.loads(engine("image", "inspect", tag).stdout)[0]
    assert built["Config"]["User"] == f"{UID}:{UID}" and built["Config"]["Cmd"] == ["scripts/serve"]
    assert built["Healthcheck"]["Test"][:2] == ["CMD", "python"], "HEALTHCHECK kept (docker format)"
    # Handed to Docker, it holds a working virtualenv and the compiled app.
    save = subprocess.Popen([*engine.argv, "save", tag], stdout=subprocess.PIPE)
    subprocess.run(docker.argv("load"), stdin=save.stdout, env=docker.env, check=True, capture_output=True)
    assert save.wait() == 0
    loaded = f"localhost/{tag}"  # podman's name for a local image
    docker(
        "run",
        "--rm",
        "--pull",
        "never",
        "--read-only",
        "--network",
        "none",
        loaded,
        "python",
        "-c",
        "import app.main",
    )
    docker("image", "rm", loaded)
    for older in engine("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split():
        if older.startswith(f"localhost/{SLUG}:podman-{version}-") and older != loaded:
            engine("rmi", older, check=False)
    figures.add(f"Image, Python {version}", "podman build seconds", f"{seconds:.0f} s")


@pytest.mark.containers
@pytest.mark.xdist_group("image-podman")
def test_the_image_installs_exactly_a_committed_lock_file(
    docker: Docker, bakery: Any, tmp_path: Path
) -> None:
    """With uv.lock committed, the dependency step takes its other branch (`uv sync --frozen`)."""
    project = shutil.copytree(bakery(python_version=DEFAULT_PYTHON), tmp_path / "project")
    pinned = lock(project, DEFAULT_PYTHON)
    images.python_image(docker, DEFAULT_PYTHON)
    tag = images.content_tag(docker, project, "locked-")

    try:
        images.build(docker, project, tag)
        probe = (
            "import importlib.metadata as m, importlib.util as u; "
            "print(m.version('fastapi'), m.version('starlette'), u.find_spec('pytest') is None)"
        )
        shown = docker("run", "--rm", "--network", "none", "--read-only", tag, "python", "-c", probe).stdout
    finally:
        docker("image", "rm", tag, check=False)

    assert shown.split() == [pinned["fastapi"], pinned["starlette"], "True"]


# --- Running as each platform does ------------------------------------------------------


@contextlib.contextmanager
def port_of_our_own(port: int) -> Iterator[None]:
    """Hold `port` while a container listens on it on the host network: two workers
    (Cloud Run and Fly both use 8080) wait for each other instead of colliding."""
    with locked(CACHE_DIR / "ports" / f"{port}.lock"):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                pytest.fail(f"port {port} is taken by another program on this machine")
        yield


def run_argv(image: str, process: Process, *extra: str) -> list[str]:
    """`docker run` arguments: host network, read-only root, tmpfs /tmp, then the plan's."""
    argv = ["--network", "host", "--read-only", "--tmpfs", "/tmp", *process.flags, *extra]
    for name, value in sorted(process.env.items()):
        argv += ["--env", f"{name}={value}"]
    command = process.command or []
    if process.entrypoint is not None:
        argv += ["--entrypoint", process.entrypoint[0], image, *process.entrypoint[1:], *command]
    else:
        argv += [image, *command]
    return argv


def state(docker: Docker, container: str) -> dict[str, Any]:
    return dict(json.loads(docker("inspect", "--format", "{{json .State}}", container).stdout))


def wait_healthy(docker: Docker, container: str, timeout: float = 90) -> float:
    """Seconds until Docker's HEALTHCHECK (the image's own command) reports healthy."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        current = state(docker, container)
        if not current["Running"]:
            raise AssertionError(f"exited {current['ExitCode']}:\n{logs(docker, container)}")
        health = current.get("Health", {}).get("Status")
        if health == "healthy":
            return time.monotonic() - started
        assert health in {"starting", None}, f"{health}:\n{current.get('Health')}\n{logs(docker, container)}"
        time.sleep(0.5)
    raise AssertionError(
        f"not healthy within {timeout} s:\n{state(docker, container)}\n{logs(docker, container)}"
    )


def logs(docker: Docker, container: str) -> str:
    result = docker("logs", container, check=False)
    return (result.stdout + result.stderr)[-6000:]


def process_uids(docker: Docker, container: str) -> set[str]:
    """Real uid of every process in the container, as the host's ps sees them."""
    rows = docker("top", container, "-o", "pid,uid").stdout.splitlines()[1:]
    assert rows
    return {row.split()[1] for row in rows}


@pytest.mark.containers
@pytest.mark.parametrize(("version", "target"), BY_VERSION_AND_TARGET)
def test_the_container_runs_as_the_platform_runs_it(
    docker: Docker,
    app_images: images.AppImages,
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    figures: Figures,
    tmp_path: Path,
    version: str,
    target: str,
) -> None:
    image = app_images(version).tag
    project = bakery(deploy_target=target, python_version=version)
    with fresh_database(venv, project, services) as database:
        plan = launch(target, project, database, services["REDIS_URL"], tmp_path)
        assert plan.serve.env["ENVIRONMENT"] == "production"
        # Open requests get their time, and the app's own shutdown still runs before SIGKILL.
        assert serve_grace(project, plan.serve.env) + SHUTDOWN_MARGIN <= plan.grace

        # The release step, a container of its own that must exit 0.
        assert plan.release, "every target migrates before it serves"
        for process in plan.release:
            docker("run", "--rm", *run_argv(image, process), timeout=180)
        assert_at_head(venv, project, database)

        with port_of_our_own(plan.port):
            container = docker(
                "run", "--detach", "--health-interval", "1s", *run_argv(image, plan.serve)
            ).stdout.strip()
            try:
                healthy = wait_healthy(docker, container)
                assert process_uids(docker, container) == {str(UID)}, "non-root, every process"
                base = f"http://127.0.0.1:{plan.port}"
                ready = httpx.get(f"{base}/health/ready", headers={"Host": plan.health_host}, timeout=10)
                assert ready.status_code == 200, ready.text
                checks = ready.json()["checks"]
                assert checks["database"]["status"] == checks["redis"]["status"] == "ok", checks
                # The README's first admin, then a signed-in write: in the running container as
                # `kubectl exec`, `fly ssh console`, `railway ssh` or Render's shell do, or as
                # a one-off job of its own where the README runs one (Cloud Run), run twice.
                email = ADMIN_EMAIL
                if plan.create_admin is None:
                    made = docker(
                        "exec",
                        *("--env", f"ADMIN_PASSWORD={ADMIN_PASSWORD}", container),
                        *("python", "-m", "app.auth", "create-admin", "--email", email),
                    )
                else:
                    job = plan.create_admin
                    assert job.command
                    email = job.command[job.command.index("--email") + 1]
                    made = docker("run", "--rm", *run_argv(image, job))
                    again = docker("run", "--rm", *run_argv(image, job))
                    assert again.stdout == f"{email} exists already: nothing was changed\n", again.stdout
                assert made.stdout == f"Created the admin {email}\n", made.stdout + made.stderr
                assert ADMIN_PASSWORD not in made.stdout + made.stderr
                # Every container here logs in from the same address into one Redis: start
                # the login limit (5 a minute per client) afresh, as a new deployment would.
                prefix = plan.serve.env.get("CACHE_KEY_PREFIX", f"{project.name}:")
                with Redis.from_url(services["REDIS_URL"]) as redis:
                    for key in redis.scan_iter(f"{prefix}ratelimit*"):
                        redis.delete(key)
                token = log_in(base, email, headers={"Host": plan.health_host})["access_token"]
                signed_in = {"Host": plan.health_host, "Authorization": f"Bearer {token}"}
                written = httpx.post(
                    f"{base}/items", json={"name": "from the image"}, headers=signed_in, timeout=10
                )
                assert written.status_code == 201, written.text
                sock = socket.create_connection(("127.0.0.1", plan.port), timeout=10)
                with socketio_client(f"ws://{plan.public_host}", sock=sock):
                    started = time.monotonic()
                    docker("stop", "--time", str(int(plan.grace)), container, timeout=plan.grace + 30)
                    stopped = time.monotonic() - started
            finally:
                output = logs(docker, container)
                final = state(docker, container)
                docker("rm", "--force", container, check=False)

    # Exit 0, or 143 when uvicorn re-raises SIGTERM after its shutdown under an
    # init process (as PID 1 the re-raised signal is ignored); 137 would be SIGKILL.
    assert final["ExitCode"] in (0, 143) and not final["OOMKilled"], f"{final}\n{output}"
    assert stopped < plan.grace, f"took {stopped:.1f} s of a {plan.grace} s grace period"
    positions = [output.find(line) for line in SHUTDOWN_LINES]
    assert -1 not in positions and positions == sorted(positions), output
    assert "Traceback" not in output, output
    figures.add(
        f"Container, Python {version}, {target}",
        "healthy after / stopped in (grace)",
        f"{healthy:.1f} s / {stopped:.1f} s ({plan.grace:.0f} s)",
    )


@pytest.mark.containers
@pytest.mark.xdist_group(f"image-{DEFAULT_PYTHON}")
def test_a_request_still_open_at_a_stop_does_not_outlast_cloud_runs_grace_period(
    docker: Docker,
    app_images: images.AppImages,
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    tmp_path: Path,
) -> None:
    image = app_images(DEFAULT_PYTHON).tag
    project = bakery(deploy_target="cloud-run", python_version=DEFAULT_PYTHON)
    with fresh_database(venv, project, services) as database:
        plan = launch("cloud-run", project, database, services["REDIS_URL"], tmp_path)
        graceful = serve_grace(project, plan.serve.env)
        with port_of_our_own(plan.port):
            container = docker(
                "run", "--detach", "--health-interval", "1s", *run_argv(image, plan.serve)
            ).stdout.strip()
            try:
                wait_healthy(docker, container)
                # A POST whose body never ends: the server counts it open until it gives up.
                with socket.create_connection(("127.0.0.1", plan.port), timeout=30) as held:
                    held.sendall(
                        f"POST /items HTTP/1.1\r\nHost: {plan.health_host}\r\n"
                        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
                    )
                    time.sleep(0.5)
                    started = time.monotonic()
                    docker("stop", "--time", str(CLOUD_RUN_GRACE), container, timeout=CLOUD_RUN_GRACE + 30)
                    stopped = time.monotonic() - started
            finally:
                output = logs(docker, container)
                final = state(docker, container)
                docker("rm", "--force", container, check=False)

    # It waited for the request as long as it may, then stopped cleanly before SIGKILL.
    assert final["ExitCode"] in (0, 143), f"{final}\n{output}"
    assert graceful - 0.5 <= stopped < CLOUD_RUN_GRACE, f"stopped in {stopped:.1f} s"
    assert "Application shutdown complete." in output, output


# --- The background worker ---------------------------------------------------------------

# Queues the scheduled task now, from inside the worker's container with its settings;
# prints the job's key.
ENQUEUE = """
import asyncio
from redis.asyncio import Redis
from app.jobs.queue import job_defaults, queue_on
from app.settings import get_settings

async def main():
    settings = get_settings()
    async with Redis.from_url(settings.redis_url) as redis:
        job = await queue_on(redis, settings).enqueue("nightly_cleanup", **job_defaults(settings))
    print(job.key)

asyncio.run(main())
"""


# SAQ's line when a process queues the next run of the scheduled task.
SCHEDULED = "Enqueuing Job<function: nightly_cleanup"


def compose_process(service: dict[str, Any], database: str, redis: str) -> Process:
    """A compose.prod.yaml service as `docker run` arguments: its command, its environment on
    the machine's PostgreSQL and Redis, init, CPU and memory limits and health check."""
    env = {key: value for key, value in service["environment"].items() if value is not None}
    env |= {"DATABASE_URL": platform_url(database, "postgresql"), "REDIS_URL": redis}
    flags = ["--init"] if service.get("init") else []
    limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
    if "memory" in limits:
        flags += ["--memory", str(limits["memory"])]
    if "cpus" in limits:
        flags += ["--cpus", str(limits["cpus"])]
    if "healthcheck" in service:
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", test
        flags += ["--health-cmd", shlex.join(test[1:]), "--health-interval", "1s"]
    return Process(env, service["command"], flags=flags)


@pytest.mark.containers
@pytest.mark.xdist_group(f"image-{DEFAULT_PYTHON}")
def test_the_worker_container_runs_as_compose_runs_it(
    docker: Docker,
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    figures: Figures,
    tmp_path: Path,
) -> None:
    """Its own health check passes (the image's asks the web server's port), it runs a job
    queued in Redis, and SIGTERM stops it cleanly well within its stop_grace_period. The
    scheduler then starts as compose starts it (the same port) and queues the scheduled job
    the worker left to it, running none, and stops as promptly."""
    answers = {"deploy_target": "docker-compose", "use_worker": True}
    project = bakery(**answers)
    image = images.variant_image(docker, project, "worker")
    config = compose(project, "compose.prod.yaml", prod_env(answers), tmp_path)["services"]
    grace = duration(config["worker"]["stop_grace_period"])
    scheduler_grace = duration(config["scheduler"]["stop_grace_period"])
    # A queue of its own: other tests' workers may share this Redis.
    prefix = f"image-worker-{uuid.uuid4().hex[:8]}:"
    with fresh_database(venv, project, services) as database:
        migrate = compose_process(config["migrate"], database, services["REDIS_URL"])
        worker = compose_process(config["worker"], database, services["REDIS_URL"])
        scheduler = compose_process(config["scheduler"], database, services["REDIS_URL"])
        worker.env["CACHE_KEY_PREFIX"] = scheduler.env["CACHE_KEY_PREFIX"] = prefix
        # Compose starts them once the migrations are done.
        docker("run", "--rm", *run_argv(image, migrate), timeout=180)

        def runs_a_queued_job(container: str) -> None:
            assert process_uids(docker, container) == {str(UID)}, "non-root, every process"
            key = docker("exec", container, "python", "-c", ENQUEUE).stdout.strip()
            wait_for_output(docker, container, lambda out: finished(out, "nightly_cleanup", key), 20)

        def queues_the_scheduled_job(container: str) -> None:
            wait_for_output(docker, container, lambda out: SCHEDULED in out, 10)

        try:
            with port_of_our_own(int(worker.env.get("WORKER_HEALTH_PORT", 8001))):
                worker_run = run_then_stop(docker, run_argv(image, worker), grace, runs_a_queued_job)
                # The scheduler, on the port the worker has just left.
                scheduler_run = run_then_stop(
                    docker, run_argv(image, scheduler), scheduler_grace, queues_the_scheduled_job
                )
        finally:
            with Redis.from_url(services["REDIS_URL"]) as redis:
                for key in redis.scan_iter(f"*{prefix}*"):
                    redis.delete(key)

    output, final, stopped = worker_run.output, worker_run.final, worker_run.stopped
    # The task's own line: it ran on the migrated database (no expired token to delete).
    assert re.search(r'"nightly_cleanup for \S+ removed 0 rows"', output), output
    # It exited on its own (Docker's SIGKILL would leave 137) before the grace period ended.
    assert final["ExitCode"] == 0 and not final["OOMKilled"], f"{final}\n{output}"
    assert stopped < grace, f"took {stopped:.1f} s of a {grace:.0f} s grace period"
    assert "Working shutting down" in output, output
    assert "Traceback" not in output, output
    # WORKER_SCHEDULES=false: the scheduled job was left to the scheduler, which runs none.
    assert SCHEDULED not in output, output
    scheduler_output, scheduler_final = scheduler_run.output, scheduler_run.final
    scheduler_stopped = scheduler_run.stopped
    assert "Processing Job<" not in scheduler_output, scheduler_output
    assert scheduler_final["ExitCode"] == 0 and not scheduler_final["OOMKilled"], (
        f"{scheduler_final}\n{scheduler_output}"
    )
    assert scheduler_stopped < scheduler_grace, f"took {scheduler_stopped:.1f} s of {scheduler_grace:.0f} s"
    assert "Traceback" not in scheduler_output, scheduler_output
    figures.add(
        f"Worker container, Python {DEFAULT_PYTHON}, docker-compose",
        "healthy after / stopped in (grace)",
        f"{worker_run.healthy:.1f} s / {stopped:.1f} s ({grace:.0f} s)",
    )
    figures.add(
        f"Scheduler container, Python {DEFAULT_PYTHON}, docker-compose",
        "healthy after / stopped in (grace)",
        f"{scheduler_run.healthy:.1f} s / {scheduler_stopped:.1f} s ({scheduler_grace:.0f} s)",
    )


@dataclass(frozen=True)
class ContainerRun:
    healthy: float  # Seconds until Docker's health check passed.
    stopped: float  # Seconds `docker stop` took.
    output: str
    final: dict[str, Any]  # Its state once stopped.


def run_then_stop(
    docker: Docker, argv: list[str], grace: float, check: Callable[[str], None]
) -> ContainerRun:
    """Start a container, wait until it is healthy, run `check` on it, then `docker stop` it
    with `grace` seconds; the container is removed after."""
    container = docker("run", "--detach", *argv).stdout.strip()
    try:
        healthy = wait_healthy(docker, container)
        check(container)
        started = time.monotonic()
        docker("stop", "--time", str(int(grace)), container, timeout=grace + 30)
        stopped = time.monotonic() - started
        return ContainerRun(healthy, stopped, logs(docker, container), state(docker, container))
    finally:
        docker("rm", "--force", container, check=False)


def wait_for_output(docker: Docker, container: str, seen: Callable[[str], bool], timeout: float) -> None:
    """Wait until the container's output satisfies `seen`."""
    deadline = time.monotonic() + timeout
    while not seen(logs(docker, container)):
        assert time.monotonic() < deadline, logs(docker, container)
        time.sleep(0.5)


def finished(output: str, function: str, key: str) -> bool:
    """Whether SAQ logged the end of the job `key` of `function`."""
    return any(
        f"Finished Job<function: {function}, " in line and f"key: {key}," in line
        for line in output.splitlines()
    )


# --- The generated CI's image job -------------------------------------------------------


@pytest.mark.containers
@pytest.mark.xdist_group(f"image-{DEFAULT_PYTHON}")
def test_the_ci_image_job_runs_here_as_the_workflow_writes_it(
    docker: Docker, app_images: images.AppImages, venv: Path, services: dict[str, str], tmp_path: Path
) -> None:
    """Its `run:` steps, in order, on the tests' daemon with the local PostgreSQL and
    Redis standing for its service containers (toolkit.workflows)."""
    # A copy of the sources of the image built above, whose layers are the build's cache.
    project = shutil.copytree(app_images(DEFAULT_PYTHON).project, tmp_path / "project")
    client = {**docker.env, "PATH": f"{Path(docker.executable).parent}:{os.environ['PATH']}"}
    with fresh_database(venv, project, services) as database, port_of_our_own(8000):
        try:
            steps = workflows.run_job(
                project,
                "image",
                {"DATABASE_URL": database, "REDIS_URL": services["REDIS_URL"]},
                {key: client[key] for key in ("DOCKER_HOST", "DOCKER_API_VERSION", "PATH") if key in client},
            )
        finally:
            docker("image", "rm", f"{SLUG}:ci", check=False)
        assert_at_head(venv, project, database)

    (check,) = [step for step in steps if step.command.startswith("deploy/check-image ")]
    assert "The image starts, serves and stops as the platforms run it" in check.result.stdout
    (audit,) = [step for step in steps if step.command.startswith(workflows.AUDIT)]
    packages = (project / "requirements.txt").read_text().splitlines()
    assert "fastapi==" in "\n".join(packages) and not [p for p in packages if p.startswith(f"{SLUG}==")]
    assert f"Dry run: would have audited {len(packages)} packages" in audit.result.stderr
    sbom = json.loads((project / "sbom.cdx.json").read_text())
    assert len(sbom["components"]) == len(packages)


@pytest.mark.containers
@pytest.mark.xdist_group(f"image-{DEFAULT_PYTHON}")
def test_the_image_check_refuses_an_image_that_runs_as_root(
    docker: Docker, app_images: images.AppImages, tmp_path: Path
) -> None:
    """Guards the test above: deploy/check-image fails, naming why."""
    built = app_images(DEFAULT_PYTHON)
    (tmp_path / "Dockerfile").write_text(f"FROM {built.tag}\nUSER root\n")
    images.build(docker, tmp_path, f"{SLUG}:as-root")
    try:
        result = subprocess.run(
            ["bash", built.project / "deploy" / "check-image", f"{SLUG}:as-root"],
            env=docker.env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        docker("image", "rm", f"{SLUG}:as-root", check=False)
    assert result.returncode == 1
    assert result.stderr == "check-image: the image runs as root (USER is 'root')\n"
