"""The worker with one more task, for the tests only: `python -m tests.jobs_worker`
(`... scheduler` for the scheduler)."""

import asyncio
import os
import sys

from redis.asyncio import Redis

from app.jobs.tasks import TASKS, JobContext
from app.jobs.worker import run_worker


async def record(ctx: JobContext, *, marker: str, seconds: float = 0.0, failures: int = 0) -> int:
    """Count its start under `marker`, sleep, fail the first `failures` times, count its finish."""
    async with Redis.from_url(os.environ["REDIS_URL"]) as redis:
        attempt = int(await redis.incr(f"{marker}:started"))
        await asyncio.sleep(seconds)
        if attempt <= failures:
            raise RuntimeError(f"attempt {attempt} fails on purpose")
        await redis.incr(f"{marker}:finished")
    return attempt


TASKS["record"] = record

if __name__ == "__main__":
    run_worker(scheduler=sys.argv[1:] == ["scheduler"])
