"""Health endpoints: liveness touches nothing, readiness checks each dependency.

Readiness fails (503) only for what requests cannot do without{{ ": the database" if cookiecutter.use_postgres else "" }}.
{% if cookiecutter.use_redis %}
Redis is not one of those: whatever uses it has a fallback while it fails, so a
Redis outage is reported as `degraded` in the body with a 200, and platforms keep
every instance in service.
{% endif %}

The probes read the app's state directly rather than through `app.deps`: platforms
call them every few seconds, and resolving a dependency costs more than a liveness
answer itself.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Literal

from fastapi import FastAPI, Request, Response
from pydantic import BaseModel
{% if cookiecutter.use_postgres %}
from sqlalchemy import text
{% endif %}

from app import __version__
from app.deps import app_state
from app.paths import LIVENESS_PATH, READINESS_PATH


class Liveness(BaseModel):
    status: Literal["ok"]
    service: str
    version: str
    environment: str
    timestamp: datetime


class CheckResult(BaseModel):
    status: Literal["ok", "error"]
    # Whether the service is unavailable while this check fails.
    required: bool
    latency_ms: float
    error: str | None = None


class Readiness(BaseModel):
    status: Literal["ok", "degraded", "unavailable"]
    checks: dict[str, CheckResult]


async def run_check(
    check: Callable[[], Awaitable[object]], *, required: bool, limit: float
) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(limit):
            await check()
    except TimeoutError:
        error: str | None = f"no answer within {limit} s"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        # The class name only: an error's text may carry a connection URL.
        error = type(exc).__name__
    else:
        error = None
    return CheckResult(
        status="ok" if error is None else "error",
        required=required,
        latency_ms=round((time.perf_counter() - started) * 1000, 2),
        error=error,
    )


async def liveness(request: Request) -> Liveness:
    """The process is up and serving; no dependency is touched."""
    settings = app_state(request).settings
    return Liveness(
        status="ok",
        service=settings.service_name,
        version=__version__,
        environment=settings.environment,
        timestamp=datetime.now(UTC),
    )


async def readiness(request: Request, response: Response) -> Readiness:
    """Each dependency answers within HEALTH_CHECK_TIMEOUT; 503 when a required one fails."""
    state = app_state(request)
    # name -> (check, required)
    checks: dict[str, tuple[Callable[[], Awaitable[object]], bool]] = {}
{% if cookiecutter.use_postgres %}

    async def database() -> None:
        async with state.database.probe_engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    checks["database"] = (database, True)
{% endif %}
{% if cookiecutter.use_redis %}
    if state.redis is not None:
        checks["redis"] = (state.redis.ping, False)
{% endif %}
    results = await asyncio.gather(
        *(
            run_check(check, required=required, limit=state.settings.health_check_timeout)
            for check, required in checks.values()
        )
    )
    by_name = dict(zip(checks, results, strict=True))
    failed = [result for result in results if result.status == "error"]
    if any(result.required for result in failed):
        response.status_code = 503
        return Readiness(status="unavailable", checks=by_name)
    return Readiness(status="degraded" if failed else "ok", checks=by_name)


def add_probes(app: FastAPI) -> None:
    """Serve the probes as routes of the app itself, not of an included router:
    FastAPI matches an included router's route twice per request, which costs a
    probe about a seventh of its time. Called before the routers are included, so
    the probes are matched first."""
    app.add_api_route(LIVENESS_PATH, liveness, tags=["health"])
    app.add_api_route(
        READINESS_PATH, readiness, tags=["health"], responses={503: {"model": Readiness}}
    )
