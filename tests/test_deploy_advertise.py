"""`tracemesh proxy --advertise`: the address registered at the control port is the advertised one, not
the bound one (in a pod the proxy binds 0.0.0.0 and advertises the pod IP, as `tracemesh inject` sets up)."""

from __future__ import annotations

import time

from collector.control.hints import HintRules
from collector.control.plane import ControlPlane
from collector.control.registry import Registry
from collector.control.server import start_control_server
from collector.graph import ServiceGraph
from tests.support.processes import ManagedProcess, free_port, tracemesh_command, wait_for_port


def registered_inbounds(registry: Registry, service: str, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [i.inbound for i in registry.live(time.monotonic()) if i.service == service]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {service} instance registered within {timeout}s")


def test_the_proxy_registers_its_advertised_inbound_address(tmp_path):
    control = f"127.0.0.1:{free_port()}"
    registry = Registry(lease_s=10)
    plane = ControlPlane(ServiceGraph(), registry, hint_rules=HintRules(0.25), tick_s=0.2)
    plane.start()
    server = start_control_server(plane, registry, control, heartbeat_s=0.2)
    inbound, admin = free_port(), free_port()
    proxy = ManagedProcess(tracemesh_command(
        "proxy", "--service", "catalog", "--inbound", f"127.0.0.1:{inbound}", "--app", f"127.0.0.1:{free_port()}",
        "--advertise", f"localhost:{inbound}", "--admin", f"127.0.0.1:{admin}", "--control", control,
    ), tmp_path / "proxy.log")
    try:
        wait_for_port(admin, process=proxy.popen)
        assert registered_inbounds(registry, "catalog") == [f"localhost:{inbound}"], proxy.log()
    finally:
        proxy.stop()
        plane.stop()
        server.stop(grace=0).wait()


def test_advertise_without_inbound_is_refused(tmp_path):
    proxy = ManagedProcess(tracemesh_command(
        "proxy", "--service", "web", "--outbound", f"127.0.0.1:{free_port()}", "--advertise", "10.0.0.7:4143",
    ), tmp_path / "proxy.log")
    assert proxy.popen.wait(timeout=30) == 2
    proxy.stop()
    assert "--advertise names the address of --inbound" in proxy.log()
