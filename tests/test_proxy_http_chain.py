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

pytestmark = pytest.mark.timeout(120)

TIMING = ("tracemesh.queue_ns", "tracemesh.connect_ns", "tracemesh.first_byte_ns", "tracemesh.body_ns",
          "tracemesh.retries", "tracemesh.retry_delay_ns", "tracemesh.endpoint", "tracemesh.endpoint_load",
          "tracemesh.connection_reused")  # fmt: skip


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


def test_one_request_is_one_trace_with_two_spans_per_hop(chain):
    call_a(chain)  # warm the pools so the traced request below reuses connections
    answer = call_a(chain)
    trace_id = answer["trace_headers"]["traceparent"].split("-")[1]
    assert answer["next"]["body"]["next"]["body"]["service"] == "c"
    trace = wait_for_trace(chain["collector"], trace_id, 5)
    assert trace["spanCount"] == 5
    assert {s["traceId"] for s in trace["spans"]} == {trace_id}

    a_in, a_out = span_of(trace, "a", "SERVER"), span_of(trace, "a", "CLIENT")
    b_in, b_out = span_of(trace, "b", "SERVER"), span_of(trace, "b", "CLIENT")
    c_in = span_of(trace, "c", "SERVER")
    assert a_in["parentSpanId"] == ""  # the request came without trace context: A's inbound started it
    assert a_out["parentSpanId"] == a_in["spanId"]  # the app forwarded the context it was given
    assert b_in["parentSpanId"] == a_out["spanId"]  # the outbound proxy rewrote the parent
    assert b_out["parentSpanId"] == b_in["spanId"]
    assert c_in["parentSpanId"] == b_out["spanId"]

    for span in (a_in, a_out, b_in, b_out, c_in):
        attributes = span["attributes"]
        assert span["name"] == "GET"
        assert attributes["http.request.method"] == "GET"
        assert attributes["http.response.status_code"] == 200
        assert attributes["url.path"] == "/hop"
        for name in TIMING:
            assert name in attributes, f"{span['service']} {span['kind']} lacks {name}"
        assert 0 < attributes["tracemesh.first_byte_ns"] <= int(span["durationNano"])
        assert attributes["tracemesh.retries"] == 0
        assert span["resource"]["attributes"]["tracemesh.proxy"] is True
    assert a_out["attributes"]["peer.service"] == "b" and b_out["attributes"]["peer.service"] == "c"
    assert a_out["attributes"]["tracemesh.direction"] == "outbound"
    assert b_in["attributes"]["tracemesh.direction"] == "inbound"
    assert a_out["attributes"]["tracemesh.endpoint"] == f"127.0.0.1:{chain['sidecars']['b'].inbound}"
    assert a_out["attributes"]["tracemesh.connection_reused"] is True
    assert a_out["attributes"]["tracemesh.connect_ns"] == 0

    for client, server in ((a_out, b_in), (b_out, c_in), (a_in, a_out), (b_in, b_out)):
        # An enclosing span starts no later and lasts no shorter than the span it encloses.
        assert int(client["startTimeUnixNano"]) <= int(server["startTimeUnixNano"])
        assert int(client["durationNano"]) >= int(server["durationNano"])


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
