"""``tracemesh demo`` end to end: the whole shop starts, its traffic fills the service graph and the
trace store, and Ctrl-C (SIGINT) leaves no process and no listening port behind."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.support.clickhouse_server import clickhouse_server_url, store_url  # noqa: F401 (fixtures)
from tests.support.processes import free_port, tracemesh_command
from tracemesh.demo import PORTS_PER_INSTANCE, instance_count, port_free

EXPECTED_EDGES = {
    ("user", "frontend"),
    ("frontend", "catalog"),
    ("frontend", "cart"),
    ("frontend", "checkout"),
    ("cart", "sqlite"),
    ("checkout", "cart"),
    ("checkout", "payments"),
    ("checkout", "shipping"),
}
# the demo itself: collector, an app and a sidecar per instance, the traffic generator
EXPECTED_CHILDREN = 1 + 2 * instance_count() + 1


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(200):
        base = random.randrange(20000, 30000)
        if all(port_free("127.0.0.1", port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.load(reply)


def wait_for(what: str, probe, timeout: float, demo: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert demo.poll() is None, f"the demo exited ({demo.returncode}) before {what}:\n{log.read_text()}"
        try:
            last = probe()
        except OSError as error:
            last = error
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"no {what} after {timeout}s (last: {last!r}):\n{log.read_text()[-4000:]}")


def start_demo(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, list[int]]:
    """A demo on free ports: (process, its output file, every port it listens on)."""
    api, otlp_grpc, otlp_http, control = (free_port() for _ in range(4))
    count = PORTS_PER_INSTANCE * instance_count()
    base = free_port_range(count)
    log = tmp_path / "demo.out"
    with open(log, "wb") as output:
        demo = subprocess.Popen(
            tracemesh_command(
                "demo", "--data-dir", str(tmp_path / "demo"), "--base-port", str(base),
                "--http", f"127.0.0.1:{api}", "--otlp-grpc", f"127.0.0.1:{otlp_grpc}",
                "--otlp-http", f"127.0.0.1:{otlp_http}", "--control", f"127.0.0.1:{control}", *extra,
            ),
            stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
    return demo, log, [api, otlp_grpc, otlp_http, control, *range(base, base + count)]


def test_demo_fills_graph_and_traces_and_stops_cleanly(tmp_path, store_url):  # noqa: F811 (fixture)
    """On chDB by default (in the data directory), or on a ClickHouse server with --store."""
    on_chdb = store_url.startswith("chdb:")
    started = time.monotonic()
    store_flags = [] if on_chdb else ["--store", store_url]
    demo, log, ports = start_demo(tmp_path, "--duration", "20", "--rps", "20", *store_flags)
    try:
        wait_for("start-up", lambda: "Tracemesh demo running" in log.read_text(), 45, demo, log)
        startup_s = time.monotonic() - started
        children = children_of(demo.pid)
        assert len(children) == EXPECTED_CHILDREN, log.read_text()

        api_url = f"http://127.0.0.1:{ports[0]}"

        def graph_complete():
            graph = get_json(f"{api_url}/api/v1/graph")
            edges = {(edge["source"], edge["target"]): edge for edge in graph["edges"]}
            if EXPECTED_EDGES <= edges.keys() and len(edges[("frontend", "catalog")]["endpoints"]) == 3:
                return graph  # every edge, and requests to each of the three catalog instances
            return None

        graph = wait_for("service graph with every edge", graph_complete, 20, demo, log)
        edges = {(edge["source"], edge["target"]): edge for edge in graph["edges"]}
        assert edges[("cart", "sqlite")]["connectionType"] == "database"
        assert {node["name"]: node["kind"] for node in graph["nodes"]}["sqlite"] == "database"

        # A completed checkout's trace: five services, each hop described by the apps (OpenTelemetry, and
        # py-zipkin in shipping) and by both sidecars. The newest traces may still miss spans not exported
        # yet, and declined payments end before shipping: wait for a whole one.
        expected_spans = {
            ("frontend", "shop.frontend", "POST /checkout"),
            ("frontend", "tracemesh-proxy", "shop.Checkout/PlaceOrder"),
            ("checkout", "shop.checkout", "shop.Checkout/PlaceOrder"),
            ("cart", "shop.cart", "SELECT cart_items"),
            ("payments", "tracemesh-proxy", "shop.Payments/Charge"),
            ("payments", "shop.payments", "shop.Payments/Charge"),
            ("shipping", "tracemesh-proxy", "POST"),
            ("shipping", "", "GET /quote"),  # py-zipkin: no instrumentation scope
            ("shipping", "", "POST /shipments"),
        }

        def completed_checkout_trace():
            for trace in get_json(f"{api_url}/api/v1/traces?service=shipping&limit=50")["traces"]:
                spans = {(span["service"], span["scope"]["name"], span["name"]) for span in trace["spans"]}
                if expected_spans <= spans:
                    return trace
            return None

        wait_for("a completed checkout's trace", completed_checkout_trace, 20, demo, log)
        frontend_traces = get_json(f"{api_url}/api/v1/traces?service=frontend&limit=50")["traces"]
        assert any(len(found["services"]) >= 3 for found in frontend_traces)

        demo.send_signal(signal.SIGINT)
        assert demo.wait(timeout=40) == 0, log.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = log.read_text()
    assert f"stopped {EXPECTED_CHILDREN} processes in " in output and "still in use" not in output, output
    assert not [pid for pid in children if group_alive(pid)]
    assert [port for port in ports if not port_free("127.0.0.1", port)] == []
    assert (tmp_path / "demo" / "chdb").is_dir() == on_chdb
    print(f"demo started in {startup_s:.1f}s; whole test {time.monotonic() - started:.1f}s")


def test_demo_killed_outright_takes_its_processes_along(tmp_path):
    """Even a kill -9 of the demo (no chance to clean up) leaves no process behind: each child gets
    SIGTERM when its parent dies."""
    demo, log, ports = start_demo(tmp_path, "--rps", "5")
    try:
        wait_for("start-up", lambda: "Tracemesh demo running" in log.read_text(), 45, demo, log)
        children = children_of(demo.pid)
        assert len(children) == EXPECTED_CHILDREN
    finally:
        demo.kill()
        demo.wait()
    deadline = time.monotonic() + 30
    while [pid for pid in children if group_alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in children if group_alive(pid)] == []
    assert [port for port in ports if not port_free("127.0.0.1", port)] == []


def test_demo_refuses_ports_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            tracemesh_command("demo", "--data-dir", str(tmp_path / "demo"), "--http", f"127.0.0.1:{port}",
                              "--base-port", "0"),
            capture_output=True, text=True, timeout=30, cwd=tmp_path,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port} (collector HTTP)" in result.stderr
    assert not (tmp_path / "demo").exists()  # refused before starting anything
