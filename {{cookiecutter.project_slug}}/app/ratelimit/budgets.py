"""What each client has used of each limit{{ ": in Redis, or in memory while Redis fails" if cookiecutter.use_redis else ", in process memory" }}.

Counted with the asynchronous API of `limits`, the library slowapi is built on,
so no request waits for a worker thread.
"""

import math
import time

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage{{ ", RedisStorage" if cookiecutter.use_redis else "" }}
from limits.aio.strategies import FixedWindowRateLimiter
{% if cookiecutter.use_redis %}
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.redis_client import RedisBreaker
{% endif %}


class Budgets:
{% if cookiecutter.use_redis %}
    """Shared through Redis when there is one; while it fails, each process counts alone."""

    def __init__(self, redis: Redis | None, breaker: RedisBreaker, key_prefix: str) -> None:
        self.memory = FixedWindowRateLimiter(MemoryStorage())
        self.breaker = breaker
        self.shared: FixedWindowRateLimiter | None = None
        if redis is not None:
            # On the app's own connections. (`limits` types its storage options as
            # plain values; a connection pool is one it documents.)
            storage = RedisStorage(
                "async+redis://",
                implementation="redispy",
                connection_pool=redis.connection_pool,  # type: ignore[arg-type]
                key_prefix=key_prefix,
            )
            self.shared = FixedWindowRateLimiter(storage)

    def counter(self) -> FixedWindowRateLimiter:
        if self.shared is not None and self.breaker.available():
            return self.shared
        return self.memory

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """Count one request; False when it is over the limit."""
        counter = self.counter()
        if counter is self.memory:
            return await counter.hit(item, *identifiers, cost=cost)
        try:
            allowed = await counter.hit(item, *identifiers, cost=cost)
        except (RedisError, OSError) as error:
            self.breaker.failed(error)
            return await self.memory.hit(item, *identifiers, cost=cost)
        self.breaker.succeeded()
        return allowed

    async def seconds_to_reset(self, item: RateLimitItem, *identifiers: str) -> int:
        try:
            reset_at, _remaining = await self.counter().get_window_stats(item, *identifiers)
        except (RedisError, OSError):  # The longest wait is one window.
            return int(item.get_expiry())
        return max(1, math.ceil(reset_at - time.time()))
{% else %}
    def __init__(self) -> None:
        self.memory = FixedWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """Count one request; False when it is over the limit."""
        return await self.memory.hit(item, *identifiers, cost=cost)

    async def seconds_to_reset(self, item: RateLimitItem, *identifiers: str) -> int:
        reset_at, _remaining = await self.memory.get_window_stats(item, *identifiers)
        return max(1, math.ceil(reset_at - time.time()))
{% endif %}
