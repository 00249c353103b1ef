"""Every dependency a route can ask for, as `Annotated` types: `session: SessionDep`.

Each reads what the lifespan made (`AppState`). They are `async def` because FastAPI
runs a plain `def` dependency in a worker thread, a hop that costs more than the
dependency itself.
"""

{% if cookiecutter.use_postgres %}
from collections.abc import AsyncIterator
{% endif %}
from typing import Annotated{{ ", Any" if cookiecutter.use_auth else "" }}

{% if cookiecutter.use_socketio %}
import socketio
{% endif %}
{% if cookiecutter.use_auth %}
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer
{% else %}
from fastapi import Depends, Request
{% endif %}
{% if cookiecutter.use_postgres %}
from sqlalchemy.ext.asyncio import AsyncSession
{% endif %}
from starlette.requests import HTTPConnection

{% if cookiecutter.use_auth %}
from app.auth.models import User
from app.auth.principal import SCOPES, Principal, identify
{% endif %}
{% if cookiecutter.use_redis %}
from app.cache import Cache
{% endif %}
{% if cookiecutter.use_postgres %}
from app.db import Database, commit
{% endif %}
{% if cookiecutter.use_worker %}
from app.jobs.queue import Jobs
{% endif %}
{% if cookiecutter.use_socketio %}
from app.realtime.broadcast import Broadcaster
{% endif %}
from app.settings import Settings
from app.state import AppState


def app_state(connection: HTTPConnection) -> AppState:
    """The state the lifespan made, for a request or a WebSocket (not a dependency itself)."""
    state: AppState = connection.state.app_state
    return state


async def current_settings(request: Request) -> Settings:
    return app_state(request).settings


SettingsDep = Annotated[Settings, Depends(current_settings)]
{% if cookiecutter.use_postgres %}


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed when the endpoint returns without an error.

    `scope="function"` below makes the commit happen before the response is sent,
    so a client that reads right after a write sees it. The one rule: endpoints
    never commit; work that must follow the commit goes to `app.db.after_commit`.
    """
    async with app_state(request).database.sessionmaker() as session:
        yield session
        await commit(session)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_read_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for a request that only reads: no transaction, so nothing to commit.

    Each query stands alone (PostgreSQL's READ COMMITTED gives each statement of a
    transaction its own snapshot anyway), without the BEGIN and COMMIT round trips.
    `scope="function"` closes it when the endpoint returns, so its connection goes
    back to the pool before the response is sent.
    """
    async with app_state(request).database.read_sessionmaker() as session:
        yield session


ReadSessionDep = Annotated[AsyncSession, Depends(get_read_session, scope="function")]


async def get_database(request: Request) -> Database:
    """The database itself, for a route that needs a session only sometimes."""
    return app_state(request).database


DatabaseDep = Annotated[Database, Depends(get_database)]
{% endif %}
{% if cookiecutter.use_redis %}


async def get_cache(request: Request) -> Cache:
    return app_state(request).cache


CacheDep = Annotated[Cache, Depends(get_cache)]
{% endif %}
{% if cookiecutter.use_socketio %}


async def get_sio(request: Request) -> socketio.AsyncServer:
    return app_state(request).sio


SioDep = Annotated[socketio.AsyncServer, Depends(get_sio)]


async def get_broadcaster(request: Request) -> Broadcaster:
    return app_state(request).broadcaster


BroadcasterDep = Annotated[Broadcaster, Depends(get_broadcaster)]
{% endif %}
{% if cookiecutter.use_worker %}


async def get_jobs(request: Request) -> Jobs:
    """Where a route enqueues background work: `await jobs.enqueue("task", ...)`."""
    return app_state(request).jobs


JobsDep = Annotated[Jobs, Depends(get_jobs)]
{% endif %}
{% if cookiecutter.use_auth %}


# `Authorization: Bearer <access token or API key>`; the docs' Authorize button logs in here.
bearer = OAuth2PasswordBearer(tokenUrl="/auth/token", scopes=SCOPES, auto_error=False)


def not_authenticated() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, "Not authenticated", headers={"WWW-Authenticate": "Bearer"}
    )


async def get_principal(
    request: Request, token: Annotated[str | None, Depends(bearer)]
) -> Principal:
    """Who the request comes from: a user's access token (checked without the database)
    or an API key; 401 for anything else."""
    state = app_state(request)
    principal = await identify(token, state.settings, state.database) if token else None
    if principal is None:
        raise not_authenticated()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def requires(scope: str) -> Any:
    """A dependency that lets through only a principal whose token or key carries `scope`:
    `@router.post(..., dependencies=[requires("write")])`."""

    async def allowed(principal: PrincipalDep) -> Principal:
        if not principal.allows(scope):
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"Needs the {scope!r} scope")
        return principal

    return Depends(allowed)


AdminDep = Annotated[Principal, requires("admin")]


async def get_current_user(principal: PrincipalDep, session: ReadSessionDep) -> User:
    """The user behind an access token, read from the database: still active, and not an API key."""
    if principal.user_id is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Needs a user's token, not an API key")
    user = await session.get(User, principal.user_id)
    if user is None or not user.is_active:
        raise not_authenticated()
    return user


CurrentUserDep = Annotated[User, Depends(get_current_user)]
{% endif %}
