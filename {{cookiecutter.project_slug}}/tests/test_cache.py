import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.cache import Cache
from app.redis_client import RedisBreaker, create_redis
from app.settings import Settings


@pytest.fixture(params=["local", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    """The same tests on the in-process backend and, when REDIS_URL is set, on Redis."""
    if request.param == "local":
        yield Cache(None, RedisBreaker(), default_ttl=60)
        return
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    redis = create_redis(Settings(_env_file=None, redis_url=url))
    assert redis is not None
    yield Cache(redis, RedisBreaker(), default_ttl=60, prefix=f"test-{uuid.uuid4().hex}:")
    await redis.aclose()


async def test_round_trip_and_delete(cache: Cache) -> None:
    assert await cache.get("missing") is None

    await cache.set("key", {"a": [1, 2]})
    assert await cache.get("key") == {"a": [1, 2]}

    await cache.delete("key")
    assert await cache.get("key") is None


async def test_entries_expire(cache: Cache) -> None:
    await cache.set("short", "value", ttl=1)
    assert await cache.get("short") == "value"

    await asyncio.sleep(1.1)
    assert await cache.get("short") is None


async def test_local_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.cache.LOCAL_MAX_ENTRIES", 3)
    cache = Cache(None, RedisBreaker(), default_ttl=60)
    for n in range(5):
        await cache.set(f"k{n}", n)

    assert [await cache.get(f"k{n}") for n in range(5)] == [None, None, 2, 3, 4]


async def test_redis_outage_is_a_miss_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    redis = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    cache = Cache(redis, RedisBreaker(), default_ttl=60)

    with caplog.at_level(logging.WARNING, logger="app.redis_client"):
        for _ in range(5):
            await cache.set("key", "value")
            assert await cache.get("key") is None

    assert len(caplog.records) == 1
    await redis.aclose()


async def test_reads_at_once_share_one_round_trip(round_trips: list[int]) -> None:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    redis = create_redis(Settings(_env_file=None, redis_url=url))
    assert redis is not None
    cache = Cache(redis, RedisBreaker(), default_ttl=60, prefix=f"test-{uuid.uuid4().hex}:")
    for n in range(5):
        await cache.set(f"k{n}", n)
    sent = round_trips[0]
    found = await asyncio.gather(*(cache.get(f"k{n}") for n in range(6)))

    assert found == [0, 1, 2, 3, 4, None]
    assert round_trips[0] == sent + 1
    await redis.aclose()
