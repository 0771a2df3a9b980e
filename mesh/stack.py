"""What one listener needs to serve a request: where requests go, and where spans and metrics go.

The HTTP/1.1 relay (``mesh.relay``) and the gRPC relay both take a ``Stack``; the inbound and outbound
modules differ only in how they resolve a destination and in which layers are switched on, so the
difference between the two directions is readable in one place each.
"""

from __future__ import annotations

import asyncio

from mesh.pool import Pools
from spans import conventions as conv

MAX_CACHED_SPAN_ATTRIBUTES = 1024  # endpoints (stale ones, gone from discovery, age out with the rest)


def authority_name(authority: bytes) -> str:
    """``Host`` / ``:authority`` without its port: the service name a destination is looked up by."""
    if authority.startswith(b"["):
        return authority[1 : authority.find(b"]")].decode("latin-1").lower()
    return authority.partition(b":")[0].decode("latin-1").lower()


class Stack:
    """Base of the inbound and outbound stacks; each sets its direction's constants as it is made."""

    def __init__(self, service: str, recorder, metrics, pools: Pools, deadlines, max_body_bytes: int):
        self.direction = ""  # "inbound" / "outbound"
        self.span_kind = 0  # of the spans of this stack's requests
        self.retry_on_status = False  # retry 502/503/504 answers (outbound only: inbound would retry the app)
        self.peer_service = False  # spans name the destination as peer.service (outbound)
        self.service = service
        self.recorder = recorder
        self.metrics = metrics
        self.pools = pools
        self.deadlines = deadlines  # mesh.deadlines.Deadlines
        self.max_body_bytes = max_body_bytes
        self.loop = asyncio.get_running_loop()
        # span_attributes() by endpoint (an endpoint belongs to one destination; hashed by identity, no
        # key tuple to build); the relay reads it directly (a call costs more)
        self.span_attributes_cache: dict = {}
        # resolve_authority()'s answers by Host / :authority bytes, read by the relay before it calls
        # resolve_authority (a call and a decode per request cost more); kept current by whoever fills it
        self.destination_by_authority: dict = {}
        # the destination of every request whatever its authority (inbound: the app), else None; the relay
        # reads it before destination_by_authority (hashing a new Host value per request costs more)
        self.only_destination = None

    def span_attributes(self, destination: str, endpoint) -> tuple:
        """The attributes every span of this stack's requests to ``destination`` via ``endpoint`` (a
        ``mesh.balance.Endpoint`` of it, None when none was picked) carries, built once per endpoint
        rather than per request."""
        attributes = self.span_attributes_cache.get(endpoint)
        if attributes is None:
            address = endpoint.address if endpoint is not None else ""
            attributes = ((conv.SERVER_ADDRESS, destination), (conv.DIRECTION, self.direction), (conv.ENDPOINT, address))
            if self.peer_service:
                attributes += ((conv.PEER_SERVICE, destination),)
            if endpoint is not None:  # without one the destination is any name a request gave: not kept
                if len(self.span_attributes_cache) >= MAX_CACHED_SPAN_ATTRIBUTES:
                    self.span_attributes_cache.clear()
                self.span_attributes_cache[endpoint] = attributes
        return attributes

    def resolve_authority(self, authority: bytes):
        """The ``Destination`` a request for ``authority`` goes to, or None when there is none."""
        raise NotImplementedError
