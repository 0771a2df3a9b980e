"""A three-service chain A -> B -> C over HTTP/1.1, each app behind its own sidecar, exporting to a real
``tracemesh collector``: one request yields ONE trace with a SERVER and a CLIENT span per hop, parented
hop to hop, with the timing breakdown present and consistent."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from tests.support.collector import collector_for
from tests.support.mesh import Mesh
from tests.support.processes import free_port
from tests.support.traces import check_chain_shape, span_of, wait_for_trace

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    collector = collector_for(tmp_path_factory.mktemp("collector")).start()
    mesh = Mesh(tmp_path_factory.mktemp("chain"))
    try:
        ports = {name: (free_port(), free_port()) for name in "abc"}  # (inbound, outbound) of each sidecar
        endpoints = mesh.endpoints({name: [f"127.0.0.1:{ports[name][0]}"] for name in "bc"})
        sidecars = {}
        for name, next_service in (("a", "b"), ("b", "c"), ("c", None)):
            inbound, outbound = ports[name]
            app = mesh.app(name, next_service=next_service, outbound=outbound)
            sidecars[name] = mesh.sidecar(name, app=app, endpoints=endpoints, collector=collector.grpc_address,
                                          inbound_port=inbound, outbound_port=outbound)  # fmt: skip
        yield {"collector": collector, "sidecars": sidecars}
    finally:
        mesh.close()
        collector.stop()


def call_a(chain, headers: dict | None = None) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{chain['sidecars']['a'].inbound}/hop", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200
        return json.load(reply)


def test_one_request_is_one_trace_with_two_spans_per_hop(chain):
    call_a(chain)  # warm the pools so the traced request below reuses connections
    answer = call_a(chain)
    trace_id = answer["trace_headers"]["traceparent"].split("-")[1]
    assert answer["next"]["body"]["next"]["body"]["service"] == "c"
    trace = wait_for_trace(chain["collector"], trace_id, 5)
    assert trace["spanCount"] == 5
    assert {s["traceId"] for s in trace["spans"]} == {trace_id}

    a_in, a_out, b_in, b_out, c_in = check_chain_shape(trace, f"127.0.0.1:{chain['sidecars']['b'].inbound}")
    assert a_in["parentSpanId"] == ""  # the request came without trace context: A's inbound started it
    for span in (a_in, a_out, b_in, b_out, c_in):
        attributes = span["attributes"]
        assert span["name"] == "GET"
        assert attributes["http.request.method"] == "GET"
        assert attributes["http.response.status_code"] == 200
        assert attributes["url.path"] == "/hop"
        assert attributes["tracemesh.retries"] == 0
        assert span["resource"]["attributes"]["tracemesh.proxy"] is True
    assert a_out["attributes"]["tracemesh.direction"] == "outbound"
    assert b_in["attributes"]["tracemesh.direction"] == "inbound"
    assert a_out["attributes"]["tracemesh.connect_ns"] == 0

def test_an_incoming_b3_trace_is_continued(chain):
    trace_id, parent = "5af7183fb1d4cf5f", "6b221d5bc9e6496c"
    answer = call_a(chain, {"X-B3-TraceId": trace_id, "X-B3-SpanId": parent, "X-B3-Sampled": "1"})
    assert answer["trace_headers"]["x-b3-traceid"] == "0" * 16 + trace_id  # B3 answered in kind
    trace = wait_for_trace(chain["collector"], "0" * 16 + trace_id, 5)
    assert span_of(trace, "a", "SERVER")["parentSpanId"] == parent


def test_an_unsampled_trace_is_propagated_but_not_recorded(chain):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    answer = call_a(chain, {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"})
    assert answer["trace_headers"]["traceparent"].startswith(f"00-{trace_id}-")
    assert answer["trace_headers"]["traceparent"].endswith("-00")
    call_a(chain)  # a sampled request behind it: once its spans are stored, the unsampled ones would be too
    time.sleep(2.0)
    with pytest.raises(urllib.error.HTTPError) as missing:
        chain["collector"].trace(trace_id)
    assert missing.value.code == 404
