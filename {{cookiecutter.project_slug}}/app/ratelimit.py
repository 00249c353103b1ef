"""Rate limiting with slowapi: a default limit for every route, tighter limits per route.

`RateLimitMiddleware` gives every route but the health probes RATE_LIMIT_DEFAULT
per client. A route that needs a limit of its own declares it with slowapi's
decorator under the route decorator, and takes a `request: Request` parameter
(slowapi's decorator needs it); see `app/items.py`:

    @router.post("")
    @limiter.limit("10/minute")
    async def create_item(request: Request, ...) -> ...:

Over the limit, the answer is 429 JSON with `Retry-After`.
{% if cookiecutter.use_redis %}

Budgets live in Redis when REDIS_URL is set, so every instance shares them, and
in process memory otherwise. slowapi talks to Redis synchronously, so its
calls run in a worker thread, never on the event loop, each bounded by a 0.2 s
timeout. When Redis fails, limits fall back to per-process memory (logged
once) and Redis is retried after a pause that doubles up to about 30 s;
requests keep being answered throughout.
{% else %}

Budgets live in process memory: each instance limits on its own.
{% endif %}
"""

{% if cookiecutter.use_redis %}
import asyncio
{% endif %}
import math
import time
from collections.abc import Callable
{% if cookiecutter.use_redis %}
from typing import Any
{% endif %}

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import RouteContext, iter_route_contexts
{% if cookiecutter.use_redis %}
from redis.backoff import NoBackoff
from redis.retry import Retry
{% endif %}
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from app.health import HEALTH_PATHS
from app.settings import Settings, get_settings

STORAGE_TIMEOUT_SECONDS = 0.2


def client_address(request: Request) -> str:
    """The client's address.

    Behind a proxy listed in FORWARDED_ALLOW_IPS this is already the forwarded
    client address (the app's proxy-headers middleware replaced it); headers
    from anyone else are ignored, so a client cannot pick its own budget.
    """
    return request.client.host if request.client else "unknown"


def create_limiter(settings: Settings) -> Limiter:
{% if cookiecutter.use_redis %}
    storage_uri, storage_options = "memory://", dict[str, Any]()
    if settings.redis_url is not None:
        storage_uri = settings.redis_url
        storage_options = {
            "socket_timeout": STORAGE_TIMEOUT_SECONDS,
            "socket_connect_timeout": STORAGE_TIMEOUT_SECONDS,
            # redis-py's default retries back off for seconds: none, the limit fails open.
            "retry": Retry(NoBackoff(), retries=0),
            "key_prefix": f"{settings.cache_key_prefix}ratelimit",
        }
{% endif %}
    return Limiter(
        key_func=client_address,
        default_limits=[settings.rate_limit_default],
        enabled=settings.rate_limit_enabled,
        # slowapi reads the X-RateLimit-* headers with two more storage calls per
        # request; 429 answers carry Retry-After without them.
        headers_enabled=False,
{% if cookiecutter.use_redis %}
        storage_uri=storage_uri,
        storage_options=storage_options,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
{% else %}
        storage_uri="memory://",
{% endif %}
    )


# Module-level because route decorators need it when the routes are defined;
# it is configured from the environment when this module is first imported.
limiter = create_limiter(get_settings())


class RateLimitMiddleware:
    """slowapi's limits, checked before the route runs (pure ASGI).

    slowapi's own `SlowAPIASGIMiddleware` finds a request's route by scanning
    `app.routes`, which since FastAPI 0.137 no longer lists the routes of
    included routers, so it leaves them unlimited without a word (slowapi issue
    #281). This one takes the same steps but finds the route with FastAPI's
    `iter_route_contexts`. It also checks the limits routes declare with
    `@limiter.limit`, so that every storage call runs off the event loop;
    slowapi's decorator then sees the check done and skips its own.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # The app's routes, listed at the first request (they are all defined by then).
        self.routes: list[RouteContext] | None = None

    def find_endpoint(self, scope: Scope) -> Callable[..., object] | None:
        if self.routes is None:
            self.routes = list(iter_route_contexts(scope["app"].routes))
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route.endpoint
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not limiter.enabled or scope["path"] in HEALTH_PATHS:
            await self.app(scope, receive, send)
            return
        endpoint = self.find_endpoint(scope)
        if endpoint is None:  # No route: the app answers 404 or 405, unlimited.
            await self.app(scope, receive, send)
            return
        name = f"{endpoint.__module__}.{endpoint.__name__}"
        own_limit = name in limiter._route_limits or name in limiter._dynamic_route_limits
        request = Request(scope, receive, send)
        try:
{% if cookiecutter.use_redis %}
            # slowapi's storage calls block (on Redis): in a worker thread, off the event
            # loop. asyncio's own thread pool: measured, about 10% more requests a second
            # than Starlette's run_in_threadpool.
            await asyncio.to_thread(limiter._check_request_limit, request, endpoint, not own_limit)
{% else %}
            limiter._check_request_limit(request, endpoint, not own_limit)
{% endif %}
        except RateLimitExceeded as exceeded:
            response = await rate_limit_exceeded(request, exceeded)
            await response(scope, receive, send)
            return
        if own_limit:
            # Tells slowapi's decorator the check is done. When slowapi swallowed a
            # storage error (requests in flight as the storage failed), the check left
            # no limit behind, and the decorator would fail reading it.
            request.state._rate_limiting_complete = True
            request.state.view_rate_limit = getattr(request.state, "view_rate_limit", None)
        await self.app(scope, receive, send)


def _seconds_to_reset(request: Request) -> int:
    limit, keys = request.state.view_rate_limit
    try:
        reset_at, _remaining = limiter.limiter.get_window_stats(limit, *keys)
    except Exception:  # noqa: BLE001 - the storage failed: the longest wait is one window
        return int(limit.get_expiry())
    return max(1, math.ceil(reset_at - time.time()))


async def rate_limit_exceeded(request: Request, error: Exception) -> Response:
    """429 JSON with `Retry-After`: the seconds until the client's window resets."""
    limit = error.detail if isinstance(error, RateLimitExceeded) else "too many requests"
    retry_after = {{ "await asyncio.to_thread(_seconds_to_reset, request)" if cookiecutter.use_redis else "_seconds_to_reset(request)" }}
    return JSONResponse(
        {"detail": f"Rate limit exceeded: {limit}"},
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )
