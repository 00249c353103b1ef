"""The database layer: 503 when the database is unreachable, the one commit rule, and
connections given out in the order sessions asked for them."""

import asyncio
import itertools

import pytest
from sqlalchemy import exc, text

from app.db import after_commit, open_database
from app.deps import SessionDep
from app.main import create_app
from app.models import Base
from app.settings import Settings
{% if cookiecutter.use_auth %}
from tests.auth import writer_headers
{% endif %}
from tests.support import client_for, client_on


async def test_database_outage_is_503_json(settings: Settings) -> None:
    down = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://app:secret@127.0.0.1:9/app"}
    )
    async with client_for(down) as client:
{% if cookiecutter.use_auth %}
        client.headers.update(writer_headers(down))
{% endif %}
        responses = [await client.get("/items"), await client.post("/items", json={"name": "x"})]

    for response in responses:
        assert response.status_code == 503
        assert response.json() == {"detail": "Database unavailable"}


async def test_a_connection_dropped_mid_query_is_503_other_database_errors_500(
    settings: Settings,
) -> None:
    app = create_app(settings)
    errors = {
        "dropped": exc.DBAPIError("SELECT 1", {}, OSError("reset"), connection_invalidated=True),
        # What SQLAlchemy raises when the server goes away while a connection is made.
        "connecting": exc.DBAPIError(None, None, ConnectionResetError("reset")),
        # No connection free within DB_POOL_TIMEOUT.
        "no-connection": exc.TimeoutError("No database connection within 10 s"),
        "broken": exc.DBAPIError("SELECT 1", {}, ValueError("bad data")),
        # A deferred constraint fails at COMMIT, where no statement is named either.
        "at-commit": exc.IntegrityError(None, None, ValueError("duplicate key")),
    }

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise errors[name]

    async with client_on(app) as client:
        answers = {name: await client.get(f"/raise/{name}") for name in errors}

    for name in ("dropped", "connecting", "no-connection"):
        assert answers[name].status_code == 503, name
        assert answers[name].json() == {"detail": "Database unavailable"}
    for name in ("broken", "at-commit"):
        assert answers[name].status_code == 500, name
        assert answers[name].json() == {"detail": "Internal server error"}


async def test_work_after_commit_runs_only_once_the_write_is_stored(settings: Settings) -> None:
    app = create_app(settings)
    seen: list[str] = []

    @app.post("/ok")
    async def ok(session: SessionDep) -> None:
        async def note() -> None:
            seen.append("ok")

        after_commit(session, note)

    @app.post("/fails")
    async def fails(session: SessionDep) -> None:
        async def note() -> None:
            seen.append("fails")

        after_commit(session, note)
        raise RuntimeError("the endpoint failed")

    async with client_on(app) as client:
        assert (await client.post("/ok")).status_code == 200
        assert (await client.post("/fails")).status_code == 500

    assert seen == ["ok"]


async def test_sessions_get_their_connections_in_the_order_they_asked(
    settings: Settings,
) -> None:
    if settings.database_url.startswith("sqlite"):
        pytest.skip(
            "aiosqlite answers through a thread per connection: when a session then gets"
            " its connection is not the queue's doing"
        )
    # No ping: it would come between a session's turn and its connection.
    small = settings.model_copy(
        update={"db_pool_size": 2, "db_max_overflow": 0, "db_pool_pre_ping": False}
    )
    tickets = itertools.count()
    served: list[int] = []

    async def query() -> None:
        async with database.read_sessionmaker() as session:
            await session.execute(text("SELECT 1"))

    async def reader() -> None:
        for _ in range(40):
            ticket = next(tickets)
            async with database.read_sessionmaker() as session:
                await session.connection()
                served.append(ticket)
                await session.execute(text("SELECT 1"))

    async with open_database(small, Base.metadata) as database:
        # Both connections first: one being opened takes several round trips,
        # during which the other serves sessions that asked later.
        await asyncio.gather(query(), query())
        await asyncio.gather(*(reader() for _ in range(12)))

    # SQLAlchemy's pool alone hands a returned connection to whichever session asks
    # next: dozens of sessions here got theirs before one that asked earlier.
    assert served == sorted(served)


async def test_a_session_waits_for_a_connection_no_longer_than_the_pool_timeout(
    settings: Settings,
) -> None:
    one = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 0.2}
    )
    async with open_database(one, Base.metadata) as database, database.read_sessionmaker():
        with pytest.raises(exc.TimeoutError):
            async with database.read_sessionmaker():
                pass
