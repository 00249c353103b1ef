"""The limits a route declared with slowapi's decorators.

slowapi offers no public way to read them back: it keeps them in attributes of
the `Limiter`. This module is the only place that reads those, and `check`
fails at startup (and in `tests/test_ratelimit.py`) if a slowapi release
changes them, rather than letting limits go missing quietly.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slowapi import Limiter
from slowapi.wrappers import Limit, LimitGroup


@dataclass(frozen=True)
class DeclaredLimits:
    own: tuple[Limit, ...]
    # Limits given as a function of the request, worked out per request.
    dynamic: tuple[LimitGroup, ...]
    exempt: bool
    replaces_defaults: bool

    @property
    def limited(self) -> bool:
        """Whether the route has limits of its own."""
        return not self.exempt and bool(self.own or self.dynamic)


def declared_limits(limiter: Limiter, endpoint: Callable[..., Any]) -> DeclaredLimits:
    name = f"{endpoint.__module__}.{endpoint.__name__}"
    own = tuple(limiter._route_limits.get(name, ()))
    dynamic = tuple(limiter._dynamic_route_limits.get(name, ()))
    return DeclaredLimits(
        own=own,
        dynamic=dynamic,
        exempt=name in limiter._exempt_routes,
        replaces_defaults=any(limit.override_defaults for limit in own),
    )


def check(limiter: Limiter) -> None:
    """Fail loudly when slowapi no longer keeps route limits where this module reads them."""
    stores = ("_route_limits", "_dynamic_route_limits", "_exempt_routes")
    if not all(hasattr(limiter, store) for store in stores):
        raise RuntimeError(
            "This slowapi release keeps route limits elsewhere: update "
            "app/ratelimit/slowapi_routes.py or pin slowapi"
        )
