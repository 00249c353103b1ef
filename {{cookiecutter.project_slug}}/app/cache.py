"""A small JSON cache on Redis, or in process when REDIS_URL is unset.

The cache never fails a request: when Redis errors or times out the caller gets
a miss and reads from the source. After a failure Redis is skipped for a short
pause, so an outage costs one timeout, not one per request.
"""

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.settings import Settings

logger = logging.getLogger(__name__)

RETRY_PAUSE_SECONDS = 1.0
LOCAL_MAX_ENTRIES = 10_000


def create_redis(settings: Settings) -> Redis | None:
    """The process's Redis client, or None when REDIS_URL is unset."""
    if settings.redis_url is None:
        return None
    return Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
        retry=Retry(NoBackoff(), retries=0),
        health_check_interval=30,
    )


class Cache:
    """Get, set and delete JSON values under string keys with a TTL."""

    def __init__(self, redis: Redis | None, default_ttl: int, prefix: str = "") -> None:
        self.redis = redis
        self.default_ttl = default_ttl
        self.prefix = prefix
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._skip_until = 0.0
        self._failing = False

    async def get(self, key: str) -> Any | None:
        key = self.prefix + key
        if self.redis is None:
            raw = self._local_get(key)
        else:
            raw = await self._guarded(lambda redis: redis.get(key))
        return None if raw is None else json.loads(raw)

    async def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        key = self.prefix + key
        raw = json.dumps(value, default=str)
        ttl = ttl or self.default_ttl
        if self.redis is not None:
            await self._guarded(lambda redis: redis.set(key, raw, ex=ttl))
        else:
            self._local[key] = (time.monotonic() + ttl, raw)
            self._local.move_to_end(key)
            while len(self._local) > LOCAL_MAX_ENTRIES:
                self._local.popitem(last=False)

    async def delete(self, key: str) -> None:
        key = self.prefix + key
        if self.redis is not None:
            await self._guarded(lambda redis: redis.delete(key))
        else:
            self._local.pop(key, None)

    def _local_get(self, key: str) -> str | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        expires_at, raw = entry
        if expires_at < time.monotonic():
            del self._local[key]
            return None
        return raw

    async def _guarded(self, call: Callable[[Redis], Awaitable[Any]]) -> Any:
        """Run one Redis call; on failure, log once, pause Redis and return None."""
        if self.redis is None or time.monotonic() < self._skip_until:
            return None
        try:
            result = await call(self.redis)
        except (RedisError, OSError) as error:
            self._skip_until = time.monotonic() + RETRY_PAUSE_SECONDS
            if not self._failing:
                self._failing = True
                logger.warning("Cache unavailable, reading through: %s", type(error).__name__)
            return None
        if self._failing:
            self._failing = False
            logger.info("Cache available again")
        return result


async def get_cache(request: Request) -> Cache:
    # `async def`: a plain `def` dependency would run in a worker thread.
    cache: Cache = request.state.cache
    return cache


CacheDep = Annotated[Cache, Depends(get_cache)]
