"""Every metric the service exports, defined once per process.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes prometheus-client keep each
worker's values in files there, and `/metrics` adds them up; a gauge then says
how it combines the workers' values (`livesum`: the sum over the live ones).
"""

from prometheus_client import {{ "Counter, Gauge, Histogram" if cookiecutter.use_redis or cookiecutter.use_rate_limit else "Gauge, Histogram" }}

REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by method, route"
    " template and status; its _count is the number of requests answered.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
IN_FLIGHT = Gauge(
    "http_requests_in_flight",
    "HTTP requests being answered now.",
    multiprocess_mode="livesum",
)
{% if cookiecutter.use_postgres %}
DB_CHECKED_OUT = Gauge(
    "db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)
DB_OVERFLOW = Gauge(
    "db_pool_overflow",
    "Database connections open beyond the pool's size (DB_MAX_OVERFLOW caps them).",
    multiprocess_mode="livesum",
)
{% endif %}
{% if cookiecutter.use_redis %}
CACHE_LOOKUPS = Counter(
    "cache_lookups",
    "Cache reads, by result: hit or miss (a read while Redis fails is a miss).",
    ["result"],
)
CACHE_HITS = CACHE_LOOKUPS.labels(result="hit")
CACHE_MISSES = CACHE_LOOKUPS.labels(result="miss")
REDIS_ERRORS = Counter(
    "redis_errors",
    "Redis calls that failed or timed out.",
)
{% endif %}
{% if cookiecutter.use_rate_limit %}
RATE_LIMITED = Counter(
    "rate_limited_requests",
    "Requests refused with 429 because a rate limit was spent.",
)
{% endif %}
{% if cookiecutter.use_socketio %}
SOCKETIO_CLIENTS = Gauge(
    "socketio_connected_clients",
    "Socket.IO clients connected now.",
    multiprocess_mode="livesum",
)
{% endif %}
