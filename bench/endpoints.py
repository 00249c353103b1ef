"""The HTTP part: each endpoint of the default project next to the same handler on its ceilings."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from redis import Redis

from bench.collector import Collector
from bench.config import BENCH, Settings
from bench.load import Alternative, Driver, Group, Item, Row, Target, Versus, describe, measure_http
from bench.login import measure_login
from bench.peer import Peer
from bench.project import Project
from bench.rows import CommittedRows
from bench.servers import Server, http_status
from toolkit.auth import mint_token
from toolkit.bakery import REDIS_URL

# Ways to apply the same Redis-backed limit to GET / on bare FastAPI (bench/ceilings.py).
LIMITERS = (
    ("slowapi-thread", "slowapi, storage calls in `asyncio.to_thread`"),
    ("slowapi-anyio", "slowapi, storage calls in Starlette's `run_in_threadpool`"),
    ("slowapi-loop", "slowapi on the event loop (slowapi's middleware)"),
    ("limits-async", "`limits` with its async Redis storage (one round trip per request)"),
)


ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def assert_counted(server: Server, prefix: str) -> None:
    """GET / on `server` leaves a rate-limit counter in Redis: else its row measures no limiter."""
    if http_status(server.port, "/") != 200:
        raise RuntimeError(f"{server.name} does not answer GET / with 200")
    with Redis.from_url(REDIS_URL) as redis:
        if not redis.keys(f"{prefix}ratelimit*"):
            raise RuntimeError(f"GET / on {server.name} was not counted against a rate limit")


def measure_endpoints(project: Project, settings: Settings, peer: Peer | None) -> dict[str, Any]:
    """Throughput, latency and CPU per request of every row, the login cost, and RSS after the load.

    With `peer`, the list, the cached read and the write are also measured on the peer
    template's project, in the same rounds as the generated project's.
    """
    app = project.server("app")
    unlimited = project.server("app-unlimited", RATE_LIMIT_ENABLED="false")
    # The default limit covers writes only; here it covers GET / too, counted under a prefix of its own.
    limited_prefix = f"{project.env['CACHE_KEY_PREFIX']}limited-reads:"
    limited = project.server(
        "app-limited-reads", RATE_LIMIT_DEFAULT_METHODS=",".join(ALL_METHODS), CACHE_KEY_PREFIX=limited_prefix
    )
    without_redis = project.server("app-no-redis", cwd=project.without_redis, RATE_LIMIT_ENABLED="false")
    # SQLAlchemy's own pool sizes, for what keeping every connection (DB_MAX_OVERFLOW=0) is worth.
    library_pool = project.server(
        "app-no-redis-library-pool",
        cwd=project.without_redis,
        RATE_LIMIT_ENABLED="false",
        DB_POOL_SIZE="5",
        DB_MAX_OVERFLOW="10",
    )
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
    # The write rows on a database of their own (see Project.write_database).
    writes = {"DATABASE_URL": project.write_database}
    app_writes = project.server("app-writes", **writes)
    fastapi_writes = project.server("fastapi-writes", "ceilings:fastapi_app", **writes)
    starlette_writes = project.server("starlette-writes", "ceilings:starlette_app", **writes)
    post = BENCH / "post.lua"
    signed_in = (f"Authorization: Bearer {mint_token(project.python, project.directory, project.env)}",)
    item = project.item

    def row(key: str, label: str, app: Target, fastapi_path: str) -> Row:
        """The app's target against the same path on both ceilings."""
        return Row(key, label, app, Target(fastapi, fastapi_path), Target(starlette, fastapi_path))

    page = "/items?limit=10"
    cached = f"/items/{item}"
    health = [
        row("health", "GET /health", Target(app, "/health"), "/health"),
        row(
            "health_no_metrics",
            "GET /health, project without metrics",
            Target(without_metrics, "/health"),
            "/health",
        ),
    ]
    # The database read, then the same read on variants of the project.
    database_reads = (
        ("item_db", "GET /items/{id} from the database (project without Redis)*", without_redis),
        ("item_db_traced", "The same read, traced (spans sent to a local OTLP endpoint)*", traced),
        (
            "item_db_library_pool",
            "The same read on SQLAlchemy's default pool (5 kept, 10 more opened and closed)*",
            library_pool,
        ),
        ("item_db_no_metrics", "The same read, project without metrics*", without_redis_or_metrics),
    )
    reads: list[Item] = [
        *(
            row(key, label, Target(server, f"/items/{item}"), f"/db/items/{item}")
            for key, label, server in database_reads
        ),
        Driver(
            "driver_read",
            "GET /items/{id} from the database",
            Target(without_redis, f"/items/{item}"),
            Target(fastapi, f"/db/items/{item}"),
            Target(fastapi, f"/asyncpg/items/{item}"),
        ),
        row("item_cache", "GET /items/{id} from the Redis cache*", Target(unlimited, cached), cached),
        row(
            "item_protected",
            "The same read behind a bearer token (access token checked)*",
            Target(protected, f"/items/{item}/protected", headers=signed_in),
            cached,
        ),
    ]
    listing: list[Item] = [
        row("list", "GET /items?limit=10 (a page of 10 and the total)", Target(app, page), page),
        Driver(
            "driver_list",
            "GET /items?limit=10",
            Target(app, page),
            Target(fastapi, page),
            Target(fastapi, "/asyncpg/items?limit=10"),
        ),
    ]
    # The rows the write commits are counted too, for the comparison with the peer.
    counters = [CommittedRows(project.python, project.write_database, "items")]
    write = Target(app_writes, "/items", post, signed_in, rows=counters[0])
    writing: list[Item] = [
        Row(
            "write",
            "POST /items",
            write,
            Target(fastapi_writes, "/items", post),
            Target(starlette_writes, "/items", post),
        ),
        Driver(
            "driver_write",
            "POST /items",
            write,
            Target(fastapi_writes, "/items", post),
            Target(fastapi_writes, "/asyncpg/items", post),
        ),
    ]
    limiting = [
        row("limited", "GET /, rate-limited (Redis storage)†", Target(limited, "/"), "/"),
        row("unlimited", "GET /, rate limiting off", Target(unlimited, "/"), "/"),
        *(
            Alternative(key, label, Target(fastapi, f"/limited/{key}"), Target(fastapi, "/"))
            for key, label in LIMITERS
        ),
    ]
    if peer is not None:
        # The default project as generated against the peer's, each in the group of its path.
        peer_server = peer.server(project, "peer")
        listing.append(
            Versus(
                "peer_list", "List 10 rows", Target(app, page), Target(peer_server, "/api/dummy/?limit=10")
            )
        )
        reads.append(
            Versus(
                "peer_cache",
                "Read one value from Redis (the app: GET /items/{id} from the cache)",
                Target(app, cached),
                Target(peer_server, f"/api/redis/?key={peer.cache_key}"),
            )
        )
        # Also rated by the rows it stores a second: the peer commits after responding.
        peer_rows = CommittedRows(project.python, peer.database, "dummy_model")
        counters.append(peer_rows)
        writing.append(
            Versus(
                "peer_write",
                "Create a row (the peer: PUT /api/dummy/)",
                write,
                Target(peer_server, "/api/dummy/", post, method="PUT", rows=peer_rows),
            )
        )
    found: dict[str, Any] = {}

    def before_reads() -> None:
        # While `unlimited` serves nothing else.
        found["auth"] = measure_login(project.python, project.directory, unlimited, settings.logins)
        if peer is not None:
            http_status(app.port, cached)  # caches the item the peer's key then holds
            peer.copy_cached_item(project)

    def rss_after_load() -> None:
        time.sleep(1.0)
        found["rss_after_load_mb"] = app.rss_mb()

    groups = [
        Group(health),
        Group(reads, ready=before_reads),
        # The last group that drives `app`.
        Group(listing, done=rss_after_load),
        Group(writing),
        Group(limiting, ready=lambda: assert_counted(limited, limited_prefix)),
    ]
    try:
        with collector:
            http = measure_http(groups, settings, project.pinning, project.run_id)
    finally:
        for counter in counters:
            counter.close()
    if not collector.exports:
        raise RuntimeError("the traced instance sent no spans: its row measured no tracing")
    found["tracing"] = {"exports": collector.exports, "megabytes": collector.bytes / 1e6}
    items = [item for group in groups for item in group.items]
    return found | {
        "http": {key: asdict(value) for key, value in http.items()},
        "rows": [describe(item) for item in items if isinstance(item, Row)],
        "alternatives": [describe(item) for item in items if isinstance(item, Alternative)],
        "peer": [describe(item) for item in items if isinstance(item, Versus)],
        "drivers": [describe(item) for item in items if isinstance(item, Driver)],
    }
