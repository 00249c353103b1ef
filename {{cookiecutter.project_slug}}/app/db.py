"""Database: the engines and session factory the app holds, and the base of every model."""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from sqlalchemy import MetaData, event, exc
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
{% if cookiecutter.use_metrics %}
from sqlalchemy.pool import QueuePool
{% endif %}

{% if cookiecutter.use_metrics %}
from app.metrics.collectors import DB_CHECKED_OUT, DB_OVERFLOW
{% endif %}
from app.settings import Settings

logger = logging.getLogger(__name__)

# Errors that mean "the database cannot be reached", answered 503 rather than 500.
# Any other DBAPIError counts only when it is about the connection; see `lost_connection`.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    exc.DBAPIError,
    ConnectionError,
    TimeoutError,
)

# Driver errors that mean the request or the schema is wrong, wherever they are raised.
BUG_ERRORS = (exc.IntegrityError, exc.DataError, exc.ProgrammingError, exc.NotSupportedError)

# Named constraints, so migrations can alter and drop them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every ORM model (`app/models.py` imports them all for Alembic)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def is_storable(value: str) -> bool:
    """Whether the database can store `value` (see StoredText)."""
    try:
        _storable(value)
    except ValueError:
        return False
    return True


def _storable(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


# A string the database can store: PostgreSQL text holds no NUL character, and a
# lone surrogate (JSON "\ud800") is not UTF-8. Use it for every string a model saves,
# so such input is a 422 rather than a database error.
StoredText = Annotated[str, AfterValidator(_storable)]


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(settings: Settings, *, for_probes: bool = False) -> AsyncEngine:
    """The engine and its pool, from settings.

    `for_probes` builds the readiness check's own engine with one connection, so
    the check tells whether the database answers, not whether the request pool
    is busy: queued behind a burst of requests, a probe could take the instance
    out of rotation just when it is needed.
    """
    url = settings.database_url
    if url.startswith("sqlite"):
        engine = create_async_engine(url, echo=settings.db_echo)
        event.listen(engine.sync_engine, "connect", _enable_sqlite_foreign_keys)
        return engine
    connect_args: dict[str, Any] = {"timeout": settings.db_pool_timeout}
    if settings.db_pgbouncer:
        connect_args |= {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    return create_async_engine(
        url,
        echo=settings.db_echo,
        pool_size=1 if for_probes else settings.db_pool_size,
        max_overflow=0 if for_probes else settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        pool_pre_ping=settings.db_pool_pre_ping,
        connect_args=connect_args,
    )


class FairSessions:
    """Sessions from `maker`, each opened once the pool has a connection for it, in
    the order they were asked for.

    SQLAlchemy's async pool gives a returned connection to whichever task asks
    next, even ahead of one already waiting, so under load a few requests waited
    seconds for one. This queue (an asyncio.Semaphore, first come first served)
    holds as many sessions as the pool has connections. Waiting longer than
    DB_POOL_TIMEOUT raises the pool's own TimeoutError, answered 503.
    """

    def __init__(
        self, maker: async_sessionmaker[AsyncSession], turns: asyncio.Semaphore, timeout: float
    ) -> None:
        self.maker = maker
        self.turns = turns
        self.timeout = timeout

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[AsyncSession]:
        try:
            async with asyncio.timeout(self.timeout):
                await self.turns.acquire()
        except TimeoutError:
            raise exc.TimeoutError(f"No database connection within {self.timeout} s") from None
        try:
            async with self.maker() as session:
                yield session
        finally:
            self.turns.release()


@dataclass(frozen=True)
class Database:
    """What the app holds of the database."""

    engine: AsyncEngine
    # Sessions in a transaction, for requests that write (`SessionDep`).
    sessionmaker: FairSessions
    # Sessions without one, for requests that only read (`ReadSessionDep`): each
    # query stands alone, which saves the BEGIN and COMMIT round trips.
    read_sessionmaker: FairSessions
    # The readiness check's own engine (see `create_engine`).
    probe_engine: AsyncEngine


@asynccontextmanager
async def open_database(settings: Settings, metadata: MetaData) -> AsyncIterator[Database]:
    """The engines for the app's lifetime, disposed at shutdown.

    On the embedded SQLite database the tables of `metadata` are created at
    startup; PostgreSQL gets its schema from Alembic only.
    """
    engine = create_engine(settings)
    probe_engine = create_engine(settings, for_probes=True)
    try:
        if engine.dialect.name == "sqlite":
            async with engine.connect() as connection:
                # Under SQLite's write lock from the start, so that a second worker
                # waits, then finds the tables, rather than creating them again.
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
                await connection.run_sync(metadata.create_all)
                await connection.commit()
        reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        # One queue for both kinds of session: they share the engine's pool.
        turns = asyncio.Semaphore(settings.db_pool_size + settings.db_max_overflow)
        timeout = settings.db_pool_timeout
        yield Database(
            engine=engine,
            sessionmaker=FairSessions(
                async_sessionmaker(engine, expire_on_commit=False), turns, timeout
            ),
            read_sessionmaker=FairSessions(
                async_sessionmaker(reader, expire_on_commit=False), turns, timeout
            ),
            probe_engine=probe_engine,
        )
    finally:
        await engine.dispose()
        await probe_engine.dispose()
{% if cookiecutter.use_metrics %}


def watch_pool(engine: AsyncEngine) -> None:
    """Keep the pool's metrics current from its own events, as connections leave and return.

    Call it before the first connection is checked out: a checkin it never saw
    leave would count below zero.
    """
    pool = engine.sync_engine.pool
    # SQLite's pools have no overflow.
    sized = pool if isinstance(pool, QueuePool) else None

    def moved(change: int) -> Callable[..., None]:
        def record(*_args: Any) -> None:
            DB_CHECKED_OUT.inc(change)
            if sized is not None:
                DB_OVERFLOW.set(max(sized.overflow(), 0))

        return record

    event.listen(pool, "checkout", moved(1))
    event.listen(pool, "checkin", moved(-1))
{% endif %}


AfterCommit = Callable[[], Awaitable[None]]


def after_commit(session: AsyncSession, action: AfterCommit) -> None:
    """Run `action` once the request's session has committed (see `app.deps.get_session`).

    For work that must not happen unless the write is stored, and not before:
    invalidating a cache entry, or enqueueing a task that reads the new row.
    """
    session.info.setdefault("after_commit", []).append(action)


async def commit(session: AsyncSession) -> None:
    """Commit, then run what the request registered with `after_commit`."""
    if session.in_transaction():  # A request that ran no query has nothing to commit.
        await session.commit()
    for action in session.info.pop("after_commit", []):
        await action()


async def database_unavailable(_request: Request, error: Exception) -> JSONResponse:
    """Answer 503 when the database cannot be reached, without the error's text.

    A database error that is not about the connection (a constraint, bad data) is
    a bug: it is raised again, and answered 500 and logged with its traceback.
    """
    if isinstance(error, exc.DBAPIError) and not lost_connection(error):
        raise error
    logger.warning("Database unavailable: %s", type(error).__name__)
    return JSONResponse({"detail": "Database unavailable"}, status_code=503)


def lost_connection(error: exc.DBAPIError) -> bool:
    """Whether the driver's error is about reaching the database rather than the query."""
    if isinstance(error, exc.OperationalError | exc.InterfaceError) or error.connection_invalidated:
        return True
    # No statement: it failed while connecting (a server going away mid-handshake
    # surfaces as a plain DBAPIError), unless the data broke a rule at COMMIT.
    return error.statement is None and not isinstance(error, BUG_ERRORS)
