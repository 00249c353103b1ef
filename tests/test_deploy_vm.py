"""A VM: deploy/vm's systemd units, nginx site, supervisor program and install.sh,
and gunicorn.conf.py.

Every file goes through a real validator offline (systemd-analyze verify and
security, nginx -t and gixy, supervisor's own config loader, gunicorn
--check-config, shellcheck, and the project's own linters for gunicorn.conf.py).
The units' commands migrate a scratch database, serve, and run the background-job
worker and scheduler; install.sh installs, updates and rolls back in a mount
namespace with recorded stand-ins for systemctl and its friends.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest

from toolkit import nginx
from toolkit.bakery import TEMPLATE_DIR
from toolkit.deploy import (
    BIN,
    SLUG,
    assert_migrated,
    bake_group,
    fresh_database,
    on_this_machine,
    param,
    secret,
    shellcheck,
    unit_settings,
)
from toolkit.features import ALL_OFF, ALL_ON
from toolkit.processes import clean_env, free_port, run
from toolkit.servers import serving

GROUP = bake_group(deploy_target="vm")
WORKER_ANSWERS: dict[str, Any] = {"deploy_target": "vm", **ALL_ON}
WORKER_GROUP = bake_group(**WORKER_ANSWERS)
# "all-on" is the default bake: every feature but the worker, which is asked for.
VM = [
    param("all-on", deploy_target="vm"),
    param("with-worker", **WORKER_ANSWERS),
    param("all-off", deploy_target="vm", **ALL_OFF),
    param("socketio-without-redis", deploy_target="vm", use_redis=False),
]
WORKER_UNIT = f"{SLUG}-worker.service"
SCHEDULER_UNIT = f"{SLUG}-scheduler.service"
# What the web unit sets for its own process; everything else the worker's unit must repeat.
WEB_ONLY = (
    "Type",
    "NotifyAccess",
    "Environment",
    "ExecStart",
    "ExecReload",
    "KillMode",
    "TimeoutStopSec",
    "RestartSec",
)


def units(project: Path) -> list[str]:
    names = [f"{SLUG}@8000.service"]
    if (project / "deploy" / "vm" / "systemd" / f"{SLUG}-migrate.service").exists():
        names += [f"{SLUG}-migrate.service", f"{SLUG}-backup.service", f"{SLUG}-backup.timer"]
    if (project / "deploy" / "vm" / "systemd" / WORKER_UNIT).exists():
        names += [WORKER_UNIT, SCHEDULER_UNIT]
    return names


def unit_environment(settings: dict[str, list[str]]) -> dict[str, str]:
    return dict(item.partition("=")[::2] for item in settings.get("Environment", []))


def unit_section(path: Path, section: str) -> dict[str, str]:
    """One section's settings of a unit, the last value of each key."""
    found: dict[str, str] = {}
    current = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            current = line.strip()
        elif current == section and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


def default_grace_seconds(project: Path) -> int:
    """WORKER_SHUTDOWN_GRACE_SECONDS's default, from the project's settings."""
    settings = (project / "app" / "settings.py").read_text()
    grace = re.search(
        r"^\s*worker_shutdown_grace_seconds: int = Field\(default=(\d+)", settings, re.MULTILINE
    )
    assert grace, "no worker_shutdown_grace_seconds in app/settings.py"
    return int(grace.group(1))


def systemd_root(project: Path, tmp_path: Path) -> Path:
    """A root directory with the units installed where install.sh puts them."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    for unit in (project / "deploy" / "vm" / "systemd").iterdir():
        shutil.copy(unit, root / "etc" / "systemd" / "system" / unit.name)
    for executable in (
        f"opt/{SLUG}/current/.venv/bin/gunicorn",
        f"opt/{SLUG}/current/.venv/bin/python",
        f"opt/{SLUG}/current/scripts/migrate",
        f"opt/{SLUG}/current/deploy/vm/backup",
        "bin/kill",
    ):
        path = root / executable
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def vm_ports(project: Path) -> dict[str, list[int]]:
    """The ports each VM file expects the service on: nginx's upstream, install.sh and supervisor."""
    site = (project / "deploy" / "vm" / "nginx" / f"{SLUG}.conf").read_text()
    install = (project / "deploy" / "vm" / "install.sh").read_text()
    supervisor = supervisor_processes(project)
    ports = re.search(r"^PORTS=\(([\d ]+)\)$", install, re.MULTILINE)
    assert ports
    return {
        "nginx": [int(port) for port in re.findall(r"server 127\.0\.0\.1:(\d+)\b", site)],
        "install.sh": [int(port) for port in ports.group(1).split()],
        "supervisor": [int(process.environment["PORT"]) for process in supervisor],
    }


def supervisor_processes(project: Path) -> list[Any]:
    """The web servers' processes in the program file (see supervisor_groups)."""
    return supervisor_groups(project)[SLUG]


def supervisor_groups(project: Path) -> dict[str, list[Any]]:
    """The program file loaded by supervisor itself, its processes by group; only the user
    lookup is stood in for."""
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
    with_worker = (project / "deploy" / "vm" / "systemd" / WORKER_UNIT).exists()
    jobs = [f"{SLUG}-worker", f"{SLUG}-scheduler"]
    assert sorted(group.name for group in groups) == sorted([SLUG] + (jobs if with_worker else []))
    return {group.name: list(group.process_configs) for group in groups}


def health_ports(project: Path, process: str) -> dict[str, list[int]]:
    """Where each VM file expects the health check of `process` ("worker" or "scheduler"):
    its unit, its supervisor program, install.sh."""
    vm = project / "deploy" / "vm"
    install = re.search(rf"^{process.upper()}_PORT=(\d+)$", (vm / "install.sh").read_text(), re.MULTILINE)
    assert install, process
    unit = unit_settings(vm / "systemd" / f"{SLUG}-{process}.service")
    return {
        "unit": [int(unit_environment(unit)["WORKER_HEALTH_PORT"])],
        "supervisor": [
            int(program.environment["WORKER_HEALTH_PORT"])
            for program in supervisor_groups(project)[f"{SLUG}-{process}"]
        ],
        "install.sh": [int(install.group(1))],
    }


def gixy(site: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """gixy's findings on the site (as included by the wrapper)."""
    result = run([BIN / "gixy", "-f", "json", nginx.wrapper(site, tmp_path / "nginx")], tmp_path, check=False)
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    assert result.returncode == (1 if findings else 0), result.stderr
    return findings


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
    for unit in [name for name in units(project) if name.endswith(".service")]:
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

    # The worker: the servers' user, settings, restart policy and sandbox; its health check on
    # loopback, on a port of its own; a stop timeout past the jobs' grace period.
    with_worker = answers.get("use_worker", False)
    assert (vm / "systemd" / WORKER_UNIT).exists() == with_worker
    if with_worker:
        worker = unit_settings(vm / "systemd" / WORKER_UNIT)
        shared = {key: values for key, values in service.items() if key not in WEB_ONLY}
        assert {key: worker.get(key) for key in shared} == shared
        assert worker["Type"] == ["exec"]
        assert worker["ExecStart"] == [f"/opt/{SLUG}/current/.venv/bin/python -m app.jobs"]
        assert unit_environment(worker)["WORKER_HEALTH_HOST"] == "127.0.0.1"
        assert int(worker["TimeoutStopSec"][0]) >= default_grace_seconds(project) + 10
        after = unit_section(vm / "systemd" / WORKER_UNIT, "[Unit]")["After"].split()
        assert "redis-server.service" in after
        assert (f"{SLUG}-migrate.service" in after) == answers.get("use_postgres", True)
        assert unit_section(vm / "systemd" / WORKER_UNIT, "[Install]") == {"WantedBy": "multi-user.target"}
        # It leaves the scheduled jobs to the scheduler.
        assert unit_environment(worker)["WORKER_SCHEDULES"] == "false"

        # The scheduler: the worker's unit but for its command, its health check's port and
        # WORKER_SCHEDULES, which only workers read.
        scheduler = unit_settings(vm / "systemd" / SCHEDULER_UNIT)
        own = ("ExecStart", "Environment")
        assert {key: values for key, values in scheduler.items() if key not in own} == {
            key: values for key, values in worker.items() if key not in own
        }
        assert scheduler["ExecStart"] == [f"{worker['ExecStart'][0]} scheduler"]
        expected = unit_environment(worker) | {"WORKER_HEALTH_PORT": ANY}
        del expected["WORKER_SCHEDULES"]
        assert unit_environment(scheduler) == expected
        for section in ("[Unit]", "[Install]"):
            worker_section, scheduler_section = (
                {
                    key: value
                    for key, value in unit_section(vm / "systemd" / name, section).items()
                    if key != "Description"
                }
                for name in (WORKER_UNIT, SCHEDULER_UNIT)
            )
            assert scheduler_section == worker_section, section

        # One port for each health check everywhere, the two apart and clear of the servers'.
        found = {process: health_ports(project, process) for process in ("worker", "scheduler")}
        for ports in found.values():
            assert ports["unit"] == ports["supervisor"] == ports["install.sh"], found
        taken = [*vm_ports(project)["install.sh"], *found["worker"]["unit"], *found["scheduler"]["unit"]]
        assert len(set(taken)) == len(taken), found
    else:
        # Nothing of them where they were not asked for.
        for path in vm.rglob("*"):
            if path.is_file():
                words = ("app.jobs", "worker.service", "scheduler")
                assert not [word for word in words if word in path.read_text()], path

    # nginx: the site inside a minimal nginx.conf, as sites-enabled would include it.
    nginx.check(vm / "nginx" / f"{SLUG}.conf", tmp_path / "nginx")
    assert gixy(vm / "nginx" / f"{SLUG}.conf", tmp_path) == []
    site = (vm / "nginx" / f"{SLUG}.conf").read_text()
    assert ("/socket.io/" in site) == answers.get("use_socketio", True)
    assert ("ip_hash" in site) == (answers.get("use_socketio", True) and answers.get("use_redis", True))

    # One set of ports in nginx, install.sh and supervisor.
    ports = vm_ports(project)
    assert ports["nginx"] == ports["install.sh"] == ports["supervisor"], ports
    assert len(ports["nginx"]) == (2 if "ip_hash" in site else 1)

    scripts = ("install.sh", "wait-healthy", "backup", "restore")
    shellcheck(*[vm / name for name in scripts if (vm / name).exists()])

    # gunicorn: its own check, the worker class importable, the bind address. The app imports
    # the job queue's library when the worker is on: the release's dependencies then.
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
    assert config["bind"] == ["127.0.0.1:8123"]
    if answers.get("use_socketio", True):
        assert config["workers"] == 1

    # The project's own linters cover gunicorn.conf.py.
    lint_env = clean_env(MYPY_CACHE_DIR=str(tmp_path / ".mypy_cache"))
    bin_dir = venv / "bin"
    run([bin_dir / "ruff", "check", "--no-cache", "gunicorn.conf.py"], project, lint_env)
    run([bin_dir / "ruff", "format", "--check", "--no-cache", "gunicorn.conf.py"], project, lint_env)
    run([bin_dir / "mypy", "gunicorn.conf.py"], project, lint_env)
    run([bin_dir / "deptry", "."], project, lint_env)


@pytest.mark.xdist_group(GROUP)
def test_systemd_checks_fail_on_a_misspelt_setting(bakery: Any, tmp_path: Path) -> None:
    project = bakery(deploy_target="vm")
    root = systemd_root(project, tmp_path)
    unit = root / "etc" / "systemd" / "system" / f"{SLUG}@.service"
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))

    verify = run(
        ["systemd-analyze", "verify", f"--root={root}", f"{SLUG}@8000.service"], tmp_path, check=False
    )

    assert "ProtectSytem" in verify.stdout + verify.stderr


@pytest.mark.xdist_group(GROUP)
def test_nginx_checks_fail_on_a_broken_site(bakery: Any, tmp_path: Path) -> None:
    site = bakery(deploy_target="vm") / "deploy" / "vm" / "nginx" / f"{SLUG}.conf"
    broken = tmp_path / "broken.conf"

    # A location's add_header drops every security header of the server.
    broken.write_text(
        site.read_text().replace("    location / {\n", "    location / {\n        add_header X-Extra 1;\n")
    )
    assert "add_header_redefinition" in {finding["plugin"] for finding in gixy(broken, tmp_path)}
    broken.write_text(site.read_text().replace("server_tokens off;", "server_tokens off"))
    assert nginx.check(broken, tmp_path / "nginx", must_pass=False).returncode != 0


@pytest.mark.xdist_group(WORKER_GROUP)
def test_vm_worker_and_scheduler_run_with_their_units_commands(
    bakery: Any, venv: Path, services: dict[str, str], tmp_path: Path
) -> None:
    project = bakery(**WORKER_ANSWERS)
    systemd = project / "deploy" / "vm" / "systemd"
    process_units = {
        process: unit_settings(systemd / f"{SLUG}-{process}.service") for process in ("worker", "scheduler")
    }
    programs = supervisor_groups(project)
    for process, unit in process_units.items():
        [exec_start] = unit["ExecStart"]
        [program] = programs[f"{SLUG}-{process}"]
        # supervisor runs the very command systemd runs, from the same directory, with the same settings.
        assert (program.command, program.directory) == (exec_start, f"/opt/{SLUG}/current"), process
        assert program.environment == unit_environment(unit), process
        assert program.stopwaitsecs == int(unit["TimeoutStopSec"][0]), process

    # The settings file both read; a run every second, so that the scheduler queues one at once.
    # Its own queue: tests run side by side on this machine.
    settings = {"ENVIRONMENT": "production", "SECRET_KEY": secret(), "REDIS_URL": services["REDIS_URL"]}
    settings |= {"CACHE_KEY_PREFIX": f"vm-test-{free_port()}:", "JOBS_CLEANUP_CRON": "* * * * * *"}
    python = venv / "bin" / "python"
    with fresh_database(venv, project, services) as database, contextlib.ExitStack() as stack:
        settings["DATABASE_URL"] = database
        # Migrated first, as the units' ordering has it on the VM.
        migrate = unit_settings(systemd / f"{SLUG}-migrate.service")
        path = unit_environment(migrate)["PATH"]
        migrate_env = clean_env(**settings, PATH=on_this_machine(path, project, venv))
        run(shlex.split(on_this_machine(migrate["ExecStart"][0], project, venv)), project, migrate_env)
        started: dict[str, subprocess.Popen[bytes]] = {}
        envs: dict[str, dict[str, str]] = {}
        for process, unit in process_units.items():
            # Another port for each here, for the same reason.
            port = free_port()
            envs[process] = clean_env(**settings | unit_environment(unit) | {"WORKER_HEALTH_PORT": str(port)})
            command = shlex.split(on_this_machine(unit["ExecStart"][0], project, venv))
            health = f"http://127.0.0.1:{port}/health"
            started[process] = stack.enter_context(
                serving(command, project, envs[process], health, tmp_path / f"{process}.log")
            )
            # The check the README gives, with the same settings; the health check on loopback only.
            run([python, "-m", "app.jobs", "check"], project, envs[process])
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://[::1]:{port}/health", timeout=5)

        # The worker, which schedules nothing itself, runs what the scheduler queues
        # (every second; the margin is for a loaded CI machine).
        deadline = time.monotonic() + 30
        while "nightly_cleanup for " not in (tmp_path / "worker.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
            time.sleep(0.2)

        # Idle, each stops well within its unit's stop timeout.
        for process in ("scheduler", "worker"):
            begun = time.monotonic()
            started[process].send_signal(signal.SIGTERM)
            started[process].wait(timeout=int(process_units[process]["TimeoutStopSec"][0]))
            assert time.monotonic() - begun < default_grace_seconds(project), process

    logs = {process: (tmp_path / f"{process}.log").read_text() for process in process_units}
    messages = {
        process: [json.loads(line)["message"] for line in log.splitlines() if line.startswith("{")]
        for process, log in logs.items()
    }
    for process, starting in (("worker", "Worker starting"), ("scheduler", "Scheduler starting")):
        assert any(message.startswith(starting) for message in messages[process]), logs[process]
    # The scheduler queued the runs and ran none; the worker queued none.
    queued = "Enqueuing Job<function: nightly_cleanup"
    assert any(message.startswith(queued) for message in messages["scheduler"]), logs["scheduler"]
    assert not any(message.startswith(queued) for message in messages["worker"]), logs["worker"]
    assert not any(message.startswith("Processing") for message in messages["scheduler"]), logs["scheduler"]
    assert not any(message.startswith("Error processing") for message in messages["worker"]), logs["worker"]


@pytest.mark.parametrize(
    "answers", [param("all-on", deploy_target="vm"), param("all-off", deploy_target="vm", **ALL_OFF)]
)
def test_vm_migrates_and_serves_with_the_units_commands(
    bakery: Any, venv: Path, services: dict[str, str], answers: dict[str, Any], tmp_path: Path
) -> None:
    project = bakery(**answers)
    python = venv / "bin" / "python"
    postgres = answers.get("use_postgres", True)
    env = {"ENVIRONMENT": "production", "SECRET_KEY": secret()}
    if answers.get("use_redis", True):
        env["REDIS_URL"] = services["REDIS_URL"]
    # The default project's own helper makes the database: a bare bake has none.
    scratch = fresh_database(venv, bakery(), services) if postgres else contextlib.nullcontext("")
    with scratch as database:
        if database:
            env["DATABASE_URL"] = database
            migrate = unit_settings(project / "deploy" / "vm" / "systemd" / f"{SLUG}-migrate.service")
            assert migrate["Type"] == ["oneshot"]
            path = dict(item.partition("=")[::2] for item in migrate["Environment"])["PATH"]
            migrate_env = clean_env(**env, PATH=on_this_machine(path, project, venv))
            run(shlex.split(on_this_machine(migrate["ExecStart"][0], project, venv)), project, migrate_env)
            assert_migrated(python, project, migrate_env)

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
            # Loopback IPv4 only (nginx's upstream): not even ::1 reaches it.
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://[::1]:{port}/health", timeout=5)
            ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
            assert ready.status_code == 200, ready.text
            if postgres:
                assert ready.json()["checks"]["database"]["status"] == "ok"
        log = (tmp_path / "gunicorn.log").read_text()
        assert "uvicorn_worker.UvicornWorker" in log or "Using worker: uvicorn_worker.UvicornWorker" in log


# --- install.sh ------------------------------------------------------------------

SANDBOX = """\
set -euo pipefail
sandbox=$1
shift
mount --bind "$sandbox/opt" /opt
mount --bind "$sandbox/nginx-logs" /var/log/nginx
mount --bind "$sandbox/backups" /var/backups
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


# Stands in for uv: its calls are recorded, and a virtualenv it makes holds the
# fake interpreter below.
FAKE_UV = """\
#!/bin/sh
printf '%s\\n' "uv $*" >> "$CALLS"
case "$1" in
--version) echo "uv $UV_VERSION" ;;
python) [ "$2" != find ] || echo "$FAKE_PYTHON" ;;
venv) for last; do :; done; mkdir -p "$last/bin" && cp "$FAKE_PYTHON" "$last/bin/python" ;;
sync) mkdir -p .venv/bin && cp "$FAKE_PYTHON" .venv/bin/python ;;
esac
"""

# The release's interpreter: the health check is recorded, everything else runs for real.
FAKE_PYTHON = """\
#!/bin/sh
case "$1" in
-) printf '%s\\n' "python $*" >> "$CALLS"; exit 0 ;;
esac
exec {python} "$@"
"""


def uv_version() -> str:
    """The uv release the template's Dockerfile pins."""
    dockerfile = (TEMPLATE_DIR / "Dockerfile").read_text()
    return re.search(r"\buv==([\w.]+)", dockerfile).group(1)  # type: ignore[union-attr]


class Installer:
    """Runs deploy/vm/install.sh as root in a mount namespace: /opt, /etc (an overlay)
    and nginx's logs are scratch copies; systemctl, supervisorctl, useradd and runuser
    are recorded stand-ins; nginx -t is the real one, on the installed site."""

    def __init__(self, project: Path, venv: Path, tmp_path: Path) -> None:
        self.project, self.root = project, tmp_path / "sandbox"
        for name in ("opt", "etc", "etc-work", "nginx-logs", "backups", "bin"):
            (self.root / name).mkdir(parents=True)
        for name in ("systemctl", "supervisorctl", "useradd", "runuser"):
            (self.root / "bin" / name).write_text(STUB)
            (self.root / "bin" / name).chmod(0o755)
        self.python = self.root / "bin" / "fake-python"
        self.python.write_text(FAKE_PYTHON.format(python=venv / "bin" / "python"))
        self.python.chmod(0o755)
        # Where install.sh keeps uv: already the version it asks for, so it installs none.
        uv = self.root / "opt" / SLUG / "uv" / "bin" / "uv"
        uv.parent.mkdir(parents=True)
        uv.write_text(FAKE_UV)
        uv.chmod(0o755)
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
                # The system's directories only: no python3.12 there, which uv then installs.
                PATH=os.pathsep.join([str(self.root / "bin"), "/usr/sbin", "/usr/bin", "/sbin", "/bin"]),
                FAKE_PYTHON=str(self.python),
                UV_VERSION=uv_version(),
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


@pytest.mark.xdist_group(GROUP)
def test_vm_install_script_installs_updates_and_rolls_back(bakery: Any, venv: Path, tmp_path: Path) -> None:
    project = shutil.copytree(bakery(deploy_target="vm"), tmp_path / SLUG)
    install = Installer(project, venv, tmp_path)
    etc = install.root / "etc"
    script = (project / "deploy" / "vm" / "install.sh").read_text()
    assert f"\nUV_VERSION={uv_version()}\n" in script, "the same uv as the Dockerfile's"
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

    # A first install whose migration fails leaves nothing half-made and says so.
    install.fail_flag.write_text("")
    failed_first = install(expect=1)
    assert "nothing is serving yet" in failed_first.stderr
    assert install.releases == [] and not os.path.lexists(install.root / "opt" / SLUG / "current")
    assert not [call for call in install.calls if "restart" in call]
    install.fail_flag.unlink()

    # Second run: a release, migrated before the servers restart one by one.
    install()
    assert install.releases == [install.current]
    release = install.root / "opt" / SLUG / "releases" / install.current
    assert os.readlink(release / ".env") == f"/etc/{SLUG}/{SLUG}.env"
    assert (release / "app" / "main.py").exists() and not (release / ".git").exists()
    calls = install.calls
    assert not [call for call in calls if call.startswith("useradd")]
    # No python3.12 on this PATH: uv installs it, and the release's virtualenv is made with it.
    assert calls.index("uv python install --quiet --no-bin 3.12") < calls.index(
        f"uv venv --quiet --python {install.python} /opt/{SLUG}/releases/{install.current}/.venv"
    )
    release_dir = f"/opt/{SLUG}/releases/{install.current}"
    pip_install = f"uv pip install --quiet --compile-bytecode --python {release_dir}/.venv/bin/python"
    assert f"{pip_install} {release_dir}" in calls
    migrate = calls.index(f"systemctl start {SLUG}-migrate.service")
    assert calls.index("systemctl daemon-reload") < migrate < calls.index(restarts[0])
    assert calls.index(restarts[0]) < calls.index("python - 8000") < calls.index(restarts[1])
    assert calls[-1] == "systemctl reload nginx"
    assert calls.index(restarts[-1]) < calls.index(f"systemctl enable --quiet --now {SLUG}-backup.timer")
    backups = (install.root / "backups" / SLUG).stat()
    assert (backups.st_uid, backups.st_mode & 0o777) == (10001, 0o700)
    assert (etc / "systemd" / "system" / f"{SLUG}@.service").exists()
    site = etc / "nginx" / "sites-available" / f"{SLUG}.conf"
    assert (
        os.readlink(etc / "nginx" / "sites-enabled" / f"{SLUG}.conf")
        == f"/etc/nginx/sites-available/{SLUG}.conf"
    )

    # An update keeps the settings and a site certbot has edited; a committed lock file is
    # what its virtualenv holds, exactly.
    site.write_text(site.read_text() + "# managed by Certbot\n")
    (project / "uv.lock").write_text("# a lock file\n")
    update = install()
    sync = "uv sync --quiet --frozen --no-dev --no-editable --compile-bytecode"
    assert f"{sync} --python {install.python}" in install.calls
    assert (etc / SLUG / f"{SLUG}.env").read_text() == settings
    assert site.read_text().endswith("# managed by Certbot\n")
    assert "differs" in update.stdout
    assert "systemctl reload nginx" not in install.calls, "no reload: it would drop idle client connections"
    assert len(install.releases) == 2 and install.current == install.releases[-1]

    # A failed migration leaves the previous release current and the servers alone.
    serving_release = install.current
    install.fail_flag.write_text("")
    failed = install(expect=1)
    assert f"still serving {serving_release}" in failed.stderr
    assert install.current == serving_release and len(install.releases) == 2
    assert not [call for call in install.calls if "restart" in call]
    install.fail_flag.unlink()

    # Rollback: the release before the current one, servers restarted.
    install("--rollback")
    assert install.current == install.releases[-2]
    assert [call for call in install.calls if "restart" in call] == restarts

    # Old releases are pruned, never the current one.
    install(KEEP_RELEASES="2")
    assert len(install.releases) == 2 and install.current == install.releases[-1]


@pytest.mark.xdist_group(GROUP)
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
    assert migrate < calls.index(f"supervisorctl restart {SLUG}:*") < calls.index("python - 8000 8001")
    assert not [call for call in calls if call.startswith("systemctl") and "nginx" not in call]


@pytest.mark.xdist_group(WORKER_GROUP)
def test_vm_install_script_restarts_the_worker_and_the_scheduler(
    bakery: Any, venv: Path, tmp_path: Path
) -> None:
    project = shutil.copytree(bakery(**WORKER_ANSWERS), tmp_path / SLUG)
    install = Installer(project, venv, tmp_path)
    install(expect=1)
    settings = (install.root / "etc" / SLUG / f"{SLUG}.env").read_text()
    # Their health checks' addresses and the worker's WORKER_SCHEDULES stay in their units: the
    # file's settings would win over them.
    assert "# WORKER_CONCURRENCY=10" in settings
    assert not re.search(r"^#? ?WORKER_(HEALTH|SCHEDULES)", settings, re.MULTILINE), settings
    restart_worker = f"systemctl restart {SLUG}-worker.service"
    restart_scheduler = f"systemctl restart {SLUG}-scheduler.service"
    servers = [f"systemctl restart {SLUG}@8000.service", f"systemctl restart {SLUG}@8001.service"]

    # After the migrations, the worker, then the scheduler, then the servers, each waited for on
    # its health check.
    installed = install()
    calls = install.calls
    for name in (WORKER_UNIT, SCHEDULER_UNIT):
        unit = install.root / "etc" / "systemd" / "system" / name
        assert unit.read_text() == (project / "deploy" / "vm" / "systemd" / name).read_text()
    migrate = calls.index(f"systemctl start {SLUG}-migrate.service")
    assert calls.index("systemctl daemon-reload") < migrate < calls.index(restart_worker)
    assert calls.index(f"systemctl enable --quiet {SLUG}-worker.service") < calls.index(restart_worker)
    assert calls.index(f"systemctl enable --quiet {SLUG}-scheduler.service") < calls.index(restart_scheduler)
    order = [restart_worker, "python - 8100", restart_scheduler, "python - 8101", servers[0]]
    assert [calls.index(call) for call in order] == sorted(calls.index(call) for call in order), calls
    assert "==> worker running, its health check on 127.0.0.1:8100" in installed.stdout
    assert "==> scheduler running, its health check on 127.0.0.1:8101" in installed.stdout

    # A rollback runs the previous release's code in the worker and the scheduler too.
    install()
    install("--rollback")
    assert [call for call in install.calls if "restart" in call] == [
        restart_worker,
        restart_scheduler,
        *servers,
    ]

    # Under supervisor: their programs next to the servers', restarted first the same way.
    supervised = Installer(project, venv, tmp_path / "supervisor")
    supervised("--supervisor", expect=1)
    supervised("--supervisor")
    program = (supervised.root / "etc" / "supervisor" / "conf.d" / f"{SLUG}.conf").read_text()
    assert f"[program:{SLUG}-worker]" in program and f"[program:{SLUG}-scheduler]" in program
    calls = supervised.calls
    assert f"supervisorctl update {SLUG} {SLUG}-worker {SLUG}-scheduler" in calls
    order = [
        f"supervisorctl restart {SLUG}-worker:*",
        "python - 8100",
        f"supervisorctl restart {SLUG}-scheduler:*",
        "python - 8101",
        f"supervisorctl restart {SLUG}:*",
    ]
    assert [calls.index(call) for call in order] == sorted(calls.index(call) for call in order), calls
    assert not [call for call in calls if call.startswith("systemctl") and "nginx" not in call]
