"""The service graph: per-edge request metrics computed from every span as it arrives.

Wiring: call ``ServiceGraph.consume(columns)`` for every accepted batch, mount the routes with
``collector.graph.api.setup_graph_api(app, graph)`` and append
``collector.graph.prometheus.render_prometheus(graph)`` to ``/metrics``.
"""

from collector.graph.service_graph import ServiceGraph

__all__ = ["ServiceGraph"]
