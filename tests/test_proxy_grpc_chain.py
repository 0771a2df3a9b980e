"""A three-service chain A -> B -> C over gRPC, each app behind its own `tracemesh proxy` process,
exporting to a real `tracemesh collector`: one call yields ONE trace with a SERVER and a CLIENT span per
hop, parented hop to hop, named and attributed as RPC spans with the timing breakdown; and the
sidecars count the calls on /metrics."""

from __future__ import annotations

import time
import urllib.error

import grpc
import pytest

from tests.support.collector import collector_for
from tests.support.grpc_apps import ChainApp
from tests.support.mesh import Mesh
from tests.support.processes import free_port

pytestmark = pytest.mark.timeout(120)

TIMING = ("tracemesh.queue_ns", "tracemesh.connect_ns", "tracemesh.first_byte_ns", "tracemesh.body_ns",
          "tracemesh.retries", "tracemesh.retry_delay_ns", "tracemesh.endpoint", "tracemesh.endpoint_load",
          "tracemesh.connection_reused")  # fmt: skip


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


def wait_for_trace(collector, trace_id: str, spans: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    trace = {}
    while time.monotonic() < deadline:
        try:
            trace = collector.trace(trace_id)
            if trace["spanCount"] >= spans:
                return trace
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
        time.sleep(0.2)
    raise TimeoutError(f"trace {trace_id} has {trace.get('spanCount', 0)} of {spans} spans")


def span_of(trace: dict, service: str, kind: str) -> dict:
    [span] = [s for s in trace["spans"] if s["service"] == service and s["kind"] == kind]
    return span


def test_one_call_is_one_trace_with_two_spans_per_hop(chain):
    call_a(chain)  # warm the pools so the traced call below reuses connections
    trace_id, caller_span = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    answer, _call = call_a(chain, [("traceparent", f"00-{trace_id}-{caller_span}-01")])
    assert answer == b"start>A>B>C"
    trace = wait_for_trace(chain["collector"], trace_id, 5)
    assert trace["spanCount"] == 5

    a_in, a_out = span_of(trace, "a", "SERVER"), span_of(trace, "a", "CLIENT")
    b_in, b_out = span_of(trace, "b", "SERVER"), span_of(trace, "b", "CLIENT")
    c_in = span_of(trace, "c", "SERVER")
    assert a_in["parentSpanId"] == caller_span
    assert a_out["parentSpanId"] == a_in["spanId"]
    assert b_in["parentSpanId"] == a_out["spanId"]
    assert b_out["parentSpanId"] == b_in["spanId"]
    assert c_in["parentSpanId"] == b_out["spanId"]

    for span in (a_in, a_out, b_in, b_out, c_in):
        attributes = span["attributes"]
        assert span["name"] == "tracemesh.test.Chain/Call"
        assert attributes["rpc.system"] == "grpc"
        assert attributes["rpc.service"] == "tracemesh.test.Chain"
        assert attributes["rpc.method"] == "Call"
        assert attributes["rpc.grpc.status_code"] == 0
        for name in TIMING:
            assert name in attributes, f"{span['service']} {span['kind']} lacks {name}"
        assert 0 < attributes["tracemesh.first_byte_ns"] <= int(span["durationNano"])
    assert a_out["attributes"]["peer.service"] == "b" and b_out["attributes"]["peer.service"] == "c"
    assert a_out["attributes"]["tracemesh.endpoint"] == f"127.0.0.1:{chain['sidecars']['b'].inbound}"
    assert a_out["attributes"]["tracemesh.connection_reused"] is True
    for client, server in ((a_out, b_in), (b_out, c_in), (a_in, a_out), (b_in, b_out)):
        assert int(client["startTimeUnixNano"]) <= int(server["startTimeUnixNano"])
        assert int(client["durationNano"]) >= int(server["durationNano"])


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
