"""The proxy's control client against a real control server: discovery from registrations, weights
applied only in mesh mode, the last good state kept while the collector is away, local balancing
once it has been away too long, and resumption with a restarted collector."""

from __future__ import annotations

import asyncio
import time

from collector.control.hints import HintRules
from collector.control.plane import ControlPlane
from collector.control.registry import Instance, Registry
from collector.control.server import start_control_server
from collector.graph import ServiceGraph
from mesh.control_client import OVER_CAPACITY_WAIT_FACTOR, ControlClient
from mesh.destination import EWMA, MESH, DestinationPolicy, Destinations
from mesh.discovery import EndpointsFile
from spans.conventions import ENDPOINT
from tests.support.graph_spans import MS, columns, new_trace_id, proxy_hop
from tests.support.processes import free_port


class Collector:
    """The control side only: graph, registry, plane and server (restartable on the same port)."""

    def __init__(self, address: str, latency_target_s: float = 0.25):
        self.address = address
        self.graph = ServiceGraph()
        self.registry = Registry(lease_s=10)
        self.plane = ControlPlane(self.graph, self.registry, hint_rules=HintRules(latency_target_s), tick_s=0.2)
        self.plane.start()
        self.server = start_control_server(self.plane, self.registry, address, heartbeat_s=0.2)

    def slow(self, endpoint: str, latency_ms: float, count: int = 20) -> None:
        now = self.graph.now_ns()
        rows = []
        for _ in range(count):
            rows += proxy_hop(new_trace_id(), "a", "b", now - int(latency_ms * MS), int(latency_ms * MS), attributes={ENDPOINT: endpoint})
        self.graph.consume(columns(rows))

    def stop(self) -> None:
        self.plane.stop()
        self.server.stop(grace=0).wait()


async def eventually(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def weights(destinations: Destinations, service: str) -> dict[str, float]:
    return {endpoint.address: endpoint.weight for endpoint in destinations.get(service).balancer.endpoints}


async def start_proxy_side(address: str, balancer: str, fallback=None, stale_after_s: float = 30.0, service: str = "b"):
    client = ControlClient(address, service, f"{service}-{free_port()}", f"127.0.0.1:{free_port()}", fallback=fallback,
                           stale_after_s=stale_after_s, retry_s=0.1)  # fmt: skip
    destinations = Destinations(client, DestinationPolicy(balancer=balancer))
    client.start(destinations)
    task = asyncio.create_task(client.run())
    return client, destinations, task


async def stop_proxy_side(client: ControlClient, task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.get_running_loop().run_in_executor(None, client.stop)


def test_registration_is_discovery_and_mesh_mode_applies_weights():
    asyncio.run(registration_is_discovery_and_mesh_mode_applies_weights())


async def registration_is_discovery_and_mesh_mode_applies_weights():
    collector = Collector(f"127.0.0.1:{free_port()}")
    b1, d1, t1 = await start_proxy_side(collector.address, MESH)
    b2, d2, t2 = await start_proxy_side(collector.address, EWMA)
    try:
        await eventually(lambda: b1.has("b") and len(b1.resolve("b")) == 2 and b2.has("b") and len(b2.resolve("b")) == 2)
        assert set(b1.resolve("b")) == {b1.registration[2], b2.registration[2]}
        slow = b2.registration[2]
        collector.slow(b1.registration[2], 5)
        collector.slow(slow, 205)
        await eventually(lambda: weights(d1, "b")[slow] < 0.1)
        assert weights(d1, "b")[b1.registration[2]] == 1.0
        assert d1.get("b").balancer.probe_share == 0.005
        assert b1.last_contact > time.monotonic() - 5
        await asyncio.sleep(0.5)
        assert set(weights(d2, "b").values()) == {1.0}  # ewma mode balances on its own view only
        assert d2.get("b").balancer.probe_share == 0.0
        assert d1.get("b").admission.max_wait_s == d1.get("b").policy.max_queue_wait_s  # not over capacity
    finally:
        await stop_proxy_side(b1, t1)
        await stop_proxy_side(b2, t2)
        collector.stop()


def test_a_service_over_capacity_is_queued_for_less_long():
    asyncio.run(a_service_over_capacity_is_queued_for_less_long())


async def a_service_over_capacity_is_queued_for_less_long():
    collector = Collector(f"127.0.0.1:{free_port()}", latency_target_s=0.1)
    client, destinations, task = await start_proxy_side(collector.address, EWMA)
    try:
        await eventually(lambda: client.has("b"))
        b = destinations.get("b")
        assert b.admission.max_wait_s == b.policy.max_queue_wait_s
        collector.slow(client.registration[2], 300)  # p95 300 ms against a 100 ms target
        await eventually(lambda: b.admission.max_wait_s == b.policy.max_queue_wait_s * OVER_CAPACITY_WAIT_FACTOR)
    finally:
        await stop_proxy_side(client, task)
        collector.stop()


def test_last_good_state_is_kept_then_local_balancing_then_resumed(tmp_path):
    asyncio.run(last_good_state_is_kept_then_local_balancing_then_resumed(tmp_path))


async def last_good_state_is_kept_then_local_balancing_then_resumed(tmp_path):
    endpoints_file = tmp_path / "endpoints.yaml"
    endpoints_file.write_text('ledger: ["127.0.0.1:9999"]\n')
    fallback = EndpointsFile(endpoints_file)
    await fallback.load()
    address = f"127.0.0.1:{free_port()}"
    collector = Collector(address)
    client, destinations, task = await start_proxy_side(address, MESH, fallback=fallback, stale_after_s=1.5)
    try:
        assert client.resolve("ledger") == ("127.0.0.1:9999",)  # the file covers what the collector does not know
        me = client.registration[2]
        other = "127.0.0.1:7002"
        collector.registry.register(Instance("b", "b-2", other, ""), time.monotonic())
        collector.slow(me, 5)
        collector.slow(other, 205)
        await eventually(lambda: client.has("b") and weights(destinations, "b").get(other, 1.0) < 0.1)
        old_epoch = client.epoch
        collector.stop()
        await asyncio.sleep(0.5)
        assert set(client.resolve("b")) == {me, other}  # the collector is away: the last state stays
        assert weights(destinations, "b")[other] < 0.1
        await eventually(lambda: weights(destinations, "b")[other] == 1.0, timeout=5)  # stale: local balancing
        assert destinations.get("b").balancer.probe_share == 0.0
        collector = Collector(address)  # restarted: empty registry, new epoch
        await eventually(lambda: client.epoch not in ("", old_epoch))
        # Only this proxy has re-registered, but within the grace period endpoint sets only grow.
        assert set(client.resolve("b")) == {me, other}
        assert not client.stale
    finally:
        await stop_proxy_side(client, task)
        collector.stop()
