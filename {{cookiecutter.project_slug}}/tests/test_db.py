"""The database layer: 503 when the database is unreachable, and the one commit rule."""

from sqlalchemy import exc

from app.db import after_commit
from app.deps import SessionDep
from app.main import create_app
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
        "broken": exc.DBAPIError("SELECT 1", {}, ValueError("bad data")),
        # A deferred constraint fails at COMMIT, where no statement is named either.
        "at-commit": exc.IntegrityError(None, None, ValueError("duplicate key")),
    }

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise errors[name]

    async with client_on(app) as client:
        answers = {name: await client.get(f"/raise/{name}") for name in errors}

    for name in ("dropped", "connecting"):
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
