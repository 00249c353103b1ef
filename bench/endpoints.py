"""The HTTP part: each endpoint of the default project next to the same handler on its ceilings."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from redis import Redis

from bench.collector import Collector
from bench.config import BENCH, Settings
from bench.load import Alternative, Row, Target, describe, measure_http
from bench.login import measure_login
from bench.project import Project
from bench.servers import Server, http_status, serving
from toolkit.auth import mint_token
from toolkit.bakery import REDIS_URL

# Ways to apply the same Redis-backed limit to GET / on bare FastAPI (bench/ceilings.py).
LIMITERS = (
    ("slowapi-thread", "slowapi, storage calls in `asyncio.to_thread`"),
    ("slowapi-anyio", "slowapi, storage calls in Starlette's `run_in_threadpool`"),
    ("slowapi-loop", "slowapi on the event loop (slowapi's middleware)"),
    ("limits-async", "`limits` with its async Redis storage (the app)"),
)


ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def assert_counted(server: Server, prefix: str) -> None:
    """GET / on `server` leaves a rate-limit counter in Redis: else its row measures no limiter."""
    if http_status(server.port, "/") != 200:
        raise RuntimeError(f"{server.name} does not answer GET / with 200")
    with Redis.from_url(REDIS_URL) as redis:
        if not redis.keys(f"{prefix}ratelimit*"):
            raise RuntimeError(f"GET / on {server.name} was not counted against a rate limit")


def measure_endpoints(project: Project, settings: Settings) -> dict[str, Any]:
    """Throughput, latency and CPU per request of every row, the login cost, and RSS after the load."""
    app = project.server("app")
    unlimited = project.server("app-unlimited", RATE_LIMIT_ENABLED="false")
    # The default limit covers writes only; here it covers GET / too, counted under a prefix of its own.
    limited_prefix = f"{project.env['CACHE_KEY_PREFIX']}limited-reads:"
    limited = project.server(
        "app-limited-reads", RATE_LIMIT_DEFAULT_METHODS=",".join(ALL_METHODS), CACHE_KEY_PREFIX=limited_prefix
    )
    without_redis = project.server("app-no-redis", cwd=project.without_redis, RATE_LIMIT_ENABLED="false")
    without_metrics = project.server("app-no-metrics", cwd=project.without_metrics)
    without_redis_or_metrics = project.server(
        "app-no-redis-no-metrics", cwd=project.without_redis_or_metrics, RATE_LIMIT_ENABLED="false"
    )
    protected = project.server("app-protected", "protected:app", RATE_LIMIT_ENABLED="false")
    collector = Collector()
    traced = project.server(
        "app-traced",
        cwd=project.without_redis,
        RATE_LIMIT_ENABLED="false",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
    )
    fastapi = project.server("fastapi", "ceilings:fastapi_app")
    starlette = project.server("starlette", "ceilings:starlette_app")
    post = BENCH / "post.lua"
    signed_in = (f"Authorization: Bearer {mint_token(project.python, project.directory, project.env)}",)
    item = project.item

    def row(key: str, label: str, app: Target, fastapi_path: str, script: bool = False) -> Row:
        """The app's target against the same path (and wrk script) on both ceilings."""
        return Row(
            key,
            label,
            app,
            Target(fastapi, fastapi_path, post if script else None),
            Target(starlette, fastapi_path, post if script else None),
        )

    # Rows in one group are measured in the same rounds, so their ratios pair up.
    groups: list[list[Row | Alternative]] = [
        [
            row("health", "GET /health", Target(app, "/health"), "/health"),
            row(
                "health_no_metrics",
                "GET /health, project without metrics",
                Target(without_metrics, "/health"),
                "/health",
            ),
        ],
        [
            row(
                "item_db",
                "GET /items/{id} from the database (project without Redis)*",
                Target(without_redis, f"/items/{item}"),
                f"/db/items/{item}",
            ),
            row(
                "item_db_traced",
                "The same read, traced (spans sent to a local OTLP endpoint)*",
                Target(traced, f"/items/{item}"),
                f"/db/items/{item}",
            ),
            row(
                "item_db_no_metrics",
                "The same read, project without metrics*",
                Target(without_redis_or_metrics, f"/items/{item}"),
                f"/db/items/{item}",
            ),
            row(
                "item_cache",
                "GET /items/{id} from the Redis cache*",
                Target(unlimited, f"/items/{item}"),
                f"/items/{item}",
            ),
            row(
                "item_protected",
                "The same read behind a bearer token (access token checked)*",
                Target(protected, f"/protected/items/{item}", headers=signed_in),
                f"/items/{item}",
            ),
        ],
        [row("write", "POST /items", Target(app, "/items", post, signed_in), "/items", script=True)],
        [
            row("limited", "GET /, rate-limited (Redis storage)†", Target(limited, "/"), "/"),
            row("unlimited", "GET /, rate limiting off", Target(unlimited, "/"), "/"),
            *(
                Alternative(key, label, Target(fastapi, f"/limited/{key}"), Target(fastapi, "/"))
                for key, label in LIMITERS
            ),
        ],
    ]
    found: dict[str, Any] = {}
    servers = (
        app,
        unlimited,
        limited,
        without_redis,
        without_metrics,
        without_redis_or_metrics,
        protected,
        traced,
        fastapi,
        starlette,
    )
    with collector, serving(*servers):
        assert_counted(limited, limited_prefix)
        found["auth"] = measure_login(project.python, project.directory, unlimited, settings.logins)
        http = measure_http(groups, settings, project.pinning, project.run_id)
        if not collector.exports:
            raise RuntimeError("the traced instance sent no spans: its row measured no tracing")
        found["tracing"] = {"exports": collector.exports, "megabytes": collector.bytes / 1e6}
        time.sleep(1.0)
        found["rss_after_load_mb"] = app.rss_mb()
    items = [item for group in groups for item in group]
    return found | {
        "http": {key: asdict(value) for key, value in http.items()},
        "rows": [describe(item) for item in items if isinstance(item, Row)],
        "alternatives": [describe(item) for item in items if isinstance(item, Alternative)],
    }
