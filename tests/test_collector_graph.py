"""The service graph end to end: a real ``tracemesh collector`` on each store backend, spans of a small
topology sent by the OpenTelemetry SDK through its OTLP exporters, and the graph read back from the
collector's HTTP API (``/api/v1/graph``, ``/api/v1/edges``, ``/metrics``).

Topology: two OTLP-instrumented services without proxies. frontend's SERVER span makes a CLIENT call
to checkout (trace context propagated as W3C headers), checkout's SERVER span makes two CLIENT calls
with ``db.system=postgresql``. frontend exports over OTLP/gRPC, checkout over OTLP/HTTP, so the two
halves of each hop arrive in different batches and the graph has to pair them. Every answer is
also checked against collector/openapi.json.
"""

from __future__ import annotations

import time
import urllib.parse

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clickhouse_server import clickhouse_server_url, store_url  # noqa: F401  (fixtures)
from tests.support.collector import collector_for
from tests.support.openapi_responses import checked_call

REQUESTS = 8
FAILING_CHECKOUTS = 2  # the first requests: checkout answers 500
FAILING_QUERIES = 1  # one database call fails
QUERIES_PER_CHECKOUT = 2
CLIENT_CALL_MS = 20
QUERY_MS = 4
MS = 1_000_000
SPANS = REQUESTS * (3 + QUERIES_PER_CHECKOUT)


@pytest.fixture
def collector(tmp_path, store_url):  # noqa: F811
    running = collector_for(tmp_path, store_url).start()
    yield running
    running.stop()


def tracer_provider(service: str, exporter) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def send_topology(collector) -> None:
    """REQUESTS requests through frontend → checkout → postgresql, with explicit times so latencies are exact."""
    frontend_provider = tracer_provider("frontend", GrpcExporter(endpoint=collector.grpc_address, insecure=True))
    checkout_provider = tracer_provider("checkout", HttpExporter(endpoint=collector.otlp_http_url))
    frontend = frontend_provider.get_tracer("tests.graph.frontend")
    checkout = checkout_provider.get_tracer("tests.graph.checkout")
    begin = time.time_ns() - 5_000 * MS
    for i in range(REQUESTS):
        at = begin + i * 100 * MS
        checkout_fails = i < FAILING_CHECKOUTS
        page = frontend.start_span("GET /cart", kind=SpanKind.SERVER, start_time=at)
        call = frontend.start_span("POST", context=set_span_in_context(page), kind=SpanKind.CLIENT, start_time=at + MS)
        headers: dict[str, str] = {}
        inject(headers, context=set_span_in_context(call))

        served = checkout.start_span(
            "POST /pay", context=extract(headers), kind=SpanKind.SERVER, start_time=at + 2 * MS,
            attributes={"http.request.method": "POST", "http.route": "/pay"},
        )
        for q in range(QUERIES_PER_CHECKOUT):
            query_at = at + (3 + q * QUERY_MS) * MS
            query = checkout.start_span(
                "SELECT orders", context=set_span_in_context(served), kind=SpanKind.CLIENT, start_time=query_at,
                attributes={"db.system": "postgresql", "db.namespace": "shop"},
            )
            if i * QUERIES_PER_CHECKOUT + q < FAILING_QUERIES:
                query.set_status(Status(StatusCode.ERROR, "deadlock detected"))
            query.end(end_time=query_at + QUERY_MS * MS)
        if checkout_fails:
            served.set_status(Status(StatusCode.ERROR, "payment declined"))
        served.set_attribute("http.response.status_code", 500 if checkout_fails else 200)
        served.end(end_time=at + (CLIENT_CALL_MS - 1) * MS)

        call.set_attribute("http.response.status_code", 500 if checkout_fails else 200)
        call.end(end_time=at + (1 + CLIENT_CALL_MS) * MS)
        page.end(end_time=at + (2 + CLIENT_CALL_MS) * MS)
    frontend_provider.shutdown()  # flushes the batch processors
    checkout_provider.shutdown()


def get(collector, path: str, **params: str):
    status, _, body = checked_call(collector.api_url + path + ("?" + urllib.parse.urlencode(params) if params else ""))
    assert status == 200, (path, body)
    return body


def edges_of(graph: dict) -> dict[tuple[str, str], dict]:
    return {(edge["source"], edge["target"]): edge for edge in graph["edges"]}


def wait_for_graph(collector, timeout: float = 15.0) -> dict:
    """The graph once every request of the topology is counted on its edge."""
    expected = {("user", "frontend"): REQUESTS, ("frontend", "checkout"): REQUESTS,
                ("checkout", "postgresql"): REQUESTS * QUERIES_PER_CHECKOUT}
    deadline = time.monotonic() + timeout
    while True:
        graph = get(collector, "/api/v1/graph")
        counted = {edge: stats["requests"] for edge, stats in edges_of(graph).items()}
        if counted == expected or time.monotonic() > deadline:
            assert counted == expected
            return graph
        time.sleep(0.1)


def test_the_graph_of_two_instrumented_services_and_their_database(collector):
    send_topology(collector)
    graph = wait_for_graph(collector)

    assert {node["name"]: node["kind"] for node in graph["nodes"]} == {
        "user": "external", "frontend": "service", "checkout": "service", "postgresql": "database"
    }
    edges = edges_of(graph)
    call, query = edges[("frontend", "checkout")], edges[("checkout", "postgresql")]
    assert (call["connectionType"], call["errors"]) == ("request", FAILING_CHECKOUTS)
    assert call["errorRate"] == pytest.approx(FAILING_CHECKOUTS / REQUESTS)
    assert call["latencyMs"]["p50"] == pytest.approx(CLIENT_CALL_MS, rel=0.01)  # the caller's view
    assert [(route["route"], route["requests"]) for route in call["routes"]] == [("POST /pay", REQUESTS)]
    assert (query["connectionType"], query["errors"]) == ("database", FAILING_QUERIES)
    assert query["latencyMs"]["p99"] == pytest.approx(QUERY_MS, rel=0.01)
    assert edges[("user", "frontend")]["errors"] == 0
    inbound = {node["name"]: node["inbound"]["requests"] for node in graph["nodes"]}
    assert inbound == {"user": 0, "frontend": REQUESTS, "checkout": REQUESTS,
                       "postgresql": REQUESTS * QUERIES_PER_CHECKOUT}

    series = get(collector, "/api/v1/edges", **{"from": "frontend", "to": "checkout", "step": "1m"})
    [edge_series] = series["series"]
    assert (edge_series["source"], edge_series["target"], series["stepSeconds"]) == ("frontend", "checkout", 60)
    assert sum(point["requests"] for point in edge_series["points"]) == REQUESTS
    assert sum(point["errors"] for point in edge_series["points"]) == FAILING_CHECKOUTS

    families = {family.name: family for family in text_string_to_metric_families(get(collector, "/metrics"))}

    def per_edge(name: str) -> dict[tuple[str, str, str], float]:
        return {
            (s.labels["client"], s.labels["server"], s.labels["connection_type"]): s.value
            for s in families[name].samples
        }

    assert per_edge("tracemesh_edge_requests") == {
        ("user", "frontend", "request"): REQUESTS,
        ("frontend", "checkout", "request"): REQUESTS,
        ("checkout", "postgresql", "database"): REQUESTS * QUERIES_PER_CHECKOUT,
    }
    errors = per_edge("tracemesh_edge_request_errors")
    assert errors[("frontend", "checkout", "request")] == FAILING_CHECKOUTS
    assert errors[("checkout", "postgresql", "database")] == FAILING_QUERIES

    collector.wait_inserted(SPANS)  # and every span reached this backend's store
    assert get(collector, "/ready")["accepted_spans"] == SPANS
