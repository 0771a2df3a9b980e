"""`tracemesh proxy --advertise`: the address registered at the control port is the advertised one, not
the bound one (in a pod the proxy binds 0.0.0.0 and advertises the pod IP, as `tracemesh inject` sets up)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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


class Products(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"tea, mugs"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def get_through(outbound: int, service: str, timeout: float = 15.0) -> bytes:
    """GET / at a proxy's outbound listener naming ``service``, retried until the proxy knows its endpoints."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"http://127.0.0.1:{outbound}/", headers={"Host": service})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.read()
        except (urllib.error.HTTPError, OSError) as error:
            last = error
            time.sleep(0.1)
    raise AssertionError(f"no answer from {service} through 127.0.0.1:{outbound}: {last}")


def test_the_proxy_registers_its_advertised_inbound_address_and_callers_use_it(tmp_path):
    """As in the compose file: the callee advertises a host name, the caller's sidecar learns it from the
    control port alone (no endpoints file) and reaches the app through it."""
    control = f"127.0.0.1:{free_port()}"
    registry = Registry(lease_s=10)
    plane = ControlPlane(ServiceGraph(), registry, hint_rules=HintRules(0.25), tick_s=0.2)
    plane.start()
    server = start_control_server(plane, registry, control, heartbeat_s=0.2)
    app = ThreadingHTTPServer(("127.0.0.1", 0), Products)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    inbound, outbound = free_port(), free_port()
    callee = ManagedProcess(tracemesh_command(
        "proxy", "--service", "catalog", "--inbound", f"127.0.0.1:{inbound}", "--app", f"127.0.0.1:{app.server_port}",
        "--advertise", f"localhost:{inbound}", "--admin", f"127.0.0.1:{free_port()}", "--control", control,
    ), tmp_path / "callee.log")
    caller = ManagedProcess(tracemesh_command(
        "proxy", "--service", "frontend", "--outbound", f"127.0.0.1:{outbound}", "--admin", f"127.0.0.1:{free_port()}",
        "--control", control,
    ), tmp_path / "caller.log")
    try:
        wait_for_port(outbound, process=caller.popen)
        assert registered_inbounds(registry, "catalog") == [f"localhost:{inbound}"], callee.log()
        assert get_through(outbound, "catalog") == b"tea, mugs", caller.log()
    finally:
        caller.stop()
        callee.stop()
        app.shutdown()
        app.server_close()
        plane.stop()
        server.stop(grace=0).wait()


def test_advertise_without_inbound_is_refused(tmp_path):
    proxy = ManagedProcess(tracemesh_command(
        "proxy", "--service", "web", "--outbound", f"127.0.0.1:{free_port()}", "--advertise", "10.0.0.7:4143",
    ), tmp_path / "proxy.log")
    assert proxy.popen.wait(timeout=30) == 2
    proxy.stop()
    assert "--advertise names the address of --inbound" in proxy.log()
