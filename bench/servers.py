"""The uvicorn processes the benchmark drives, and what it reads of them from /proc."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench.config import SERVER_OPTIONS
from toolkit.processes import free_port


class Pinning:
    """Server processes on one CPU, load generators on another (when there are two)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None

    def server(self) -> list[str]:
        return ["taskset", "-c", "0"] if self.enabled else []

    def client(self) -> list[str]:
        return ["taskset", "-c", "1"] if self.enabled else []


def http_status(
    port: int, path: str = "/health", timeout: float = 1.0, headers: tuple[str, ...] = ()
) -> int | None:
    """The status of one GET, on a fresh connection; None when nothing answers."""
    extra = "".join(f"{header}\r\n" for header in headers)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n".encode()
            )
            return int(sock.recv(64).split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    """CPU time the threads of a process have used so far, to the nanosecond.

    From each thread's schedstat, not the process's stat: that counts in clock
    ticks (10 ms), and a smoke run's server can use less than one in a target.
    """
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Server:
    """One uvicorn process serving `target` from `cwd`."""

    def __init__(
        self,
        name: str,
        target: str,
        python: Path,
        cwd: Path,
        env: dict[str, str],
        logs: Path,
        pinning: Pinning,
        extra: list[str] | None = None,
        health: str = "/health",
    ) -> None:
        self.name = name
        self.health = health
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [
            *pinning.server(),
            str(python),
            "-m",
            "uvicorn",
            target,
            "--port",
            str(self.port),
            *SERVER_OPTIONS,
            *(extra or []),
        ]
        self.cwd = cwd
        self.env = env
        self.log = logs / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        with self.log.open("ab") as output:
            self.started_at = time.perf_counter()
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )

    def wait_ready(self, timeout: float = 60, poll: float = 0.05) -> float:
        """Seconds from start to the first 200 on its health path."""
        assert self.process is not None
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if http_status(self.port, self.health, timeout=0.5) == 200:
                return time.perf_counter() - self.started_at
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.process.returncode}:\n{self.tail()}")
            time.sleep(poll)
        raise RuntimeError(f"{self.name} did not answer /health within {timeout} s:\n{self.tail()}")

    def rss_mb(self) -> float:
        assert self.process is not None
        return rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM) without waiting; `stop` then waits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.process is None:
            return
        self.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def wait_until_idle(servers: list[Server], window: float = 0.2, timeout: float = 15.0) -> None:
    """Wait until no server uses more than a clock tick of CPU in `window` seconds.

    A server may go on working after its load ends (the peer template's project
    commits its writes after responding): the next target measured would share its CPU.
    """
    tick = 1 / os.sysconf("SC_CLK_TCK")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = [server.cpu_seconds() for server in servers]
        time.sleep(window)
        if all(server.cpu_seconds() - used <= tick for server, used in zip(servers, before, strict=True)):
            return


@contextlib.contextmanager
def serving(*servers: Server) -> Iterator[None]:
    """Start the servers together, wait until each answers, stop them all at the end."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_ready()
        yield
    finally:
        # Told at once, they shut down side by side rather than one after another.
        for server in servers:
            server.terminate()
        for server in servers:
            server.stop()
