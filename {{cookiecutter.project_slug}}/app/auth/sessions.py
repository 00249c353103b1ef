"""Refresh tokens in families: logging in starts a family, each refresh uses up its
token and issues the next one in the same family.

A token used a second time means two parties hold it (one of them stole it): the
whole family is revoked, so both must log in again.
"""

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import RefreshToken
from app.auth.tokens import digest, new_secret


@dataclass(frozen=True)
class Rotated:
    user_id: int
    refresh_token: str


class RefreshRefused(Exception):
    """The refresh token is unknown, expired, revoked or already used."""


async def start_session(session: AsyncSession, user_id: int, lifetime: timedelta) -> str:
    """A refresh token that starts a new family."""
    return await _issue(session, user_id, secrets.token_hex(16), lifetime)


async def rotate(session: AsyncSession, refresh_token: str, lifetime: timedelta) -> Rotated:
    """Use up `refresh_token` and return the next one of its family.

    Raises RefreshRefused; when the token had been used already, its family is
    revoked first (the caller must still commit that).
    """
    now = datetime.now(UTC)
    # Marking the token used is the check: of two concurrent refreshes, one wins.
    used = (
        await session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.token_hash == digest(refresh_token),
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
                RefreshToken.expires_at > now,
            )
            .values(used_at=now)
            .returning(RefreshToken.user_id, RefreshToken.family)
        )
    ).one_or_none()
    if used is None:
        await _revoke_if_reused(session, refresh_token)
        raise RefreshRefused
    user_id, family = used
    return Rotated(user_id, await _issue(session, user_id, family, lifetime))


async def end_session(session: AsyncSession, refresh_token: str) -> None:
    """Revoke the family of `refresh_token` (logging out); an unknown token does nothing."""
    token = await _find(session, refresh_token)
    if token is not None:
        await _revoke(session, RefreshToken.family == token.family)


async def end_every_session(session: AsyncSession, user_id: int) -> None:
    await _revoke(session, RefreshToken.user_id == user_id)


async def _issue(session: AsyncSession, user_id: int, family: str, lifetime: timedelta) -> str:
    secret = new_secret()
    session.add(
        RefreshToken(
            user_id=user_id,
            family=family,
            token_hash=digest(secret),
            expires_at=datetime.now(UTC) + lifetime,
        )
    )
    await session.flush()
    return secret


async def _find(session: AsyncSession, refresh_token: str) -> RefreshToken | None:
    return await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == digest(refresh_token))
    )


async def _revoke_if_reused(session: AsyncSession, refresh_token: str) -> None:
    token = await _find(session, refresh_token)
    if token is not None and token.used_at is not None:
        await _revoke(session, RefreshToken.family == token.family)


async def _revoke(session: AsyncSession, which: ColumnElement[bool]) -> None:
    await session.execute(
        update(RefreshToken)
        .where(which, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
