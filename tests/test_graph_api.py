"""The graph API on a real aiohttp server on loopback: the graph, edge time series, time formats,
bad parameters, and the Prometheus exposition."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collector.graph.prometheus import render_prometheus
from collector.graph.service_graph import ServiceGraph
from spans.conventions import SERVER_ADDRESS
from spans.model import KIND_CLIENT
from tests.support.graph_history import get_json
from tests.support.graph_spans import MS, S, columns, new_trace_id, proxy_hop, span

T0 = 1_800_000_000 * S  # 2027-01-15T08:00:00Z, a window boundary


def rfc3339(time_ns: int) -> str:
    return datetime.fromtimestamp(time_ns / S, timezone.utc).isoformat().replace("+00:00", "Z")


def micros(time_ns: int) -> str:
    return str(time_ns // 1000)


@pytest.fixture(scope="module")
def graph() -> ServiceGraph:
    """a → b through proxies in two windows (30 requests, 3 failing, then 10), and a → its database."""
    graph = ServiceGraph(clock=lambda: T0)
    rows = []
    for i in range(30):
        rows += proxy_hop(new_trace_id(), "a", "b", T0 - 40 * S + i * MS, 10 * MS, error=i < 3)
    for i in range(10):
        rows += proxy_hop(new_trace_id(), "a", "b", T0 - 15 * S + i * MS, 20 * MS)
        rows.append(span(new_trace_id(), "a", KIND_CLIENT, T0 - 15 * S, 2 * MS,
                         attributes={"db.system": "redis", SERVER_ADDRESS: "cache"}))
    graph.consume(columns(rows))
    return graph


def test_graph_over_the_default_five_minutes(graph):
    [(status, body)] = get_json(graph, [("/api/v1/graph", {})])
    assert status == 200
    assert body["start"] == rfc3339(T0 - 300 * S) and body["end"] == rfc3339(T0)
    assert {n["name"]: n["kind"] for n in body["nodes"]} == {"a": "service", "b": "service", "cache": "database"}
    edges = {(e["source"], e["target"]): e for e in body["edges"]}
    ab = edges[("a", "b")]
    assert (ab["requests"], ab["errors"], ab["connectionType"]) == (40, 3, "request")
    assert ab["rps"] == pytest.approx(40 / 300)
    assert ab["errorRate"] == pytest.approx(3 / 40)
    assert set(ab["latencyMs"]) == {"p50", "p90", "p95", "p99"}
    assert ab["latencyMs"]["p50"] == pytest.approx(10, rel=0.01)
    assert ab["latencyMs"]["p90"] == pytest.approx(20, rel=0.01)
    assert edges[("a", "cache")]["connectionType"] == "database"
    inbound = {n["name"]: n["inbound"] for n in body["nodes"]}
    assert inbound["b"] == {key: value for key, value in ab.items() if key in inbound["b"]}
    assert inbound["a"]["requests"] == 0 and inbound["a"]["latencyMs"]["p50"] is None


def test_graph_range_in_rfc3339_and_unix_microseconds_agree(graph):
    answers = get_json(
        graph,
        [
            ("/api/v1/graph", {"start": rfc3339(T0 - 20 * S), "end": rfc3339(T0)}),
            ("/api/v1/graph", {"start": micros(T0 - 20 * S), "end": micros(T0)}),
            ("/api/v1/graph", {"start": micros(T0 - 50 * S), "end": micros(T0 - 30 * S)}),
        ],
    )
    (status1, recent), (status2, recent_micros), (status3, earlier) = answers
    assert status1 == status2 == status3 == 200
    assert recent == recent_micros
    assert {(e["source"], e["target"]): e["requests"] for e in recent["edges"]} == {("a", "b"): 10, ("a", "cache"): 10}
    assert {(e["source"], e["target"]): e["requests"] for e in earlier["edges"]} == {("a", "b"): 30}


def test_a_range_from_the_epoch_reads_only_the_kept_hour():
    [(status, body)] = get_json(ServiceGraph(), [("/api/v1/graph", {"start": "0"})])
    assert (status, body["start"], body["edges"]) == (200, "1970-01-01T00:00:00Z", [])


def test_edge_series_per_step(graph):
    answers = get_json(
        graph,
        [
            ("/api/v1/edges", {"from": "a", "to": "b", "start": micros(T0 - 60 * S), "end": micros(T0), "step": "30s"}),
            ("/api/v1/edges", {"from": "a", "start": micros(T0 - 60 * S), "end": micros(T0)}),
        ],
    )
    (status, by_30s), (status_default, by_window) = answers
    assert status == status_default == 200
    assert by_30s["stepSeconds"] == 30
    [series] = by_30s["series"]
    assert (series["source"], series["target"]) == ("a", "b")
    assert [p["time"] for p in series["points"]] == [rfc3339(T0 - 60 * S), rfc3339(T0 - 30 * S)]
    assert [p["requests"] for p in series["points"]] == [30, 10]
    assert [p["errors"] for p in series["points"]] == [3, 0]
    assert series["points"][1]["rps"] == pytest.approx(10 / 30)
    assert [p["latencyMs"]["p99"] for p in series["points"]] == pytest.approx([10, 20], rel=0.01)
    assert by_window["stepSeconds"] == 10  # the default step is one window
    assert {s["target"] for s in by_window["series"]} == {"b", "cache"}
    cache = next(s for s in by_window["series"] if s["target"] == "cache")
    assert [p["requests"] for p in cache["points"]] == [0, 0, 0, 0, 10, 0]
    assert cache["points"][0]["latencyMs"]["p50"] is None


@pytest.mark.parametrize(
    "path, params, message",
    [
        ("/api/v1/graph", {"start": "yesterday"}, "start"),
        ("/api/v1/graph", {"start": micros(T0), "end": micros(T0 - S)}, "start must be before end"),
        ("/api/v1/graph", {"since": "1"}, "unknown parameter 'since'"),
        ("/api/v1/graph", {"end": "2026-02-30T00:00:00Z"}, "end"),
        ("/api/v1/edges", {"step": "15s"}, "multiple of the 10s window"),
        ("/api/v1/edges", {"step": "0"}, "step"),
        ("/api/v1/edges", {"step": "fast"}, "step"),
        ("/api/v1/edges", {"step": "10s", "start": "0", "end": micros(T0)}, "more than"),
        ("/api/v1/edges", [("from", "a"), ("from", "b")], "at most once"),
    ],
)
def test_bad_parameters_are_a_400_naming_the_problem(graph, path, params, message):
    [(status, body)] = get_json(graph, [(path, params)])
    assert status == 400
    assert message in body["error"]


def test_prometheus_exposition_has_counters_and_cumulative_latency_buckets(graph):
    families = {family.name: family for family in text_string_to_metric_families(render_prometheus(graph))}
    requests = {
        (s.labels["client"], s.labels["server"]): s.value for s in families["tracemesh_edge_requests"].samples
    }
    assert requests == {("a", "b"): 40, ("a", "cache"): 10}
    errors = {
        (s.labels["client"], s.labels["server"]): s.value for s in families["tracemesh_edge_request_errors"].samples
    }
    assert errors[("a", "b")] == 3
    buckets = [
        (s.labels["le"], s.value)
        for s in families["tracemesh_edge_request_duration_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["server"] == "b"
    ]
    by_bound = dict(buckets)
    assert by_bound["0.005"] == 0 and by_bound["0.01"] == 30 and by_bound["0.025"] == 40 and by_bound["+Inf"] == 40
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert families["tracemesh_graph_pending_spans"].samples[0].value == 0
