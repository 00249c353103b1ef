"""The OpenTelemetry SDK's side: a provider that sends spans over OTLP/HTTP in batches.

Imported only when an endpoint is set (`app/tracing/__init__.py`).
"""

from collections.abc import Mapping, Sequence

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import AttributeValue

# A batch the collector has not taken within this is dropped: the last batch leaves at
# shutdown, inside the platform's grace period, and a collector that is down must not
# hold the stop (with the exporter's default of 10 s, retries included, it would).
EXPORT_TIMEOUT_SECONDS = 2.0


class RequestsStartTraces(Sampler):
    """A trace starts at a request, a share `rate` of them: a query or command made
    outside any request (the readiness check's, a background task's) is not sent alone."""

    def __init__(self, rate: float) -> None:
        self.requests = TraceIdRatioBased(rate)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if kind is not SpanKind.SERVER:
            return SamplingResult(Decision.DROP)
        return self.requests.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RequestsStartTraces({self.requests.get_description()})"


def exporting_provider(service_name: str, endpoint: str, rate: float) -> TracerProvider:
    """Spans of `service_name` to `endpoint`; a span with a parent follows its parent's choice."""
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}),
        sampler=ParentBased(root=RequestsStartTraces(rate)),
    )
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_SECONDS)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
