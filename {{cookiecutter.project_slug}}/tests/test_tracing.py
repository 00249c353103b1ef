"""Traces: one request, one trace, sent over OTLP to a receiver in the test; none without
an endpoint."""

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import ValidationError

from app.settings import Settings, describe
from tests.live import PROJECT_ROOT, live_server

{% if cookiecutter.use_postgres %}
# No such item: a cache lookup, then a database query, then 404.
TRACED_PATH = "/items/424242"
TRACED_ROUTE = "/items/{item_id}"
{% else %}
TRACED_PATH = TRACED_ROUTE = "/"
{% endif %}
# What a service without an endpoint never imports.
TRACING_MODULES = (
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
    "opentelemetry.sdk.trace",
    "app.tracing.export",
)
# Where each kind of span comes from (its instrumentation scope).
REQUESTS = "fastapi"
{% if cookiecutter.use_postgres %}
QUERIES = "opentelemetry.instrumentation.sqlalchemy"
{% endif %}
{% if cookiecutter.use_redis and cookiecutter.use_postgres %}
REDIS_COMMANDS = "opentelemetry.instrumentation.redis"
{% endif %}


class OtlpReceiver:
    """An OTLP/HTTP endpoint that keeps, by instrumentation scope, every span sent to it."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, Span]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest.FromString(body)
                for resource_spans in export.resource_spans:
                    for scope_spans in resource_spans.scope_spans:
                        receiver.spans += [(scope_spans.scope.name, s) for s in scope_spans.spans]
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def of(self, scope: str) -> list[Span]:
        return [span for name, span in self.spans if name == scope]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def server_env(settings: Settings) -> dict[str, str]:
    """The test's settings for a server process, with JSON log lines."""
    env = {"ENVIRONMENT": "test", "LOG_JSON": "true"}
{% if cookiecutter.use_postgres %}
    env["DATABASE_URL"] = settings.database_url
{% endif %}
{% if cookiecutter.use_redis %}
    env["REDIS_URL"] = settings.redis_url or ""
    env["CACHE_KEY_PREFIX"] = settings.cache_key_prefix
{% endif %}
    return env


@pytest.mark.live
def test_a_request_is_one_trace_with_its_queries_inside_and_its_id_in_the_log(
    settings: Settings, receiver: OtlpReceiver, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    env = server_env(settings) | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        # The batch leaves within 100 ms rather than 5 s; the rest at shutdown.
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    with live_server(log, **env) as base:
        httpx.get(f"{base}{TRACED_PATH}", timeout=10)
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    # The server has stopped: whatever it held was sent at shutdown.

    (request,) = [span for span in receiver.of(REQUESTS) if span.kind == Span.SPAN_KIND_SERVER]
    assert request.name == f"GET {TRACED_ROUTE}", "named after the route, never the raw path"
    assert not request.parent_span_id
    assert {span.trace_id for _, span in receiver.spans} == {request.trace_id}, "one trace"
{% if cookiecutter.use_postgres %}
    assert receiver.of(QUERIES), "the database query is in the trace"
{% endif %}
{% if cookiecutter.use_redis and cookiecutter.use_postgres %}
    if settings.redis_url:
        assert receiver.of(REDIS_COMMANDS), "the cache lookup is in the trace"
{% endif %}
    trace_id = request.trace_id.hex()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert any(line.get("trace_id") == trace_id for line in lines), lines


def test_without_an_endpoint_no_exporter_or_tracing_sdk_is_imported(settings: Settings) -> None:
    """A request served, then the modules the process loaded: none that traces or exports.{{ "\n    (redis-py loads the SDK's metrics part itself when it is installed.)" if cookiecutter.use_redis else "" }}"""
    serve_one_request = f"""
import asyncio, sys
NOT_LOADED = {TRACING_MODULES!r}
import httpx
from asgi_lifespan import LifespanManager
from app.main import create_app

async def main() -> None:
    async with LifespanManager(create_app()) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            await client.get("{TRACED_PATH}")

asyncio.run(main())
print("\\n".join(name for name in sys.modules if name.startswith(NOT_LOADED)))
"""
    done = subprocess.run(
        [sys.executable, "-c", serve_one_request],
        cwd=PROJECT_ROOT,
        # Unset here even if .env sets them.
        env=os.environ
        | server_env(settings)
        | {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ""}
        | {"LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == [], done.stdout


def test_the_traces_endpoint_is_resolved_as_opentelemetry_specifies() -> None:
    def endpoint(**values: object) -> str | None:
        return Settings(_env_file=None, **values).otlp_traces_endpoint  # type: ignore[arg-type]

    collector = "http://collector:4318"
    vendor = "https://traces.example.com/in"
    both = {"otel_exporter_otlp_endpoint": collector, "otel_exporter_otlp_traces_endpoint": vendor}
    assert endpoint() is None
    assert endpoint(otel_exporter_otlp_endpoint=collector) == f"{collector}/v1/traces"
    assert endpoint(**both) == vendor
    assert endpoint(**both, otel_sdk_disabled=True) is None
    assert endpoint(otel_exporter_otlp_endpoint="") is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [("otel_exporter_otlp_protocol", "grpc"), ("otel_exporter_otlp_endpoint", "collector:4318")],
)
def test_a_protocol_or_endpoint_the_exporter_cannot_use_is_refused_by_name(
    variable: str, value: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(_env_file=None, **{variable: value})  # type: ignore[arg-type]
    assert describe(refused.value).startswith(variable.upper()), describe(refused.value)
