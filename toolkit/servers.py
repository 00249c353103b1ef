"""Start baked projects as real server processes and talk to them over HTTP."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx

from toolkit.processes import run


def wait_until_serving(
    url: str, process: subprocess.Popen[bytes], timeout: float = 30, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited {process.returncode} before serving {url}")
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(url, headers=headers, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text}"
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout} s: {last}")


@contextlib.contextmanager
def serving(
    command: list[str | Path],
    cwd: Path,
    env: dict[str, str],
    health_url: str,
    log: Path,
    headers: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server until the block ends, then SIGTERM it and require a clean exit."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(part) for part in command], cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT
        )
        try:
            try:
                wait_until_serving(health_url, process, headers=headers)
            except AssertionError as error:
                raise AssertionError(f"{error}\n{log.read_text()[-4000:]}") from None
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
    # uvicorn re-raises SIGTERM after a graceful shutdown; both mean a clean stop.
    assert code in (0, -signal.SIGTERM), f"server exited {code}:\n{log.read_text()[-5000:]}"


def scratch_database(python: Path, project: Path, server_url: str, name: str) -> str:
    """Create a database with the baked project's own helper; return its URL."""
    code = (
        "import asyncio, sys; from tests.postgres import create_database; "
        "print(asyncio.run(create_database(sys.argv[1], sys.argv[2])))"
    )
    return run([python, "-c", code, server_url, name], project).stdout.strip()


def drop_scratch_database(python: Path, project: Path, server_url: str, url: str) -> None:
    code = (
        "import asyncio, sys; from tests.postgres import drop_database; "
        "asyncio.run(drop_database(sys.argv[1], sys.argv[2]))"
    )
    run([python, "-c", code, server_url, url], project)


@contextlib.contextmanager
def scratch(python: Path, project: Path, server_url: str, prefix: str) -> Iterator[str]:
    """A fresh database on the server of `server_url` (its URL), dropped at the end."""
    url = scratch_database(python, project, server_url, f"{prefix}_{uuid.uuid4().hex[:12]}")
    try:
        yield url
    finally:
        drop_scratch_database(python, project, server_url, url)
