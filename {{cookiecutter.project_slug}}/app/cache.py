"""A small JSON cache on Redis, or in process when REDIS_URL is unset.

The cache never fails a request: while Redis fails (see `RedisBreaker`) a read
is a miss and the caller reads from the source.
"""

import json
import time
from collections import OrderedDict
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

{% if cookiecutter.use_metrics %}
from app.metrics.collectors import CACHE_HITS, CACHE_MISSES
{% endif %}
from app.redis_client import CommandBatcher, RedisBreaker

LOCAL_MAX_ENTRIES = 10_000


class Cache:
    """Get, set and delete JSON values under string keys with a TTL."""

    def __init__(
        self, redis: Redis | None, breaker: RedisBreaker, default_ttl: int, prefix: str = ""
    ) -> None:
        self.redis = redis
        # The reads of many requests at once share a round trip.
        self.commands = None if redis is None else CommandBatcher(redis)
        self.breaker = breaker
        self.default_ttl = default_ttl
        self.prefix = prefix
        self._local: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def get(self, key: str) -> Any | None:
        key = self.prefix + key
        if self.redis is None:
            raw = self._local_get(key)
        else:
            raw = await self._call("GET", key)
        if raw is None:
{% if cookiecutter.use_metrics %}
            CACHE_MISSES.inc()
{% endif %}
            return None
{% if cookiecutter.use_metrics %}
        CACHE_HITS.inc()
{% endif %}
        return json.loads(raw)

    async def set(self, key: str, value: Any, ttl: int | None = None) -> None:
        key = self.prefix + key
        raw = json.dumps(value, default=str)
        ttl = ttl or self.default_ttl
        if self.redis is not None:
            await self._call("SET", key, raw, "EX", ttl)
            return
        self._local[key] = (time.monotonic() + ttl, raw)
        self._local.move_to_end(key)
        while len(self._local) > LOCAL_MAX_ENTRIES:
            self._local.popitem(last=False)

    async def delete(self, key: str) -> None:
        key = self.prefix + key
        if self.redis is not None:
            await self._call("DEL", key)
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

    async def _call(self, *command: Any) -> Any:
        """One Redis command's reply, or None while Redis fails."""
        if self.commands is None or not self.breaker.available():
            return None
        try:
            result = await self.commands.call(*command)
        except (RedisError, OSError) as error:
            self.breaker.failed(error)
            return None
        self.breaker.succeeded()
        return result
