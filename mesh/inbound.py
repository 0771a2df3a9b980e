"""The inbound side: requests from other services to the local app, one SERVER span per request.

Every request goes to the one local app address, so there is no balancing and no failure accrual
(ejecting the only app would turn its errors into the proxy's own 503s), and no retries of answers the
app gave: only a request that never reached it (refused connect, a pooled connection the app had just
closed) is sent again. Admission (shed) and the timeout still apply, so an overloaded app is protected
and answers fast.
"""

from __future__ import annotations

import dataclasses

from mesh.destination import Destination, DestinationPolicy
from mesh.pool import Pools
from mesh.stack import Stack
from spans.model import KIND_SERVER

MAX_CACHED_AUTHORITIES = 1024


class InboundStack(Stack):
    def __init__(self, app_address: str, policy: DestinationPolicy, service: str, recorder, metrics, pools: Pools, deadlines, max_body_bytes: int):
        super().__init__(service, recorder, metrics, pools, deadlines, max_body_bytes)
        self.direction = "inbound"
        self.span_kind = KIND_SERVER
        policy = dataclasses.replace(policy, failure_threshold=0)
        self.app = Destination(service, policy, (app_address,))
        self.only_destination = self.app

    def resolve_authority(self, authority: bytes) -> Destination:
        if len(self.destination_by_authority) >= MAX_CACHED_AUTHORITIES:  # callers choose the Host values
            self.destination_by_authority.clear()
        self.destination_by_authority[authority] = self.app
        return self.app
