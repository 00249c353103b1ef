"""podman (buildah underneath), the second builder: it accepts the BuildKit
Dockerfile features the classic builder refuses, as the platforms' builders do.

Its storage lives under the test cache, apart from the system's; base images
come from the Docker daemon (`docker save | podman load`), since no registry
is reachable.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit import cache_dir
from toolkit.docker import Docker
from toolkit.images import label_template
from toolkit.locks import locked

# runc and cgroupfs: the defaults (crun, systemd) are not usable on these machines.
GLOBAL_FLAGS = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
# The machine's hard limits are below podman's default ulimits. `--format
# docker` keeps HEALTHCHECK, which the OCI image format has no field for.
BUILD_FLAGS = (
    "--network", "host", "--pull=never", "--format", "docker",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
)  # fmt: skip


@dataclass(frozen=True)
class Podman:
    argv: tuple[str, ...]

    def __call__(
        self, *args: str | Path, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.argv, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(map(str, args))} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-8000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
            )
        return result


def unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"podman builds run on Linux only (this is {sys.platform})"
    for tool in ("podman", "runc"):
        if not shutil.which(tool):
            return f"{tool} not found: apt-get install podman runc"
    return None


def connect(root: Path | None = None) -> Podman:
    root = root or cache_dir() / "podman"
    # podman refuses a runroot longer than 50 characters; it holds only
    # runtime state, so a short directory under /tmp, named after the storage, serves.
    runroot = Path(tempfile.gettempdir()) / f"podman-{hashlib.sha256(bytes(root)).hexdigest()[:12]}"
    storage = ("--root", str(root / "storage"), "--runroot", str(runroot))
    return Podman((shutil.which("podman") or "podman", *GLOBAL_FLAGS, *storage))


def copy_from_docker(docker: Docker, podman: Podman, tag: str) -> None:
    """Give podman the Docker daemon's `tag`, unless it has the same one (same inputs label)."""
    template = label_template()
    wanted = docker("image", "inspect", "--format", template, tag).stdout.strip()
    with locked(cache_dir() / "podman" / "load.lock"):
        have = podman("image", "inspect", "--format", template, tag, check=False)
        if have.returncode == 0 and have.stdout.strip() == wanted and wanted:
            return
        save = subprocess.Popen(docker.argv("save", tag), env=docker.env, stdout=subprocess.PIPE)
        load = subprocess.run([*podman.argv, "load"], stdin=save.stdout, capture_output=True, text=True)
        assert save.stdout is not None
        save.stdout.close()
        if save.wait() != 0 or load.returncode != 0:
            raise RuntimeError(f"docker save {tag} | podman load failed: {load.stderr[-4000:]}")


def build(podman: Podman, context: Path, tag: str, *extra: str) -> tuple[float, str]:
    """`podman build`; (seconds, output)."""
    started = time.monotonic()
    result = podman("build", *BUILD_FLAGS, "--tag", tag, *extra, context, timeout=1200)
    return time.monotonic() - started, result.stdout + result.stderr
