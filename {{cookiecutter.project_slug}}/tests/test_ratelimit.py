"""Rate limits: 429 with Retry-After, keyed on the real client address{{ "; shared through
Redis, and answering while Redis is down" if cookiecutter.use_redis else "" }}."""

{% if cookiecutter.use_redis %}
import asyncio
{% endif %}
import itertools
{% if cookiecutter.use_redis %}
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
{% endif %}
from pathlib import Path

import httpx
import pytest
from limits import parse
{% if cookiecutter.use_redis %}
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
{% endif %}

from app.main import create_app
from app.ratelimit import limiter
{% if cookiecutter.use_redis %}
from app.ratelimit.budgets import Budgets
{% endif %}
from app.ratelimit.slowapi_routes import declared_limits
{% if cookiecutter.use_redis %}
from app.redis_client import {{ "CommandBatcher, " if cookiecutter.use_postgres else "" }}RedisBreaker
{% endif %}
from app.settings import Settings
from tests.live import {{ "free_port, " if cookiecutter.use_redis else "" }}live_server
from tests.support import client_for, client_on

_addresses = itertools.count(1)
EVERY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings, with rate limits on."""
    return settings.model_copy(update={"rate_limit_enabled": True})


@pytest.fixture
def every_method(settings: Settings) -> Settings:
    """Rate limits on, and RATE_LIMIT_DEFAULT for reads too."""
    return settings.model_copy(update={"rate_limit_default_methods": EVERY_METHOD})


def some_client() -> dict[str, str]:
    """Headers of a request the local proxy forwards for a client never seen before."""
    n = next(_addresses)
    return {"X-Forwarded-For": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}


async def statuses(
    client: httpx.AsyncClient, path: str, count: int, headers: dict[str, str]
) -> list[int]:
    return [(await client.get(path, headers=headers)).status_code for _ in range(count)]


async def test_by_default_writes_are_limited_and_reads_are_not(settings: Settings) -> None:
    app = create_app(settings)

    @app.post("/notes")
    async def write_note() -> None:
        """A write route with no limit of its own."""

    limit = parse(settings.rate_limit_default).amount
    headers = some_client()
    async with client_on(app) as client:
        writes = [(await client.post("/notes", headers=headers)).status_code for _ in range(limit)]
        refused = await client.post("/notes", headers=headers)
        reads = await statuses(client, "/", limit + 5, headers)

    assert writes == [200] * limit
    assert refused.status_code == 429
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert reads == [200] * (limit + 5)


async def test_every_route_gets_the_default_limit_for_the_methods_named(
    every_method: Settings,
) -> None:
    limit = parse(every_method.rate_limit_default).amount
{% if cookiecutter.use_postgres %}
    # `/` is the app's own route, `/items` one of an included router.
    paths = ["/", "/items"]
{% else %}
    paths = ["/"]
{% endif %}
    async with client_for(every_method) as client:
        for path in paths:
            headers = some_client()
            answers = await statuses(client, path, limit, headers)
            refused = await client.get(path, headers=headers)

            assert answers == [200] * limit, path
            assert refused.status_code == 429, path
            assert 0 < int(refused.headers["retry-after"]) <= 60
{% if cookiecutter.use_postgres %}


async def test_a_route_limit_answers_429_json_with_retry_after(client: httpx.AsyncClient) -> None:
    headers = some_client()
    for n in range(10):
        created = await client.post("/items", json={"name": f"limited-{n}"}, headers=headers)
        assert created.status_code == 201, created.text

    refused = await client.post("/items", json={"name": "one-too-many"}, headers=headers)
    other_client = await client.post("/items", json={"name": "another"}, headers=some_client())

    assert refused.status_code == 429
    assert refused.json() == {"detail": "Rate limit exceeded: 10 per 1 minute"}
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-request-id"]
    assert other_client.status_code == 201
{% if cookiecutter.use_redis %}


async def test_a_route_limit_fails_open_while_redis_fails(
    client: httpx.AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if settings.redis_url is None:
        pytest.skip("REDIS_URL is unset: budgets are in memory")

    async def unreachable(*_args: object, **_kwargs: object) -> int:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(CommandBatcher, "call", unreachable)
    headers = some_client()
    created = [
        await client.post("/items", json={"name": f"redis-down-{n}"}, headers=headers)
        for n in range(11)
    ]

    # Counted in memory meanwhile: still limited, never a 500.
    assert [answer.status_code for answer in created] == [201] * 10 + [429]
{% endif %}
{% endif %}
{% if cookiecutter.use_redis %}


@pytest.fixture
async def shared_budgets(settings: Settings) -> AsyncIterator[Budgets]:
    """Budgets on the test Redis, under a key prefix of their own."""
    if settings.redis_url is None:
        pytest.skip("REDIS_URL is unset: budgets are in memory")
    redis = AsyncRedis.from_url(settings.redis_url)
    yield Budgets(redis, RedisBreaker(), f"test-{uuid.uuid4().hex}")
    await redis.aclose()


async def test_requests_counted_at_once_share_one_round_trip_and_an_exact_count(
    shared_budgets: Budgets, round_trips: list[int]
) -> None:
    item = parse("20/minute")
    allowed = await asyncio.gather(*(shared_budgets.hit(item, "client", "/") for _ in range(30)))

    assert allowed == [True] * 20 + [False] * 10
    assert round_trips[0] == 1
    assert 0 < await shared_budgets.seconds_to_reset(item, "client", "/") <= 60


async def test_a_failed_round_trip_sends_every_request_in_it_to_memory(
    shared_budgets: Budgets, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*_args: object, **_kwargs: object) -> list[object]:
        raise RedisConnectionError("Redis is down")

    monkeypatch.setattr(Pipeline, "execute", unreachable)
    item = parse("3/minute")
    allowed = await asyncio.gather(*(shared_budgets.hit(item, "client", "/") for _ in range(5)))

    assert allowed == [True] * 3 + [False] * 2
    assert not shared_budgets.breaker.available()
{% endif %}


async def test_health_probes_are_never_limited(client: httpx.AsyncClient) -> None:
    answers = {(await client.get("/health")).status_code for _ in range(150)}
    assert answers == {200}


async def test_forwarded_addresses_count_only_from_trusted_proxies(every_method: Settings) -> None:
    settings = every_method
    limit = parse(settings.rate_limit_default).amount
    # Behind the trusted local proxy, each forwarded client has a budget of its own.
    spender, other = some_client(), some_client()
    async with client_for(settings) as client:
        spent = await statuses(client, "/", limit + 1, spender)
        untouched = await statuses(client, "/", 1, other)
    assert spent[-1] == 429
    assert untouched == [200]

    # From a peer that is not a trusted proxy, the header is ignored: whatever
    # address it names, every request spends the peer's one budget.
    untrusted = settings.model_copy(update={"forwarded_allow_ips": ["192.0.2.1"]})
    async with client_for(untrusted) as client:
        answers = [
            (await client.get("/", headers=some_client())).status_code for _ in range(limit + 1)
        ]
    assert answers[-1] == 429


async def test_the_limits_follow_the_settings_given_to_the_app(every_method: Settings) -> None:
    tight = every_method.model_copy(update={"rate_limit_default": "2/minute"})
    off = tight.model_copy(update={"rate_limit_enabled": False})
    async with client_for(tight) as client:
        limited = await statuses(client, "/", 3, some_client())
    async with client_for(off) as client:
        unlimited = await statuses(client, "/", 3, some_client())

    assert limited == [200, 200, 429]
    assert unlimited == [200, 200, 200]


@limiter.limit("3/minute")
async def own_limit(request: object) -> None:
    """Declared like a route, to read back what slowapi kept."""


@limiter.limit("5/minute", override_defaults=False)
async def added_limit(request: object) -> None:
    """Declared like a route, to read back what slowapi kept."""


@limiter.limit(lambda: "7/minute")
async def dynamic_limit(request: object) -> None:
    """Declared like a route, to read back what slowapi kept."""


@limiter.exempt  # type: ignore[untyped-decorator]
async def exempt(request: object) -> None:
    """Declared like a route, to read back what slowapi kept."""


def test_the_slowapi_adapter_reads_back_every_kind_of_declaration() -> None:
    # Fails when a slowapi release keeps route limits elsewhere: see slowapi_routes.py.
    own = declared_limits(limiter, own_limit)
    added = declared_limits(limiter, added_limit)
    dynamic = declared_limits(limiter, dynamic_limit)

    assert [str(limit.limit) for limit in own.own] == ["3 per 1 minute"]
    assert own.replaces_defaults
    assert [str(limit.limit) for limit in added.own] == ["5 per 1 minute"]
    assert not added.replaces_defaults
    assert len(dynamic.dynamic) == 1
    assert declared_limits(limiter, exempt).exempt
    assert not own.exempt
{% if not cookiecutter.use_redis %}


@pytest.mark.live
def test_a_real_server_enforces_the_limit(tmp_path: Path) -> None:
    env = {
{% if cookiecutter.use_postgres %}
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
{% endif %}
        "RATE_LIMIT_DEFAULT": "3/minute",
        "RATE_LIMIT_DEFAULT_METHODS": ",".join(EVERY_METHOD),
    }
    with live_server(tmp_path / "server.log", **env) as base:
        responses = [httpx.get(f"{base}/", timeout=5) for _ in range(4)]

    assert [response.status_code for response in responses] == [200, 200, 200, 429]
    assert responses[3].json()["detail"] == "Rate limit exceeded: 3 per 1 minute"
    assert 0 < int(responses[3].headers["retry-after"]) <= 60
{% endif %}
{% if cookiecutter.use_redis %}


requires_redis = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="REDIS_URL is not set")


@pytest.mark.live
@requires_redis
def test_two_instances_share_one_budget(tmp_path: Path) -> None:
    env = server_env(tmp_path, REDIS_URL=os.environ["REDIS_URL"], RATE_LIMIT_DEFAULT="4/minute")
    with (
        live_server(tmp_path / "a.log", **env) as a,
        live_server(tmp_path / "b.log", **env) as b,
    ):
        answers = [httpx.get(f"{base}/", timeout=5) for base in (a, b, a, b, a, b)]

    assert [answer.status_code for answer in answers] == [200, 200, 200, 200, 429, 429]
    assert answers[4].json() == {"detail": "Rate limit exceeded: 4 per 1 minute"}
    assert 0 < int(answers[4].headers["retry-after"]) <= 60


@pytest.mark.live
@pytest.mark.skipif(not shutil.which("redis-server"), reason="redis-server is not installed")
def test_redis_outage_fails_open_without_blocking_and_recovers(tmp_path: Path) -> None:
    port = free_port()
    redis_url = f"redis://127.0.0.1:{port}/0"
    env = server_env(tmp_path, REDIS_URL=redis_url, RATE_LIMIT_DEFAULT="3/minute")
    log = tmp_path / "server.log"
    redis = start_redis(port)
    try:
        with live_server(log, **env) as base:
            # Redis up: the budget lives in Redis.
            assert [get(base) for _ in range(4)] == [200, 200, 200, 429]

            # Redis hung: answers keep coming and the event loop keeps turning.
            redis.send_signal(signal.SIGSTOP)
            statuses, slowest_probe = asyncio.run(requests_with_probes(base, count=2))
            assert statuses == [200, 200]
            assert slowest_probe < 0.35

            # Redis gone: still answered.
            redis.send_signal(signal.SIGKILL)
            redis.wait()
            assert get(base) == 200

            # Redis back (empty): budgets move back to it by themselves.
            redis = start_redis(port)
            client = Redis.from_url(redis_url)
            deadline = time.monotonic() + 45
            while not client.keys(f"{env['CACHE_KEY_PREFIX']}*") and time.monotonic() < deadline:
                get(base)
                time.sleep(0.5)
            assert client.keys(f"{env['CACHE_KEY_PREFIX']}*"), "limits never moved back to Redis"
            assert 429 in [get(base) for _ in range(4)]
            client.close()
    finally:
        redis.kill()
        redis.wait()
    assert log.read_text().count("Redis unavailable") == 1


def server_env(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "RATE_LIMIT_DEFAULT_METHODS": ",".join(EVERY_METHOD),
{% if cookiecutter.use_postgres %}
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'live.db'}",
{% endif %}
        "CACHE_KEY_PREFIX": f"test-{uuid.uuid4().hex[:12]}:",
        **env,
    }


def start_redis(port: int) -> subprocess.Popen[bytes]:
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    client = Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            client.ping()
            break
        except OSError:
            time.sleep(0.05)
    client.close()
    return redis


def get(base: str) -> int:
    return httpx.get(f"{base}/", timeout=5).status_code


async def requests_with_probes(base: str, count: int) -> tuple[list[int], float]:
    """Send `count` limited requests while timing /health, served by the same loop."""
    slowest = 0.0
    done = False

    async def probe(client: httpx.AsyncClient) -> None:
        nonlocal slowest
        while not done:
            started = time.perf_counter()
            await client.get(f"{base}/health")
            slowest = max(slowest, time.perf_counter() - started)
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(timeout=5) as client:
        prober = asyncio.create_task(probe(client))
        statuses = [(await client.get(f"{base}/")).status_code for _ in range(count)]
        done = True
        await prober
    return statuses, slowest
{% endif %}
