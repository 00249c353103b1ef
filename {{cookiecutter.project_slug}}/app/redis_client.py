"""The process's Redis client, the batcher that sends the commands of one event-loop
turn in one round trip, and the breaker that lets the service run while Redis fails.

Redis only ever speeds things up or shares them between instances, so no request
waits on it for long: calls time out after REDIS_SOCKET_TIMEOUT, are not retried,
and after a failure Redis is skipped for a pause that doubles while it keeps
failing. Callers use their fallback meanwhile.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

{% if cookiecutter.use_metrics %}
from app.metrics.collectors import REDIS_ERRORS
{% endif %}
from app.settings import Settings

logger = logging.getLogger(__name__)

FIRST_PAUSE_SECONDS = 1.0
LONGEST_PAUSE_SECONDS = 32.0


def create_redis(settings: Settings) -> Redis | None:
    """A client for REDIS_URL, or None when it is unset."""
    if settings.redis_url is None:
        return None
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
    )


@asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[Redis | None]:
    """The client for the app's lifetime, closed at shutdown."""
    redis = create_redis(settings)
    try:
        yield redis
    finally:
        if redis is not None:
            await redis.aclose()


class CommandBatcher:
    """Sends the Redis commands called in one event-loop turn in one round trip.

    Under load, many requests reach Redis in the same turn; one pipeline for all
    of them costs each a fraction of what a round trip of its own costs the
    client (see the benchmark report). The commands stay separate: no transaction.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.waiting: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
        self.sending: set[asyncio.Task[None]] = set()

    async def call(self, *command: Any) -> Any:
        """Run one command (`"GET", key`) and return its reply; raises its error."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.waiting:
            # Runs once the requests ready in this loop turn have added theirs.
            task = loop.create_task(self.send())
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)
        self.waiting.append((command, future))
        return await future

    async def send(self) -> None:
        batch, self.waiting = self.waiting, []
        replies: list[Any]
        try:
            async with self.redis.pipeline(transaction=False) as pipeline:
                for command, _ in batch:
                    pipeline.execute_command(*command)
                # A command's own error is its reply; only a lost connection raises.
                replies = await pipeline.execute(raise_on_error=False)
        except Exception as error:  # noqa: BLE001 - every caller in the batch gets it
            replies = [error] * len(batch)
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # Its caller was cancelled meanwhile.
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


class RedisBreaker:
    """Whether to try Redis now; one per process, shared by everything that uses Redis."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.failing = False
        self.pause = FIRST_PAUSE_SECONDS
        self.retry_at = 0.0

    def available(self) -> bool:
        """False while the pause after a failure lasts."""
        return self.clock() >= self.retry_at

    def failed(self, error: Exception) -> None:
{% if cookiecutter.use_metrics %}
        REDIS_ERRORS.inc()
{% endif %}
        if not self.failing:
            logger.warning("Redis unavailable (%s): using fallbacks", type(error).__name__)
        self.failing = True
        self.retry_at = self.clock() + self.pause
        self.pause = min(self.pause * 2, LONGEST_PAUSE_SECONDS)

    def succeeded(self) -> None:
        if self.failing:
            logger.info("Redis available again")
            self.failing = False
            self.pause = FIRST_PAUSE_SECONDS
