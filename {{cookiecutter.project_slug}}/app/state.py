"""What the running app holds: made once by the lifespan (`app/lifespan.py`), read by
the dependencies (`app/deps.py`) and the middleware.
"""

from dataclasses import dataclass
{% if cookiecutter.use_socketio or cookiecutter.use_redis %}

{% endif %}
{% if cookiecutter.use_socketio %}
import socketio
{% endif %}
{% if cookiecutter.use_redis %}
from redis.asyncio import Redis
{% endif %}

{% if cookiecutter.use_redis %}
from app.cache import Cache
{% endif %}
{% if cookiecutter.use_postgres %}
from app.db import Database
{% endif %}
{% if cookiecutter.use_worker %}
from app.jobs.queue import Jobs
{% endif %}
{% if cookiecutter.use_rate_limit %}
from app.ratelimit.budgets import Budgets
{% endif %}
{% if cookiecutter.use_socketio %}
from app.realtime.broadcast import Broadcaster
{% endif %}
{% if cookiecutter.use_redis %}
from app.redis_client import RedisBreaker
{% endif %}
from app.settings import Settings

# The lifespan state key under which Starlette hands the state to every request.
STATE_KEY = "app_state"


@dataclass(frozen=True)
class AppState:
    settings: Settings
{% if cookiecutter.use_postgres %}
    database: Database
{% endif %}
{% if cookiecutter.use_redis %}
    # None when REDIS_URL is unset.
    redis: Redis | None
    redis_breaker: RedisBreaker
    cache: Cache
{% endif %}
{% if cookiecutter.use_rate_limit %}
    rate_limits: Budgets
{% endif %}
{% if cookiecutter.use_socketio %}
    sio: socketio.AsyncServer
    broadcaster: Broadcaster
{% endif %}
{% if cookiecutter.use_worker %}
    jobs: Jobs
{% endif %}
