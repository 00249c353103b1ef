"""The tasks the worker runs, and the resources they share with the web process.

A task is `async def name(ctx: JobContext, **kwargs)`, listed in `TASKS`; the web
process enqueues it by name: `await jobs.enqueue({{ '"item_created", item_id=item.id' if cookiecutter.use_postgres else '"nightly_cleanup"' }})`.
Arguments travel as JSON, so pass ids and read the rows again in the task.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
{% if cookiecutter.use_auth %}
from datetime import UTC, datetime
{% endif %}
from typing import Any, Required

from redis.asyncio import Redis
from saq.types import Context
{% if cookiecutter.use_auth %}
from sqlalchemy import delete
{% endif %}

{% if cookiecutter.use_auth %}
from app.auth.models import RefreshToken
{% endif %}
{% if cookiecutter.use_postgres %}
from app.db import Database
from app.items.models import Item
from app.items.schemas import ItemRead
{% endif %}
from app.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resources:
    """What tasks use: the worker opens its own, the web process lends the app's."""

    settings: Settings
{% if cookiecutter.use_postgres %}
    database: Database
{% endif %}
    # The service's client, as routes get it: None only when a job runs in a web process
    # started without REDIS_URL.
    redis: Redis | None
{% if cookiecutter.use_socketio %}
    # Sends a Socket.IO event to the clients of every instance: the app's server in the
    # web process, a write-only Redis manager in the worker.
    sio: Any
{% endif %}


class JobContext(Context, total=False):
    resources: Required[Resources]


Task = Callable[..., Awaitable[Any]]
{% if cookiecutter.use_postgres %}


async def item_created(ctx: JobContext, *, item_id: int) -> None:
    """Work that follows a write without holding up its response: here, telling clients."""
    async with ctx["resources"].database.read_sessionmaker() as session:
        item = await session.get(Item, item_id)
    if item is None:  # Deleted since: nothing to announce.
        return
{% if cookiecutter.use_socketio %}
    await ctx["resources"].sio.emit(
        "item_created", ItemRead.model_validate(item).model_dump(mode="json")
    )
{% else %}
    logger.info("Item created: %s", ItemRead.model_validate(item).model_dump_json())
{% endif %}
{% endif %}


async def nightly_cleanup(ctx: JobContext) -> int:
    """The scheduled example (JOBS_CLEANUP_CRON); returns how many rows it removed.

{% if cookiecutter.use_auth %}
    Refresh tokens past their expiry can never be used again: it deletes them.
{% else %}
    Put the service's periodic work here (expired rows, stale files, reports).
{% endif %}
    """
{% if cookiecutter.use_auth %}
    async with ctx["resources"].database.sessionmaker() as session, session.begin():
        expired = RefreshToken.expires_at < datetime.now(UTC)
        deleted = await session.scalars(
            delete(RefreshToken).where(expired).returning(RefreshToken.id)
        )
        removed = len(deleted.all())
{% else %}
    removed = 0
{% endif %}
    job = ctx.get("job")
    # A scheduled run is named by its time (epoch seconds); one enqueued by hand has none.
    run = job.scheduled if job and job.scheduled else "now"
    logger.info("nightly_cleanup for %s removed %d rows", run, removed)
    return removed


# Every task the worker accepts, under the name SAQ knows it by: its function's name.
TASKS: dict[str, Task] = {
{% if cookiecutter.use_postgres %}
    "item_created": item_created,
{% endif %}
    "nightly_cleanup": nightly_cleanup,
}
