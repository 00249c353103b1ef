"""A worker for the jobs benchmark, run with the project's Python in its directory.

    python job_worker.py app    # the generated worker (`app.jobs`), plus the probe task
    python job_worker.py bare   # SAQ alone: its Worker with its defaults and the probe task

Both take jobs from the queue the generated project names (`<CACHE_KEY_PREFIX>jobs`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any


async def probe(ctx: Any, *, enqueued: float, results: str) -> None:
    """Record how long after its enqueue the job started."""
    started = time.time()
    await ctx["worker"].queue.redis.rpush(results, started - enqueued)


def main(kind: str) -> None:
    if kind == "app":
        sys.path.insert(0, os.getcwd())
        from app.jobs.tasks import TASKS
        from app.jobs.worker import run_worker

        TASKS["probe"] = probe
        run_worker()
        return
    from saq import Queue, Worker

    queue = Queue.from_url(os.environ["REDIS_URL"], name=f"{os.environ['CACHE_KEY_PREFIX']}jobs")
    worker = Worker(queue, functions=[probe])

    async def work() -> None:
        await queue.connect()
        try:
            await worker.start()
        finally:
            await queue.disconnect()

    asyncio.run(work())


if __name__ == "__main__":
    main(sys.argv[1])
