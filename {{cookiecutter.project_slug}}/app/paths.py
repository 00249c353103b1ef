"""URL paths that several modules need to recognise."""

LIVENESS_PATH = "/health"
READINESS_PATH = "/health/ready"
# Platforms call the probes every few seconds, by IP address or an internal name:
# they answer whatever the Host, and skip the per-request work other routes get.
PROBE_PATHS = frozenset({LIVENESS_PATH, READINESS_PATH})
DOCS_PATH = "/docs"
{% if cookiecutter.use_socketio %}
SOCKETIO_PATH = "/socket.io"
{% endif %}
{% if cookiecutter.use_metrics %}
# Answered by app/metrics/middleware.py, only with METRICS_TOKEN.
METRICS_PATH = "/metrics"
{% endif %}
