"""Rate limiting with slowapi: a default limit per route, and tighter limits per route.

Every route of a router included with `dependencies=[Depends(default_limit)]`
(see `create_app`) gets RATE_LIMIT_DEFAULT per client. A route that needs its
own limit declares it with `@limiter.limit("10/minute")` under the route
decorator and takes `request: Request` and `response: Response` parameters
(slowapi reads the first and writes headers to the second); see
`app/items.py`.

{% if cookiecutter.use_redis %}
Budgets live in Redis when REDIS_URL is set, so every instance shares them,
and in process memory otherwise. slowapi talks to Redis synchronously: the
default limit runs in a worker thread, off the event loop; a route's own limit
runs on the loop, bounded by a 0.2 s timeout. When Redis fails, limits fall
back to per-process memory (logged once) and Redis is retried after a pause
that doubles up to about 30 s; requests keep being answered throughout.
{% else %}
Budgets live in process memory: each instance limits on its own.
{% endif %}
"""

{% if cookiecutter.use_redis %}
from typing import Any

{% endif %}
from fastapi import Request
{% if cookiecutter.use_redis %}
from fastapi.concurrency import run_in_threadpool
{% endif %}
from fastapi.responses import JSONResponse, Response
{% if cookiecutter.use_redis %}
from redis.backoff import NoBackoff
from redis.retry import Retry
{% endif %}
from slowapi import Limiter
from slowapi.errors import RateLimitExceeded
from slowapi.middleware import _should_exempt

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
            "retry": Retry(NoBackoff(), retries=0),
            "key_prefix": f"{settings.cache_key_prefix}ratelimit",
        }
{% endif %}
    return Limiter(
        key_func=client_address,
        default_limits=[settings.rate_limit_default],
        enabled=settings.rate_limit_enabled,
        headers_enabled=True,
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


def _check_default_limit(request: Request, response: Response) -> None:
    # The same steps as slowapi's middleware, given the route routing found.
    endpoint = request.scope.get("endpoint")
    if _should_exempt(limiter, endpoint):
        return
    limiter._check_request_limit(request, endpoint, True)
    current = getattr(request.state, "view_rate_limit", None)
    if current is not None:
        limiter._inject_headers(response, current)


async def default_limit(request: Request, response: Response) -> None:
    """Apply RATE_LIMIT_DEFAULT to the route, unless it declares its own limit.

    This does the job of slowapi's middleware, which finds a request's route by
    scanning `app.routes`: since FastAPI 0.137 that list no longer shows the
    routes of included routers, so the middleware silently leaves them unlimited
    (slowapi issue #281). A dependency runs after routing and knows the route.
    """
    if not limiter.enabled:
        return
{% if cookiecutter.use_redis %}
    # slowapi's storage calls block; in a worker thread they leave the event loop free.
    await run_in_threadpool(_check_default_limit, request, response)
{% else %}
    _check_default_limit(request, response)
{% endif %}


async def rate_limit_exceeded(request: Request, error: Exception) -> Response:
    """429 JSON with `Retry-After` and the `X-RateLimit-*` headers."""
    limit = error.detail if isinstance(error, RateLimitExceeded) else "too many requests"
    response = JSONResponse({"detail": f"Rate limit exceeded: {limit}"}, status_code=429)
    # The call slowapi's own handler makes to add the headers.
    with_headers: Response = limiter._inject_headers(response, request.state.view_rate_limit)
    return with_headers
