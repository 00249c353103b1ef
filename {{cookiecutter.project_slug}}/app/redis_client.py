"""The process's Redis client, and the breaker that lets the service run while Redis fails.

Redis only ever speeds things up or shares them between instances, so no request
waits on it for long: calls time out after REDIS_SOCKET_TIMEOUT, are not retried,
and after a failure Redis is skipped for a pause that doubles while it keeps
failing. Callers use their fallback meanwhile.
"""

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

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
