"""Prometheus metrics: what `/metrics` shows after real requests, and who may read it."""

import asyncio
{% if cookiecutter.deploy_target == "vm" %}
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
{% else %}
from collections.abc import AsyncIterator
{% endif %}
{% if cookiecutter.deploy_target == "vm" %}
from pathlib import Path
{% endif %}

import httpx
import pytest
from prometheus_client import REGISTRY
{% if cookiecutter.deploy_target == "vm" %}
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
{% endif %}
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
{% if cookiecutter.use_postgres %}
from sqlalchemy import text
{% endif %}

{% if cookiecutter.use_redis %}
from app.cache import Cache
{% endif %}
{% if cookiecutter.use_postgres %}
from app.db import open_database, watch_pool
{% endif %}
from app.main import create_app
from app.metrics.middleware import IN_FLIGHT_PERIOD
{% if cookiecutter.use_postgres %}
from app.models import Base
{% endif %}
from app.paths import PROBE_PATHS
{% if cookiecutter.use_socketio %}
from app.realtime.events import ChatEvents
{% endif %}
{% if cookiecutter.use_redis %}
from app.redis_client import RedisBreaker
{% endif %}
from app.settings import Settings
{% if cookiecutter.use_auth %}
from tests.auth import writer_headers
{% endif %}
{% if cookiecutter.deploy_target == "vm" %}
from tests.live import PROJECT_ROOT, free_port, wait_for
{% endif %}
from tests.support import client_on

TOKEN = "a-scraper-token-of-some-length"
SCRAPER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings, with a metrics token."""
    return settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with client_on(create_app(settings)) as client:
{% if cookiecutter.use_auth %}
        client.headers.update(writer_headers(settings))
{% endif %}
        yield client


async def scrape(client: httpx.AsyncClient) -> str:
    response = await client.get("/metrics", headers=SCRAPER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def requests_counted(exposition: str) -> dict[tuple[str, str, str], float]:
    """Requests answered (`http_request_duration_seconds_count`) by (method, route, status)."""
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for family in text_string_to_metric_families(exposition)
        if family.name == "http_request_duration_seconds"
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_count"
    }


def counted_since(before: str, after: str) -> dict[tuple[str, str, str], float]:
    """What was counted between two scrapes (every test process shares the counters)."""
    old = requests_counted(before)
    return {
        key: value - old.get(key, 0.0)
        for key, value in requests_counted(after).items()
        if value != old.get(key, 0.0)
    }


async def test_each_route_template_is_counted_and_no_raw_path_becomes_a_label(
    client: httpx.AsyncClient,
) -> None:
    before = await scrape(client)
    for _ in range(3):
        assert (await client.get("/")).status_code == 200
    # A probe: the platform's request, not counted.
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/no/such/page/4711")).status_code == 404
{% if cookiecutter.use_postgres %}
    created = await client.post("/items", json={"name": "counted"})
    assert created.status_code == 201, created.text
    item_id = created.json()["id"]
    for _ in range(2):
        assert (await client.get(f"/items/{item_id}")).status_code == 200
    assert (await client.get("/items/987654")).status_code == 404
{% endif %}
    after = await scrape(client)

    assert counted_since(before, after) == {
        ("GET", "/", "200"): 3,
        ("GET", "<unmatched>", "404"): 1,
{% if cookiecutter.use_postgres %}
        ("POST", "/items", "201"): 1,
        ("GET", "/items/{item_id}", "200"): 2,
        ("GET", "/items/{item_id}", "404"): 1,
{% endif %}
    }
    # The path, not its digits: the exposition's timestamps may hold any digits.
    assert "/no/such/page" not in after
{% if cookiecutter.use_postgres %}
    assert f'/items/{item_id}"' not in after
    assert "/items/987654" not in after
{% endif %}
    assert 'http_request_duration_seconds_count{method="GET",route="/",status="200"}' in after
    # Every request has ended by the time /metrics answers, which is not counted itself.
    assert "\nhttp_requests_in_flight 0.0\n" in after


async def test_requests_in_flight_are_counted_while_they_run(settings: Settings) -> None:
    app = create_app(settings)
    release = asyncio.Event()

    async def slow() -> dict[str, str]:
        await release.wait()
        return {}

    app.add_api_route("/slow", slow)
    async with client_on(app) as client:
        running = [asyncio.create_task(client.get("/slow")) for _ in range(2)]
        await asyncio.sleep(IN_FLIGHT_PERIOD * 3)
        # Copied to the gauge with no scrape: what a scrape of another gunicorn worker reads.
        copied = REGISTRY.get_sample_value("http_requests_in_flight")
        during = await scrape(client)
        release.set()
        answered = await asyncio.gather(*running)
        after = await scrape(client)

    assert [response.status_code for response in answered] == [200, 200]
    assert copied == 2
    assert "\nhttp_requests_in_flight 2.0\n" in during
    assert "\nhttp_requests_in_flight 0.0\n" in after


async def test_unknown_methods_share_one_label(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    for method in ("BREW", "WHEN"):
        await client.request(method, "/")
    after = await scrape(client)

    counted = counted_since(before, after)
    assert {method for method, _route, _status in counted} == {"OTHER"}
    assert sum(counted.values()) == 2


async def test_every_route_of_the_app_has_its_template_as_the_route_label(
    settings: Settings,
) -> None:
    """Fails if FastAPI stops putting the matched route in the scope."""
    app = create_app(settings)
    paths = app.openapi()["paths"]
    # The probes are left out of the metrics by design.
    templates = {path for path in paths if "get" in paths[path] and "{" not in path} - PROBE_PATHS
    async with client_on(app) as client:
        before = await scrape(client)
        for template in templates:
            await client.get(template)
        after = await scrape(client)

    assert {route for _method, route, _status in counted_since(before, after)} == templates


async def test_metrics_requests_are_not_counted(client: httpx.AsyncClient) -> None:
    first = await scrape(client)
    second = await scrape(client)

    assert counted_since(first, second) == {}
    assert "/metrics" not in second


async def test_without_a_token_configured_metrics_is_not_found(settings: Settings) -> None:
    async with client_on(create_app(settings.model_copy(update={"metrics_token": None}))) as client:
        response = await client.get("/metrics", headers=SCRAPER)

    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}],
    ids=["none", "wrong token", "no scheme", "other scheme"],
)
async def test_metrics_without_the_token_is_refused_with_401_json(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/metrics", headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"detail": "A bearer token is required"}


def test_a_short_token_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="METRICS_TOKEN"):
        Settings(_env_file=None, metrics_token="short")


def test_an_empty_token_means_unset() -> None:
    assert Settings(_env_file=None, metrics_token="").metrics_token is None


def value(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0
{% if cookiecutter.use_postgres %}


async def test_pool_figures_follow_connections_in_and_out(settings: Settings) -> None:
    small_pool = settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 2})
    async with open_database(small_pool, Base.metadata) as database:
        watch_pool(database.engine)
        before = value("db_pool_connections_in_use")
        async with database.engine.connect() as first, database.engine.connect() as second:
            await first.execute(text("SELECT 1"))
            await second.execute(text("SELECT 1"))
            assert value("db_pool_connections_in_use") == before + 2
            if database.engine.dialect.name == "postgresql":
                # A pool of one: the second connection is an overflow.
                assert value("db_pool_overflow") == 1
        assert value("db_pool_connections_in_use") == before
{% endif %}
{% if cookiecutter.use_postgres and cookiecutter.use_redis %}


async def test_reading_an_item_twice_counts_a_cache_miss_then_a_hit(
    client: httpx.AsyncClient,
) -> None:
    created = await client.post("/items", json={"name": "cached"})
    assert created.status_code == 201, created.text
    hits = value("cache_lookups_total", {"result": "hit"})
    misses = value("cache_lookups_total", {"result": "miss"})

    for _ in range(2):
        assert (await client.get(f"/items/{created.json()['id']}")).status_code == 200

    assert value("cache_lookups_total", {"result": "miss"}) == misses + 1
    assert value("cache_lookups_total", {"result": "hit"}) == hits + 1
{% endif %}
{% if cookiecutter.use_redis %}


async def test_cache_hits_and_misses_are_counted() -> None:
    cache = Cache(None, RedisBreaker(), default_ttl=60)
    hits = value("cache_lookups_total", {"result": "hit"})
    misses = value("cache_lookups_total", {"result": "miss"})

    assert await cache.get("absent") is None
    await cache.set("present", 1)
    assert await cache.get("present") == 1
    assert await cache.get("present") == 1

    assert value("cache_lookups_total", {"result": "hit"}) == hits + 2
    assert value("cache_lookups_total", {"result": "miss"}) == misses + 1


def test_redis_failures_are_counted() -> None:
    before = value("redis_errors_total")

    RedisBreaker().failed(ConnectionError("refused"))

    assert value("redis_errors_total") == before + 1
{% endif %}
{% if cookiecutter.use_rate_limit %}


async def test_rate_limit_refusals_are_counted(settings: Settings) -> None:
    limited = settings.model_copy(
        update={"rate_limit_enabled": True, "rate_limit_default": "2/minute"}
    )
    app = create_app(limited)

    @app.post("/notes")
    async def write_note() -> None:
        """A write route with the default limit."""

    before = value("rate_limited_requests_total")
    async with client_on(app) as client:
        answers = [(await client.post("/notes")).status_code for _ in range(4)]
        exposition = await scrape(client)

    assert answers == [200, 200, 429, 429]
    assert value("rate_limited_requests_total") == before + 2
    assert counted_since("", exposition)[("POST", "/notes", "429")] == 2


async def test_metrics_is_never_rate_limited(settings: Settings) -> None:
    strict = settings.model_copy(
        update={
            "rate_limit_enabled": True,
            "rate_limit_default": "1/minute",
            "rate_limit_default_methods": ["GET"],
        }
    )
    async with client_on(create_app(strict)) as client:
        statuses = [(await client.get("/metrics", headers=SCRAPER)).status_code for _ in range(3)]

    assert statuses == [200, 200, 200]
{% endif %}
{% if cookiecutter.use_socketio %}


async def test_socketio_clients_are_counted_while_connected(settings: Settings) -> None:
    events = ChatEvents(settings)
    before = value("socketio_connected_clients")

    await events.on_connect("a-client", {})
    assert value("socketio_connected_clients") == before + 1
    await events.on_disconnect("a-client", "client disconnect")

    assert value("socketio_connected_clients") == before
{% endif %}
{% if cookiecutter.deploy_target == "vm" %}


@pytest.mark.live
def test_two_gunicorn_workers_counts_add_up(tmp_path: Path) -> None:
    """Each worker counts in its own files; any worker's /metrics shows the sum."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "METRICS_TOKEN": TOKEN,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
{% if cookiecutter.use_postgres %}
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
{% endif %}
    }
    command = [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app.main:app"]
    with (tmp_path / "server.log").open("ab") as log:
        server = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)

    def get_root(_: int) -> int:
        # A connection per request, several at once, so both workers answer some.
        return httpx.get(f"{base}/", headers={"Connection": "close"}).status_code

    try:
        wait_for(f"{base}/health", server)
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(get_root, range(200)))
        scraped = httpx.get(f"{base}/metrics", headers=SCRAPER)
        per_worker = [
            requests_counted_in(MultiProcessCollector.merge([str(path)]))
            for path in metrics_dir.glob("histogram_*.db")
        ]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    assert statuses == [200] * 200
    assert scraped.status_code == 200
    assert requests_counted(scraped.text)[("GET", "/", "200")] == 200
    served = [count for count in per_worker if count]
    assert len(served) == 2, f"one worker answered every request: {per_worker}"
    assert sum(served) == 200


def requests_counted_in(families: Iterable[Metric]) -> float:
    """GET / answered 200, in one worker's file."""
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "http_request_duration_seconds_count"
        and sample.labels == {"method": "GET", "route": "/", "status": "200"}
    )
{% endif %}
