"""The VM target installed for real: `deploy/vm/install.sh` on fresh Debian 12 and
Debian 13 machines with systemd as PID 1 (toolkit.machines), following the
generated README's steps as root: the first run that writes the settings, the
database and its user, the second run that installs and starts, the nginx
site, HTTPS with certbot. Then, under steady traffic through nginx, a restart of
each server unit and a second install (an upgrade) fail no request; the nightly
backup unit writes a dump that `deploy/vm/restore` puts back into a dropped
database. One case turns the background jobs on: the worker's and the
scheduler's units run after the install and answer their checks on loopback, the
worker processes the job an item written through nginx queues, and both restart
with each release and stop for the restore.

Each Python choice runs once: where the distribution ships it, install.sh uses
that one; where it does not, install.sh has uv install it, and since these
machines cannot download a Python build, the test puts the machine's CPython
where uv would have put its download (the one step not run). One case commits a
uv.lock, which the release's virtualenv must match exactly. certbot gets its
certificate from pebble, Let's Encrypt's test ACME server, running in the
machine. Not covered: ufw (no firewall inside a container), a real domain and
Let's Encrypt itself, and `PrivateUsers=` (systemd cannot set up user
namespaces inside these containers: a drop-in turns only that setting off;
`systemd-analyze security` in test_deploy_vm.py still checks the real units).
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from toolkit.auth import ADMIN_EMAIL, ADMIN_PASSWORD, log_in
from toolkit.bakery import lock
from toolkit.docker import Docker
from toolkit.live import BUSY_HEALTH_CHECK_TIMEOUT
from toolkit.load import Sample, Traffic, around
from toolkit.machines import PYTHONS, Machine, machine_image

SLUG = "my-service"
DATABASE = SLUG.replace("-", "_")
HOST = {"Host": "api.example.com"}
# Every unit of ours that sets PrivateUsers=yes, and Debian's Redis.
PRIVATE_USERS = (
    "redis-server.service",
    f"{SLUG}@.service",
    f"{SLUG}-migrate.service",
    f"{SLUG}-backup.service",
    f"{SLUG}-worker.service",
    f"{SLUG}-scheduler.service",
)
WORKER = f"{SLUG}-worker"
SCHEDULER = f"{SLUG}-scheduler"
# Where the worker's and the scheduler's units put their health checks.
WORKER_PORT = 8100
SCHEDULER_PORT = 8101
# The README's database step, as a root shell runs it.
CREATE_DATABASE = f"""
DB_PASSWORD=$(sudo sed -n 's|^DATABASE_URL=postgresql://[^:]*:\\([^@]*\\)@.*|\\1|p' /etc/{SLUG}/{SLUG}.env)
sudo -u postgres psql --command "CREATE ROLE {DATABASE} LOGIN PASSWORD '$DB_PASSWORD'"
sudo -u postgres createdb --owner {DATABASE} {DATABASE}
"""
# The README's nginx step, for the domain the site already names.
ENABLE_SITE = "sudo rm -f /etc/nginx/sites-enabled/default && sudo nginx -t && sudo systemctl reload nginx"
# uv trusts only its own CA list unless told otherwise, and this machine reaches PyPI
# through a CA of its own (in the image's bundle).
INSTALL = f"cd /root/{SLUG} && SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt deploy/vm/install.sh"
# The README's HTTPS step, pointed at pebble instead of Let's Encrypt, without its questions.
CERTBOT = (
    "certbot --nginx --redirect -d api.example.com --non-interactive --agree-tos "
    "--register-unsafely-without-email --server https://localhost:14000/dir"
)
PEBBLE_CONFIG = """{"pebble": {
  "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
  "certificate": "/root/pebble/cert.pem", "privateKey": "/root/pebble/key.pem",
  "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "", "externalAccountBindingRequired": false}}"""

pytestmark = pytest.mark.containers


class Case(NamedTuple):
    suite: str
    python: str
    locked: bool
    worker: bool = False

    @property
    def python_from_uv(self) -> bool:
        return self.python != PYTHONS[self.suite]


# Every Python choice; both suites; the distribution's Python and uv's; with and without uv.lock;
# the worker in the case that builds no Python (it adds a unit, not a setup path).
CASES = {
    "debian-12-python-3.12-from-uv-locked": Case("bookworm", "3.12", locked=True),
    "debian-13-python-3.13-with-worker": Case("trixie", "3.13", locked=False, worker=True),
    "debian-13-python-3.11-from-uv": Case("trixie", "3.11", locked=False),
}


@pytest.fixture
def machine(docker: Docker, request: pytest.FixtureRequest) -> Iterator[Machine]:
    case = request.node.callspec.params["case"]
    started = Machine(docker, machine_image(docker, case.suite), without_private_users=PRIVATE_USERS)
    try:
        yield started
    finally:
        started.remove()


def under_traffic(machine: Machine, command: str) -> tuple[str, list[Sample]]:
    """Run `command` in the machine while clients send requests through nginx."""
    traffic = Traffic(
        f"http://{machine.address}",
        clients=6,
        network=2,
        mix={"ready": 3, "health": 2, "root": 1},
        headers=HOST,
    )
    return around(traffic, lambda: machine(command).stdout)


def ready(machine: Machine) -> httpx.Response:
    return httpx.get(f"http://{machine.address}/health/ready", headers=HOST, timeout=10)


def worker_lines(machine: Machine, unit: str = WORKER) -> list[str]:
    """The messages of the worker's (or the scheduler's) JSON log lines, in order."""
    lines = machine(f"journalctl --no-pager --output=cat --unit {unit}", check=False).stdout
    return [json.loads(line)["message"] for line in lines.splitlines() if line.startswith("{")]


def wait_for_worker_line(machine: Machine, prefix: str, timeout: float = 30) -> str:
    """The first message of the worker starting with `prefix`, once it has logged one."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in worker_lines(machine) if line.startswith(prefix)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {prefix!r} from the worker:\n{machine.journal(WORKER)}"
        time.sleep(0.5)


def tls_request(address: str, root: str, maximum: ssl.TLSVersion | None = None) -> tuple[str, str]:
    """GET /health over TLS to the machine as api.example.com, trusting only `root`;
    returns the TLS version and the response's head."""
    context = ssl.create_default_context(cadata=root)
    if maximum:
        context.maximum_version = maximum
    with (
        socket.create_connection((address, 443), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="api.example.com") as connection,
    ):
        connection.sendall(b"GET /health HTTP/1.1\r\nHost: api.example.com\r\nConnection: close\r\n\r\n")
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
        return str(connection.version()), response.decode().partition("\r\n\r\n")[0]


def add_https_with_certbot(machine: Machine) -> str:
    """The README's certbot step against pebble in the machine; returns pebble's root certificate."""
    machine(
        "mkdir -p /root/pebble && cd /root/pebble && openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
        "-keyout key.pem -out cert.pem -subj /CN=localhost "
        "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null"
    )
    machine(f"cat > /root/pebble/config.json <<'EOF'\n{PEBBLE_CONFIG}\nEOF")
    machine("echo '127.0.0.1 api.example.com' >> /etc/hosts")
    machine(
        "systemd-run --unit pebble --setenv=PEBBLE_VA_NOSLEEP=1 --setenv=PEBBLE_WFE_NONCEREJECT=0 "
        "pebble -config /root/pebble/config.json && "
        "timeout 30 bash -c 'until : </dev/tcp/127.0.0.1/14000; do sleep 0.2; done' 2>/dev/null"
    )
    certbot = machine(CERTBOT, check=False, env={"REQUESTS_CA_BUNDLE": "/root/pebble/cert.pem"})
    assert certbot.returncode == 0, certbot.stdout + certbot.stderr
    return machine(
        'python3 -c "import ssl, urllib.request; print(urllib.request.urlopen('
        "'https://localhost:15000/roots/0', context=ssl.create_default_context("
        "cafile='/root/pebble/cert.pem')).read().decode())\""
    ).stdout


# One machine at a time: three machines building releases at once on two cores starved a
# restarted server's first database connections past readiness's 1 s limit.
@pytest.mark.xdist_group("vm")
@pytest.mark.parametrize("case", [pytest.param(case, id=name) for name, case in CASES.items()])
def test_the_readme_installs_the_service_on_a_fresh_debian_machine(
    bakery: Any, machine: Machine, tmp_path: Path, case: Case
) -> None:
    answers = {"use_worker": True} if case.worker else {}
    project = shutil.copytree(
        bakery(deploy_target="vm", python_version=case.python, **answers), tmp_path / SLUG
    )
    pins = lock(project, case.python) if case.locked else {}
    assert machine.boot() in ("running", "degraded")
    machine(f"mkdir /root/{SLUG}")
    machine.copy_in(project, f"/root/{SLUG}")
    if case.python_from_uv:
        provided = machine.provide_python(case.python, f"/opt/{SLUG}/python")

    # The first run writes the settings and stops; the README's next steps, then the real install.
    first = machine(INSTALL, check=False)
    assert (
        first.returncode == 1 and f"review /etc/{SLUG}/{SLUG}.env, then run this script again" in first.stdout
    )
    machine(f"echo HEALTH_CHECK_TIMEOUT={BUSY_HEALTH_CHECK_TIMEOUT} >> /etc/{SLUG}/{SLUG}.env")
    machine(CREATE_DATABASE)
    installed = machine(INSTALL)
    assert "==> serving on ports 8000 8001" in installed.stdout
    machine(ENABLE_SITE)

    # The release runs on the Python asked for: the distribution's, or the one uv installed.
    interpreter = machine(f"readlink -f /opt/{SLUG}/current/.venv/bin/python").stdout.strip()
    if case.python_from_uv:
        assert f"==> Python {case.python}: not in this distribution" in installed.stdout
        assert interpreter == machine(f"readlink -f {provided}").stdout.strip()
    else:
        assert interpreter == f"/usr/bin/python{case.python}"
    if case.locked:
        assert "==> dependencies from uv.lock" in installed.stdout
        shown = machine(
            f'/opt/{SLUG}/current/.venv/bin/python -c "import importlib.metadata as m; '
            "print(m.version('fastapi'), m.version('starlette'), m.version('sqlalchemy'))\""
        ).stdout.split()
        assert shown == [pins["fastapi"], pins["starlette"], pins["sqlalchemy"]]

    assert machine("systemctl --failed --no-legend --plain").stdout == ""
    assert ready(machine).status_code == 200, ready(machine).text
    migrated = machine.journal(f"{SLUG}-migrate")
    assert migrated.count("Running upgrade  -> 0001") == 1 and migrated.count("0001 -> 0002") == 1
    # gunicorn listens on loopback only: nginx is the one way in.
    sockets = [line.split() for line in machine("cat /proc/net/tcp /proc/net/tcp6").stdout.splitlines()]
    # So do the health checks of the worker and the scheduler.
    for port in (8000, 8001, WORKER_PORT, SCHEDULER_PORT) if case.worker else (8000, 8001):
        # Sockets listening (state 0A) on the port: their local addresses.
        local = [row[1] for row in sockets if row[1].endswith(f":{port:04X}") and row[3] == "0A"]
        assert local == [f"0100007F:{port:04X}"], local
    if case.worker:
        # Both started after the migrations, enabled for the next boot, and answering the app's own
        # check.
        for process, port in (("worker", WORKER_PORT), ("scheduler", SCHEDULER_PORT)):
            name = f"{SLUG}-{process}"
            assert f"==> {process} running, its health check on 127.0.0.1:{port}" in installed.stdout
            assert machine(f"systemctl is-active {name}; systemctl is-enabled {name}").stdout.split() == [
                "active",
                "enabled",
            ]
            machine(
                f"cd /opt/{SLUG}/current && runuser -u {SLUG} -- "
                f"env WORKER_HEALTH_PORT={port} .venv/bin/python -m app.jobs check"
            )
            machine(f"cd /root/{SLUG} && deploy/vm/wait-healthy {port}")
        assert f"Scheduler starting on queue {SLUG}:jobs" in worker_lines(machine, SCHEDULER)

    # The README's first admin (the password comes from the environment, not a prompt), then a
    # signed-in write through nginx.
    made = machine(
        f"systemd-run --pty --wait --collect --uid={SLUG} --working-directory=/opt/{SLUG}/current "
        f"--property=EnvironmentFile=/etc/{SLUG}/{SLUG}.env --setenv=ADMIN_PASSWORD='{ADMIN_PASSWORD}' "
        f"/opt/{SLUG}/current/.venv/bin/python -m app.auth create-admin --email {ADMIN_EMAIL}"
    )
    assert f"Created the admin {ADMIN_EMAIL}" in made.stdout, made.stdout + made.stderr
    token = log_in(f"http://{machine.address}", headers=HOST)["access_token"]
    written = httpx.post(
        f"http://{machine.address}/items",
        json={"name": "on the vm"},
        headers=HOST | {"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert written.status_code == 201, written.text
    if case.worker:
        # The item's job, queued by the server after its commit, run by the worker at the first
        # attempt. (SAQ's line names the task and queue, not its arguments.)
        finished = wait_for_worker_line(machine, f"Finished Job<function: item_created, queue: {SLUG}:jobs,")
        assert ", attempts: 1," in finished, finished

    # A restart of each server, one after the other as the README does it, fails no request.
    restarts = f"cd /root/{SLUG} && " + " && ".join(
        f"systemctl restart {SLUG}@{port} && deploy/vm/wait-healthy {port}" for port in (8000, 8001)
    )
    _, samples = under_traffic(machine, restarts)
    assert [s for s in samples if s.failed] == [] and len(samples) > 100

    # Running the installer again is an upgrade: a new release, no request failed, no new migration.
    upgraded, samples = under_traffic(machine, INSTALL)
    assert [s for s in samples if s.failed] == [] and len(samples) > 100
    assert "==> done: " in upgraded
    assert len(machine(f"ls /opt/{SLUG}/releases").stdout.split()) == 2
    assert machine.journal(f"{SLUG}-migrate").count("Running upgrade") == 2
    if case.worker:
        # The release restarted the worker and the scheduler, which stopped within their units' timeouts.
        assert worker_lines(machine).count(f"Worker starting on queue {SLUG}:jobs") == 2
        assert worker_lines(machine, SCHEDULER).count(f"Scheduler starting on queue {SLUG}:jobs") == 2
        assert "timed out" not in machine.journal(WORKER) + machine.journal(SCHEDULER)

    # The nightly backup, run now, and the README's restore into a dropped database.
    assert machine(f"systemctl is-enabled {SLUG}-backup.timer").stdout.strip() == "enabled"
    machine(f"systemctl start {SLUG}-backup")
    [dump] = machine(f"ls /var/backups/{SLUG}/*.dump").stdout.split()
    machine(f"sudo -u postgres psql --quiet --command 'DROP DATABASE {DATABASE} WITH (FORCE)'")
    restored = machine(f"cd /root/{SLUG} && deploy/vm/restore {dump}")
    assert f"the database {DATABASE} does not exist: creating it" in restored.stderr
    assert restored.stderr.endswith("restore: serving again\n"), restored.stderr
    # The worker and the scheduler stopped for the restore too, and started again after it.
    [stopping] = [line for line in restored.stderr.splitlines() if line.startswith("restore: stopping ")]
    assert (f"{WORKER}.service" in stopping) == case.worker, stopping
    assert (f"{SCHEDULER}.service" in stopping) == case.worker, stopping
    if case.worker:
        machine(f"cd /root/{SLUG} && deploy/vm/wait-healthy {WORKER_PORT} {SCHEDULER_PORT}")
        assert worker_lines(machine, SCHEDULER).count(f"Scheduler starting on queue {SLUG}:jobs") == 3
    items = machine(f'sudo -u postgres psql -d {DATABASE} -Atc "SELECT name FROM items"')
    assert items.stdout.split() == ["on", "the", "vm"], "the row written before the backup"
    units = [
        f"{SLUG}@8000",
        f"{SLUG}@8001",
        f"{SLUG}-backup.timer",
        *([WORKER, SCHEDULER] if case.worker else []),
    ]
    assert machine(f"systemctl is-active {' '.join(units)}").stdout.split() == ["active"] * len(units)
    assert ready(machine).status_code == 200

    # HTTPS as the README adds it: TLS 1.3, or 1.2 for an older client, and HSTS; HTTP redirects.
    # (TLS 1.0 and 1.1 are not probed: OpenSSL 3 at its default security level refuses them on
    # either end, so such a handshake would fail whatever the site allowed; the settings show it.)
    root = add_https_with_certbot(machine)
    version, head = tls_request(machine.address, root)
    assert version == "TLSv1.3" and head.startswith("HTTP/1.1 200"), head
    assert "strict-transport-security: max-age=31536000" in head.lower().splitlines()
    assert tls_request(machine.address, root, maximum=ssl.TLSVersion.TLSv1_2)[0] == "TLSv1.2"
    site = machine(f"cat /etc/nginx/sites-enabled/{SLUG}.conf").stdout
    assert "include /etc/letsencrypt/options-ssl-nginx.conf;" in site
    options = machine("cat /etc/letsencrypt/options-ssl-nginx.conf").stdout
    assert "\nssl_protocols TLSv1.2 TLSv1.3;\n" in options
    redirect = httpx.get(f"http://{machine.address}/health", headers=HOST, timeout=10)
    assert redirect.status_code == 301
    assert redirect.headers["location"] == "https://api.example.com/health"
