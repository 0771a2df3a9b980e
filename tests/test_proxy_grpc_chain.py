"""A three-service chain A -> B -> C over gRPC, each app behind its own `tracemesh proxy` process,
exporting to a real `tracemesh collector`: one call yields ONE trace with a SERVER and a CLIENT span per
hop, parented hop to hop, named and attributed as RPC spans with the timing breakdown; and the
sidecars count the calls on /metrics."""

from __future__ import annotations

import time

import grpc
import pytest

from tests.support.collector import collector_for
from tests.support.grpc_apps import ChainApp
from tests.support.mesh import Mesh
from tests.support.processes import free_port
from tests.support.traces import check_chain_shape, wait_for_trace

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    collector = collector_for(tmp_path_factory.mktemp("collector")).start()
    mesh = Mesh(tmp_path_factory.mktemp("grpc-chain"))
    apps = []
    try:
        ports = {name: (free_port(), free_port()) for name in "abc"}  # (inbound, outbound) of each sidecar
        endpoints = mesh.endpoints({name: [f"127.0.0.1:{ports[name][0]}"] for name in "bc"})
        sidecars = {}
        for name, next_service in (("a", "b"), ("b", "c"), ("c", None)):
            inbound, outbound = ports[name]
            app = ChainApp(name.upper(), f"127.0.0.1:{outbound}" if next_service else None, next_service or "")
            apps.append(app)
            sidecars[name] = mesh.sidecar(name, app=app, endpoints=endpoints, collector=collector.grpc_address,
                                          inbound_port=inbound, outbound_port=outbound)  # fmt: skip
        yield {"collector": collector, "sidecars": sidecars}
    finally:
        for app in apps:
            app.stop()
        mesh.close()
        collector.stop()


def call_a(chain, metadata=()) -> tuple[bytes, grpc.Call]:
    with grpc.insecure_channel(f"127.0.0.1:{chain['sidecars']['a'].inbound}") as channel:
        return channel.unary_unary("/tracemesh.test.Chain/Call").with_call(b"start", metadata=metadata, timeout=10)


def test_one_call_is_one_trace_with_two_spans_per_hop(chain):
    call_a(chain)  # warm the pools so the traced call below reuses connections
    trace_id, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    answer, _call = call_a(chain, [("traceparent", f"00-{trace_id}-{caller_span}-01")])
    assert answer == b"start>A>B>C"
    trace = wait_for_trace(chain["collector"], trace_id, 5)
    assert trace["spanCount"] == 5

    a_in, a_out, b_in, b_out, c_in = check_chain_shape(trace, f"127.0.0.1:{chain['sidecars']['b'].inbound}")
    assert a_in["parentSpanId"] == caller_span
    for span in (a_in, a_out, b_in, b_out, c_in):
        attributes = span["attributes"]
        assert span["name"] == "tracemesh.test.Chain/Call"
        assert attributes["rpc.system"] == "grpc"
        assert attributes["rpc.service"] == "tracemesh.test.Chain"
        assert attributes["rpc.method"] == "Call"
        assert attributes["rpc.grpc.status_code"] == 0


def test_sidecars_count_grpc_calls_by_status(chain):
    sidecar = chain["sidecars"]["b"]
    before = sidecar.metric("tracemesh_requests_total", direction="outbound", destination="c", grpc_status="OK")
    call_a(chain)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        after = sidecar.metric("tracemesh_requests_total", direction="outbound", destination="c", grpc_status="OK")
        if after == before + 1:
            break
        time.sleep(0.1)
    assert after == before + 1
    assert sidecar.metric("tracemesh_requests_total", direction="inbound", grpc_status="OK") >= 1
