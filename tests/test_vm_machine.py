"""The VM target installed for real: `deploy/vm/install.sh` on fresh Debian 12 and
Debian 13 machines with systemd as PID 1 (toolkit.machines), following the
generated README's steps as root: the first run that writes the settings, the
database and its user, the second run that installs and starts, the nginx
site. Then, under steady traffic through nginx, a restart of each server unit
and a second install (an upgrade) fail no request; the nightly backup unit
writes a dump that `deploy/vm/restore` puts back into a dropped database.

Each suite uses the Python it ships (3.11 on Debian 12, 3.13 on Debian 13), as
the README's `apt install` line does. Not covered: a Python the distribution
lacks (the README's uv step downloads one, which these machines cannot), ufw
(no firewall inside a container), certbot and a real domain, and
`PrivateUsers=` (systemd cannot set up user namespaces inside these
containers: a drop-in turns only that setting off; `systemd-analyze security`
in test_deploy_vm.py still checks the real units).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from toolkit.auth import ADMIN_EMAIL, ADMIN_PASSWORD, log_in
from toolkit.docker import Docker
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
)
# The README's database step, as a root shell runs it.
CREATE_DATABASE = f"""
DB_PASSWORD=$(sudo sed -n 's|^DATABASE_URL=postgresql://[^:]*:\\([^@]*\\)@.*|\\1|p' /etc/{SLUG}/{SLUG}.env)
sudo -u postgres psql --command "CREATE ROLE {DATABASE} LOGIN PASSWORD '$DB_PASSWORD'"
sudo -u postgres createdb --owner {DATABASE} {DATABASE}
"""
# The README's nginx step, for the domain the site already names.
ENABLE_SITE = "sudo rm -f /etc/nginx/sites-enabled/default && sudo nginx -t && sudo systemctl reload nginx"
INSTALL = f"cd /root/{SLUG} && deploy/vm/install.sh"

pytestmark = pytest.mark.containers


def suite_params() -> list[Any]:
    return [
        pytest.param(suite, id=f"debian-{suite}", marks=pytest.mark.xdist_group(f"vm-{suite}"))
        for suite in PYTHONS
    ]


@pytest.fixture
def machine(docker: Docker, request: pytest.FixtureRequest) -> Iterator[Machine]:
    suite = request.node.callspec.params["suite"]
    started = Machine(docker, machine_image(docker, suite), without_private_users=PRIVATE_USERS)
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


@pytest.mark.parametrize("suite", suite_params())
def test_the_readme_installs_the_service_on_a_fresh_debian_machine(
    bakery: Any, machine: Machine, tmp_path: Path, suite: str
) -> None:
    project = shutil.copytree(bakery(deploy_target="vm", python_version=PYTHONS[suite]), tmp_path / SLUG)
    assert machine.boot() in ("running", "degraded")
    machine(f"mkdir /root/{SLUG}")
    machine.copy_in(project, f"/root/{SLUG}")

    # The first run writes the settings and stops; the README's next steps, then the real install.
    first = machine(INSTALL, check=False)
    assert (
        first.returncode == 1 and f"review /etc/{SLUG}/{SLUG}.env, then run this script again" in first.stdout
    )
    machine(CREATE_DATABASE)
    installed = machine(INSTALL)
    assert "==> serving on ports 8000 8001" in installed.stdout
    machine(ENABLE_SITE)

    assert machine("systemctl --failed --no-legend --plain").stdout == ""
    assert ready(machine).status_code == 200, ready(machine).text
    migrated = machine.journal(f"{SLUG}-migrate")
    assert migrated.count("Running upgrade  -> 0001") == 1 and migrated.count("0001 -> 0002") == 1
    # gunicorn listens on loopback only: nginx is the one way in.
    sockets = [line.split() for line in machine("cat /proc/net/tcp /proc/net/tcp6").stdout.splitlines()]
    for port in (8000, 8001):
        # Sockets listening (state 0A) on the port: their local addresses.
        local = [row[1] for row in sockets if row[1].endswith(f":{port:04X}") and row[3] == "0A"]
        assert local == [f"0100007F:{port:04X}"], local

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

    # A restart of each server, one after the other, fails no request.
    restarts = f"systemctl restart {SLUG}@8000 && sleep 2 && systemctl restart {SLUG}@8001 && sleep 2"
    _, samples = under_traffic(machine, restarts)
    assert [s for s in samples if s.failed] == [] and len(samples) > 100

    # Running the installer again is an upgrade: a new release, no request failed, no new migration.
    upgraded, samples = under_traffic(machine, INSTALL)
    assert [s for s in samples if s.failed] == [] and len(samples) > 100
    assert "==> done: " in upgraded
    assert len(machine(f"ls /opt/{SLUG}/releases").stdout.split()) == 2
    assert machine.journal(f"{SLUG}-migrate").count("Running upgrade") == 2

    # The nightly backup, run now, and the README's restore into a dropped database.
    assert machine(f"systemctl is-enabled {SLUG}-backup.timer").stdout.strip() == "enabled"
    machine(f"systemctl start {SLUG}-backup")
    [dump] = machine(f"ls /var/backups/{SLUG}/*.dump").stdout.split()
    machine(f"sudo -u postgres psql --quiet --command 'DROP DATABASE {DATABASE} WITH (FORCE)'")
    restored = machine(f"cd /root/{SLUG} && deploy/vm/restore {dump}")
    assert f"the database {DATABASE} does not exist: creating it" in restored.stderr
    items = machine(f'sudo -u postgres psql -d {DATABASE} -Atc "SELECT name FROM items"')
    assert items.stdout.split() == ["on", "the", "vm"], "the row written before the backup"
    assert (
        machine(f"systemctl is-active {SLUG}@8000 {SLUG}@8001 {SLUG}-backup.timer").stdout.split()
        == ["active"] * 3
    )
    assert ready(machine).status_code == 200
