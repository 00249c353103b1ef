"""Background jobs: enqueued by the API, run by a real worker process on Redis."""

import asyncio
{% if cookiecutter.use_sentry %}
import json
{% endif %}
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
{% if cookiecutter.use_auth %}
from datetime import UTC, datetime, timedelta
{% endif %}
from pathlib import Path
from typing import Any{{ ', cast' if cookiecutter.use_postgres else '' }}

import httpx
import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from saq import Queue, Status
{% if cookiecutter.use_auth %}
from sqlalchemy import select
{% endif %}

{% if cookiecutter.use_auth %}
from app.auth.models import RefreshToken, User
from app.db import open_database
{% endif %}
from app.jobs.queue import Jobs, job_defaults, queue_on
from app.jobs.tasks import TASKS, JobContext, Resources{{ ", nightly_cleanup" if cookiecutter.use_auth else "" }}
{% if cookiecutter.use_auth %}
from app.models import Base
{% endif %}
from app.settings import Settings
from tests.live import PROJECT_ROOT, free_port, wait_for
{% if cookiecutter.use_sentry %}
from tests.test_sentry import Receiver, receiver  # noqa: F401 (the fixture)
{% endif %}

needs_redis = pytest.mark.skipif(
    not os.environ.get("REDIS_URL"), reason="needs REDIS_URL: the worker takes its jobs from Redis"
)


class WorkerProcess:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int) -> None:
        self.process = process
        self.log = log
        self.port = port

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_healthy(self) -> None:
        wait_for(f"http://127.0.0.1:{self.port}/health", self.process)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)


def worker_env(settings: Settings, **changes: str) -> dict[str, str]:
    """The environment a worker sharing `settings`' Redis{{ " and database" if cookiecutter.use_postgres else "" }} runs with."""
    return {
        **os.environ,
        "ENVIRONMENT": "test",
        "REDIS_URL": settings.redis_url or "",
        "CACHE_KEY_PREFIX": settings.cache_key_prefix,
{% if cookiecutter.use_postgres %}
        "DATABASE_URL": settings.database_url,
{% endif %}
        **changes,
    }


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `python -m tests.jobs_worker` (the app's worker and a test task), or with
    `scheduler=True` the scheduler, and wait until it answers (unless `wait` is false);
    stop them after."""
    started: list[WorkerProcess] = []

    def start(scheduler: bool = False, wait: bool = True, **env: str) -> WorkerProcess:
        port = free_port()
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.jobs_worker", *(["scheduler"] if scheduler else [])],
                cwd=PROJECT_ROOT,
                env=worker_env(settings, WORKER_HEALTH_PORT=str(port), **env),
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(process, log, port)
        started.append(worker)
        if wait:
            worker.wait_healthy()
        return worker

    yield start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    assert settings.redis_url is not None
    async with Redis.from_url(settings.redis_url) as client:
        yield client


@pytest.fixture
def queue(settings: Settings, redis: Redis) -> Queue:
    """The service's queue, as the web process enqueues on it."""
    return queue_on(redis, settings)


async def eventually(check: Callable[[], Any], within: float = 30) -> None:
    """Wait until `await check()` is true."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not true within {within} s"
        await asyncio.sleep(0.1)


def unused_resources(settings: Settings) -> Resources:
    """Resources for a process that runs only the tests' own tasks, which use none."""
    return Resources(settings=settings{{ ", database=cast(Any, None)" if cookiecutter.use_postgres else "" }}, redis=None{{ ", sio=None" if cookiecutter.use_socketio else "" }})


async def liveness_check(settings: Settings, port: int) -> subprocess.CompletedProcess[str]:
    """`python -m app.jobs check`, as a platform's exec probe runs it."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app.jobs", "check"],
        cwd=PROJECT_ROOT,
        env=worker_env(settings, WORKER_HEALTH_PORT=str(port)),
        capture_output=True,
        text=True,
    )


async def count(redis: Redis, key: str) -> int:
    return int(await redis.get(key) or 0)


async def started(redis: Redis, marker: str, times: int) -> bool:
    return await count(redis, f"{marker}:started") == times


async def finished(redis: Redis, marker: str) -> bool:
    return await count(redis, f"{marker}:finished") == 1


async def test_a_task_enqueued_without_redis_runs_in_the_web_process(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def note(_ctx: JobContext, *, text: str) -> None:
        await release.wait()
        done.append(text)

    monkeypatch.setitem(TASKS, "note", note)
    jobs = Jobs(None, unused_resources(settings.model_copy(update={"redis_url": None})))
    await jobs.enqueue("note", text="hello")
    assert done == []  # Enqueuing returned before the task ran.
    release.set()
    await jobs.wait()
    assert done == ["hello"]


async def test_shutdown_returns_when_a_task_has_just_finished(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def note(_ctx: JobContext) -> None:
        return None

    monkeypatch.setitem(TASKS, "note", note)
    jobs = Jobs(None, unused_resources(settings.model_copy(update={"redis_url": None})))
    await jobs.enqueue("note")
    await asyncio.sleep(0)  # The task runs to its end; its done callback waits its turn.
    assert jobs.running
    assert all(task.done() for task in jobs.running)

    # A wait that spins without yielding could never time out; an alarm signal can.
    def give_up(*_: object) -> None:
        raise TimeoutError("Jobs.wait() did not return")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(10)
    try:
        await jobs.wait()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not jobs.running


async def test_a_task_runs_in_the_web_process_while_redis_fails(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    done: list[str] = []

    async def note(_ctx: JobContext, *, text: str) -> None:
        done.append(text)

    monkeypatch.setitem(TASKS, "note", note)
    unreachable = Redis.from_url("redis://127.0.0.1:9/0", retry=Retry(NoBackoff(), retries=0))
    jobs = Jobs(queue_on(unreachable, settings), unused_resources(settings))
    await jobs.enqueue("note", text="kept")
    await jobs.wait()
    await unreachable.aclose()
    assert done == ["kept"]
    assert not jobs.breaker.available()  # The next jobs skip Redis for a while.


def test_every_task_is_listed_under_the_name_the_worker_knows_it_by() -> None:
    assert [task.__qualname__ for task in TASKS.values()] == list(TASKS)


async def test_an_unknown_task_is_refused_when_enqueued(settings: Settings) -> None:
    jobs = Jobs(None, unused_resources(settings))
    with pytest.raises(LookupError, match="no_such_task"):
        await jobs.enqueue("no_such_task")


@needs_redis
async def test_an_enqueue_may_set_its_own_job_fields(settings: Settings, queue: Queue) -> None:
    jobs = Jobs(queue, unused_resources(settings))
    await jobs.enqueue("nightly_cleanup", timeout=300)
    [job] = (await queue.info(jobs=True))["jobs"]
    assert job["timeout"] == 300
    assert job["retries"] == settings.jobs_retries  # The others keep their defaults.


@needs_redis
async def test_readiness_does_not_wait_for_a_worker(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health/ready")).status_code == 200
{% if cookiecutter.use_postgres %}


@needs_redis
@pytest.mark.live
async def test_an_item_created_through_the_api_is_announced_by_the_worker(
    client: httpx.AsyncClient,
    settings: Settings,
    redis: Redis,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    worker = start_worker()
{% if cookiecutter.use_socketio %}
    # The worker emits through the Redis channel every web instance's Socket.IO server reads.
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(f"{settings.cache_key_prefix}socketio")
        response = await client.post("/items", json={"name": "announced"})
        assert response.status_code == 201

        async def announced() -> bool:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            return message is not None and b"item_created" in message["data"]

        await eventually(announced)
{% else %}
    response = await client.post("/items", json={"name": "announced"})
    assert response.status_code == 201

    async def logged() -> bool:
        return '"name":"announced"' in worker.output()

    await eventually(logged)
{% endif %}
    assert worker.process.poll() is None
{% endif %}


@needs_redis
@pytest.mark.live
async def test_a_failing_task_is_retried_with_back_off_and_then_recorded_as_failed(
    settings: Settings, queue: Queue, redis: Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker()
    flaky, broken = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
    recovers = await queue.enqueue("record", **job_defaults(settings), marker=flaky, failures=2)
    never = await queue.enqueue("record", **job_defaults(settings), marker=broken, failures=99)
    assert recovers is not None
    assert never is not None
    await recovers.refresh(until_complete=30)
    await never.refresh(until_complete=30)
    assert (recovers.status, recovers.attempts) == (Status.COMPLETE, 3)
    assert (never.status, never.attempts) == (Status.FAILED, settings.jobs_retries)
    assert "fails on purpose" in (never.error or "")
    assert await count(redis, f"{broken}:started") == settings.jobs_retries


{% if cookiecutter.use_sentry %}
@needs_redis
@pytest.mark.live
async def test_a_failing_task_reaches_sentry_with_its_name_and_id(
    settings: Settings,
    queue: Queue,
    receiver: Receiver,  # noqa: F811 (the fixture)
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker(SENTRY_DSN=receiver.dsn())
    once = job_defaults(settings) | {"retries": 1}
    job = await queue.enqueue("record", **once, marker=f"test-{uuid.uuid4().hex}", failures=1)
    assert job is not None
    await job.refresh(until_complete=30)

    async def reported() -> bool:
        return bool(receiver.of_type("event"))

    await eventually(reported)
    event = json.dumps(receiver.of_type("event")[0])
    assert "fails on purpose" in event
    assert job.key in event
    assert "function: record" in event


{% endif %}
@needs_redis
@pytest.mark.live
async def test_a_scheduled_job_runs_once_per_tick_however_many_processes_schedule(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # A long grace period, to show that idle processes do not wait it out on SIGTERM.
    env = {"JOBS_CLEANUP_CRON": "* * * * * *", "WORKER_SHUTDOWN_GRACE_SECONDS": "60"}
    scheduler = start_worker(scheduler=True, wait=False, **env)
    scheduling_worker = start_worker(wait=False, **env)
    plain_worker = start_worker(WORKER_SCHEDULES="false", wait=False, **env)
    processes = [scheduler, scheduling_worker, plain_worker]
    for process in processes:
        process.wait_healthy()
    await asyncio.sleep(4)
    for process in processes:
        process.process.send_signal(signal.SIGTERM)
    assert [process.process.wait(timeout=15) for process in processes] == [0, 0, 0]

    logs = {process: process.output() for process in processes}
    runs = [
        line.split("nightly_cleanup for ")[1].split()[0]
        for log in logs.values()
        for line in log.splitlines()
        if "nightly_cleanup for " in line
    ]
    assert len(runs) >= 2
    assert len(runs) == len(set(runs)), f"a tick ran twice: {sorted(runs)}"
    queued = "Enqueuing Job<function: nightly_cleanup"
    assert queued in logs[scheduler] + logs[scheduling_worker]
    assert queued not in logs[plain_worker]
    # The scheduler queues jobs and runs none.
    assert "Processing Job<" not in logs[scheduler]


@needs_redis
@pytest.mark.live
async def test_a_task_whose_worker_was_killed_runs_again_on_another(
    settings: Settings, queue: Queue, redis: Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    marker = f"test-{uuid.uuid4().hex}"
    first = start_worker(JOBS_SWEEP_SECONDS="1")
    short = job_defaults(settings) | {"timeout": 3}
    await queue.enqueue("record", **short, marker=marker, seconds=1)
    await eventually(lambda: started(redis, marker, times=1))
    first.stop(signal.SIGKILL)
    start_worker(JOBS_SWEEP_SECONDS="1")
    await eventually(lambda: finished(redis, marker), within=45)
    assert await count(redis, f"{marker}:started") == 2


@needs_redis
@pytest.mark.live
async def test_sigterm_lets_short_tasks_finish_and_queues_the_others_again(
    settings: Settings, queue: Queue, redis: Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    quick, slow = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
    worker = start_worker(WORKER_SHUTDOWN_GRACE_SECONDS="2")
    assert (await liveness_check(settings, worker.port)).returncode == 0
    await queue.enqueue("record", **job_defaults(settings), marker=quick, seconds=1)
    await queue.enqueue("record", **job_defaults(settings), marker=slow, seconds=30)
    await eventually(lambda: started(redis, quick, times=1))
    await eventually(lambda: started(redis, slow, times=1))

    assert worker.stop(signal.SIGTERM, timeout=15) == 0
    assert await finished(redis, quick)
    assert not await finished(redis, slow)
    stopped = await liveness_check(settings, worker.port)
    assert stopped.returncode == 1
    assert f"worker not answering on port {worker.port}" in stopped.stderr

    # The next worker runs the task that was cut short from the start.
    start_worker()
    await eventually(lambda: started(redis, slow, times=2))


def test_the_liveness_check_takes_its_port_from_the_environment_without_reading_the_settings(
    settings: Settings,
) -> None:
    # A container runs it every few seconds within its CPU limit; importing the settings
    # would take it from about 0.1 s of CPU to 0.4 s.
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app.jobs", "check"],
        cwd=PROJECT_ROOT,
        env=worker_env(settings, WORKER_HEALTH_PORT=str(port), ENVIRONMENT="not-an-environment"),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert f"worker not answering on port {port}" in result.stderr
    imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "app.jobs.health" in imported
    assert not imported & {"app.settings", "pydantic"}


@pytest.mark.live
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_URL": ""}, "REDIS_URL"),
        ({"REDIS_URL": "redis://127.0.0.1:9", "JOBS_CLEANUP_CRON": "nightly"}, "JOBS_CLEANUP_CRON"),
    ],
)
def test_a_bad_setting_stops_the_worker_with_one_line_naming_it(
    settings: Settings, env: dict[str, str], named: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app.jobs"],
        cwd=PROJECT_ROOT,
        env=worker_env(settings, **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"Invalid settings: {named}"), result.stderr
{% if cookiecutter.use_auth %}


async def test_the_nightly_cleanup_deletes_expired_refresh_tokens_only(settings: Settings) -> None:
    now = datetime.now(UTC)
    async with open_database(settings, Base.metadata) as database:
        async with database.sessionmaker() as session, session.begin():
            user = User(email=f"{uuid.uuid4().hex}@example.com", password_hash="x")
            session.add(user)
            await session.flush()
            day = timedelta(days=1)
            for family, expires in [("old", now - day), ("live", now + day)]:
                fields = {"family": family, "token_hash": uuid.uuid4().hex, "expires_at": expires}
                session.add(RefreshToken(user_id=user.id, **fields))
        resources = Resources(settings=settings, database=database, redis=None{{ ", sio=None" if cookiecutter.use_socketio else "" }})
        context: Any = {"resources": resources}
        assert await nightly_cleanup(context) >= 1
        async with database.sessionmaker() as session:
            families = set(await session.scalars(select(RefreshToken.family)))
    assert "old" not in families
    assert "live" in families
{% endif %}
