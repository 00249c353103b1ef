"""The app's lifespan: each feature's piece, entered in one place, and the state they make."""

import functools
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import {{ "AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager" if cookiecutter.use_postgres or cookiecutter.use_redis or cookiecutter.use_socketio or cookiecutter.use_metrics else "AbstractAsyncContextManager, asynccontextmanager" }}
{% if cookiecutter.use_metrics %}
from typing import TYPE_CHECKING
{% endif %}

from fastapi import FastAPI
{% if cookiecutter.use_socketio %}
from socketio import AsyncServer
{% endif %}

{% if cookiecutter.use_redis %}
from app.cache import Cache
{% endif %}
{% if cookiecutter.use_postgres %}
from app.db import {{ "open_database, watch_pool" if cookiecutter.use_metrics else "open_database" }}
{% endif %}
{% if cookiecutter.use_worker %}
from app.jobs.queue import open_jobs
from app.jobs.tasks import Resources
{% endif %}
{% if cookiecutter.use_postgres %}
from app.models import Base
{% endif %}
{% if cookiecutter.use_rate_limit %}
from app.ratelimit.budgets import Budgets
{% endif %}
{% if cookiecutter.use_socketio %}
{% if cookiecutter.use_redis %}
from app.realtime.broadcast import open_broadcaster
{% else %}
from app.realtime.broadcast import Broadcaster
{% endif %}
from app.realtime.lifecycle import open_realtime
{% endif %}
{% if cookiecutter.use_redis %}
from app.redis_client import RedisBreaker, open_redis
{% endif %}
from app.settings import Settings
from app.state import STATE_KEY, AppState
{% if cookiecutter.use_metrics %}
from app.tracing import open_tracing

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
{% endif %}

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[dict[str, AppState]]]


{% set parameters = ["settings: Settings"] + (["sio: AsyncServer"] if cookiecutter.use_socketio else []) + (['tracing: "TracerProvider | None"'] if cookiecutter.use_metrics else []) %}
def lifespan({{ parameters | join(", ") }}) -> Lifespan:
    """Open what the app holds at startup, close it at shutdown (in reverse order)."""

    @asynccontextmanager
    async def run(_app: FastAPI) -> AsyncIterator[dict[str, AppState]]:
{% if not (cookiecutter.use_postgres or cookiecutter.use_redis or cookiecutter.use_socketio or cookiecutter.use_metrics) %}
        tune_garbage_collector()
        yield {STATE_KEY: AppState(settings=settings{{ ", rate_limits=Budgets()" if cookiecutter.use_rate_limit else "" }})}
{% else %}
        async with AsyncExitStack() as stack:
{% if cookiecutter.use_postgres %}
            database = await stack.enter_async_context(open_database(settings, Base.metadata))
{% if cookiecutter.use_metrics %}
            watch_pool(database.engine)
{% endif %}
{% endif %}
{% if cookiecutter.use_redis %}
            redis = await stack.enter_async_context(open_redis(settings))
            breaker = RedisBreaker()
{% endif %}
{% if cookiecutter.use_metrics %}
{% set clients = (["database.engine"] if cookiecutter.use_postgres else []) + (["redis"] if cookiecutter.use_redis else []) %}
            await stack.enter_async_context(open_tracing({{ (["tracing"] + clients) | join(", ") }}))
{% endif %}
{% if cookiecutter.use_socketio %}
            await stack.enter_async_context(open_realtime(sio))
{% if cookiecutter.use_redis %}
            broadcaster = await stack.enter_async_context(open_broadcaster(settings))
{% else %}
            broadcaster = Broadcaster()
{% endif %}
{% endif %}
{% if cookiecutter.use_worker %}
            jobs = await stack.enter_async_context(
                open_jobs(
                    Resources(
                        settings=settings,
{% if cookiecutter.use_postgres %}
                        database=database,
{% endif %}
                        redis=redis,
{% if cookiecutter.use_socketio %}
                        sio=sio,
{% endif %}
                    ),
                    redis,
                    breaker,
                )
            )
{% endif %}
            tune_garbage_collector()
            yield {
                STATE_KEY: AppState(
                    settings=settings,
{% if cookiecutter.use_postgres %}
                    database=database,
{% endif %}
{% if cookiecutter.use_redis %}
                    redis=redis,
                    redis_breaker=breaker,
                    cache=Cache(
                        redis, breaker, settings.cache_ttl_seconds, settings.cache_key_prefix
                    ),
{% endif %}
{% if cookiecutter.use_rate_limit and cookiecutter.use_redis %}
                    rate_limits=Budgets(redis, breaker, f"{settings.cache_key_prefix}ratelimit"),
{% elif cookiecutter.use_rate_limit %}
                    rate_limits=Budgets(),
{% endif %}
{% if cookiecutter.use_socketio %}
                    sio=sio,
                    broadcaster=broadcaster,
{% endif %}
{% if cookiecutter.use_worker %}
                    jobs=jobs,
{% endif %}
                )
            }
{% endif %}

    return run


# Full collections once per 100 young-generation passes rather than per 10.
FULL_COLLECTION_THRESHOLD = 100


@functools.cache
def tune_garbage_collector() -> None:
    """Freeze what the first start made and make full collections rarer, once per process.

    Each full collection pauses the process for as long as it takes to walk every
    object; the benchmark's latency tails show it (see the CHANGELOG).
    """
    gc.freeze()
    young, middle, _full = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_THRESHOLD)
