"""Rate limiting: a default limit for every route, tighter limits per route.

Every route but the health probes gets RATE_LIMIT_DEFAULT per client. A route
that needs a limit of its own declares it with slowapi's decorator, under the
route decorator (see `app/items/routes.py`):

    @router.post("")
    @limiter.limit("10/minute")
    async def create_item(request: Request, ...) -> ...:

Over the limit, the answer is 429 JSON with `Retry-After`. `RateLimitMiddleware`
checks every limit before the route runs, counting in `Budgets`{{ " (Redis, shared by\nevery instance, or memory while Redis fails)" if cookiecutter.use_redis else " (process memory)" }}.
"""

from app.ratelimit.limiter import limiter

__all__ = ["limiter"]
