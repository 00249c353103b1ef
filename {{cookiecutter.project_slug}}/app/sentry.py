"""Sentry: error reporting and optional tracing, switched on by SENTRY_DSN.

The SDK is only initialised when a DSN is set: once active it instruments every
request, which costs throughput even with tracing off. Unhandled errors reach
Sentry through the error log line `app.middleware` writes for them.
"""

from typing import Any

from app import __version__
from app.paths import PROBE_PATHS
from app.settings import Settings


def init_sentry(settings: Settings) -> bool:
    """Initialise the SDK when SENTRY_DSN is set; return whether it is active."""
    if settings.sentry_dsn is None:
        return False
    # Imported here: without a DSN the SDK is never loaded, which keeps about
    # 0.15 s off every cold start and its modules out of each worker's memory.
    import sentry_sdk

    rate = settings.sentry_traces_sample_rate

    def sample(context: dict[str, Any]) -> float:
        scope = context.get("asgi_scope") or {}
        return 0.0 if scope.get("path") in PROBE_PATHS else rate

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment,
        release=f"{settings.service_name}@{__version__}",
        traces_sampler=sample,
        # The SDK's default sends no personal data (IPs, cookies, headers, bodies).
        # Stack frames' variables would: a request's raw headers (bearer tokens) sit in
        # ASGI scopes as byte pairs, which the SDK's scrubber does not recognise.
        include_local_variables=False,
    )
    return True
