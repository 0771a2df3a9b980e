"""Edges from span batches: proxy hops, client/server pairs across batches, uninstrumented peers,
no double counting, odd spans, windows and retention."""

from __future__ import annotations

import random
import threading

import numpy as np
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.graph.prometheus import render_prometheus
from collector.ingest.zipkin_decode import decode_zipkin_json
from collector.graph.service_graph import ServiceGraph
from collector.graph.sketch import RELATIVE_ACCURACY
from spans.conventions import (
    ENDPOINT,
    HTTP_STATUS,
    PEER_SERVICE,
    RETRIES,
    SERVER_ADDRESS,
    SERVER_PORT,
    SERVICE_INSTANCE_ID,
)
from spans.model import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_UNSET,
    SpanColumns,
)
from spans.otlp_decode import decode_otlp_protobuf
from tests.support.graph_spans import MS, S, columns, new_trace_id, proxy_hop, span

T0 = 1_800_000_000 * S  # a fixed "now" on a window boundary


class Clock:
    """The graph's wall clock, moved by the test instead of by waiting."""

    def __init__(self, now_ns: int = T0):
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def new_graph(clock: Clock, **options) -> ServiceGraph:
    return ServiceGraph(clock=clock, **options)


def edges_of(graph: ServiceGraph, start_ns: int = T0 - 300 * S, end_ns: int = T0 + S) -> dict:
    return {(e["source"], e["target"], e["connectionType"]): e for e in graph.graph(start_ns, end_ns)["edges"]}


def nodes_of(graph: ServiceGraph) -> dict:
    return {n["name"]: n["kind"] for n in graph.graph(T0 - 300 * S, T0 + S)["nodes"]}


def app_pair(trace_id, caller, callee, start_ns, duration_ns, *, server_attributes=None, instance="", error=False):
    """An application's CLIENT span and, as its child, the callee application's SERVER span."""
    client = span(trace_id, caller, KIND_CLIENT, start_ns, duration_ns)
    server = span(
        trace_id,
        callee,
        KIND_SERVER,
        start_ns + duration_ns // 10,
        duration_ns // 2,
        parent=client["span_id"],
        name="GET /users/{id}",
        error=error,
        attributes=server_attributes,
        resource={SERVICE_INSTANCE_ID: instance} if instance else None,
    )
    return client, server


def test_proxy_client_spans_give_edges_with_errors_retries_endpoint_and_exact_enough_percentiles():
    clock = Clock()
    graph = new_graph(clock)
    rng = np.random.default_rng(5)
    latencies = (rng.lognormal(np.log(20e6), 0.8, 3000)).astype(np.int64) + 1
    rows = []
    for i, latency in enumerate(latencies):
        rows += proxy_hop(
            new_trace_id(),
            "frontend",
            "cart",
            T0 - 60 * S + i * 10 * MS,
            int(latency),
            error=i % 20 == 0,
            attributes={RETRIES: 1 if i % 4 == 0 else 0, ENDPOINT: f"10.0.0.{i % 3}:8080"},
        )
    for start in range(0, len(rows), 700):  # several batches, as ingest delivers them
        graph.consume(columns(rows[start : start + 700]))

    edges = edges_of(graph)
    assert set(edges) == {("frontend", "cart", "request")}
    edge = edges[("frontend", "cart", "request")]
    assert edge["requests"] == 3000
    assert edge["errors"] == 150
    assert edge["errorRate"] == pytest.approx(0.05)
    assert edge["retries"] == 750
    for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99)):
        exact_ms = np.percentile(latencies, q, method="lower") / 1e6
        assert edge["latencyMs"][name] == pytest.approx(exact_ms, rel=RELATIVE_ACCURACY + 1e-3)
    assert {e["endpoint"]: e["requests"] for e in edge["endpoints"]} == {
        "10.0.0.0:8080": 1000,
        "10.0.0.1:8080": 1000,
        "10.0.0.2:8080": 1000,
    }
    assert nodes_of(graph) == {"frontend": "service", "cart": "service"}
    assert graph.pairing_stats().pending == 0  # the callee proxies' SERVER spans were claimed, not left waiting


def test_application_client_and_server_spans_pair_across_batches_in_either_order():
    clock = Clock()
    graph = new_graph(clock)
    client_first, server_first = [], []
    for i in range(50):
        client, server = app_pair(new_trace_id(), "web", "users", T0 - 30 * S + i * MS, 40 * MS, instance="users-1",
                                  server_attributes={"http.route": "/users/{id}", "http.request.method": "GET"},
                                  error=i < 5)
        client_first.append((client, server))
    for i in range(30):
        client, server = app_pair(new_trace_id(), "web", "users", T0 - 20 * S + i * MS, 60 * MS, instance="users-2")
        server_first.append((client, server))

    graph.consume(columns([c for c, _ in client_first] + [s for _, s in server_first]))
    clock.now_ns += 3 * S  # the partner spans come in a later batch, within the wait
    graph.consume(columns([s for _, s in client_first] + [c for c, _ in server_first]))

    edge = edges_of(graph)[("web", "users", "request")]
    assert edge["requests"] == 80
    assert edge["errors"] == 5
    assert {e["endpoint"]: e["requests"] for e in edge["endpoints"]} == {"users-1": 50, "users-2": 30}
    assert {r["route"]: r["requests"] for r in edge["routes"]} == {"GET /users/{id}": 80}
    # Latency is the caller's view: the CLIENT span's duration.
    assert edge["latencyMs"]["p50"] == pytest.approx(40, rel=RELATIVE_ACCURACY)
    assert edge["latencyMs"]["p99"] == pytest.approx(60, rel=RELATIVE_ACCURACY)
    assert graph.pairing_stats().paired == 80
    assert graph.pairing_stats().pending == 0


def test_unpaired_client_spans_become_database_and_external_nodes():
    clock = Clock()
    graph = new_graph(clock, pair_wait_seconds=10)
    trace_id = new_trace_id()
    rows = [
        span(trace_id, "orders", KIND_CLIENT, T0 - 5 * S, 3 * MS,
             attributes={"db.system": "postgresql", SERVER_ADDRESS: "orders-db", SERVER_PORT: 5432}),
        span(trace_id, "orders", KIND_CLIENT, T0 - 5 * S, 250 * MS,
             attributes={PEER_SERVICE: "payments-api", SERVER_ADDRESS: "pay.example.com"}, error=True),
        span(trace_id, "orders", KIND_CLIENT, T0 - 5 * S, 9 * MS, attributes={}),  # names no peer
        span(trace_id, "orders", KIND_INTERNAL, T0 - 5 * S, 1 * MS),
    ]
    graph.consume(columns(rows))
    # A database call counts at once: databases send no spans to wait for.
    assert set(edges_of(graph)) == {("orders", "orders-db", "database")}

    clock.now_ns += 11 * S  # past the wait: the other CLIENT spans give up on their partner
    edges = edges_of(graph, end_ns=clock.now_ns)
    assert set(edges) == {("orders", "orders-db", "database"), ("orders", "payments-api", "request")}
    assert edges[("orders", "payments-api", "request")]["errors"] == 1
    assert edges[("orders", "orders-db", "database")]["endpoints"][0]["endpoint"] == "orders-db:5432"
    assert nodes_of(graph) == {"orders": "service", "orders-db": "database", "payments-api": "external"}
    stats = graph.pairing_stats()
    assert (stats.unpaired_to_peer, stats.unpaired_dropped, stats.pending) == (1, 1, 0)


def test_a_hop_seen_by_proxies_and_instrumented_apps_counts_once_in_any_arrival_order():
    """App A's CLIENT span → A's proxy CLIENT span → B's proxy SERVER span → app B's SERVER span."""
    hops = []
    for i in range(40):
        trace_id = new_trace_id()
        app_client = span(trace_id, "a", KIND_CLIENT, T0 - 10 * S + i * MS, 30 * MS,
                          attributes={PEER_SERVICE: "b", SERVER_ADDRESS: "127.0.0.1"})
        proxy_client, proxy_server = proxy_hop(trace_id, "a", "b", T0 - 10 * S + i * MS + MS, 28 * MS,
                                               parent=app_client["span_id"])
        app_server = span(trace_id, "b", KIND_SERVER, T0 - 10 * S + i * MS + 3 * MS, 20 * MS,
                          parent=proxy_server["span_id"])
        hops.append([app_client, proxy_client, proxy_server, app_server])

    for order in ([0, 1, 2, 3], [3, 2, 1, 0], [0, 3, 2, 1], [2, 0, 3, 1]):
        clock = Clock()
        graph = new_graph(clock)
        for position in order:  # each of the four spans in its own batch, from its own process
            graph.consume(columns([hop[position] for hop in hops]))
            clock.now_ns += S
        assert graph.pairing_stats().pending == 0, order  # nothing left waiting for a partner
        clock.now_ns += 20 * S  # let anything unpaired expire
        edges = edges_of(graph, end_ns=clock.now_ns)
        assert set(edges) == {("a", "b", "request")}, order
        assert edges[("a", "b", "request")]["requests"] == 40, order


def test_attribute_keys_written_with_json_escapes_are_still_read():
    """Spans are paired after a scan of the attribute text for a few keys; a key an encoder
    wrote with escapes (``\\u002e`` for the dot) must be found all the same."""
    clock = Clock()
    graph = new_graph(clock)
    rows = []
    for _ in range(3):
        app_client = span(new_trace_id(), "a", KIND_CLIENT, T0 - S, 30 * MS, attributes={PEER_SERVICE: "b"})
        proxy_client, proxy_server = proxy_hop(app_client["trace_id"], "a", "b", T0 - S + MS, 28 * MS,
                                               parent=app_client["span_id"])
        database = span(new_trace_id(), "b", KIND_CLIENT, T0 - S, MS, attributes={"db.system": "postgresql"})
        rows += [app_client, proxy_client, proxy_server, database]
    for row in rows:
        escaped = row["attributes"].replace(".", "\\u002e")
        assert escaped != row["attributes"] and orjson.loads(escaped) == orjson.loads(row["attributes"])
        row["attributes"] = escaped
    graph.consume(columns(rows))
    clock.now_ns += 20 * S  # let anything unpaired expire
    edges = edges_of(graph, end_ns=clock.now_ns)
    assert set(edges) == {("a", "b", "request"), ("b", "postgresql", "database")}
    assert edges[("a", "b", "request")]["requests"] == 3  # the app CLIENT spans were claimed, not counted again


def test_a_caller_without_proxy_pairs_with_the_callee_proxy_span():
    clock = Clock()
    graph = new_graph(clock)
    rows = []
    for i in range(10):
        trace_id = new_trace_id()
        app_client = span(trace_id, "batch-job", KIND_CLIENT, T0 - 10 * S + i * MS, 30 * MS)
        _, proxy_server = proxy_hop(trace_id, "batch-job", "b", T0 - 10 * S, 25 * MS, instance="b-7")
        proxy_server["parent_span_id"] = app_client["span_id"]
        app_server = span(trace_id, "b", KIND_SERVER, T0 - 10 * S + 2 * MS, 20 * MS, parent=proxy_server["span_id"])
        rows += [app_client, proxy_server, app_server]
    graph.consume(columns(rows))
    clock.now_ns += 20 * S
    edges = edges_of(graph, end_ns=clock.now_ns)
    assert set(edges) == {("batch-job", "b", "request")}
    assert edges[("batch-job", "b", "request")]["requests"] == 10
    assert edges[("batch-job", "b", "request")]["endpoints"][0]["endpoint"] == "b-7"


def test_producer_consumer_pairs_are_messaging_edges_timed_from_publish_to_consumed():
    clock = Clock()
    graph = new_graph(clock)
    producer = span(new_trace_id(), "orders", KIND_PRODUCER, T0 - 10 * S, 2 * MS)
    consumer = span(producer["trace_id"], "mailer", KIND_CONSUMER, T0 - 10 * S + 500 * MS, 100 * MS,
                    parent=producer["span_id"])
    graph.consume(columns([consumer]))
    graph.consume(columns([producer]))
    edge = edges_of(graph)[("orders", "mailer", "messaging")]
    assert edge["requests"] == 1
    assert edge["latencyMs"]["p50"] == pytest.approx(600, rel=RELATIVE_ACCURACY)


def test_root_server_spans_are_requests_from_the_user_node():
    clock = Clock()
    graph = new_graph(clock)
    graph.consume(columns([span(new_trace_id(), "frontend", KIND_SERVER, T0 - S, 5 * MS) for _ in range(3)]))
    assert edges_of(graph)[("user", "frontend", "request")]["requests"] == 3
    assert nodes_of(graph) == {"user": "external", "frontend": "service"}


def test_a_node_sums_the_requests_of_all_its_callers():
    clock = Clock()
    graph = new_graph(clock)
    rows = []
    for caller, latency_ms, count in (("web", 10, 30), ("mobile", 100, 10)):
        for _ in range(count):
            rows += proxy_hop(new_trace_id(), caller, "api", T0 - 5 * S, latency_ms * MS, error=caller == "mobile")
    graph.consume(columns(rows))
    api = next(node for node in graph.graph(T0 - 60 * S, T0)["nodes"] if node["name"] == "api")
    assert (api["kind"], api["inbound"]["requests"], api["inbound"]["errors"]) == ("service", 40, 10)
    assert api["inbound"]["latencyMs"]["p50"] == pytest.approx(10, rel=RELATIVE_ACCURACY)
    assert api["inbound"]["latencyMs"]["p90"] == pytest.approx(100, rel=RELATIVE_ACCURACY)


def test_http_5xx_answers_are_errors_even_with_the_span_status_unset():
    clock = Clock()
    graph = new_graph(clock)
    rows = []
    for status in (200, 404, 500, 503, "502", "ok"):
        hop = proxy_hop(new_trace_id(), "a", "b", T0 - S, MS, attributes={HTTP_STATUS: status})
        hop[0]["status_code"] = STATUS_UNSET
        rows += hop
    legacy = proxy_hop(new_trace_id(), "a", "b", T0 - S, MS, attributes={"http.status_code": "504"})
    legacy[0]["status_code"] = STATUS_UNSET
    graph.consume(columns(rows + legacy))
    edge = edges_of(graph)[("a", "b", "request")]
    assert (edge["requests"], edge["errors"]) == (7, 4)


def test_body_sizes_are_summed_as_bytes():
    clock = Clock()
    graph = new_graph(clock)
    rows = []
    for size in (100, 250):
        rows += proxy_hop(new_trace_id(), "a", "b", T0 - S, MS,
                          attributes={"http.request.body.size": size, "http.response.body.size": 10 * size})
    graph.consume(columns(rows))
    edge = edges_of(graph)[("a", "b", "request")]
    assert (edge["requestBytes"], edge["responseBytes"]) == (350, 3500)


def test_odd_spans_never_raise_and_are_counted():
    clock = Clock()
    graph = new_graph(clock)
    good = proxy_hop(new_trace_id(), "a", "b", T0 - S, MS)
    bad_json = span(new_trace_id(), "a", KIND_SERVER, T0 - S, MS)  # a root span: read at once
    bad_json["attributes"] = "{not json"
    # A waiting span's attributes are read when its wait ends.
    bad_waiting = span(new_trace_id(), "a", KIND_CLIENT, T0 - S, MS)
    bad_waiting["attributes"] = '{"peer.service": "b", not json'
    not_a_map = span(new_trace_id(), "a", KIND_SERVER, T0 - S, MS)
    not_a_map["attributes"] = "[1, 2]"
    silly_values = proxy_hop(new_trace_id(), "a", "b", T0 - S, MS,
                             attributes={RETRIES: "many", "http.request.body.size": -5, PEER_SERVICE: 42})
    graph.consume(columns([*good, bad_json, bad_waiting, not_a_map, *silly_values]))
    graph.consume({"trace_id": ["x"]})  # a batch without its columns: logged, never raised
    assert graph.pairing_stats().malformed == 1
    clock.now_ns += 11 * S
    edges = edges_of(graph, end_ns=clock.now_ns)
    assert edges[("a", "b", "request")]["requests"] == 1
    assert edges[("a", "42", "request")]["retries"] == 0
    assert edges[("user", "a", "request")]["requests"] == 1  # not_a_map: a request with no attributes
    assert graph.pairing_stats().malformed == 2
    assert graph.pairing_stats().pending == 0
    assert graph.failed_batches() == 1


def test_pending_spans_are_bounded():
    clock = Clock()
    graph = new_graph(clock, max_pending_spans=100)
    graph.consume(columns([span(new_trace_id(), "a", KIND_CLIENT, T0 - S, MS) for _ in range(250)]))
    stats = graph.pairing_stats()
    assert stats.pending == 100
    assert stats.evicted == 150


def test_edges_endpoints_and_routes_are_bounded():
    clock = Clock()
    graph = new_graph(clock, max_edges=3, max_details_per_edge=2)
    rows = []
    for host in ("h1", "h2", "h3", "h4", "h5"):
        for route in ("r1", "r2", "r3"):
            rows += proxy_hop(new_trace_id(), "a", host, T0 - S, MS, attributes={ENDPOINT: route, "http.route": route})
    graph.consume(columns(rows))
    edges = edges_of(graph)
    assert {target for _, target, _ in edges} == {"h1", "h2", "h3", "~other"}
    assert edges[("a", "~other", "request")]["requests"] == 6
    h1 = edges[("a", "h1", "request")]
    assert {r["route"]: r["requests"] for r in h1["routes"]} == {"r1": 1, "r2": 1, "~other": 1}
    assert [e["endpoint"] for e in h1["endpoints"]] == ["r1", "r2", "~other"]


def test_windows_range_queries_and_retention():
    clock = Clock()
    graph = new_graph(clock, retention_seconds=600)
    # Requests completing in three different 10 s windows: 10, 20 and 30 of them.
    for window, count in ((T0 - 100 * S, 10), (T0 - 50 * S, 20), (T0 - 20 * S, 30)):
        rows = []
        for i in range(count):
            rows += proxy_hop(new_trace_id(), "a", "b", window + i * MS, 2 * MS)
        graph.consume(columns(rows))
    assert edges_of(graph, T0 - 300 * S, T0)[("a", "b", "request")]["requests"] == 60
    assert edges_of(graph, T0 - 60 * S, T0)[("a", "b", "request")]["requests"] == 50
    assert edges_of(graph, T0 - 55 * S, T0 - 45 * S)[("a", "b", "request")]["requests"] == 20
    assert edges_of(graph, T0 - 40 * S, T0 - 30 * S) == {}
    whole = graph.graph(T0 - 60 * S, T0)
    assert whole["edges"][0]["rps"] == pytest.approx(50 / 60)

    series = graph.edge_series(T0 - 60 * S, T0, 20 * S, source="a")
    assert [p["requests"] for p in series["series"][0]["points"]] == [20, 0, 30]
    assert series["series"][0]["points"][0]["rps"] == pytest.approx(1.0)
    assert graph.edge_series(T0 - 60 * S, T0, 20 * S, target="nobody")["series"] == []

    clock.now_ns += 600 * S  # the old windows fall out of the live view...
    graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", clock.now_ns - S, MS)))
    assert edges_of(graph, T0 - 300 * S, clock.now_ns)[("a", "b", "request")]["requests"] == 1
    # ...but the Prometheus counters keep counting from start-up.
    assert 'tracemesh_edge_requests_total{client="a",connection_type="request",server="b"} 61.0' in render_prometheus(
        graph
    )


def test_long_ranges_read_through_cached_blocks_that_late_requests_refresh():
    clock = Clock()
    graph = new_graph(clock)
    for minute in range(60):
        graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", T0 - 3600 * S + minute * 60 * S, MS)))
    hour = (T0 - 3600 * S, T0)
    assert edges_of(graph, *hour)[("a", "b", "request")]["requests"] == 60
    assert edges_of(graph, *hour)[("a", "b", "request")]["requests"] == 60  # now from the cached blocks
    # A request of 50 minutes ago arrives late: its (cached) blocks must not hide it.
    graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", T0 - 3000 * S, 7 * MS, error=True)))
    edge = edges_of(graph, *hour)[("a", "b", "request")]
    assert (edge["requests"], edge["errors"]) == (61, 1)
    assert edges_of(graph, T0 - 3010 * S, T0 - 2990 * S)[("a", "b", "request")]["requests"] == 2
    assert edges_of(graph, T0 - 1800 * S, T0 - 1200 * S)[("a", "b", "request")]["requests"] == 10
    by_ten_minutes = graph.edge_series(*hour, 600 * S)["series"][0]["points"]
    assert [point["requests"] for point in by_ten_minutes] == [10, 11, 10, 10, 10, 10]
    by_quarter_hour_from_an_odd_start = graph.edge_series(T0 - 3590 * S, T0 - 590 * S, 900 * S)["series"][0]["points"]
    # The last step is cut short by the end of the range: 5 requests in its 300 s.
    assert [point["requests"] for point in by_quarter_hour_from_an_odd_start] == [16, 15, 15, 5]
    assert by_quarter_hour_from_an_odd_start[-1]["rps"] == pytest.approx(5 / 300)


def test_spans_from_a_real_otel_sdk_through_the_otlp_decoder():
    exporter = InMemorySpanExporter()

    def tracer_of(service: str):
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        return provider.get_tracer("tests.graph")

    checkout, inventory = tracer_of("checkout"), tracer_of("inventory")
    for _ in range(5):
        with checkout.start_as_current_span("GET", kind=trace.SpanKind.CLIENT,
                                            attributes={SERVER_ADDRESS: "inventory", SERVER_PORT: 80}) as client:
            with inventory.start_as_current_span("GET /stock/{sku}", kind=trace.SpanKind.SERVER,
                                                 context=trace.set_span_in_context(client),
                                                 attributes={"http.route": "/stock/{sku}",
                                                             "http.request.method": "GET"}):
                pass
    client_spans = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.CLIENT]
    server_spans = [s for s in exporter.get_finished_spans() if s.kind == trace.SpanKind.SERVER]

    graph = ServiceGraph()
    for spans in (server_spans, client_spans):  # two OTLP requests, callee's first
        body = encode_spans(spans).SerializeToString()
        graph.consume(decode_otlp_protobuf(body).columns)
    now = graph.now_ns()
    edges = {(e["source"], e["target"]): e for e in graph.graph(now - 60 * S, now)["edges"]}
    assert set(edges) == {("checkout", "inventory")}
    assert edges[("checkout", "inventory")]["requests"] == 5
    assert [r["route"] for r in edges[("checkout", "inventory")]["routes"]] == ["GET /stock/{sku}"]


def test_consume_is_safe_from_many_threads():
    clock = Clock()
    graph = new_graph(clock)
    batches: list[SpanColumns] = []
    for _ in range(8):
        rows = []
        for _ in range(200):
            rows += proxy_hop(new_trace_id(), "a", random.choice("bc"), T0 - S, MS)
        batches.append(columns(rows))
    threads = [threading.Thread(target=graph.consume, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    seen = [sum(e["requests"] for e in graph.graph(T0 - 60 * S, T0 + S)["edges"]) for _ in range(20)]
    for thread in threads:
        thread.join()
    # Readers ran alongside the writers and saw whole batches only, never a torn count.
    assert seen == sorted(seen) and all(count % 200 == 0 for count in seen)
    assert sum(e["requests"] for e in edges_of(graph).values()) == 1600


def test_zipkin_spans_pair_by_parent_and_by_shared_span_id():
    trace_id = new_trace_id()[16:]
    start_us = (T0 - 5 * S) // 1000

    def zipkin_span(span_id, kind, service, duration_us, **extra):
        return {"traceId": trace_id, "id": span_id, "kind": kind, "name": "get /items",
                "timestamp": start_us, "duration": duration_us, "localEndpoint": {"serviceName": service}, **extra}

    spans = [
        # frontend → catalog: the server shares the client's span id (Zipkin's default in B3 single-host setups)
        zipkin_span("00000000000000a1", "CLIENT", "frontend", 30_000, remoteEndpoint={"serviceName": "catalog"}),
        zipkin_span("00000000000000a1", "SERVER", "catalog", 20_000, shared=True),
        # catalog → pricing: a child span on the server side
        zipkin_span("00000000000000b1", "CLIENT", "catalog", 8_000, parentId="00000000000000a1"),
        zipkin_span("00000000000000b2", "SERVER", "pricing", 5_000, parentId="00000000000000b1"),
    ]
    clock = Clock()
    graph = new_graph(clock)
    graph.consume(decode_zipkin_json(orjson.dumps(spans)).columns)
    clock.now_ns += 20 * S
    edges = edges_of(graph, end_ns=clock.now_ns)
    assert {edge: e["requests"] for edge, e in edges.items()} == {
        ("frontend", "catalog", "request"): 1,
        ("catalog", "pricing", "request"): 1,
    }


def test_odd_column_values_take_the_python_rules_and_never_crash():
    clock = Clock()
    graph = new_graph(clock)
    client, server = app_pair(new_trace_id(), "a", "b", T0 - S, MS, server_attributes={"http.route": "/é/日本"})
    client["kind"] = float(KIND_CLIENT)  # not an int: the native scan hands it to the Python rules
    unhashable = span(new_trace_id(), "a", KIND_CLIENT, T0 - S, MS)
    unhashable["span_id"] = ["x"]
    no_text = span(new_trace_id(), "b", KIND_SERVER, T0 - S, MS, parent="00000000000000aa")
    no_text["attributes"] = None
    no_kind = span(new_trace_id(), "a", KIND_CLIENT, T0 - S, MS)
    no_kind["kind"] = None
    graph.consume(columns([client, unhashable, no_text, no_kind, server]))
    assert graph.failed_batches() == 0
    assert graph.pairing_stats().malformed == 2  # the unhashable id and the missing attribute text
    edge = edges_of(graph)[("a", "b", "request")]
    assert edge["requests"] == 1
    assert [route["route"] for route in edge["routes"]] == ["/é/日本"]


def test_the_native_scan_refuses_what_it_cannot_read():
    from collector.graph import _hop_scan
    from collector.graph.edges import _SCAN_KINDS

    def scan(fields, kinds=_SCAN_KINDS, handle=lambda row: None):
        return _hop_scan.scan(fields, kinds, _hop_scan.PendingTable(), _hop_scan.PendingTable(), {}, 0, handle)

    ok = ([KIND_CLIENT], ["t"], ["s"], [""], ["{}"])
    with pytest.raises(ValueError, match="at least 5 lists"):
        scan(ok[:4])
    with pytest.raises(ValueError, match="must be a list"):
        scan((*ok[:4], ("{}",)))
    with pytest.raises(ValueError, match="kinds"):
        scan(ok, kinds=[None])
    with pytest.raises(ValueError, match="ASCII"):
        scan(ok, kinds=(None, None, None, (True, ("é",))))
    with pytest.raises(TypeError):
        _hop_scan.scan(ok, _SCAN_KINDS, _hop_scan.PendingTable(), _hop_scan.PendingTable(), {}, 0)
    with pytest.raises(TypeError, match="PendingTables"):
        _hop_scan.scan(ok, _SCAN_KINDS, {}, {}, {}, 0, lambda row: None)
    with pytest.raises(TypeError):
        _hop_scan.mentions(b"{}", ('"a"',))
    assert _hop_scan.mentions('{"a\\u0062":1}', ('"ab"',)) and _hop_scan.mentions('{"日":{"ab":1}}', ('"ab"',))
    assert not _hop_scan.mentions('{"日":{"a b":1}}', ('"ab"',))

    # Columns of different lengths are read as zip() reads them; one that shrinks under a
    # handler's feet is an error, not a read out of bounds.
    rows = []
    scan(([KIND_SERVER] * 3, ["t"] * 2, ["s"] * 3, [""] * 3, ["{}"] * 3), handle=rows.append)
    assert len(rows) == 2
    shrinking = ([KIND_SERVER] * 3, ["t"] * 3, ["s"] * 3, [""] * 3, ["{}"] * 3)
    with pytest.raises(ValueError, match="changed length"):
        scan(shrinking, handle=lambda row: shrinking[4].clear())


def test_the_pending_table_keeps_arrival_order_through_pairing_growth_and_expiry():
    from collector.graph._hop_scan import PendingTable

    table = PendingTable()
    rows = {n: (KIND_CLIENT, "t", f"s{n}", "", '{"peer.service":"b"}' if n % 3 == 0 else "{}") for n in range(1000)}
    for n, row in rows.items():
        table.put(("t", f"s{n}"), n, row, None)
    for n in range(0, 1000, 2):  # paired: holes all through the ring, which then grows past them
        assert table.pop(("t", f"s{n}")) == (n, rows[n], None)
    assert table.pop(("t", "s0")) is None and len(table) == 500
    for n in range(1000, 1300):
        rows[n] = (KIND_SERVER, "t", "x", f"s{n}", "{}")
        table.put(("t", f"s{n}"), n, rows[n], None)
    table.put(("t", "s1"), 5000, rows[1], {"a": 1})  # a present key keeps its place
    assert table.pop(("t", ("s1",))) is None  # equal items only, as for a tuple key
    with pytest.raises(TypeError):
        table.pop(("t", ["unhashable"]))
    # The 3 oldest whatever their deadline, then those due by 600: s1 (parsed), s3 (names its peer), s5.
    dropped, unsure = table.expire(3, 600, ('"peer.service"',))
    naming_peer = [(rows[n], None) for n in range(3, 600, 2) if n % 3 == 0]
    assert unsure == [(rows[1], {"a": 1}), *naming_peer]
    assert dropped == 300 - len(unsure) and len(table) == 500
    assert table.expire(0, 10**6, None) == (500, []) and len(table) == 0


@pytest.mark.parametrize("seed", range(20))
def test_the_pending_table_behaves_as_an_ordered_dict_under_colliding_keys(seed):
    from collections import OrderedDict

    from collector.graph._hop_scan import PendingTable

    rng = random.Random(seed)
    table, model = PendingTable(), OrderedDict()
    spread, step_size = rng.choice([8, 100, 5000]), rng.choice([1, 128, 4096, 2**20])  # ints hash to themselves
    for step in range(2000):
        key = ("t", rng.randrange(spread) * step_size)
        choice = rng.random()
        if choice < 0.5:
            table.put(key, step, ("row", step), None)
            model[key] = (step, ("row", step), None)
        elif choice < 0.8:
            assert table.pop(key) == model.pop(key, None)
        elif choice < 0.82:
            count, now = rng.randrange(50), step - rng.randrange(500)
            expired = 0
            while model and (count > expired or next(iter(model.values()))[0] <= now):
                model.popitem(last=False)
                expired += 1
            assert table.expire(count, now, None) == (expired, [])
        assert len(table) == len(model)
    for key, waiting in model.items():
        assert table.pop(key) == waiting
    assert len(table) == 0
