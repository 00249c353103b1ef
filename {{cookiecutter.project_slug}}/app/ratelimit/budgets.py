"""What each client has used of each limit{{ ": in Redis, or in memory while Redis fails" if cookiecutter.use_redis else ", in process memory" }}.

In memory, counted with the asynchronous API of `limits`, the library slowapi is
built on, so no request waits for a worker thread.
{% if cookiecutter.use_redis %}
In Redis, counted by `SharedCounts`: a fixed window per client and limit, as
`limits` counts, with the counts of one event-loop turn sent in one round trip.
{% endif %}
"""

{% if cookiecutter.use_redis %}
import asyncio
{% endif %}
import math
import time

from limits import RateLimitItem
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
{% if cookiecutter.use_redis %}
from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.redis_client import RedisBreaker

# Add to the window's count, and start its expiry with its first request: in one
# script, so a window never outlives its expiry whatever happens between the two.
COUNT_SCRIPT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[2])
if count == tonumber(ARGV[2]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class SharedCounts:
    """Fixed-window counts in Redis, exact across instances.

    By hand rather than `limits`' Redis storage, which makes one round trip per
    request: the requests counted in one event-loop turn share one here, which
    halves what a limited request costs under load (see the benchmark report).
    """

    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.waiting: list[tuple[str, int, int, asyncio.Future[int]]] = []
        self.sending: set[asyncio.Task[None]] = set()

    async def add(self, key: str, window_seconds: int, cost: int) -> int:
        """Add `cost` to the count of `key`'s current window; returns the new count."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        if not self.waiting:
            # Runs once the requests ready in this loop turn have added theirs.
            task = loop.create_task(self.send())
            self.sending.add(task)
            task.add_done_callback(self.sending.discard)
        self.waiting.append((f"{self.key_prefix}:{key}", window_seconds, cost, future))
        return await future

    async def send(self) -> None:
        batch, self.waiting = self.waiting, []
        try:
            async with self.redis.pipeline(transaction=False) as pipeline:
                for key, window_seconds, cost, _ in batch:
                    pipeline.eval(COUNT_SCRIPT, 1, key, window_seconds, cost)
                counts = await pipeline.execute()
        except Exception as error:  # noqa: BLE001 - each waiting request handles it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_, future), count in zip(batch, counts, strict=True):
            if not future.done():  # Its request may have been cancelled meanwhile.
                future.set_result(int(count))

    async def seconds_to_reset(self, key: str) -> int:
        return int(await self.redis.ttl(f"{self.key_prefix}:{key}"))
{% endif %}


class Budgets:
{% if cookiecutter.use_redis %}
    """Shared through Redis when there is one; while it fails, each process counts alone."""

    def __init__(self, redis: Redis | None, breaker: RedisBreaker, key_prefix: str) -> None:
        self.memory = FixedWindowRateLimiter(MemoryStorage())
        self.breaker = breaker
        self.shared = None if redis is None else SharedCounts(redis, key_prefix)

    async def hit(self, item: RateLimitItem, *identifiers: str, cost: int = 1) -> bool:
        """Count one request; False when it is over the limit."""
        if self.shared is None or not self.breaker.available():
            return await self.memory.hit(item, *identifiers, cost=cost)
        try:
            count = await self.shared.add(item.key_for(*identifiers), item.get_expiry(), cost)
        except (RedisError, OSError) as error:
            self.breaker.failed(error)
            return await self.memory.hit(item, *identifiers, cost=cost)
        self.breaker.succeeded()
        return count <= item.amount

    async def seconds_to_reset(self, item: RateLimitItem, *identifiers: str) -> int:
        if self.shared is not None and self.breaker.available():
            try:
                return max(1, await self.shared.seconds_to_reset(item.key_for(*identifiers)))
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
