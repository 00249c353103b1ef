"""The ASGI entry point: `app.main:app`, built by `create_app()`."""

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from app import __version__
{% if cookiecutter.use_postgres %}
from app.db import UNAVAILABLE_ERRORS, database_unavailable
{% endif %}
from app.errors import request_validation_failed
from app.health import add_probes
from app.lifespan import lifespan
from app.log import configure_logging
{% if cookiecutter.use_metrics %}
from app.metrics.middleware import MetricsMiddleware
{% endif %}
from app.middleware import EdgeMiddleware
from app.paths import DOCS_PATH
from app.proxy import ForwardedMiddleware
{% if cookiecutter.use_rate_limit %}
from app.ratelimit.middleware import RateLimitMiddleware
{% endif %}
{% if cookiecutter.use_socketio %}
from app.realtime.asgi import SocketIOMiddleware
from app.realtime.server import create_server
{% endif %}
from app.routers import ROUTERS
{% if cookiecutter.use_sentry %}
from app.sentry import init_sentry
{% endif %}
from app.settings import Settings, get_settings
{% if cookiecutter.use_metrics %}
from app.tracing import telemetry_config, tracer_provider
{% endif %}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the service: its routes, middleware, and the lifespan that opens its clients."""
    settings = settings or get_settings()
    configure_logging(settings)
{% if cookiecutter.use_sentry %}
    init_sentry(settings)
{% endif %}
{% if cookiecutter.use_socketio %}
    sio = create_server(settings)
{% endif %}
{% if cookiecutter.use_metrics %}
    tracing = tracer_provider(settings)
{% endif %}

    api = FastAPI(
        title=settings.service_name,
        version=__version__,
        debug=settings.debug,
        lifespan=lifespan(settings{{ ", sio" if cookiecutter.use_socketio else "" }}{{ ", tracing" if cookiecutter.use_metrics else "" }}),
        docs_url=DOCS_PATH if settings.serve_docs else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.serve_docs else None,
{% if cookiecutter.use_metrics %}
        telemetry=telemetry_config(tracing),
{% else %}
        # FastAPI's built-in OpenTelemetry costs every request a provider lookup
        # and this service exports none; to export, remove this argument.
        telemetry={"tracing": False, "metrics": False, "logs": False},
{% endif %}
    )
    add_probes(api)
    for router in ROUTERS:
        api.include_router(router)

    api.add_exception_handler(RequestValidationError, request_validation_failed)
{% if cookiecutter.use_postgres %}
    for error in UNAVAILABLE_ERRORS:
        api.add_exception_handler(error, database_unavailable)
{% endif %}

    # The last one added sees a request first.
{% if cookiecutter.use_rate_limit %}
    api.add_middleware(RateLimitMiddleware, settings=settings)
{% endif %}
    api.add_middleware(EdgeMiddleware, settings=settings)
{% if cookiecutter.use_metrics %}
    # Outside the edge checks, so their refusals and the 500s it answers are counted,
    # and a scraper reaching an instance by its address is not refused for its Host.
    api.add_middleware(MetricsMiddleware, settings=settings)
{% endif %}
{% if cookiecutter.use_socketio %}
    api.add_middleware(SocketIOMiddleware, sio=sio)
{% endif %}
    # Outermost, so the others see the client address and scheme the proxy forwarded.
    api.add_middleware(ForwardedMiddleware, settings=settings)
    return api


app = create_app()
