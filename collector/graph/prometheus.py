"""Per-edge series in the Prometheus text format, for the collector's ``/metrics``.

Counters and the latency histogram are cumulative since start-up (Prometheus computes rates
itself), labelled ``client``, ``server`` and ``connection_type`` like Tempo's service-graph metrics
so existing dashboards translate. The ``le`` buckets are read from each edge's latency sketch; a
count is exact except for requests within the sketch's 1 % of a bucket bound.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from collector.graph.service_graph import SECOND_NS, ServiceGraph

LATENCY_BUCKETS_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BOUNDS_NS = [bound * SECOND_NS for bound in LATENCY_BUCKETS_SECONDS]
EDGE_LABELS = ("client", "server", "connection_type")


class GraphMetrics:
    """A prometheus_client collector over a ``ServiceGraph`` (register it in any registry)."""

    def __init__(self, graph: ServiceGraph):
        self.graph = graph

    def collect(self):
        counters = {
            "requests": CounterMetricFamily(
                "tracemesh_edge_requests", "Requests from client to server.", labels=EDGE_LABELS
            ),
            "errors": CounterMetricFamily(
                "tracemesh_edge_request_errors", "Failed requests from client to server.", labels=EDGE_LABELS
            ),
            "retries": CounterMetricFamily(
                "tracemesh_edge_retries", "Retries the client's proxy made.", labels=EDGE_LABELS
            ),
            "request_bytes": CounterMetricFamily(
                "tracemesh_edge_request_bytes", "Request body bytes sent.", labels=EDGE_LABELS
            ),
            "response_bytes": CounterMetricFamily(
                "tracemesh_edge_response_bytes", "Response body bytes received.", labels=EDGE_LABELS
            ),
        }
        latency = HistogramMetricFamily(
            "tracemesh_edge_request_duration_seconds", "Request latency as the client saw it.", labels=EDGE_LABELS
        )
        for edge, stats in sorted(self.graph.edge_totals().items()):
            labels = list(edge)
            for field, family in counters.items():
                family.add_metric(labels, getattr(stats, field))
            cumulative = stats.latency.cumulative_counts(_BOUNDS_NS)
            buckets = [(repr(bound), count) for bound, count in zip(LATENCY_BUCKETS_SECONDS, cumulative)]
            buckets.append(("+Inf", stats.requests))
            latency.add_metric(labels, buckets, stats.latency.total_ns / SECOND_NS)
        yield from counters.values()
        yield latency
        yield from self._pairing_families()

    def _pairing_families(self):
        hops = self.graph.pairing_stats()
        paired = CounterMetricFamily(
            "tracemesh_graph_paired_spans", "Client/server span pairs matched into a request."
        )
        paired.add_metric([], hops.paired)
        unpaired = CounterMetricFamily(
            "tracemesh_graph_unpaired_spans",
            "Spans whose partner never arrived: counted as a request to the peer they name, or dropped.",
            labels=("outcome",),
        )
        unpaired.add_metric(["to_peer"], hops.unpaired_to_peer)
        unpaired.add_metric(["dropped"], hops.unpaired_dropped)
        evicted = CounterMetricFamily(
            "tracemesh_graph_evicted_spans", "Spans given up early because too many were waiting for a partner."
        )
        evicted.add_metric([], hops.evicted)
        malformed = CounterMetricFamily("tracemesh_graph_malformed_spans", "Spans the graph could not read.")
        malformed.add_metric([], hops.malformed)
        failed = CounterMetricFamily("tracemesh_graph_failed_batches", "Span batches the graph could not read.")
        failed.add_metric([], self.graph.failed_batches())
        pending = GaugeMetricFamily("tracemesh_graph_pending_spans", "Spans waiting for their partner span.")
        pending.add_metric([], hops.pending)
        return [paired, unpaired, evicted, malformed, failed, pending]


def render_prometheus(graph: ServiceGraph) -> str:
    """The graph's series as Prometheus text exposition (format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GraphMetrics(graph))
    return generate_latest(registry).decode()
