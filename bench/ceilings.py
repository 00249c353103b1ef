"""Ceilings: the generated app's handlers on a bare Starlette app and a bare FastAPI app.

Served by uvicorn from a baked project's directory (so its `app` package imports its
models and schemas), with the same server options and environment as the generated
app. Each handler does the work of the generated route it stands for, on SQLAlchemy's
and redis-py's defaults (`create_async_engine(url)`, `Redis.from_url(url)`), and
nothing else: no middleware, no dependencies, no rate limiting, no Socket.IO wrapper,
none of the project's pool, session or client settings. What the generated app
loses against these is what its plumbing and its settings cost.

`fastapi_app` also serves the database read, the list and the write on asyncpg
alone under `/asyncpg/` (asyncpg's own pool at its defaults, the same queries,
no SQLAlchemy), for reference: the driver underneath them all.

Entries: `ceilings:starlette_app`, `ceilings:fastapi_app`, `ceilings:socketio_app`
(bare python-socketio on the same Redis channel, with a bare Starlette emit route).

`fastapi_app` also serves GET / behind four ways to apply the same Redis-backed
limit, the alternatives the report compares: slowapi with its storage calls in
`asyncio.to_thread` (what the generated app did before) or in Starlette's
`run_in_threadpool`, slowapi on the event loop (what slowapi's own middleware and
decorator do), and the async storage of `limits`, the library slowapi is built on
(what the generated app's middleware counted with before it sent the counts of
one event-loop turn together).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import socketio
from app import __version__
from app.health import Liveness
from app.items.models import Item
from app.items.routes import ItemId
from app.items.schemas import ItemCreate, ItemPage, ItemRead
from app.ratelimit.limiter import client_address
from app.settings import get_settings
from fastapi import FastAPI, HTTPException, status
from fastapi.concurrency import run_in_threadpool
from limits import parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from pydantic import BaseModel
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from slowapi import Limiter
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

settings = get_settings()


class ServiceInfo(BaseModel):
    service: str
    version: str
    docs: str | None


class Handlers:
    """The work of each benchmarked route, shared by both ceilings."""

    def __init__(self) -> None:
        # Library defaults: a pool of 5 plus 10 overflow, no pre-ping, default isolation.
        self.engine = create_async_engine(settings.database_url)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.redis = None if settings.redis_url is None else Redis.from_url(settings.redis_url)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()

    def health(self) -> Liveness:
        return Liveness(
            status="ok",
            service=settings.service_name,
            version=__version__,
            environment=settings.environment,
            timestamp=datetime.now(UTC),
        )

    def root(self) -> ServiceInfo:
        return ServiceInfo(
            service=settings.service_name,
            version=__version__,
            docs="/docs" if settings.docs_enabled else None,
        )

    async def read_from_database(self, item_id: int) -> ItemRead | None:
        async with self.sessionmaker() as session:
            item = await session.get(Item, item_id)
            await session.commit()
        return None if item is None else ItemRead.model_validate(item)

    async def list_page(self, limit: int, offset: int) -> ItemPage:
        # The generated GET /items: a page and the total, in one query.
        async with self.sessionmaker() as session:
            page = (
                await session.execute(
                    select(Item, func.count().over()).order_by(Item.id).limit(limit).offset(offset)
                )
            ).all()
            await session.commit()
        return ItemPage(
            items=[ItemRead.model_validate(item) for item, _ in page],
            total=page[0][1] if page else 0,
            limit=limit,
            offset=offset,
        )

    async def read_through_cache(self, item_id: int) -> ItemRead | None:
        # The body of the generated GET /items/{item_id}, on the same cache keys.
        assert self.redis is not None
        key = f"{settings.cache_key_prefix}items:{item_id}"
        cached = await self.redis.get(key)
        if cached is not None:
            return ItemRead.model_validate_json(cached)
        result = await self.read_from_database(item_id)
        if result is not None:
            await self.redis.set(key, result.model_dump_json(), ex=settings.cache_ttl_seconds)
        return result

    async def create(self, payload: ItemCreate) -> ItemRead | None:
        """The new item, or None when the name is taken."""
        async with self.sessionmaker() as session:
            item = Item(name=payload.name, description=payload.description)
            session.add(item)
            try:
                await session.flush()  # INSERT ... RETURNING: the server's defaults come back with it
            except IntegrityError:
                await session.rollback()
                return None
            result = ItemRead.model_validate(item)
            await session.commit()
        return result


handlers: Handlers


@asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    global handlers
    handlers = Handlers()
    try:
        yield
    finally:
        await handlers.close()


# --- bare Starlette ---------------------------------------------------------


def _json(model: BaseModel | None, status_code: int = 200) -> Response:
    if model is None:
        return JSONResponse({"detail": "Item not found"}, status_code=404)
    return Response(model.model_dump_json(), status_code, media_type="application/json")


async def s_health(_request: Request) -> Response:
    return _json(handlers.health())


async def s_root(_request: Request) -> Response:
    return _json(handlers.root())


async def s_read_cached(request: Request) -> Response:
    return _json(await handlers.read_through_cache(request.path_params["item_id"]))


async def s_read_database(request: Request) -> Response:
    return _json(await handlers.read_from_database(request.path_params["item_id"]))


async def s_list(request: Request) -> Response:
    limit = int(request.query_params.get("limit", 20))
    offset = int(request.query_params.get("offset", 0))
    return _json(await handlers.list_page(limit, offset))


async def s_create(request: Request) -> Response:
    payload = ItemCreate.model_validate_json(await request.body())
    created = await handlers.create(payload)
    if created is None:
        return JSONResponse({"detail": "An item with this name exists"}, status_code=409)
    return _json(created, 201)


starlette_app = Starlette(
    routes=[
        Route("/health", s_health),
        Route("/", s_root),
        Route("/items/{item_id:int}", s_read_cached),
        Route("/db/items/{item_id:int}", s_read_database),
        Route("/items", s_list),
        Route("/items", s_create, methods=["POST"]),
    ],
    lifespan=lifespan,
)


# --- bare FastAPI -------------------------------------------------------------

_COLUMNS = "id, name, description, created_at"


class OnAsyncpg:
    """The database read, the list and the write on asyncpg alone: the same queries, each on
    its own (no transaction around them)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def read(self, item_id: int) -> ItemRead | None:
        row = await self.pool.fetchrow(f"SELECT {_COLUMNS} FROM items WHERE id = $1", item_id)
        return None if row is None else ItemRead.model_validate(dict(row))

    async def list_page(self, limit: int, offset: int) -> ItemPage:
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS}, count(*) OVER () AS total FROM items ORDER BY id LIMIT $1 OFFSET $2",
            limit,
            offset,
        )
        return ItemPage(
            items=[ItemRead.model_validate(dict(row)) for row in rows],
            total=rows[0]["total"] if rows else 0,
            limit=limit,
            offset=offset,
        )

    async def create(self, payload: ItemCreate) -> ItemRead | None:
        try:
            row = await self.pool.fetchrow(
                f"INSERT INTO items (name, description) VALUES ($1, $2) RETURNING {_COLUMNS}",
                payload.name,
                payload.description,
            )
        except asyncpg.UniqueViolationError:
            return None
        return ItemRead.model_validate(dict(row))


on_asyncpg: OnAsyncpg


@asynccontextmanager
async def fastapi_lifespan(app: Any) -> AsyncIterator[None]:
    global on_asyncpg
    # asyncpg's pool at its defaults: ten connections, opened at start.
    dsn = settings.database_url.replace("+asyncpg", "", 1)
    async with lifespan(app), asyncpg.create_pool(dsn) as pool:
        on_asyncpg = OnAsyncpg(pool)
        yield


fastapi_app = FastAPI(lifespan=fastapi_lifespan, docs_url=None, redoc_url=None, openapi_url=None)


@fastapi_app.get("/health")
async def f_health() -> Liveness:
    return handlers.health()


@fastapi_app.get("/")
async def f_root() -> ServiceInfo:
    return handlers.root()


def _found(item: ItemRead | None) -> ItemRead:
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Item not found")
    return item


@fastapi_app.get("/items/{item_id}")
async def f_read_cached(item_id: ItemId) -> ItemRead:
    return _found(await handlers.read_through_cache(item_id))


@fastapi_app.get("/db/items/{item_id}")
async def f_read_database(item_id: ItemId) -> ItemRead:
    return _found(await handlers.read_from_database(item_id))


@fastapi_app.get("/items")
async def f_list(limit: int = 20, offset: int = 0) -> ItemPage:
    return await handlers.list_page(limit, offset)


@fastapi_app.post("/items", status_code=status.HTTP_201_CREATED)
async def f_create(payload: ItemCreate) -> ItemRead:
    created = await handlers.create(payload)
    if created is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "An item with this name exists")
    return created


@fastapi_app.get("/asyncpg/items/{item_id}")
async def f_read_with_asyncpg(item_id: ItemId) -> ItemRead:
    return _found(await on_asyncpg.read(item_id))


@fastapi_app.get("/asyncpg/items")
async def f_list_with_asyncpg(limit: int = 20, offset: int = 0) -> ItemPage:
    return await on_asyncpg.list_page(limit, offset)


@fastapi_app.post("/asyncpg/items", status_code=status.HTTP_201_CREATED)
async def f_create_with_asyncpg(payload: ItemCreate) -> ItemRead:
    created = await on_asyncpg.create(payload)
    if created is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "An item with this name exists")
    return created


# --- rate limiting alternatives, on bare FastAPI ------------------------------------

# slowapi counting on its own synchronous Redis storage (RATE_LIMIT_DEFAULT on
# REDIS_URL), as the template did before its middleware counted with `limits`'
# async API, and the same limit on that async Redis storage. Both with the app's
# Redis timeouts and no retries.
slowapi_limiter = Limiter(
    key_func=client_address,
    default_limits=[settings.rate_limit_default],
    headers_enabled=False,
    storage_uri=settings.redis_url,
    storage_options={
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_socket_timeout,
        "retry": Retry(NoBackoff(), retries=0),
        "key_prefix": f"{settings.cache_key_prefix}alt-ratelimit",
    },
)
async_limit = parse(settings.rate_limit_default)
async_limiter = FixedWindowRateLimiter(
    RedisStorage(
        f"async+{settings.redis_url}",
        implementation="redispy",
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
        key_prefix=f"{settings.cache_key_prefix}alt-ratelimit",
    )
)


@fastapi_app.get("/limited/slowapi-thread")
async def f_limited_slowapi_thread(request: Request) -> ServiceInfo:
    await asyncio.to_thread(slowapi_limiter._check_request_limit, request, f_limited_slowapi_thread, True)
    return handlers.root()


@fastapi_app.get("/limited/slowapi-anyio")
async def f_limited_slowapi_anyio(request: Request) -> ServiceInfo:
    await run_in_threadpool(slowapi_limiter._check_request_limit, request, f_limited_slowapi_anyio, True)
    return handlers.root()


@fastapi_app.get("/limited/slowapi-loop")
async def f_limited_slowapi_loop(request: Request) -> ServiceInfo:
    slowapi_limiter._check_request_limit(request, f_limited_slowapi_loop, True)
    return handlers.root()


@fastapi_app.get("/limited/limits-async")
async def f_limited_limits_async(request: Request) -> ServiceInfo:
    client = request.client.host if request.client else "unknown"
    if not await async_limiter.hit(async_limit, client, "root"):
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "Rate limit exceeded")
    return handlers.root()


# --- bare python-socketio ---------------------------------------------------------

_manager = (
    None
    if settings.redis_url is None
    else socketio.AsyncRedisManager(settings.redis_url, channel=f"{settings.cache_key_prefix}socketio")
)
sio = socketio.AsyncServer(async_mode="asgi", client_manager=_manager, transports=["websocket"])


@sio.on("join")
async def _join(sid: str, data: dict[str, str]) -> dict[str, bool]:
    await sio.enter_room(sid, data["room"])
    return {"ok": True}


async def s_emit(request: Request) -> Response:
    payload = await request.json()
    await sio.emit(payload.get("event", "message"), payload.get("data", {}), room=request.path_params["room"])
    return JSONResponse({"room": request.path_params["room"]}, status_code=202)


@asynccontextmanager
async def _sio_lifespan(app: Any) -> AsyncIterator[None]:
    async with lifespan(app):
        try:
            yield
        finally:
            await sio.shutdown()


socketio_app = socketio.ASGIApp(
    sio,
    other_asgi_app=Starlette(
        routes=[
            Route("/health", s_health),
            Route("/realtime/rooms/{room}/emit", s_emit, methods=["POST"]),
        ],
        lifespan=_sio_lifespan,
    ),
)
