"""`python -m app.auth create-admin`: the first admin, created once, with the password
read from the environment or a prompt and never printed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.settings import Settings
from tests.auth import PASSWORD
from tests.support import client_for

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The `client` fixture empties the tables after each test.
pytestmark = pytest.mark.usefixtures("client")


def create_admin(
    settings: Settings, *arguments: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.auth", "create-admin", *arguments],
        cwd=PROJECT_ROOT,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": settings.database_url, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_creates_the_first_admin_once(settings: Settings) -> None:
    first = create_admin(settings, "--email", "Admin@Example.com", ADMIN_PASSWORD=PASSWORD)
    second = create_admin(settings, "--email", "admin@example.com", ADMIN_PASSWORD="another one!!")

    async with client_for(settings) as client:
        logged_in = await client.post(
            "/auth/token", data={"username": "admin@example.com", "password": PASSWORD}
        )
        me = await client.get(
            "/auth/me", headers={"Authorization": f"Bearer {logged_in.json()['access_token']}"}
        )

    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == "Created the admin admin@example.com\n"
    assert second.stdout == "admin@example.com exists already: nothing was changed\n"
    assert me.json()["is_superuser"] is True
    for result in (first, second):
        assert PASSWORD not in result.stdout + result.stderr


def test_without_a_password_or_a_terminal_it_says_what_to_set(settings: Settings) -> None:
    result = create_admin(settings, "--email", "admin@example.com")

    assert result.returncode == 1
    assert result.stderr == "Set ADMIN_PASSWORD, or run this in a terminal to be asked for it\n"


def test_a_bad_email_or_short_password_is_refused_in_one_line(settings: Settings) -> None:
    bad_email = create_admin(settings, "--email", "admin", ADMIN_PASSWORD=PASSWORD)
    short = create_admin(settings, "--email", "admin@example.com", ADMIN_PASSWORD="hunter2")

    assert bad_email.returncode == short.returncode == 1
    assert bad_email.stderr == "Refused: --email: not an email address\n"
    assert short.stderr.startswith("Refused: the password: ")
    assert "hunter2" not in short.stderr
    assert len(short.stderr.splitlines()) == 1


def test_an_unreachable_database_is_one_line_without_the_url(settings: Settings) -> None:
    down = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://app:hunter22@127.0.0.1:9/app"}
    )

    result = create_admin(down, "--email", "admin@example.com", ADMIN_PASSWORD=PASSWORD)

    assert result.returncode == 1
    assert result.stderr.startswith("Cannot create the admin (")
    assert len(result.stderr.splitlines()) == 1
    assert "hunter22" not in result.stderr
