"""OpenTelemetry for the shop's services, set up the way any instrumented app does it.

Each service calls ``start_tracing(service, instance, otlp_url)`` once: a TracerProvider with the
service's resource and a batching OTLP/HTTP exporter to the collector. Then the two halves of
context propagation, which is all a service behind a Tracemesh sidecar has to do:

* incoming: read ``traceparent`` from the request (``server_span``) so the app's SERVER span
  continues the trace the sidecar started or continued;
* outgoing: send the call to the local sidecar's outbound address, name the destination service
  in ``Host`` (HTTP) or ``:authority`` (gRPC), and inject the current context (``client_span``).

The sidecars add their own CLIENT/SERVER spans around every hop; the collector's service graph
counts each hop once.
"""

from __future__ import annotations

import contextlib
import json

from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode


def start_tracing(service: str, instance: str, otlp_url: str) -> trace.Tracer:
    """Spans of this process go to ``otlp_url`` (OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces)
    once a second. Call ``stop_tracing()`` on exit to flush the last ones."""
    resource = Resource.create({"service.name": service, "service.instance.id": instance})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_url), schedule_delay_millis=1000))
    trace.set_tracer_provider(provider)
    return trace.get_tracer(f"shop.{service}")


def stop_tracing() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


@contextlib.contextmanager
def server_span(tracer: trace.Tracer, name: str, carrier, attributes: dict):
    """A SERVER span continuing the trace whose context came in ``carrier`` (HTTP headers or
    gRPC metadata as a dict), current while the body runs."""
    with tracer.start_as_current_span(
        name, context=propagate.extract(carrier), kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span


@contextlib.contextmanager
def client_span(tracer: trace.Tracer, name: str, destination: str, attributes: dict):
    """A CLIENT span for a call to ``destination``; yields the headers/metadata the call must send
    (the trace context of this span)."""
    with tracer.start_as_current_span(
        name, kind=SpanKind.CLIENT, attributes={"peer.service": destination, **attributes}
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        yield span, carrier


def record_http_status(span: trace.Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def json_bytes(value) -> bytes:
    """gRPC messages of the shop are JSON documents (generic handlers, no generated code)."""
    return json.dumps(value).encode()


def from_json_bytes(data: bytes):
    return json.loads(data)
