"""The outbound side: the app's calls to other services, one CLIENT span per request.

The destination is the service named by ``Host`` / ``:authority`` (port ignored) or by the absolute
URI an ``http_proxy`` client sends, looked up in discovery; a ``--route`` listener is bound to one
service whatever the request says. Everything after that is the full stack of ``mesh.relay``:
admission, p2c peak-EWMA balancing with failure accrual, budgeted retries of 502/503/504 and failed
connections, the per-destination timeout.
"""

from __future__ import annotations

from mesh.destination import Destination, Destinations
from mesh.pool import Pools
from mesh.stack import Stack
from spans.model import KIND_CLIENT


class OutboundStack(Stack):
    def __init__(self, destinations: Destinations, service: str, recorder, metrics, pools: Pools, deadlines, max_body_bytes: int):
        super().__init__(service, recorder, metrics, pools, deadlines, max_body_bytes)
        self.direction = "outbound"
        self.span_kind = KIND_CLIENT
        self.retry_on_status = True
        self.peer_service = True
        self.destinations = destinations
        self.destination_by_authority = destinations.authorities  # discovery changes reach it there

    def resolve_authority(self, authority: bytes) -> Destination | None:
        return self.destinations.by_authority(authority) if authority else None


class RouteStack(OutboundStack):
    """An outbound listener bound to one service (``--route ADDR=SERVICE``)."""

    def __init__(self, route_to: str, destinations: Destinations, service: str, recorder, metrics, pools: Pools, deadlines, max_body_bytes: int):
        super().__init__(destinations, service, recorder, metrics, pools, deadlines, max_body_bytes)
        self.route_to = route_to
        self.destination_by_authority = {}  # stays empty: the request's authority does not matter here

    def resolve_authority(self, authority: bytes) -> Destination | None:
        return self.destinations.get(self.route_to)
