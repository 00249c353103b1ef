"""The pure-ASGI middleware that checks every limit before the route runs."""

from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext, iter_route_contexts
from slowapi.errors import RateLimitExceeded
from slowapi.wrappers import Limit, LimitGroup
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

{% if cookiecutter.use_metrics %}
from app.metrics.collectors import RATE_LIMITED
{% endif %}
from app.paths import PROBE_PATHS
from app.ratelimit import slowapi_routes
from app.ratelimit.budgets import Budgets
from app.ratelimit.limiter import client_address, limiter
from app.settings import Settings
from app.state import STATE_KEY


class RateLimitMiddleware:
    """Each route's limits (its own from `@limiter.limit`, and RATE_LIMIT_DEFAULT for
    the methods in RATE_LIMIT_DEFAULT_METHODS unless those replace it), counted in
    the app's `Budgets`.

    Not slowapi's own middleware: it finds a request's route by scanning
    `app.routes`, which since FastAPI 0.137 leaves out the routes of included
    routers, so they go unlimited without a word (slowapi issue #281).
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.enabled = settings.rate_limit_enabled
        self.default_methods = frozenset(settings.rate_limit_default_methods)
        defaults = LimitGroup(
            limit_provider=settings.rate_limit_default,
            key_function=client_address,
            scope=None,
            per_method=False,
            methods=settings.rate_limit_default_methods,
            error_message=None,
            exempt_when=None,
            cost=1,
            override_defaults=False,
        )
        self.defaults = tuple(defaults)
        slowapi_routes.check(limiter)
        # Listed at the first request, when every route is defined: every route, and
        # those with limits of their own (all a request of another method can meet).
        self.routes: list[RouteContext] | None = None
        self.own_limited: list[RouteContext] = []
        self.declared: dict[Callable[..., Any], slowapi_routes.DeclaredLimits] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # slowapi's decorator reads this after a limited route runs.
        scope["state"]["view_rate_limit"] = None
        if not self.enabled or scope["path"] in PROBE_PATHS:
            await self.app(scope, receive, send)
            return
        route = self.find_route(scope)
        if route is None or route.endpoint is None:
            # No limit applies, or no route (the app answers 404 or 405).
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        budgets: Budgets = scope["state"][STATE_KEY].rate_limits
        for limit in self.limits_for(route.endpoint, request):
            refusal = await self.check(limit, request, budgets)
            if refusal is not None:
{% if cookiecutter.use_metrics %}
                RATE_LIMITED.inc()
                # The router never sees a refused request: name its route as it would.
                scope["route"] = route.original_route
{% endif %}
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def find_route(self, scope: Scope) -> RouteContext | None:
        """The request's route, among the routes whose limits this request can meet."""
        if self.routes is None:
            self.routes = list(iter_route_contexts(scope["app"].routes))
            self.own_limited = [
                route
                for route in self.routes
                if route.endpoint is not None and self.declared_for(route.endpoint).limited
            ]
        candidates = self.routes if scope["method"] in self.default_methods else self.own_limited
        for route in candidates:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
        return None

    def declared_for(self, endpoint: Callable[..., Any]) -> slowapi_routes.DeclaredLimits:
        declared = self.declared.get(endpoint)
        if declared is None:
            declared = self.declared[endpoint] = slowapi_routes.declared_limits(limiter, endpoint)
        return declared

    def limits_for(self, endpoint: Callable[..., Any], request: Request) -> list[Limit]:
        declared = self.declared_for(endpoint)
        if declared.exempt:
            return []
        limits = [*declared.own]
        if not declared.replaces_defaults:
            limits += self.defaults
        for group in declared.dynamic:
            limits += group.with_request(request)
        return limits

    async def check(self, limit: Limit, request: Request, budgets: Budgets) -> JSONResponse | None:
        """slowapi's own steps for one limit; a 429 response when it is spent."""
        if limit.methods is not None and request.method.lower() not in limit.methods:
            return None
        if limit.is_exempt(request):
            return None
        key = limit.key_func(request)
        name = limit.scope or request.scope["path"]
        if limit.per_method:
            name += f":{request.method}"
        cost = limit.cost(request) if callable(limit.cost) else limit.cost
        if await budgets.hit(limit.limit, key, name, cost=cost):
            return None
        retry_after = await budgets.seconds_to_reset(limit.limit, key, name)
        return too_many_requests(RateLimitExceeded(limit).detail, retry_after)


def too_many_requests(limit: str, retry_after: int) -> JSONResponse:
    """429 JSON with `Retry-After`: the seconds until the client's window resets."""
    return JSONResponse(
        {"detail": f"Rate limit exceeded: {limit}"},
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )
