"""Running commands and choosing ports."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

# Settings a generated project (and its scripts/serve) reads that must not leak from
# the test's own environment.
SERVICE_VARIABLES = frozenset(
    {"DATABASE_URL", "REDIS_URL", "SENTRY_DSN", "VIRTUAL_ENV", "PORT", "WEB_CONCURRENCY"}
)


def run(
    command: list[str | Path],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, fail with its whole output."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {result.returncode} in {cwd}\n"
            f"--- stdout ---\n{result.stdout[-20000:]}\n--- stderr ---\n{result.stderr[-8000:]}"
        )
    return result


def clean_env(*, only: tuple[str, ...] | None = None, **extra: str) -> dict[str, str]:
    """This environment without the service settings and pytest's own variables, plus `extra`.

    With `only`, just those variables are kept: for tools that read any variable they
    find (compose interpolation, the app's settings), nothing else may leak in.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SERVICE_VARIABLES and not key.startswith("PYTEST_") and (only is None or key in only)
    }
    return env | extra


# Who commits in the tests' scratch repositories, whatever git's own configuration says.
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Tests",
    "GIT_AUTHOR_EMAIL": "tests@example.com",
    "GIT_COMMITTER_NAME": "Template Tests",
    "GIT_COMMITTER_EMAIL": "tests@example.com",
}


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run git in `cwd` as GIT_IDENTITY, with unsigned commits; fail with its output."""
    return run(["git", "-c", "commit.gpgsign=false", *args], cwd, clean_env(**GIT_IDENTITY))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
