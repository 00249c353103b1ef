"""Helpers for tests that need a signed-in client."""

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from app.auth.models import User
from app.auth.passwords import hash_password
from app.auth.principal import USER_SCOPES
from app.auth.tokens import issue_access_token
from app.settings import Settings

PASSWORD = "correct horse battery staple"


def writer_headers(settings: Settings) -> dict[str, str]:
    """What a signed-in user sends: an access token that may write items. Writes check
    the token alone, so no user row is needed."""
    return {"Authorization": f"Bearer {issue_access_token('1', USER_SCOPES, settings)}"}


async def create_user(
    settings: Settings, email: str, password: str = PASSWORD, *, superuser: bool = False
) -> None:
    """A user stored as registration stores one (the app's lifespan made the tables)."""
    engine = create_async_engine(settings.database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(User).values(
                    email=email,
                    password_hash=await hash_password(password),
                    is_active=True,
                    is_superuser=superuser,
                )
            )
    finally:
        await engine.dispose()
