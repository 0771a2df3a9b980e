"""Scaling hints and routing weights for people and autoscalers: HTTP JSON and Prometheus gauges.

``GET /api/v1/hints`` lists every service's hint; ``GET /api/v1/hints/{service}`` answers one
object with ``desiredReplicas`` at the top level, the shape KEDA's ``metrics-api`` scaler reads
(``valueLocation: desiredReplicas``). Both read the plane's last tick: no work on the request.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from collector.control.plane import ControlPlane
from collector.query_api import check_parameters, json_error, json_response

PLANE_KEY = web.AppKey("control_plane", ControlPlane)


def setup_hints_api(app: web.Application, plane: ControlPlane) -> None:
    app[PLANE_KEY] = plane
    app.router.add_get("/api/v1/hints", get_hints)
    app.router.add_get("/api/v1/hints/{service}", get_service_hint)


async def get_hints(request: web.Request) -> web.Response:
    check_parameters(request, ())
    plane = request.app[PLANE_KEY]
    return json_response({"services": [hint.json() for _, hint in sorted(plane.hints.items())]})


async def get_service_hint(request: web.Request) -> web.Response:
    check_parameters(request, ())
    service = request.match_info["service"]
    hint = request.app[PLANE_KEY].hints.get(service)
    if hint is None:
        raise json_error(web.HTTPNotFound, f"no hint for service {service!r}: no requests into it seen recently")
    return json_response(hint.json())


class ControlMetrics:
    """A prometheus_client collector: per-service hint gauges and per-endpoint routing weights."""

    def __init__(self, plane: ControlPlane):
        self.plane = plane

    def collect(self):
        gauges = {
            "desired_replicas": GaugeMetricFamily("tracemesh_hint_desired_replicas", "Recommended replicas.", labels=("service",)),
            "current_replicas": GaugeMetricFamily("tracemesh_hint_current_replicas", "Instances registered (or seen).", labels=("service",)),
            "rps": GaugeMetricFamily("tracemesh_hint_requests_per_second", "Demand into the service.", labels=("service",)),
            "concurrency": GaugeMetricFamily("tracemesh_hint_concurrency", "Requests in flight by Little's law.", labels=("service",)),
            "p95_latency_s": GaugeMetricFamily("tracemesh_hint_latency_p95_seconds", "p95 latency into the service.", labels=("service",)),
            "latency_target_s": GaugeMetricFamily("tracemesh_hint_latency_target_seconds", "The p95 target.", labels=("service",)),
            "over_capacity": GaugeMetricFamily("tracemesh_hint_over_capacity", "1 when latency or concurrency is over target.", labels=("service",)),
        }
        for service, hint in sorted(self.plane.hints.items()):
            for field, family in gauges.items():
                family.add_metric([service], float(getattr(hint, field)))
        weight = GaugeMetricFamily(
            "tracemesh_route_weight", "Routing weight the collector sends proxies (1 = best).", labels=("service", "endpoint")
        )
        ejected = GaugeMetricFamily("tracemesh_route_ejected", "1 when the endpoint is ejected mesh-wide.", labels=("service", "endpoint"))
        for destination in self.plane.state().destinations:
            for endpoint in destination.endpoints:
                weight.add_metric([destination.service, endpoint.address], endpoint.weight)
                ejected.add_metric([destination.service, endpoint.address], float(endpoint.ejected))
        yield from gauges.values()
        yield weight
        yield ejected


def render_control_metrics(plane: ControlPlane) -> str:
    """The hint and weight gauges as Prometheus text exposition (format 0.0.4)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlMetrics(plane))
    return generate_latest(registry).decode()
