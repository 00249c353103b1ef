"""Logging: JSON lines in production, readable lines in development.

Every line logged while a request is handled carries that request's id{{ " (and, when
traces are sent, its trace id)" if cookiecutter.use_metrics else "" }}.
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

{% if cookiecutter.use_metrics %}
from opentelemetry import trace

{% endif %}
from app.settings import Settings

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)-8s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Copy the current request id onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


{% if cookiecutter.use_metrics %}
class TraceIdFilter(logging.Filter):
    """Copy the current span's trace and span ids onto every record (when traces are sent)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        return True


{% endif %}
class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            # The key Google Cloud Logging reads; other platforms ignore it.
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
        }
{% if cookiecutter.use_metrics %}
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            line["trace_id"] = trace_id
            line["span_id"] = getattr(record, "span_id", "-")
{% endif %}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(settings: Settings) -> None:
    """Send the root logger and the server's loggers to stdout in one format."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(RequestIdFilter())
{% if cookiecutter.use_metrics %}
    if settings.otlp_traces_endpoint is not None:
        handler.addFilter(TraceIdFilter())
{% endif %}
    handler.setFormatter(JsonFormatter() if settings.json_logs else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error"):
        server_logger = logging.getLogger(name)
        # Only a logger the server writes with is moved to this format: one it
        # turned off (`uvicorn --no-access-log`) stays off.
        if server_logger.handlers:
            server_logger.handlers = []
            server_logger.propagate = True
