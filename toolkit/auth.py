"""Signing in to a live instance of the generated project, as its README tells a user to."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from toolkit.processes import run

if TYPE_CHECKING:
    from toolkit.live import Server

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "a long test admin password"

# Run with the project's own Python: an access token for user 1 that may write items,
# signed with the SECRET_KEY of the environment it runs in.
_MINT = (
    "from app.auth.principal import USER_SCOPES\n"
    "from app.auth.tokens import issue_access_token\n"
    "from app.settings import get_settings\n"
    "print(issue_access_token('1', USER_SCOPES, get_settings()))\n"
)


def create_admin(python: Path, project: Path, env: dict[str, str]) -> str:
    """`python -m app.auth create-admin` against the database `env` names; its output."""
    result = run(
        [python, "-m", "app.auth", "create-admin", "--email", ADMIN_EMAIL],
        project,
        env | {"ADMIN_PASSWORD": ADMIN_PASSWORD},
    )
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    return result.stdout


def log_in(base: str, email: str = ADMIN_EMAIL, **client: Any) -> dict[str, Any]:
    """The admin's tokens from the OAuth2 password flow at /auth/token."""
    response = httpx.post(
        f"{base}/auth/token",
        data={"username": email, "password": ADMIN_PASSWORD},
        timeout=30,
        **client,
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens


def mint_token(python: Path, project: Path, env: dict[str, str]) -> str:
    """An access token for user 1 that may write, made by the project's own code with the
    SECRET_KEY of `env`, without a login (no user row is needed to write)."""
    return run([python, "-c", _MINT], project, env).stdout.strip()


def writer_headers(server: Server) -> dict[str, str]:
    """What a signed-in user sends to `server`: for load and fault tests, whose server may
    have no database to log in against. The server's first word is its Python."""
    return {"Authorization": f"Bearer {mint_token(Path(server.command[0]), server.cwd, server.env)}"}
