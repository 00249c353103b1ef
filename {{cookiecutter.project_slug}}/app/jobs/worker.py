"""The worker process, `python -m app.jobs`, which runs queued tasks, and the scheduler,
`python -m app.jobs scheduler`, which queues the cron ones when they are due.

A worker schedules too unless WORKER_SCHEDULES is false, so one worker alone is a
complete setup. However many processes schedule, each scheduled run happens once:
SAQ queues it under the key `cron:<task>`, and Redis refuses a key already waiting.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

{% if cookiecutter.use_socketio %}
import socketio
{% endif %}
from redis.asyncio import Redis
from saq import CronJob, Queue, Worker
from saq.types import TimersDict

{% if cookiecutter.use_postgres %}
from app.db import open_database
{% endif %}
from app.jobs.health import serve_health
from app.jobs.queue import queue_on
from app.jobs.tasks import TASKS, JobContext, Resources, nightly_cleanup
from app.log import configure_logging
{% if cookiecutter.use_postgres %}
from app.models import Base
{% endif %}
from app.redis_client import open_redis
{% if cookiecutter.use_sentry %}
from app.sentry import init_sentry
{% endif %}
from app.settings import Settings, get_settings

logger = logging.getLogger(__name__)

# Seconds an idle worker waits on the queue in one call, and so at most to stop: each
# of its WORKER_CONCURRENCY slots sends Redis one command per wait, which some hosted
# Redis plans bill.
DEQUEUE_TIMEOUT = 5


class JobWorker(Worker[JobContext]):
    async def stop(self) -> None:
        """Stop the upkeep loops at once, so the grace period waits for jobs only.

        SAQ gives every task the grace period, and an upkeep loop sleeps up to a minute
        between rounds; its tasks other than the ones taking jobs are those loops.
        """
        for task in self.tasks:
            if task.get_name() != "process":
                task.cancel()
        await super().stop()


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """The worker's own clients, opened as the web process opens them."""
    async with AsyncExitStack() as stack:
{% if cookiecutter.use_postgres %}
        database = await stack.enter_async_context(open_database(settings, Base.metadata))
{% endif %}
        redis = await stack.enter_async_context(open_redis(settings))
{% if cookiecutter.use_socketio %}
        # Write-only: it publishes to the channel the web instances' Socket.IO servers share.
        sio = socketio.AsyncRedisManager(
            settings.redis_url, channel=f"{settings.cache_key_prefix}socketio", write_only=True
        )
{% endif %}
        yield Resources(
            settings=settings,
{% if cookiecutter.use_postgres %}
            database=database,
{% endif %}
            redis=redis,
{% if cookiecutter.use_socketio %}
            sio=sio,
{% endif %}
        )


def create_worker(
    settings: Settings, queue: Queue, resources: Resources, *, scheduler: bool = False
) -> JobWorker:
    """A worker; as the scheduler, it takes no jobs and only queues the scheduled ones."""

    async def startup(ctx: JobContext) -> None:
        ctx["resources"] = resources

    # Seconds between the worker's upkeep rounds: SAQ's defaults, but for the sweep,
    # which finds jobs whose worker died (past their timeout).
    timers: TimersDict = {
        "schedule": 1,
        "worker_info": 10,
        "sweep": settings.jobs_sweep_seconds,
        "abort": 1,
    }

    scheduled = [
        CronJob(
            nightly_cleanup,
            cron=settings.jobs_cleanup_cron,
            timeout=settings.jobs_timeout_seconds,
            retries=settings.jobs_retries,
        )
    ]
    return JobWorker(
        queue,
        functions=list(TASKS.values()),
        # No job slots: the scheduler's upkeep alone runs (queueing due jobs, the sweep).
        concurrency=0 if scheduler else settings.worker_concurrency,
        cron_jobs=scheduled if scheduler or settings.worker_schedules else [],
        startup=startup,
        # Running tasks get this long after SIGTERM; the rest are cancelled and queued again.
        shutdown_grace_period_s=settings.worker_shutdown_grace_seconds,
        timers=timers,
        dequeue_timeout=DEQUEUE_TIMEOUT,
    )


async def work(settings: Settings, queue: Queue, *, scheduler: bool) -> None:
    async with open_resources(settings) as resources:
        try:
            worker = create_worker(settings, queue, resources, scheduler=scheduler)
        except ValueError as error:  # SAQ's check of the cron line.
            raise SystemExit(f"Invalid settings: JOBS_CLEANUP_CRON: {error}") from None
        health = await serve_health(settings.worker_health_host, settings.worker_health_port)
        try:
            await queue.connect()
            await worker.start()
        finally:
            health.close()
            await health.wait_closed()
            await queue.disconnect()


def run_worker(*, scheduler: bool = False) -> None:
    """Run a worker (or, with `scheduler`, the scheduler) until SIGTERM or SIGINT."""
    settings = get_settings()
    configure_logging(settings)
{% if cookiecutter.use_sentry %}
    init_sentry(settings)
{% endif %}
    if settings.redis_url is None:
        raise SystemExit(
            "Invalid settings: REDIS_URL: the worker needs Redis "
            "(without it, jobs run in the web process)"
        )
    # Its own client: taking a job blocks a connection for up to DEQUEUE_TIMEOUT, past
    # the web process's read timeout, and redis-py's retries ride out a Redis restart.
    redis = Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_socket_timeout,
        health_check_interval=30,
    )
    queue = queue_on(redis, settings)
    logger.info("%s starting on queue %s", "Scheduler" if scheduler else "Worker", queue.name)
    asyncio.run(work(settings, queue, scheduler=scheduler))
