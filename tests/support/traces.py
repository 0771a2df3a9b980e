"""The trace shape a three-service chain A -> B -> C must give, whatever the protocol: the HTTP/1.1 and
gRPC chain tests share one definition of "parented hop to hop, with the timing breakdown present and
consistent" so the two cannot drift apart."""

from __future__ import annotations

import time
import urllib.error

TIMING = ("tracemesh.queue_ns", "tracemesh.connect_ns", "tracemesh.first_byte_ns", "tracemesh.body_ns",
          "tracemesh.retries", "tracemesh.retry_delay_ns", "tracemesh.endpoint", "tracemesh.endpoint_load",
          "tracemesh.connection_reused")  # fmt: skip


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


def check_chain_shape(trace: dict, b_address: str) -> tuple[dict, dict, dict, dict, dict]:
    """Asserts the protocol-independent shape of an A -> B -> C trace whose pools were warmed (so A's call
    to B, at ``b_address``, reused a connection); returns (a_in, a_out, b_in, b_out, c_in)."""
    a_in, a_out = span_of(trace, "a", "SERVER"), span_of(trace, "a", "CLIENT")
    b_in, b_out = span_of(trace, "b", "SERVER"), span_of(trace, "b", "CLIENT")
    c_in = span_of(trace, "c", "SERVER")
    assert a_out["parentSpanId"] == a_in["spanId"]  # the app forwarded the context it was given
    assert b_in["parentSpanId"] == a_out["spanId"]  # the outbound proxy rewrote the parent
    assert b_out["parentSpanId"] == b_in["spanId"]
    assert c_in["parentSpanId"] == b_out["spanId"]

    for span in (a_in, a_out, b_in, b_out, c_in):
        attributes = span["attributes"]
        for name in TIMING:
            assert name in attributes, f"{span['service']} {span['kind']} lacks {name}"
        assert 0 < attributes["tracemesh.first_byte_ns"] <= int(span["durationNano"])
    assert a_out["attributes"]["peer.service"] == "b" and b_out["attributes"]["peer.service"] == "c"
    assert a_out["attributes"]["tracemesh.endpoint"] == b_address
    assert a_out["attributes"]["tracemesh.connection_reused"] is True

    for client, server in ((a_out, b_in), (b_out, c_in), (a_in, a_out), (b_in, b_out)):
        # An enclosing span starts no later and lasts no shorter than the span it encloses.
        assert int(client["startTimeUnixNano"]) <= int(server["startTimeUnixNano"])
        assert int(client["durationNano"]) >= int(server["durationNano"])
    return a_in, a_out, b_in, b_out, c_in
