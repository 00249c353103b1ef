"""Drive a running jobs-benchmark worker, run with the project's Python; prints JSON.

    python job_driver.py QUEUE_NAME SPACED BURST

Enqueues SPACED probe jobs 10 ms apart (latency: enqueue to start), then BURST at once
(throughput: jobs started per second, from the first enqueue to the last start).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid

from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

SPACING_SECONDS = 0.01
DEADLINE_SECONDS = 120


async def wait_for(redis: Redis, key: str, count: int) -> list[float]:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while await redis.llen(key) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {await redis.llen(key)} of {count} jobs started in {DEADLINE_SECONDS} s")
        await asyncio.sleep(0.01)
    return [float(value) for value in await redis.lrange(key, 0, -1)]


async def main(name: str, spaced: int, burst: int) -> dict[str, float]:
    redis = Redis.from_url(os.environ["REDIS_URL"])
    queue = RedisQueue(redis, name=name)
    latency_key, burst_key = (f"bench-jobs:{uuid.uuid4().hex}" for _ in range(2))
    try:
        for _ in range(spaced):
            await queue.enqueue("probe", enqueued=time.time(), results=latency_key)
            await asyncio.sleep(SPACING_SECONDS)
        waits = sorted(await wait_for(redis, latency_key, spaced))

        first = time.time()
        await asyncio.gather(
            *(queue.enqueue("probe", enqueued=time.time(), results=burst_key) for _ in range(burst))
        )
        await wait_for(redis, burst_key, burst)
        elapsed = time.time() - first
    finally:
        await redis.delete(latency_key, burst_key)
        await redis.aclose()
    return {
        "p50_ms": statistics.median(waits) * 1000,
        "p99_ms": waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000,
        "jobs_per_s": burst / elapsed,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))))
