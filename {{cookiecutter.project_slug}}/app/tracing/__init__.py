"""OpenTelemetry traces: exported over OTLP when an endpoint is set, nothing when not.

FastAPI makes each request's span, named after its route template, into the provider
made in `export.py`; `open_tracing` adds the app's clients' spans inside it. Without
an endpoint FastAPI's telemetry is off and neither the exporter nor the tracing SDK
is imported.
"""

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi.telemetry import TelemetryConfig

from app.paths import {{ "METRICS_PATH, PROBE_PATHS, SOCKETIO_PATH" if cookiecutter.use_socketio else "METRICS_PATH, PROBE_PATHS" }}
from app.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
{% if cookiecutter.use_redis %}
    from redis.asyncio import Redis
{% endif %}
{% if cookiecutter.use_postgres %}
    from sqlalchemy.ext.asyncio import AsyncEngine
{% endif %}

# Probes and scrapes every few seconds would bury the requests.
UNTRACED_PATHS = PROBE_PATHS | {METRICS_PATH}
{% if cookiecutter.use_socketio %}
# A Socket.IO connection lasts minutes: one span for all of it says nothing.
UNTRACED_PREFIXES = (SOCKETIO_PATH,)
{% endif %}


def untraced(scope: MutableMapping[str, Any]) -> bool:
    path: str = scope["path"]
{% if cookiecutter.use_socketio %}
    return path in UNTRACED_PATHS or path.startswith(UNTRACED_PREFIXES)
{% else %}
    return path in UNTRACED_PATHS
{% endif %}


def tracer_provider(settings: Settings) -> "TracerProvider | None":
    """A provider that sends spans to the settings' endpoint; None without one."""
    endpoint = settings.otlp_traces_endpoint
    if endpoint is None:
        return None
    # Imported here, so that a service without an endpoint never loads the exporter.
    from app.tracing.export import exporting_provider

    return exporting_provider(settings.service_name, endpoint, settings.traces_sample_rate)


def telemetry_config(provider: "TracerProvider | None") -> TelemetryConfig:
    """FastAPI's own telemetry: request spans into `provider`, or all of it off."""
    if provider is None:
        # Left on, it would look up a provider on every request.
        return {"tracing": False, "metrics": False, "logs": False}
    # Metrics are Prometheus's (app/metrics) and log lines go to stdout.
    return {"tracer_provider": provider, "metrics": False, "logs": False, "exclude": untraced}


@asynccontextmanager
async def open_tracing(
    provider: "TracerProvider | None",
{% if cookiecutter.use_postgres %}
    engine: "AsyncEngine",
{% endif %}
{% if cookiecutter.use_redis %}
    redis: "Redis | None",
{% endif %}
) -> AsyncIterator[None]:
    """Trace the app's clients while it runs; send the last spans at shutdown."""
    if provider is None:
        yield
        return
{% if cookiecutter.use_redis %}
    from opentelemetry.instrumentation.redis import RedisInstrumentor
{% endif %}
{% if cookiecutter.use_postgres %}
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
{% endif %}

{% if cookiecutter.use_postgres %}
    sqlalchemy = SQLAlchemyInstrumentor()
    # The instrumentation declares SQLAlchemy below 2.1; the engine events it uses are
    # the same in 2.1, and tests/test_tracing.py checks that the spans arrive.
    sqlalchemy.instrument(engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True)
{% endif %}
{% if cookiecutter.use_redis %}
    if redis is not None:
        RedisInstrumentor.instrument_client(redis, tracer_provider=provider)
{% endif %}
    try:
        yield
    finally:
{% if cookiecutter.use_postgres %}
        sqlalchemy.uninstrument()
{% endif %}
        # Sends what is left over HTTP: in a thread, off the event loop.
        await asyncio.to_thread(provider.shutdown)
