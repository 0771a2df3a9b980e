"""The proxy's side of the control stream: register, hold the stream, apply what the collector sends.

The collector computes from everyone's traces what no single proxy can see: which instances of a
service are alive (registration is discovery), how slow or failing each is mesh-wide (routing
weights, ejections), and whether a service is over capacity (scaling hints). This module

* re-registers every heartbeat interval (the lease keeps this instance in its service's set),
* holds the ``Watch`` stream and resumes it after a disconnect with the (epoch, version) it holds,
* serves as the proxy's discovery: the collector's endpoint sets, else the fallback (an endpoints
  file, or nothing), so ``--control`` works with or without ``--endpoints``,
* creates a destination for every service it learns of, so weights apply before a first request,
* applies weights and the probe share to destinations in ``mesh`` balancer mode, and queues less
  long (sheds earlier) toward a service the collector reports over capacity.

gRPC runs in two threads (the stream blocks); state is applied on the event loop. When the
collector is away the last good state is kept; after ``stale_after_s`` without contact the weights
are dropped and destinations balance on their local view alone. A restarted collector starts with
an empty registry, so for ``grace_s`` after a new epoch endpoint sets only grow.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from mesh.destination import MESH, Destinations, Discovery, EndpointsListener, EndpointsListeners

log = logging.getLogger("tracemesh.control")


OVER_CAPACITY_WAIT_FACTOR = 0.25  # of the destination's max queue wait while its service is over capacity


class ControlClient:
    def __init__(
        self,
        address: str,
        service: str,
        instance_id: str,
        inbound: str = "",
        zone: str = "",
        fallback: Discovery | None = None,
        stale_after_s: float = 30.0,
        grace_s: float = 10.0,
        retry_s: float = 1.0,
    ):
        self.address = address
        self.registration = (service, instance_id, inbound, zone)
        self.fallback = fallback
        self.stale_after_s = stale_after_s
        self.grace_s = grace_s
        self.retry_s = retry_s
        self.destinations: Destinations | None = None
        self.epoch = ""
        self.version = 0
        self.last_contact = float("-inf")  # monotonic; written by the gRPC threads
        self._endpoints: dict[str, tuple[str, ...]] = {}
        self._weights: dict[str, dict[str, float]] = {}
        self._probe_share: dict[str, float] = {}
        self._over_capacity: set[str] = set()
        self._epoch_started = float("-inf")
        self._listeners = EndpointsListeners(log)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._call = None
        self._channel = None
        if fallback is not None:
            fallback.subscribe(self._on_fallback_change)

    # ---- discovery -----------------------------------------------------------------------------

    def has(self, service: str) -> bool:
        return service in self._endpoints or (self.fallback is not None and self.fallback.has(service))

    def resolve(self, service: str) -> tuple[str, ...]:
        addresses = self._endpoints.get(service)
        if addresses is not None:
            return addresses
        return self.fallback.resolve(service) if self.fallback is not None else ()

    def subscribe(self, listener: EndpointsListener) -> None:
        self._listeners.append(listener)

    def _on_fallback_change(self, service: str, addresses: tuple[str, ...]) -> None:
        if service not in self._endpoints:
            self._listeners.notify(service, addresses)

    # ---- running -------------------------------------------------------------------------------

    def start(self, destinations: Destinations) -> None:
        """Start the gRPC threads; call from the running event loop."""
        import grpc  # only proxies with --control pay for it

        from spans.control.rpc import ControlStub

        self.destinations = destinations
        self._loop = asyncio.get_running_loop()
        self._channel = grpc.insecure_channel(self.address)
        stub = ControlStub(self._channel)
        for target, name in ((self._heartbeat, "control-heartbeat"), (self._watch, "control-watch")):
            thread = threading.Thread(target=target, args=(stub,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    async def run(self) -> None:
        """Once a second: re-apply weights (destinations created since the last update get them too)
        and fall back to local balancing when the collector has been away too long."""
        was_stale = True
        while True:
            stale = self.stale
            if stale and not was_stale:
                log.warning("control: no contact with %s for %gs; balancing on local load alone", self.address, self.stale_after_s)
            was_stale = stale
            self.apply_to_destinations()
            await asyncio.sleep(1.0)

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._channel is not None:
            self._channel.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def _heartbeat(self, stub) -> None:
        from spans.control import control_pb2 as pb

        import grpc

        service, instance_id, inbound, zone = self.registration
        request = pb.Registration(service=service, instance_id=instance_id, inbound=inbound, zone=zone)
        interval, failing = self.retry_s, False
        while not self._stopping.is_set():
            try:
                lease = stub.register(request, timeout=2.0)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    log.error("control: the collector refused this proxy's registration: %s", error.details())
                elif not failing:
                    log.warning("control: cannot register at %s (%s); retrying", self.address, error.code().name)
                failing, interval = True, self.retry_s
            else:
                if failing:
                    log.info("control: registered at %s again", self.address)
                failing, interval = False, lease.heartbeat_seconds or self.retry_s
                self.last_contact = time.monotonic()
            self._stopping.wait(interval)

    def _watch(self, stub) -> None:
        from spans.control import control_pb2 as pb

        import grpc

        backoff = self.retry_s
        failing = False
        while not self._stopping.is_set():
            self._call = stub.watch(pb.WatchRequest(instance_id=self.registration[1], epoch=self.epoch, version=self.version))
            try:
                for state in self._call:
                    if failing:
                        log.info("control: mesh state stream from %s resumed", self.address)
                    failing, backoff = False, self.retry_s
                    self.last_contact = time.monotonic()
                    self._loop.call_soon_threadsafe(self.apply, state)
            except grpc.RpcError as error:
                if self._stopping.is_set():
                    return
                if not failing:
                    log.warning("control: mesh state stream from %s lost (%s); keeping the last state", self.address, error.code().name)
                failing = True
            except RuntimeError:  # the loop is closed: the proxy is stopping
                return
            self._stopping.wait(backoff)
            backoff = min(backoff * 2, 10.0)

    # ---- applying (event loop) -----------------------------------------------------------------

    def apply(self, state) -> None:
        """Take one mesh-state snapshot (a ``MeshState``)."""
        now = time.monotonic()
        if state.epoch != self.epoch:
            self._epoch_started = now
        self.epoch, self.version = state.epoch, state.version
        growing_only = now - self._epoch_started < self.grace_s
        endpoints: dict[str, tuple[str, ...]] = {}
        self._weights, self._probe_share, self._over_capacity = {}, {}, set()
        for destination in state.destinations:
            addresses = tuple(endpoint.address for endpoint in destination.endpoints)
            if growing_only:
                addresses = tuple(dict.fromkeys(self._endpoints.get(destination.service, ()) + addresses))
            endpoints[destination.service] = addresses
            self._weights[destination.service] = {e.address: e.weight for e in destination.endpoints if e.weight > 0}
            self._probe_share[destination.service] = destination.probe_share
            if destination.hint.over_capacity:
                self._over_capacity.add(destination.service)
        if growing_only:
            for service, addresses in self._endpoints.items():
                endpoints.setdefault(service, addresses)
        previous, self._endpoints = self._endpoints, endpoints
        for service in [*endpoints, *(gone for gone in previous if gone not in endpoints)]:
            if previous.get(service) != endpoints.get(service):
                self._listeners.notify(service, self.resolve(service))
        if self.destinations is not None:
            for service in endpoints:  # created now, so weights apply before their first request
                self.destinations.get(service)
        self.apply_to_destinations()

    @property
    def stale(self) -> bool:
        """No contact with the collector for ``stale_after_s``: its weights no longer count."""
        return time.monotonic() - self.last_contact > self.stale_after_s

    def apply_to_destinations(self) -> None:
        if self.destinations is None:
            return
        stale = self.stale
        for destination in self.destinations:
            name = destination.name
            admission, policy = destination.admission, destination.policy
            over = name in self._over_capacity and not stale
            admission.max_wait_s = policy.max_queue_wait_s * (OVER_CAPACITY_WAIT_FACTOR if over else 1.0)
            if policy.balancer != MESH:
                continue
            weights = {} if stale else self._weights.get(name, {})
            balancer = destination.balancer
            balancer.probe_share = self._probe_share.get(name, 0.0) if weights else 0.0
            for endpoint in balancer.endpoints:
                endpoint.weight = weights.get(endpoint.address, 1.0)
