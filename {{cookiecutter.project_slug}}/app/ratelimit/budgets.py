"""What each client has used of each limit{{ ": in Redis, or in memory while Redis fails" if cookiecutter.use_redis else ", in process memory" }}.

In memory, counted with the asynchronous API of `limits`, the library slowapi is
built on, so no request waits for a worker thread.
{% if cookiecutter.use_redis %}
In Redis, a fixed window per client and limit as `limits` counts it, under the
same keys, by hand: `limits` makes a round trip per request, where here the
counts of one event-loop turn share one (`CommandBatcher`).
{% endif %}
"""

import math
import time

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
{% if cookiecutter.use_redis %}
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.redis_client import CommandBatcher, RedisBreaker

# Add to the window's count, and start its expiry with its first request: in one
# script, so a window never outlives its expiry whatever happens between the two.
COUNT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""
{% endif %}


class Budgets:
{% if cookiecutter.use_redis %}
    """Shared through Redis when there is one; while it fails, each process counts alone."""

    def __init__(self, redis: Redis | None, breaker: RedisBreaker, key_prefix: str) -> None:
        self.memory = FixedWindowRateLimiter(MemoryStorage())
        self.breaker = breaker
        self.shared = None if redis is None else CommandBatcher(redis)
        self.key_prefix = key_prefix

    def key(self, item: RateLimitItem, identifiers: tuple[str, ...]) -> str:
        return f"{self.key_prefix}:{item.key_for(*identifiers)}"

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """Count one request; False when it is over the limit."""
        if self.shared is None or not self.breaker.available():
            return await self.memory.hit(item, *identifiers, cost=cost)
        key, window = self.key(item, identifiers), item.get_expiry()
        try:
            count: int = await self.shared.call("EVAL", COUNT_SCRIPT, 1, key, window, cost)
        except (RedisError, OSError) as error:
            self.breaker.failed(error)
            return await self.memory.hit(item, *identifiers, cost=cost)
        self.breaker.succeeded()
        return count <= item.amount

    async def seconds_to_reset(self, item: RateLimitItem, *identifiers: str) -> int:
        if self.shared is not None and self.breaker.available():
            try:
                return max(1, int(await self.shared.call("TTL", self.key(item, identifiers))))
            except (RedisError, OSError):  # The longest wait is one window.
                return int(item.get_expiry())
        reset_at, _remaining = await self.memory.get_window_stats(item, *identifiers)
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
