"""The worker with one more task, for the tests only: `python -m tests.jobs_worker`
(`... scheduler` for the scheduler)."""

import asyncio
import sys

from app.jobs.tasks import TASKS, JobContext
from app.jobs.worker import run_worker


async def record(ctx: JobContext, *, marker: str, seconds: float = 0.0, failures: int = 0) -> int:
    """Count its start under `marker`, sleep, fail the first `failures` times, count its finish.

    It counts on the service's Redis client from its context, as the app's tasks may.
    """
    redis = ctx["resources"].redis
    assert redis is not None, "a worker's tasks get the service's Redis client"
    attempt = int(await redis.incr(f"{marker}:started"))
    await asyncio.sleep(seconds)
    if attempt <= failures:
        raise RuntimeError(f"attempt {attempt} fails on purpose")
    await redis.incr(f"{marker}:finished")
    return attempt


TASKS["record"] = record

if __name__ == "__main__":
    run_worker(scheduler=sys.argv[1:] == ["scheduler"])
