"""Failed logins per email: after LOGIN_MAX_FAILURES in a row, that email is locked for
LOGIN_LOCK_MINUTES. Emails with no account are counted and locked the same way, so a
lock tells an attacker nothing about which accounts exist.
"""

import math
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import LoginFailure


async def locked_for(session: AsyncSession, email: str) -> int:
    """Seconds until `email` may try again; 0 when it is not locked."""
    locked_until = await session.scalar(
        select(LoginFailure.locked_until).where(LoginFailure.email == email)
    )
    if locked_until is None:
        return 0
    if locked_until.tzinfo is None:  # SQLite keeps no zone; every value stored is UTC.
        locked_until = locked_until.replace(tzinfo=UTC)
    remaining = (locked_until - datetime.now(UTC)).total_seconds()
    return math.ceil(remaining) if remaining > 0 else 0


async def record_failure(
    session: AsyncSession, email: str, max_failures: int, lock: timedelta
) -> None:
    """Count a failure; the one that reaches `max_failures` locks the email and starts over."""
    # One statement, so concurrent failures are all counted.
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    failures = await session.scalar(
        dialect.insert(LoginFailure)
        .values(email=email, failures=1)
        .on_conflict_do_update(
            index_elements=[LoginFailure.email],
            set_={"failures": LoginFailure.failures + 1},
        )
        .returning(LoginFailure.failures)
    )
    if failures is not None and failures >= max_failures:
        await session.execute(
            update(LoginFailure)
            .where(LoginFailure.email == email)
            .values(failures=0, locked_until=datetime.now(UTC) + lock)
        )


async def clear_failures(session: AsyncSession, email: str) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.email == email))
