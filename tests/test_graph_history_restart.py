"""A real ``tracemesh collector`` restarted on the same store keeps its service graph's history:
on each backend, requests sent before the restart are still on the graph after it (the stopping
collector writes every window, the starting one reads its recent windows back), and requests sent
after it add to them without counting anything twice."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

from tests.support.clickhouse_server import clickhouse_server_url, store_url  # noqa: F401  (fixtures)
from tests.support.collector import collector_for

MS = 1_000_000


def send_requests(collector, count: int, latency_ms: int) -> None:
    """``count`` requests into ``shop`` from outside (SERVER spans without a parent), just ended."""
    provider = TracerProvider(resource=Resource.create({"service.name": "shop"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.otlp_http_url)))
    tracer = provider.get_tracer("tests.graph.history")
    end = time.time_ns() - 100 * MS
    for i in range(count):
        span = tracer.start_span("GET /items", kind=SpanKind.SERVER, start_time=end - i * MS - latency_ms * MS)
        span.end(end_time=end - i * MS)
    provider.shutdown()


def shop_requests(collector, **params: str) -> int:
    query = "&".join(f"{key}={value}" for key, value in params.items())
    graph = collector.get_json("/api/v1/graph" + (f"?{query}" if query else ""))
    return sum(edge["requests"] for edge in graph["edges"] if (edge["source"], edge["target"]) == ("user", "shop"))


def wait_for_requests(collector, expected: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while (counted := shop_requests(collector)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counted == expected


def test_a_restarted_collector_keeps_the_graph_history(tmp_path, store_url):  # noqa: F811
    first = collector_for(tmp_path, store_url).start()
    try:
        send_requests(first, 30, latency_ms=40)
        wait_for_requests(first, 30)
        first.wait_inserted(30)
        before = first.get_json("/api/v1/graph")
    finally:
        assert first.stop() == 0

    second = collector_for(tmp_path, store_url).start()
    try:
        graph = second.get_json("/api/v1/graph")
        assert {node["name"]: node["kind"] for node in graph["nodes"]} == {"user": "external", "shop": "service"}
        [edge] = graph["edges"]
        [edge_before] = before["edges"]
        assert edge["requests"] == 30
        assert edge["latencyMs"] == edge_before["latencyMs"]
        assert edge["latencyMs"]["p50"] == pytest.approx(40, rel=0.01)

        send_requests(second, 10, latency_ms=400)
        wait_for_requests(second, 40)
        [edge] = second.get_json("/api/v1/graph")["edges"]
        assert edge["latencyMs"]["p50"] == pytest.approx(40, rel=0.01)
        assert edge["latencyMs"]["p99"] == pytest.approx(400, rel=0.01)
        series = second.get_json("/api/v1/edges?from=user&to=shop&step=60s")
        [points] = [s["points"] for s in series["series"]]
        assert sum(point["requests"] for point in points) == 40
    finally:
        assert second.stop() == 0
