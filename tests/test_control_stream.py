"""The control gRPC service with a real grpc client: registration, leases, the versioned stream,
resumption, weights and hints computed from the live service graph."""

from __future__ import annotations

import time

import grpc
import pytest

from collector.control.hints import HintRules
from collector.control.plane import ControlPlane
from collector.control.registry import Registry
from collector.control.server import start_control_server
from collector.graph import ServiceGraph
from spans.control import control_pb2 as pb
from spans.control.rpc import ControlStub
from spans.conventions import ENDPOINT
from tests.support.graph_spans import MS, columns, new_trace_id, proxy_hop
from tests.support.processes import free_port


class Plane:
    """A graph, a registry with a short lease, the plane (ticked by hand) and its gRPC server."""

    def __init__(self, lease_s: float = 10.0):
        self.graph = ServiceGraph()
        self.registry = Registry(lease_s=lease_s)
        self.plane = ControlPlane(self.graph, self.registry, hint_rules=HintRules(latency_target_s=0.1))
        self.address = f"127.0.0.1:{free_port()}"
        self.server = start_control_server(self.plane, self.registry, self.address, heartbeat_s=lease_s / 4)
        self.channel = grpc.insecure_channel(self.address)
        self.stub = ControlStub(self.channel)

    def register(self, service: str, instance_id: str, inbound: str = "", zone: str = "") -> pb.Lease:
        return self.stub.register(pb.Registration(service=service, instance_id=instance_id, inbound=inbound, zone=zone), timeout=5)

    def first_state(self, epoch: str = "", version: int = 0, timeout: float = 5) -> pb.MeshState:
        call = self.stub.watch(pb.WatchRequest(instance_id="watcher", epoch=epoch, version=version), timeout=timeout)
        try:
            return next(call)
        finally:
            call.cancel()

    def requests(self, endpoint: str, count: int, latency_ms: float, errors: int = 0, age_s: float = 0) -> None:
        now = self.graph.now_ns() - int(age_s * 1e9)
        rows = []
        for index in range(count):
            start = now - int(latency_ms * MS) - index * MS
            rows += proxy_hop(
                new_trace_id(), "a", "b", start, int(latency_ms * MS), error=index < errors, attributes={ENDPOINT: endpoint}
            )
        self.graph.consume(columns(rows))

    def close(self) -> None:
        self.channel.close()
        self.plane.stop()
        self.server.stop(grace=0).wait()


@pytest.fixture
def control():
    plane = Plane()
    yield plane
    plane.close()


def endpoints_of(state: pb.MeshState, service: str) -> dict[str, pb.EndpointState]:
    for destination in state.destinations:
        if destination.service == service:
            return {endpoint.address: endpoint for endpoint in destination.endpoints}
    return {}


def test_registered_instances_are_the_endpoint_set(control):
    lease = control.register("b", "b-1", "127.0.0.1:7001", zone="z1")
    assert lease.lease_seconds == 10 and lease.heartbeat_seconds == 2.5
    control.register("b", "b-2", "127.0.0.1:7002")
    control.register("a", "a-1")  # calls out only: not an endpoint of anything
    control.plane.tick()
    state = control.first_state()
    assert state.epoch == control.plane.epoch and state.version >= 1
    assert [d.service for d in state.destinations] == ["b"]
    b = endpoints_of(state, "b")
    assert sorted(b) == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert b["127.0.0.1:7001"].instance_id == "b-1" and b["127.0.0.1:7001"].zone == "z1"
    assert all(endpoint.weight == 1.0 for endpoint in b.values())


@pytest.mark.parametrize(
    "registration, problem",
    [
        (dict(service="", instance_id="x"), "service must not be empty"),
        (dict(service="b", instance_id=""), "instance_id must not be empty"),
        (dict(service="b", instance_id="x", inbound="nowhere"), "inbound 'nowhere' is not host:port"),
    ],
)
def test_bad_registrations_are_refused_by_name(control, registration, problem):
    with pytest.raises(grpc.RpcError) as caught:
        control.stub.register(pb.Registration(**registration), timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert problem in caught.value.details()


def test_watch_needs_an_instance_id(control):
    with pytest.raises(grpc.RpcError) as caught:
        next(control.stub.watch(pb.WatchRequest(), timeout=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_instance_that_stops_heart_beating_is_removed():
    control = Plane(lease_s=0.5)
    try:
        control.register("b", "b-1", "127.0.0.1:7001")
        control.register("b", "b-2", "127.0.0.1:7002")
        control.plane.tick()
        before = control.first_state()
        call = control.stub.watch(pb.WatchRequest(instance_id="w", epoch=before.epoch, version=before.version), timeout=10)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # b-1 keeps heart-beating, b-2 does not
            control.register("b", "b-1", "127.0.0.1:7001")
            time.sleep(0.1)
        control.plane.tick()
        after = next(call)
        call.cancel()
        assert after.version == before.version + 1
        assert list(endpoints_of(after, "b")) == ["127.0.0.1:7001"]
    finally:
        control.close()


def test_resuming_with_the_current_version_waits_for_a_change(control):
    control.register("b", "b-1", "127.0.0.1:7001")
    control.plane.tick()
    current = control.first_state()
    with pytest.raises(grpc.RpcError) as caught:
        control.first_state(current.epoch, current.version, timeout=1)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # nothing resent
    call = control.stub.watch(pb.WatchRequest(instance_id="w", epoch=current.epoch, version=current.version), timeout=5)
    control.register("b", "b-2", "127.0.0.1:7002")
    control.plane.tick()
    changed = next(call)
    call.cancel()
    assert changed.version == current.version + 1 and len(endpoints_of(changed, "b")) == 2
    # A version from another collector run (another epoch) gets the full state at once.
    assert control.first_state("0123456789abcdef", current.version).version == changed.version


def test_weights_and_hints_come_from_the_service_graph(control):
    for index in range(3):
        control.register("b", f"b-{index}", f"127.0.0.1:700{index}")
    control.requests("127.0.0.1:7000", 40, latency_ms=5)
    control.requests("127.0.0.1:7001", 40, latency_ms=5)
    control.requests("127.0.0.1:7002", 40, latency_ms=205)
    control.plane.tick()
    state = control.first_state()
    b = endpoints_of(state, "b")
    assert b["127.0.0.1:7000"].weight == 1.0 and b["127.0.0.1:7001"].weight == 1.0
    assert b["127.0.0.1:7002"].weight == 0.01 and not b["127.0.0.1:7002"].ejected
    assert b["127.0.0.1:7002"].mean_latency_ms == pytest.approx(205, rel=0.01)
    destination = state.destinations[0]
    assert destination.probe_share == 0.005
    hint = destination.hint
    assert hint.current_replicas == 3
    assert hint.p95_latency_ms == pytest.approx(205, rel=0.02)  # above the 100 ms target
    assert hint.desired_replicas == 6 and hint.over_capacity
    assert hint.reason.startswith("latency: p95")
    assert control.plane.hints["b"].json()["desiredReplicas"] == 6


def test_a_failing_endpoint_is_ejected(control):
    control.register("b", "b-0", "127.0.0.1:7000")
    control.register("b", "b-1", "127.0.0.1:7001")
    control.requests("127.0.0.1:7000", 40, latency_ms=5)
    control.requests("127.0.0.1:7001", 40, latency_ms=5, errors=30)
    control.plane.tick()
    b = endpoints_of(control.first_state(), "b")
    assert b["127.0.0.1:7001"].ejected and b["127.0.0.1:7001"].error_rate == 0.75
    assert b["127.0.0.1:7001"].weight == 0.01 and not b["127.0.0.1:7000"].ejected


def test_an_endpoint_with_few_recent_requests_is_judged_on_the_longer_range(control):
    control.register("b", "b-0", "127.0.0.1:7000")
    control.register("b", "b-1", "127.0.0.1:7001")
    control.requests("127.0.0.1:7000", 40, latency_ms=5)
    control.requests("127.0.0.1:7001", 40, latency_ms=205, age_s=40)  # before the weights' range
    control.requests("127.0.0.1:7001", 2, latency_ms=5)  # two recent probes: too few to judge alone
    control.plane.tick()
    b = endpoints_of(control.first_state(), "b")
    assert b["127.0.0.1:7001"].weight == 0.01 and b["127.0.0.1:7000"].weight == 1.0
