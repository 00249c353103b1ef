"""Where the web process sends a job: SAQ's queue in Redis, or, with no REDIS_URL, a
task in this process, so the service still runs with nothing else started."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq import Queue
from saq.queue.redis import RedisQueue

from app.jobs.tasks import TASKS, JobContext, Resources
from app.redis_client import RedisBreaker
from app.settings import Settings

logger = logging.getLogger(__name__)


def queue_name(settings: Settings) -> str:
    return f"{settings.cache_key_prefix}jobs"


def job_defaults(settings: Settings) -> dict[str, Any]:
    """What every job gets unless its enqueue says otherwise."""
    return {
        # Longer than this and the job counts as stuck: the sweep runs it again.
        "timeout": settings.jobs_timeout_seconds,
        "retries": settings.jobs_retries,
        # Waits of 1, 2, 4... seconds (with jitter) between attempts.
        "retry_delay": 1.0,
        "retry_backoff": True,
        # How long a finished or failed job's record stays in Redis.
        "ttl": settings.jobs_record_seconds,
    }


class Jobs:
    """Enqueue a task by name; `enqueue` returns once it is queued, never waiting for it."""

    def __init__(
        self, queue: Queue | None, resources: Resources, breaker: RedisBreaker | None = None
    ) -> None:
        self.queue = queue
        self.resources = resources
        # While Redis is known to fail, jobs run here at once instead of waiting on it.
        self.breaker = breaker or RedisBreaker()
        self.defaults = job_defaults(resources.settings)
        self.running: set[asyncio.Task[None]] = set()

    async def enqueue(self, task: str, **kwargs: Any) -> None:
        if task not in TASKS:
            raise LookupError(f"No task named {task!r} in app.jobs.tasks.TASKS")
        if self.queue is not None:
            if await self.queued(self.queue, task, kwargs):
                return
            # Losing the job would be worse than running it here once.
            logger.warning("Could not queue %s: running it in the web process", task)
        running = asyncio.create_task(self.run_here(task, kwargs))
        self.running.add(running)
        running.add_done_callback(self.running.discard)

    async def queued(self, queue: Queue, task: str, kwargs: dict[str, Any]) -> bool:
        if not self.breaker.available():
            return False
        try:
            # The call's own job fields (`timeout=300`) win over the defaults.
            await queue.enqueue(task, **(self.defaults | kwargs))
        except RedisError as error:
            self.breaker.failed(error)
            return False
        self.breaker.succeeded()
        return True

    async def run_here(self, task: str, kwargs: dict[str, Any]) -> None:
        """Run a task in this process, once, logging its failure as the worker would."""
        # No SAQ worker here: the tasks read only their resources from the context.
        context = cast(JobContext, {"resources": self.resources})
        try:
            await TASKS[task](context, **kwargs)
        except Exception:
            logger.exception("Job %s failed in the web process", task)

    async def wait(self) -> None:
        """Wait for the tasks running in this process (at shutdown, and in tests)."""
        while self.running:
            # Removed here, not only by their done callbacks: gather returns at once on
            # tasks already done, and a callback not yet run would have this loop spin.
            running = set(self.running)
            await asyncio.gather(*running, return_exceptions=True)
            self.running -= running


def queue_on(redis: Redis, settings: Settings) -> RedisQueue:
    """SAQ's queue of this service, on a Redis client."""
    return RedisQueue(redis, name=queue_name(settings))


@asynccontextmanager
async def open_jobs(
    resources: Resources, redis: Redis | None, breaker: RedisBreaker
) -> AsyncIterator[Jobs]:
    """The web process's `Jobs`, on the app's Redis client (None: jobs run here).

    At shutdown, the jobs running here finish before the app's clients close.
    """
    queue = queue_on(redis, resources.settings) if redis is not None else None
    jobs = Jobs(queue, resources, breaker)
    try:
        yield jobs
    finally:
        await jobs.wait()
