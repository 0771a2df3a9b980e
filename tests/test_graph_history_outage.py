"""The graph's history while its ClickHouse server is down: windows are kept and written once it is
back, a range older than memory is a 503 (not a graph silently missing its history), and the live
view keeps answering from memory."""

from __future__ import annotations

import pytest

from collector.graph.history import EdgeHistory
from collector.graph.service_graph import ServiceGraph, rfc3339
from collector.store import StoreUnavailable, open_store
from tests.support.clickhouse_server import private_clickhouse_server, with_database  # noqa: F401  (fixture)
from tests.support.graph_spans import MS, S, columns, new_trace_id, proxy_hop
from tests.support.graph_history import LATER, T0, Clock, edges, get_json


def test_history_survives_a_server_outage(private_clickhouse_server):  # noqa: F811
    store = open_store(with_database(private_clickhouse_server.url, "tracemesh"))
    try:
        clock = Clock(T0)
        graph = ServiceGraph(clock=clock, history=EdgeHistory(store))
        clock.now_ns = T0 + 20 * S
        graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", T0 + 12 * S, 10 * MS)))
        private_clickhouse_server.kill()
        clock.now_ns = T0 + 60 * S
        with pytest.raises(StoreUnavailable):
            graph.write_history()

        clock.now_ns = LATER
        graph.consume(columns(proxy_hop(new_trace_id(), "a", "b", LATER - 5 * S, 10 * MS)))
        (old_status, old), (live_status, live) = get_json(
            graph,
            [
                ("/api/v1/graph", {"start": rfc3339(T0), "end": rfc3339(T0 + 60 * S)}),
                ("/api/v1/graph", {}),
            ],
        )
        assert old_status == 503 and "history" in old["error"]
        assert live_status == 200 and edges(live)[("a", "b")]["requests"] == 1

        private_clickhouse_server.start()
        graph.write_history()  # the rows kept from the failed write, then the new ones
        assert edges(graph.graph(T0, T0 + 60 * S))[("a", "b")]["requests"] == 1
    finally:
        store.close()
