"""The service graph's history on each store backend: windows written to ClickHouse and read back,
late requests as delta rows, ranges older than memory answered from ClickHouse (also over HTTP),
and ranges that span history and memory counted once.

A graph with a fixed clock writes to a real store; a second graph, its clock two hours later (so
nothing it reads is in its memory), reads the same store.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timezone

import numpy
import pytest

from collector.graph.history import EdgeHistory
from collector.graph.service_graph import ServiceGraph, rfc3339
from collector.graph.sketch import RELATIVE_ACCURACY
from collector.store import open_store
from tests.support.clickhouse_server import clickhouse_server_url, store_url  # noqa: F401  (fixtures)
from tests.support.graph_history import LATER, T0, Clock, edges, get_json
from tests.support.graph_spans import MS, S, columns, new_trace_id, proxy_hop

QUANTILES = {"p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}


@pytest.fixture
def store(store_url):  # noqa: F811
    opened = open_store(store_url)
    yield opened
    opened.close()


def traffic(start_ns: int, seconds: int, seed: int) -> tuple[list[dict], list[int]]:
    """a → b through proxies over ``seconds`` from ``start_ns``: random latencies (1–500 ms), every
    7th request failing, two endpoints and three routes; returns the span rows and the latencies."""
    rng = random.Random(seed)
    rows, latencies = [], []
    for i in range(seconds * 20):
        latency = int(rng.lognormvariate(3, 1) * MS) + MS
        end = start_ns + i * S // 20 + rng.randrange(S // 20)
        rows += proxy_hop(
            new_trace_id(), "a", "b", end - latency, latency, error=i % 7 == 0,
            attributes={"http.route": f"/r{i % 3}"}, instance=f"b-{i % 2}",
        )
        latencies.append(latency)
    return rows, latencies


def receive(graph: ServiceGraph, store, rows: list[dict]) -> None:
    """What the collector does with a batch: count it in the graph, store the spans."""
    graph.consume(columns(rows))
    store.insert(columns(rows))


def without_rates(answer: dict) -> dict:
    """An answer without the rates (their denominator depends on the reader's clock)."""
    if isinstance(answer, dict):
        return {key: without_rates(value) for key, value in answer.items() if key != "rps"}
    if isinstance(answer, list):
        return [without_rates(item) for item in answer]
    return answer


def test_windows_read_back_equal_the_numbers_in_memory(store):
    clock = Clock(T0)
    live = ServiceGraph(clock=clock, history=EdgeHistory(store))
    rows, latencies = traffic(T0, 60, seed=1)
    clock.now_ns = T0 + 60 * S
    receive(live, store, rows)
    clock.now_ns = T0 + 100 * S  # every window settled (30 s after its end)
    assert live.write_history() > 0
    in_memory = live.graph(T0, T0 + 60 * S)
    series_in_memory = live.edge_series(T0, T0 + 60 * S, 20 * S, "a", "b")

    reader = ServiceGraph(clock=Clock(LATER), history=EdgeHistory(store))
    from_history = reader.graph(T0, T0 + 60 * S)
    ab = edges(from_history)[("a", "b")]
    assert (ab["requests"], ab["errors"]) == (len(latencies), -(-len(latencies) // 7))
    for name, q in QUANTILES.items():
        exact = numpy.quantile(latencies, q, method="lower") / MS
        assert ab["latencyMs"][name] == pytest.approx(exact, rel=RELATIVE_ACCURACY)
    assert without_rates(from_history) == without_rates(in_memory)
    assert {r["route"] for r in ab["routes"]} == {"/r0", "/r1", "/r2"}
    series = reader.edge_series(T0, T0 + 60 * S, 20 * S, "a", "b")
    assert without_rates(series) == without_rates(series_in_memory)
    assert [p["requests"] for p in series["series"][0]["points"]] == [400, 400, 400]


def test_a_late_request_is_written_as_a_delta_and_counted_once(store):
    clock = Clock(T0 + 100 * S)
    live = ServiceGraph(clock=clock, history=EdgeHistory(store))
    clock.now_ns = T0 + 110 * S
    live.consume(columns(proxy_hop(new_trace_id(), "a", "b", T0 + 200 * MS, 100 * MS)))
    assert live.write_history() == 3  # the window's edge, endpoint and route rows, a delta: the window was read back
    clock.now_ns = T0 + 200 * S
    live.consume(columns(proxy_hop(new_trace_id(), "a", "b", T0 + 300 * MS, 300 * MS)))
    assert live.write_history() == 3  # the late request, as rows of its own
    assert live.write_history() == 0  # nothing twice

    reader = ServiceGraph(clock=Clock(LATER), history=EdgeHistory(store))
    ab = edges(reader.graph(T0, T0 + 10 * S))[("a", "b")]
    assert ab["requests"] == 2
    assert ab["latencyMs"]["p99"] == pytest.approx(100, rel=RELATIVE_ACCURACY)  # rank floor(0.99 * 1): the faster
    assert edges(live.graph(T0, T0 + 10 * S))[("a", "b")]["requests"] == 2


def test_a_range_over_history_and_memory_counts_each_request_once(store):
    clock = Clock(T0)
    first = ServiceGraph(clock=clock, history=EdgeHistory(store))
    old_rows, _ = traffic(T0, 30, seed=2)
    clock.now_ns = T0 + 30 * S
    receive(first, store, old_rows)
    first.write_history(everything=True)  # what a collector does when it stops

    clock.now_ns = T0 + 3600 * S + 40 * S  # restarted: the old windows are just beyond memory
    second = ServiceGraph(clock=clock, history=EdgeHistory(store))
    new_rows, _ = traffic(T0 + 3600 * S, 30, seed=3)
    receive(second, store, new_rows)
    both = second.graph(T0, clock.now_ns)
    assert edges(both)[("a", "b")]["requests"] == 600 + 600
    series = second.edge_series(T0, T0 + 3630 * S, 1210 * S, "a", "b")
    assert [p["requests"] for p in series["series"][0]["points"]] == [600, 0, 600]
    second.write_history(everything=True)
    reader = ServiceGraph(clock=Clock(T0 + 10 * 3600 * S), history=EdgeHistory(store))
    assert edges(reader.graph(T0, T0 + 3630 * S))[("a", "b")]["requests"] == 1200


def test_a_restarted_graph_starts_from_its_recent_windows(store):
    clock = Clock(T0)
    first = ServiceGraph(clock=clock, history=EdgeHistory(store))
    rows, _ = traffic(T0, 30, seed=4)
    clock.now_ns = T0 + 25 * S  # the last requests land in the current window
    receive(first, store, rows)
    first.write_history(everything=True)
    before = first.graph(T0, T0 + 30 * S)

    second = ServiceGraph(clock=clock, history=EdgeHistory(store))
    assert without_rates(second.graph(T0, T0 + 30 * S)) == without_rates(before)
    second.consume(columns(proxy_hop(new_trace_id(), "a", "b", T0 + 21 * S, 10 * MS)))  # the current window
    second.write_history(everything=True)  # only the new request: the window was written before
    clock.now_ns = LATER
    assert edges(second.graph(T0, T0 + 30 * S))[("a", "b")]["requests"] == 601


def test_the_api_serves_a_range_older_than_memory(store):
    clock = Clock(T0)
    live = ServiceGraph(clock=clock, history=EdgeHistory(store))
    rows, _ = traffic(T0, 60, seed=5)
    clock.now_ns = T0 + 60 * S
    receive(live, store, rows)
    live.write_history(everything=True)

    reader = ServiceGraph(clock=Clock(LATER), history=EdgeHistory(store))
    (status, graph), (series_status, series) = get_json(
        reader,
        [
            ("/api/v1/graph", {"start": rfc3339(T0), "end": rfc3339(T0 + 60 * S)}),
            ("/api/v1/edges", {"from": "a", "to": "b", "start": rfc3339(T0), "end": rfc3339(T0 + 60 * S),
                               "step": "30s"}),
        ],
    )
    assert status == series_status == 200
    assert {n["name"]: n["kind"] for n in graph["nodes"]} == {"a": "service", "b": "service"}
    ab = edges(graph)[("a", "b")]
    assert ab["requests"] == 1200 and ab["rps"] == pytest.approx(20)
    [points] = [s["points"] for s in series["series"]]
    assert [p["requests"] for p in points] == [600, 600]
    assert [p["rps"] for p in points] == pytest.approx([20, 20])


def test_retention_drops_old_days_of_windows_with_the_spans(store):
    today = time.time_ns() // (86400 * S) * 86400 * S
    old_day, recent_day = today - 10 * 86400 * S, today - 86400 * S
    clock = Clock(old_day)
    graph = ServiceGraph(clock=clock, history=EdgeHistory(store))
    for day in (old_day, recent_day):
        clock.now_ns = day + 20 * S
        graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", day, 10 * MS)))
    graph.write_history(everything=True)

    dropped = store.drop_expired(3)
    assert dropped == [datetime.fromtimestamp(old_day / S, timezone.utc).strftime("%Y%m%d")]
    reader = ServiceGraph(clock=Clock(today + 3 * 3600 * S), history=EdgeHistory(store))
    assert edges(reader.graph(old_day, old_day + 10 * S)) == {}
    assert edges(reader.graph(recent_day, recent_day + 10 * S))[("a", "b")]["requests"] == 1


def test_a_window_dropped_from_memory_before_it_was_written_still_reaches_history(store):
    clock = Clock(T0)
    graph = ServiceGraph(clock=clock, history=EdgeHistory(store))
    clock.now_ns = T0 + 20 * S
    graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", T0 + 12 * S, 10 * MS)))
    clock.now_ns = LATER
    graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", LATER - 5 * S, 10 * MS)))  # drops the old window
    graph.write_history()
    assert edges(graph.graph(T0, T0 + 20 * S))[("a", "b")]["requests"] == 1


def test_after_a_restart_older_windows_come_from_history_and_late_requests_add_to_them(store):
    clock = Clock(T0)
    first = ServiceGraph(clock=clock, history=EdgeHistory(store))
    rows, _ = traffic(T0, 30, seed=6)
    clock.now_ns = T0 + 30 * S
    receive(first, store, rows)
    first.write_history(everything=True)

    clock.now_ns = T0 + 1800 * S  # restarted half an hour later: those windows are older than its memory
    second = ServiceGraph(clock=clock, history=EdgeHistory(store), history_preload_seconds=900)
    receive(second, store, proxy_hop(new_trace_id(), "a", "b", T0 + 1790 * S, 10 * MS))
    assert edges(second.graph(T0, clock.now_ns))[("a", "b")]["requests"] == 601
    receive(second, store, proxy_hop(new_trace_id(), "a", "b", T0 + 5 * S, 10 * MS))  # a late one
    second.write_history()
    assert edges(second.graph(T0, T0 + 10 * S))[("a", "b")]["requests"] == 201
    assert edges(second.graph(T0, clock.now_ns))[("a", "b")]["requests"] == 602
