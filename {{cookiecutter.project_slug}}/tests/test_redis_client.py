import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from app.redis_client import (
    FIRST_PAUSE_SECONDS,
    LONGEST_PAUSE_SECONDS,
    CommandBatcher,
    RedisBreaker,
    create_redis,
)
from app.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_after_a_failure_redis_is_skipped_for_a_pause_that_doubles() -> None:
    clock = Clock()
    breaker = RedisBreaker(clock)
    assert breaker.available()

    pauses = []
    for _ in range(8):
        breaker.failed(ConnectionError())
        assert not breaker.available()
        started = clock.now
        while not breaker.available():
            clock.now += 0.25
        pauses.append(clock.now - started)

    assert pauses[0] == FIRST_PAUSE_SECONDS
    assert pauses[1] == 2 * FIRST_PAUSE_SECONDS
    assert pauses[-1] == LONGEST_PAUSE_SECONDS


def test_an_outage_is_logged_once_and_the_recovery_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    breaker = RedisBreaker(clock)
    with caplog.at_level(logging.INFO, logger="app.redis_client"):
        for _ in range(3):
            breaker.failed(ConnectionError())
            clock.now += LONGEST_PAUSE_SECONDS
        breaker.succeeded()
        breaker.succeeded()

    assert [record.levelname for record in caplog.records] == ["WARNING", "INFO"]
    assert breaker.available()
    breaker.failed(ConnectionError())
    clock.now += FIRST_PAUSE_SECONDS
    assert breaker.available()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.skip("REDIS_URL is not set")
    client = create_redis(Settings(_env_file=None, redis_url=url))
    assert client is not None
    yield client
    await client.aclose()


async def test_commands_called_at_once_are_answered_in_order(redis: Redis) -> None:
    key = f"test-{uuid.uuid4().hex}"
    batcher = CommandBatcher(redis)

    counts = await asyncio.gather(*(batcher.call("INCR", key) for _ in range(10)))

    assert counts == list(range(1, 11))
    await redis.delete(key)


async def test_a_commands_error_reaches_only_its_caller(redis: Redis) -> None:
    key = f"test-{uuid.uuid4().hex}"
    await redis.set(key, "text")
    batcher = CommandBatcher(redis)

    replies = await asyncio.gather(
        batcher.call("GET", key),
        batcher.call("INCR", key),
        batcher.call("GET", key),
        return_exceptions=True,
    )

    assert replies[0] == replies[2] == b"text"
    assert isinstance(replies[1], ResponseError)
    await redis.delete(key)


async def test_a_lost_connection_fails_every_caller_of_the_round_trip() -> None:
    # Port 9 (discard): nothing answers.
    unreachable = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    batcher = CommandBatcher(unreachable)

    replies = await asyncio.gather(
        *(batcher.call("GET", "key") for _ in range(3)), return_exceptions=True
    )

    assert all(isinstance(reply, RedisConnectionError) for reply in replies)
    await unreachable.aclose()
