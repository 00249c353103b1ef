"""A Docker Engine of the tests' own: start it, talk to it, stop it.

No service manager runs dockerd here, so it is started by hand with the flags
this machine needs, on a socket and a data root under the test cache: images
built by one run are still there for the next. pytest-xdist workers, and CI's
own `start`, may ask at once: a file lock makes starting idempotent, and the
last test session using a daemon that a test session started stops it.

    python -m toolkit.docker start   # prints "started" or "running"
    python -m toolkit.docker stop
    eval "$(python -m toolkit.docker env)"
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit import cache_dir
from toolkit.locks import locked

# Docker's default ulimits exceed this machine's hard limits: without these
# flags every container fails with "error setting rlimit".
DAEMON_FLAGS = ("--default-ulimit", "nofile=1024:1024", "--default-ulimit", "nproc=4096:4096")
# The API of Debian's docker.io 20.10, pinned when only a newer client is found.
DAEMON_API = "1.41"
START_TIMEOUT = 90
STOP_TIMEOUT = 30
# A unix socket's path may not pass 107 bytes.
MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class Paths:
    """Where one daemon keeps its socket, images, runtime state and log."""

    root: Path

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "run"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def owner(self) -> Path:
        """Who started the running daemon: "cli" (CI, a person) or "pytest"."""
        return self.root / "owner"

    @property
    def start_lock(self) -> Path:
        return self.root / "start.lock"

    @property
    def users_lock(self) -> Path:
        """Held shared by every test session using the daemon."""
        return self.root / "users.lock"


def paths(root: Path | None = None) -> Paths:
    return Paths(root or cache_dir() / "docker")


def unavailable() -> str | None:
    """Why this machine cannot run the daemon, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"Docker Engine runs on Linux only (this is {sys.platform})"
    if os.geteuid() != 0:
        return "dockerd must run as root here (no rootless setup)"
    if not shutil.which("dockerd"):
        return "dockerd not found: apt-get install docker.io"
    if not _clients():
        return "no docker CLI found: apt-get install docker.io"
    return None


def _version(executable: str | Path) -> str:
    """'20.10.24+dfsg1' from 'Docker version 20.10.24+dfsg1, build 5d6db84'."""
    output = subprocess.run([str(executable), "--version"], capture_output=True, text=True).stdout
    found = re.search(r"version (\S+?),", output)
    return found.group(1) if found else ""


def _clients() -> list[Path]:
    """Every `docker` on PATH, in PATH order."""
    found: list[Path] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / "docker"
        if os.access(candidate, os.X_OK) and candidate.resolve() not in [c.resolve() for c in found]:
            found.append(candidate)
    return found


@functools.cache
def client() -> tuple[str, dict[str, str]]:
    """The docker CLI to call, and the environment it needs beyond DOCKER_HOST.

    A newer client (such as one in /usr/local/bin) builds with BuildKit by
    default, which needs buildx, and speaks a newer API: prefer the client of
    the daemon's own version, else pin the daemon's API version.
    """
    clients = _clients()
    wanted = _version(shutil.which("dockerd") or "dockerd")
    for candidate in clients:
        if _version(candidate) == wanted:
            return str(candidate), {}
    return str(clients[0]), {"DOCKER_API_VERSION": DAEMON_API}


@dataclass(frozen=True)
class Docker:
    """The docker CLI, pointed at one daemon."""

    executable: str
    env: dict[str, str]

    def argv(self, *args: str | Path) -> list[str]:
        return [self.executable, *map(str, args)]

    def __call__(
        self,
        *args: str | Path,
        check: bool = True,
        timeout: float = 600,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `docker ARGS`; on failure (when `check`), raise with its output."""
        result = subprocess.run(
            self.argv(*args),
            env=self.env | (env or {}),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(map(str, args))} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-8000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
            )
        return result


def connect(where: Paths | None = None) -> Docker:
    """A CLI for the daemon at `where` (it need not be running yet)."""
    where = where or paths()
    executable, extra = client()
    env = os.environ | extra | {"DOCKER_HOST": f"unix://{where.socket}"}
    return Docker(executable, env)


def running(where: Paths | None = None) -> bool:
    docker = connect(where)
    with contextlib.suppress(subprocess.TimeoutExpired):
        return docker("version", "--format", "{{.Server.Version}}", check=False, timeout=15).returncode == 0
    return False


def _daemon_pid(where: Paths) -> int | None:
    """The pid in the pidfile, if that process is a live dockerd (never another program)."""
    try:
        pid = int(where.pidfile.read_text().strip())
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if comm == "dockerd" else None


def start(where: Paths | None = None, owner: str = "cli") -> bool:
    """Start the daemon unless it answers already; True when this call started it."""
    where = where or paths()
    if len(str(where.socket)) > MAX_SOCKET_PATH:
        raise RuntimeError(f"{where.socket} is too long for a unix socket; set XDG_CACHE_HOME shorter")
    with locked(where.start_lock):
        if running(where):
            return False
        # A dockerd that holds the pidfile but does not answer is hung: replace it.
        _terminate(where)
        where.data_root.mkdir(parents=True, exist_ok=True)
        where.exec_root.mkdir(parents=True, exist_ok=True)
        with where.log.open("ab") as log:
            process = subprocess.Popen(
                [
                    shutil.which("dockerd") or "dockerd",
                    "--host",
                    f"unix://{where.socket}",
                    "--data-root",
                    str(where.data_root),
                    "--exec-root",
                    str(where.exec_root),
                    "--pidfile",
                    str(where.pidfile),
                    *DAEMON_FLAGS,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: it outlives the command that started it (CI's `start`).
                start_new_session=True,
            )
        where.owner.write_text(owner)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if running(where):
                return True
            if process.poll() is not None:
                raise RuntimeError(f"dockerd exited {process.returncode}:\n{_tail(where.log)}")
            time.sleep(0.5)
        process.kill()
        raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT} s:\n{_tail(where.log)}")


def stop(where: Paths | None = None) -> None:
    """Stop the daemon of `where`, if one runs (its containers stop with it)."""
    where = where or paths()
    with locked(where.start_lock):
        _terminate(where)
        _unmount_leftovers(where)
        where.owner.unlink(missing_ok=True)


def _unmount_leftovers(where: Paths) -> None:
    """dockerd leaves its network namespace mounted under the exec root when it
    stops; unmounted, the cache directory can be deleted like any other."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        mountpoint = line.split()[1]
        if mountpoint.startswith(f"{where.exec_root}/"):
            subprocess.run(["umount", mountpoint], capture_output=True, check=False)


def _terminate(where: Paths) -> None:
    pid = _daemon_pid(where)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.2)


def _alive(pid: int) -> bool:
    # Reap it first if this process started it, or it lingers as a zombie.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False


def _tail(path: Path, size: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-size:]
    return ""


@contextlib.contextmanager
def session(where: Paths | None = None, owner: str = "pytest") -> Iterator[Docker]:
    """The daemon, started if needed, for as long as the block runs.

    Every session holds a shared lock meanwhile; the last one out stops the
    daemon if a test session started it, never one that CI or a person started.
    """
    where = where or paths()
    where.root.mkdir(parents=True, exist_ok=True)
    with where.users_lock.open("a") as users:
        # Shared before starting: a session ending now cannot stop it under us.
        fcntl.flock(users, fcntl.LOCK_SH)
        start(where, owner)
        try:
            yield connect(where)
        finally:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass
            else:
                if where.owner.exists() and where.owner.read_text() == owner:
                    stop(where)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.docker", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "env", "status"])
    command = parser.parse_args(argv).command
    where = paths()
    if command == "start":
        reason = unavailable()
        if reason:
            print(reason, file=sys.stderr)
            return 1
        print("started" if start(where, owner="cli") else "running")
    elif command == "stop":
        stop(where)
    elif command == "env":
        docker = connect(where)
        print(f"export DOCKER_HOST={docker.env['DOCKER_HOST']}")
        if "DOCKER_API_VERSION" in docker.env:
            print(f"export DOCKER_API_VERSION={docker.env['DOCKER_API_VERSION']}")
    else:
        up = running(where)
        print("running" if up else "stopped")
        return 0 if up else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
