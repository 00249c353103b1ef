"""Broadcasts over plain WebSockets: the fast path for sending to many listening clients.

python-socketio spends several times the CPU of a plain WebSocket send on every
delivery (see the template's benchmark report). For rooms of many clients that
only listen (live scores, dashboards, notifications), a plain WebSocket costs
less: a client opens `/realtime/ws/{room}` with the browser's own `WebSocket` and
receives each broadcast as one JSON text message, `{"event": ..., "data": ...}`;
a backend sends with `POST /realtime/rooms/{room}/broadcast`.
{% if cookiecutter.use_redis %}
With REDIS_URL set, a broadcast goes through Redis pub/sub and reaches the
clients of every instance.
{% endif %}
"""

{% if cookiecutter.use_redis %}
import asyncio
{% endif %}
import json
import logging
{% if cookiecutter.use_redis %}
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
{% endif %}
from typing import Any

{% if cookiecutter.use_redis %}
from redis.asyncio import Redis
from redis.exceptions import RedisError
{% endif %}
from starlette.websockets import WebSocket
{% if cookiecutter.use_redis %}

from app.settings import Settings
{% endif %}

logger = logging.getLogger(__name__)
{% if cookiecutter.use_redis %}

# Seconds before the subscriber tries Redis again after losing it.
RESUBSCRIBE_SECONDS = 1.0
# Seconds to wait for the subscriber to stop before cancelling it again.
CANCEL_AGAIN_SECONDS = 0.05
{% endif %}


class Broadcaster:
    """The clients of each room on this instance, and the way a broadcast reaches them."""

{% if cookiecutter.use_redis %}
    def __init__(self, redis: Redis | None = None, channel: str = "") -> None:
        self.rooms: dict[str, set[WebSocket]] = {}
        # The subscriber's own connection: a subscribed connection can do nothing else.
        self.redis = redis
        self.channel = channel
{% else %}
    def __init__(self) -> None:
        self.rooms: dict[str, set[WebSocket]] = {}
{% endif %}

    def join(self, room: str, websocket: WebSocket) -> None:
        self.rooms.setdefault(room, set()).add(websocket)

    def leave(self, room: str, websocket: WebSocket) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(websocket)
            if not members:
                del self.rooms[room]

    async def publish(self, room: str, event: str, data: dict[str, Any]) -> None:
        """Send `event` with `data` to the room's clients{{ " on every instance" if cookiecutter.use_redis else "" }}."""
        message = json.dumps({"event": event, "data": data})
{% if cookiecutter.use_redis %}
        if self.redis is not None:
            await self.redis.publish(self.channel, f"{room}\n{message}")
            return
{% endif %}
        await self.deliver(room, message)

    async def deliver(self, room: str, message: str) -> None:
        """One send per client of this instance, the message encoded once."""
        for websocket in list(self.rooms.get(room, ())):
            try:
                await websocket.send_text(message)
            except Exception:  # noqa: BLE001 - a client that just went away
                self.leave(room, websocket)
{% if cookiecutter.use_redis %}

    async def listen(self, redis: Redis) -> None:
        """Deliver what any instance publishes; after losing Redis, subscribe again."""
        while True:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            room, _, text = message["data"].decode().partition("\n")
                            await self.deliver(room, text)
            except (RedisError, OSError) as error:
                logger.warning("Broadcast subscriber lost Redis (%s)", type(error).__name__)
                await asyncio.sleep(RESUBSCRIBE_SECONDS)


@asynccontextmanager
async def open_broadcaster(settings: Settings) -> AsyncIterator[Broadcaster]:
    """The broadcaster for the app's lifetime, with its Redis subscriber when REDIS_URL is set."""
    if settings.redis_url is None:
        yield Broadcaster()
        return
    # No socket timeout: the subscriber waits on an idle connection by design.
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=settings.redis_socket_timeout)
    broadcaster = Broadcaster(redis, f"{settings.cache_key_prefix}broadcast")
    listener = asyncio.create_task(broadcaster.listen(redis))
    try:
        yield broadcaster
    finally:
        await cancel_until_done(listener)
        await redis.aclose()


async def cancel_until_done(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for it to end, cancelling again while it goes on.

    redis-py's `subscribe` can swallow a cancellation that lands while it runs
    (seen on Python 3.11); the subscriber would then wait for messages forever.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_SECONDS)
    if not task.cancelled():
        task.exception()
{% endif %}
