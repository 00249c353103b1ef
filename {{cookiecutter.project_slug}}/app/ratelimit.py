"""Rate limiting with slowapi: a default limit for every route, tighter limits per route.

`RateLimitMiddleware` gives every route but the health probes RATE_LIMIT_DEFAULT
per client. A route that needs a limit of its own declares it with slowapi's
decorator under the route decorator, and takes a `request: Request` parameter
(slowapi's decorator needs it); see `app/items.py`:

    @router.post("")
    @limiter.limit("10/minute")
    async def create_item(request: Request, ...) -> ...:

Over the limit, the answer is 429 JSON with `Retry-After`.

slowapi holds the limits; the middleware counts them with the asynchronous API
of `limits`, the library slowapi is built on, on the event loop. (slowapi's own
checks are synchronous: each limited request would wait for a worker thread.)
{% if cookiecutter.use_redis %}

Budgets live in Redis when REDIS_URL is set, so every instance shares them, and
in process memory otherwise. They go through the app's Redis client, with its
timeouts and no retries. When Redis fails, limits fall back to per-process
memory (logged once) and Redis is tried again after a pause that doubles up to
about 30 s; requests keep being answered throughout.
{% else %}

Budgets live in process memory: each instance limits on its own.
{% endif %}
"""

import itertools
{% if cookiecutter.use_redis %}
import logging
{% endif %}
import math
import time
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext, iter_route_contexts
from limits import RateLimitItem
from limits.aio.storage import MemoryStorage{{ ", RedisStorage" if cookiecutter.use_redis else "" }}
from limits.aio.strategies import FixedWindowRateLimiter
{% if cookiecutter.use_redis %}
from redis.asyncio import Redis
from redis.exceptions import RedisError
{% endif %}
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.wrappers import Limit
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.health import HEALTH_PATHS
from app.settings import Settings, get_settings
{% if cookiecutter.use_redis %}

logger = logging.getLogger(__name__)

# After a Redis failure, budgets count in memory this long before Redis is tried
# again; the pause doubles with each failure in a row, up to the longest.
FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 32.0
{% endif %}


def client_address(request: Request) -> str:
    """The client's address.

    Behind a proxy listed in FORWARDED_ALLOW_IPS this is already the forwarded
    client address (the app's proxy-headers middleware replaced it); headers
    from anyone else are ignored, so a client cannot pick its own budget.
    """
    return request.client.host if request.client else "unknown"


def create_limiter(settings: Settings) -> Limiter:
    """slowapi's limiter, where routes declare their limits; it counts nothing itself."""
    return Limiter(
        key_func=client_address,
        default_limits=[settings.rate_limit_default],
        enabled=settings.rate_limit_enabled,
        # RateLimitMiddleware makes every check, for decorated routes too.
        auto_check=False,
        headers_enabled=False,
    )


# Module-level because route decorators need it when the routes are defined;
# it is configured from the environment when this module is first imported.
limiter = create_limiter(get_settings())


class Budgets:
    """What each client has used of each limit{{ ": in Redis, or in memory while Redis fails" if cookiecutter.use_redis else ", in process memory" }}.

    Made in the lifespan (`rate_limits` in its state).
    """

{% if cookiecutter.use_redis %}
    def __init__(self, redis: Redis | None, key_prefix: str) -> None:
        self.memory = FixedWindowRateLimiter(MemoryStorage())
        self.shared: FixedWindowRateLimiter | None = None
        if redis is not None:
            # On the app's own connections. (`limits` types its storage options as
            # plain values; a connection pool is one it documents.)
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]
                key_prefix=key_prefix,
            )
            self.shared = FixedWindowRateLimiter(storage)
        self.failing = False
        self.pause = FIRST_PAUSE_SECONDS
        self.retry_at = 0.0

    def counter(self) -> FixedWindowRateLimiter:
        if self.shared is not None and time.monotonic() >= self.retry_at:
            return self.shared
        return self.memory

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """Count one request; False when it is over the limit."""
        counter = self.counter()
        if counter is self.memory:
            return await counter.hit(item, *identifiers, cost=cost)
        try:
            allowed = await counter.hit(item, *identifiers, cost=cost)
        except (RedisError, OSError) as error:
            self.shared_failed(error)
            return await self.memory.hit(item, *identifiers, cost=cost)
        if self.failing:
            logger.info("Rate limit storage recovered: budgets are shared again")
            self.failing = False
            self.pause = FIRST_PAUSE_SECONDS
        return allowed

    def shared_failed(self, error: Exception) -> None:
        if not self.failing:
            logger.warning(
                "Rate limit storage failed (%s): falling back to in-memory storage",
                type(error).__name__,
            )
        self.failing = True
        self.retry_at = time.monotonic() + self.pause
        self.pause = min(self.pause * 2, LONGEST_PAUSE_SECONDS)

    async def seconds_to_reset(self, item: RateLimitItem, *identifiers: str) -> int:
        try:
            reset_at, _remaining = await self.counter().get_window_stats(item, *identifiers)
        except (RedisError, OSError):  # The longest wait is one window.
            return int(item.get_expiry())
        return max(1, math.ceil(reset_at - time.time()))
{% else %}
    def __init__(self) -> None:
        self.memory = FixedWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """Count one request; False when it is over the limit."""
        return await self.memory.hit(item, *identifiers, cost=cost)

    async def seconds_to_reset(self, item: RateLimitItem, *identifiers: str) -> int:
        reset_at, _remaining = await self.memory.get_window_stats(item, *identifiers)
        return max(1, math.ceil(reset_at - time.time()))
{% endif %}


def declared_limits(endpoint: Callable[..., object]) -> tuple[tuple[Limit, ...], list[Any]]:
    """A route's limits as slowapi holds them, and its limits given as functions.

    Its own limits from `@limiter.limit`, with the defaults unless those replace
    them; none for a route under `@limiter.exempt`.
    """
    name = f"{endpoint.__module__}.{endpoint.__name__}"
    own = limiter._route_limits.get(name, [])
    dynamic = limiter._dynamic_route_limits.get(name, [])
    if name in limiter._exempt_routes:
        return (), []
    if any(limit.override_defaults for limit in own):
        return tuple(own), dynamic
    return (*own, *itertools.chain.from_iterable(limiter._default_limits)), dynamic


class RateLimitMiddleware:
    """slowapi's limits, checked before the route runs (pure ASGI).

    slowapi's own `SlowAPIASGIMiddleware` finds a request's route by scanning
    `app.routes`, which since FastAPI 0.137 no longer lists the routes of
    included routers, so it leaves them unlimited without a word (slowapi issue
    #281). This one finds the route with FastAPI's `iter_route_contexts`, takes
    its limits from slowapi as slowapi would (its own from `@limiter.limit`, and
    the defaults unless those replace them), and counts them in `Budgets`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The app's routes, listed at the first request (they are all defined by then).
        self.routes: list[RouteContext] | None = None
        # Each route's limits, worked out at its first request.
        self.route_limits: dict[Callable[..., object], tuple[tuple[Limit, ...], list[Any]]] = {}

    def find_endpoint(self, scope: Scope) -> Callable[..., object] | None:
        if self.routes is None:
            self.routes = list(iter_route_contexts(scope["app"].routes))
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.endpoint
        return None

    def limits_for(self, endpoint: Callable[..., object], request: Request) -> tuple[Limit, ...]:
        declared = self.route_limits.get(endpoint)
        if declared is None:
            declared = self.route_limits[endpoint] = declared_limits(endpoint)
        limits, dynamic = declared
        # Limits given as a function are worked out for each request.
        for group in dynamic:
            limits = (*limits, *group.with_request(request))
        return limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not limiter.enabled or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        state = scope["state"]
        # slowapi's decorator reads this after the route runs (its headers are off).
        state["view_rate_limit"] = None
        endpoint = self.find_endpoint(scope)
        if endpoint is None:  # No route: the app answers 404 or 405, unlimited.
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        budgets: Budgets = state["rate_limits"]
        # The steps of slowapi's own check, with the counting awaited.
        for limit in self.limits_for(endpoint, request):
            if limit.methods is not None and request.method.lower() not in limit.methods:
                continue
            if limit.is_exempt(request):
                continue
            key = limit.key_func(request)
            limit_scope = limit.scope or scope["path"]
            if limit.per_method:
                limit_scope += f":{request.method}"
            cost = limit.cost(request) if callable(limit.cost) else limit.cost
            if not await budgets.hit(limit.limit, key, limit_scope, cost=cost):
                retry_after = await budgets.seconds_to_reset(limit.limit, key, limit_scope)
                response = too_many_requests(RateLimitExceeded(limit).detail, retry_after)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def too_many_requests(limit: str, retry_after: int) -> JSONResponse:
    """429 JSON with `Retry-After`: the seconds until the client's window resets."""
    return JSONResponse(
        {"detail": f"Rate limit exceeded: {limit}"},
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )
