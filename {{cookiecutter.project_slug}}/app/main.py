"""The ASGI entry point: `app.main:app`, built by `create_app()`."""

import functools
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

{% if cookiecutter.use_socketio %}
import socketio
{% endif %}
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.types import ASGIApp

from app import __version__, health{{ ", items" if cookiecutter.use_postgres else "" }}{{ ", realtime" if cookiecutter.use_socketio else "" }}
{% if cookiecutter.use_redis %}
from app.cache import Cache, create_redis
{% endif %}
{% if cookiecutter.use_postgres %}
from app.db import (
    UNAVAILABLE_ERRORS,
    create_engine,
    create_sessionmaker,
    create_sqlite_schema,
    database_unavailable,
)
{% endif %}
from app.errors import request_validation_failed
from app.log import configure_logging
from app.middleware import EdgeMiddleware
from app.proxy import ForwardedMiddleware
{% if cookiecutter.use_rate_limit %}
from app.ratelimit import Budgets, RateLimitMiddleware
{% endif %}
{% if cookiecutter.use_sentry %}
from app.sentry import init_sentry
{% endif %}
from app.settings import Settings, SettingsDep, get_settings

# Full collections once per 100 young-generation passes rather than per 10.
FULL_COLLECTION_THRESHOLD = 100


@functools.cache
def tune_garbage_collector() -> None:
    """Keep full garbage collections rare and short: each one stops the process.

    What exists at the first start (modules, clients) lives as long as the
    process: frozen, no full collection walks it again (about 100 ms of pause
    with this app loaded). What long-lived connections hold still makes full
    collections of tens of milliseconds; `FULL_COLLECTION_THRESHOLD` makes
    them a tenth as frequent, at the cost of cyclic garbage living longer.
    Once per process (cached), so apps started and stopped by tests are still
    collected. (The frozen count cannot tell whether this ran: Python 3.12
    starts with a few hundred objects frozen.)
    """
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)


class ServiceInfo(BaseModel):
    service: str
    version: str
    docs: str | None


def create_app(settings: Settings | None = None) -> ASGIApp:
    """Build the service: routes, middleware, and the clients its lifespan opens."""
    settings = settings or get_settings()
    configure_logging(settings)
{% if cookiecutter.use_sentry %}
    init_sentry(settings)
{% endif %}
{% if cookiecutter.use_socketio %}
    sio = realtime.create_server(settings)
{% endif %}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
{% if cookiecutter.use_postgres %}
        engine = create_engine(settings)
        probe_engine = create_engine(settings, for_probes=True)
        if engine.dialect.name == "sqlite":
            await create_sqlite_schema(engine)
{% endif %}
{% if cookiecutter.use_redis %}
        redis = create_redis(settings)
{% endif %}
{% if cookiecutter.use_socketio %}
        restore_signals = realtime.close_clients_on_stop(sio)
{% endif %}
        tune_garbage_collector()
{% if cookiecutter.use_postgres or cookiecutter.use_redis or cookiecutter.use_socketio %}
        try:
            yield {
                "settings": settings,
{% if cookiecutter.use_socketio %}
                "sio": sio,
{% endif %}
{% if cookiecutter.use_postgres %}
                "sessionmaker": create_sessionmaker(engine),
                "probe_engine": probe_engine,
{% endif %}
{% if cookiecutter.use_redis %}
                "redis": redis,
                "cache": Cache(redis, settings.cache_ttl_seconds, settings.cache_key_prefix),
{% endif %}
{% if cookiecutter.use_rate_limit and cookiecutter.use_redis %}
                "rate_limits": Budgets(redis, f"{settings.cache_key_prefix}ratelimit"),
{% elif cookiecutter.use_rate_limit %}
                "rate_limits": Budgets(),
{% endif %}
            }
        finally:
{% if cookiecutter.use_socketio %}
            restore_signals()
            await sio.shutdown()
{% endif %}
{% if cookiecutter.use_redis %}
            if redis is not None:
                await redis.aclose()
{% endif %}
{% if cookiecutter.use_postgres %}
            await engine.dispose()
            await probe_engine.dispose()
{% endif %}
{% else %}
{% if cookiecutter.use_rate_limit %}
        yield {"settings": settings, "rate_limits": Budgets()}
{% else %}
        yield {"settings": settings}
{% endif %}
{% endif %}

    docs = settings.serve_docs
    api = FastAPI(
        title=settings.service_name,
        version=__version__,
        debug=settings.debug,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
        # FastAPI's built-in OpenTelemetry looks for a configured provider on
        # every request, about 8 µs of a 100 µs one (measured), and this service
        # does not use it. To export OpenTelemetry, remove this argument and
        # install `fastapi[standard]`.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )

    health.add_probes(api, settings)

    @api.get("/", tags=["meta"])
    async def root(settings: SettingsDep) -> ServiceInfo:
        return ServiceInfo(
            service=settings.service_name,
            version=__version__,
            docs="/docs" if settings.serve_docs else None,
        )

    api.add_exception_handler(RequestValidationError, request_validation_failed)
{% if cookiecutter.use_postgres %}
    api.include_router(items.router)
    for error in UNAVAILABLE_ERRORS:
        api.add_exception_handler(error, database_unavailable)
{% endif %}
{% if cookiecutter.use_socketio %}
    api.include_router(realtime.router)
{% endif %}

    # Added inside out: the last one added sees a request first.
{% if cookiecutter.use_rate_limit %}
    api.add_middleware(RateLimitMiddleware)
{% endif %}
    api.add_middleware(EdgeMiddleware, settings=settings)
    # Outermost, so the others see the client and scheme the proxy forwarded.
    api.add_middleware(ForwardedMiddleware, settings=settings)
{% if cookiecutter.use_socketio %}
    # Socket.IO answers /socket.io/ and hands everything else, lifespan included, to the API.
    served: ASGIApp = socketio.ASGIApp(sio, other_asgi_app=api)
    return served
{% else %}
    return api
{% endif %}


app = create_app()
