"""Who a bearer value names, and what it may do: an access token names a user, an API
key names itself. Both reach routes through the same dependencies (`app/deps.py`).
"""

import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import ApiKey, User
from app.auth.tokens import API_KEY_START, digest, new_secret, read_access_token
from app.db import Database
from app.settings import Settings

# Every scope a token or key can carry, as the interactive docs list them.
SCOPES = {
    "write": "Create, change and delete resources",
    "admin": "Manage API keys",
}
USER_SCOPES = frozenset({"write"})
# The visible start of a key: API_KEY_START and 8 hex digits.
PREFIX = re.compile(API_KEY_START + "[0-9a-f]{8}")


@dataclass(frozen=True)
class Principal:
    # Set for a user's access token; None for an API key.
    user_id: int | None
    scopes: frozenset[str]
    api_key_id: int | None = None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


def scopes_of(user: User) -> frozenset[str]:
    return frozenset(SCOPES) if user.is_superuser else USER_SCOPES


async def identify(bearer: str, settings: Settings, database: Database) -> Principal | None:
    """The principal a bearer value names, or None when it names nobody."""
    if bearer.startswith(API_KEY_START):
        async with database.read_sessionmaker() as session:
            return await _api_key_principal(session, bearer)
    claims = read_access_token(bearer, settings)
    if claims is None or not claims.subject.isdigit():
        return None
    return Principal(user_id=int(claims.subject), scopes=claims.scopes)


def new_api_key() -> tuple[str, str]:
    """A new key and its prefix."""
    prefix = f"{API_KEY_START}{secrets.token_hex(4)}"
    return f"{prefix}_{new_secret()}", prefix


async def _api_key_principal(session: AsyncSession, key: str) -> Principal | None:
    prefix = key[: len(API_KEY_START) + 8]
    if not PREFIX.fullmatch(prefix):
        return None
    found = await session.scalar(
        select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))
    )
    if found is None or not hmac.compare_digest(found.key_hash, digest(key)):
        return None
    return Principal(user_id=None, scopes=frozenset(found.scopes.split()), api_key_id=found.id)
