"""gRPC through Tracemesh proxies: real grpcio clients and servers, real proxy listeners on 127.0.0.1.

Most calls take a full hop, client -> outbound proxy -> inbound proxy -> app, so both sides of the
relay (and both span kinds) are exercised by every behaviour a proxy must pass through unchanged. The
proxies run in a thread of the test process (tests/support/grpc_proxy.py) so the span tuples they record
are read back directly; test_proxy_grpc_chain.py runs real `tracemesh proxy` processes and a collector.
"""

from __future__ import annotations

import sys
import threading
import time

import grpc
import pytest

from mesh.destination import DestinationPolicy
from spans import conventions as attr
from spans.model import KIND_CLIENT, KIND_SERVER, STATUS_ERROR
from spans.otlp_encode import encode_spans
from tests.support.grpc_apps import CHANNEL_OPTIONS, EchoApp, method
from tests.support.grpc_proxy import ProxyLoop, write_endpoints
from tests.support.processes import ManagedProcess, free_port, wait_for_port

pytestmark = pytest.mark.timeout(60)

NON_ASCII_MESSAGE = "prüfung fehlgeschlagen: 100% ✗ — 日本語\nzweite Zeile"


@pytest.fixture(scope="module")
def app():
    server = EchoApp()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxies():
    loop = ProxyLoop()
    yield loop
    loop.stop()


@pytest.fixture(scope="module")
def hop(app, proxies, tmp_path_factory):
    """Outbound proxy (service "client") -> inbound proxy (service "echo") -> app."""
    inbound, inbound_spans = proxies.inbound("echo", app.address)
    endpoints = write_endpoints(tmp_path_factory.mktemp("hop") / "endpoints.toml", {"echo": [inbound]})
    outbound, outbound_spans = proxies.outbound("client", endpoints)
    return {"outbound": outbound, "inbound": inbound, "outbound_spans": outbound_spans, "inbound_spans": inbound_spans,
            "endpoints": endpoints}


@pytest.fixture()
def channel(hop):
    """A client channel to the outbound proxy naming the "echo" service in :authority."""
    hop["outbound_spans"].take(len(hop["outbound_spans"]))
    hop["inbound_spans"].take(len(hop["inbound_spans"]))
    ch = grpc.insecure_channel(hop["outbound"], options=CHANNEL_OPTIONS + [("grpc.default_authority", "echo")])
    yield ch
    ch.close()


def trailers(error_or_call) -> dict[str, str | bytes]:
    return dict(error_or_call.trailing_metadata() or ())


def wait_for_spans(capture, count: int, timeout: float = 5.0) -> list[tuple]:
    """The spans a proxy recorded (at least ``count`` unless time ran out), each checked to be a record
    the real recorder can encode."""
    spans: list[tuple] = []
    deadline = time.monotonic() + timeout
    while len(spans) < count and time.monotonic() < deadline:
        spans += capture.take(1000)
        time.sleep(0.01)
    assert encode_spans(spans)[1] == [], spans
    return spans


def attributes(span) -> dict:
    return dict(span[9])


# ---- the four call kinds, metadata and trailers ---------------------------------------------

def test_unary_passes_metadata_and_trailers_both_ways(channel):
    metadata = [("x-tenant", "acme"), ("x-blob-bin", b"\x00\xffbinary")]
    response, call = channel.unary_unary(method("Unary")).with_call(b"hello", metadata=metadata, timeout=5)
    assert response == b"hello"
    assert dict(call.initial_metadata())["x-tenant"] == "acme"
    assert dict(call.initial_metadata())["x-blob-bin"] == b"\x00\xffbinary"
    assert trailers(call)["x-tenant-trailer"] == "acme"
    assert trailers(call)["x-blob-trailer-bin"] == b"\x00\xffbinary"


def test_client_streaming(channel):
    requests = [b"a" * size for size in (1, 100, 70_000, 0, 5)]
    response, call = channel.stream_unary(method("ClientStream")).with_call(iter(requests), metadata=[("x-k", "v")], timeout=5)
    assert response == f"{len(requests)}:{sum(map(len, requests))}".encode()
    assert trailers(call)["x-k-trailer"] == "v"


def test_server_streaming(channel):
    responses = list(channel.unary_stream(method("ServerStream"))(b"50:1000", timeout=5))
    assert responses == [bytes([index]) * 1000 for index in range(50)]


def test_bidi_streaming_interleaves_requests_and_responses(channel):
    """Each response arrives before the next request is sent: nothing is held back by the proxy."""
    sent: list[bytes] = []
    answered = threading.Event()

    def requests():
        for index in range(20):
            message = f"message-{index}".encode()
            sent.append(message)
            yield message
            assert answered.wait(5), "the proxy held a response back"
            answered.clear()

    received = []
    for response in channel.stream_stream(method("Bidi"))(requests(), timeout=10):
        received.append(response)
        answered.set()
    assert received == [message[::-1] for message in sent]


# ---- statuses ------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [code for code in grpc.StatusCode if code != grpc.StatusCode.OK], ids=lambda c: c.name)
def test_every_status_code_and_a_non_ascii_message_pass_through(channel, code):
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(method("Fail"))(f"{code.value[0]}|{NON_ASCII_MESSAGE}".encode(), timeout=5)
    assert raised.value.code() == code
    assert raised.value.details() == NON_ASCII_MESSAGE
    assert trailers(raised.value)["x-failed"] == str(code.value[0])


def test_failed_call_spans_carry_the_status(channel, hop):
    with pytest.raises(grpc.RpcError):
        channel.unary_unary(method("Fail"))(f"5|{NON_ASCII_MESSAGE}".encode(), timeout=5)
    client = wait_for_spans(hop["outbound_spans"], 1)[0]
    server = wait_for_spans(hop["inbound_spans"], 1)[0]
    for span in (client, server):
        assert span[7] == STATUS_ERROR and span[8] == NON_ASCII_MESSAGE
        assert attributes(span)[attr.RPC_GRPC_STATUS] == 5


@pytest.mark.parametrize("path", ["/tracemesh.test.Echo/NoSuchMethod", "/no.such.Service/Method"])
def test_unimplemented_method_or_service_passes_through(channel, path):
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(path)(b"x", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert attr.PROXY_ERROR_HEADER not in trailers(raised.value)


# ---- big messages and many streams -----------------------------------------------------------

def test_4_mib_messages_both_ways(channel):
    big = bytes(range(256)) * (4 * 1024 * 1024 // 256) + b"tail"
    assert channel.unary_unary(method("Big"))(big, timeout=20) == big[::-1]
    streamed = list(channel.unary_stream(method("ServerStream"))(b"2:4194305", timeout=20))
    assert [len(message) for message in streamed] == [4194305, 4194305]
    response = channel.stream_unary(method("ClientStream"))(iter([big, big]), timeout=20)
    assert response == f"2:{2 * len(big)}".encode()


def test_concurrent_big_messages_share_the_connection_windows(channel):
    """More bytes in flight than any connection window: streams wait for credit, none is starved."""
    big = channel.unary_unary(method("Big"))
    messages = [bytes([index]) * (3 * 1024 * 1024) for index in range(8)]
    futures = [big.future(message, timeout=30) for message in messages]
    assert [future.result() for future in futures] == messages  # each is its own reverse: one byte value


def test_concurrent_calls_share_one_upstream_connection(channel, proxies, hop):
    unary = channel.unary_unary(method("Unary"))
    futures = [unary.future(f"call-{index}".encode(), timeout=10) for index in range(200)]
    assert [future.result() for future in futures] == [f"call-{index}".encode() for index in range(200)]
    outbound = next(listener for listener in proxies.listeners if listener.address == hop["outbound"])
    assert [len(conns) for conns in outbound.grpc.pool._connections.values()] == [1]


# ---- deadlines and cancellation --------------------------------------------------------------

def test_deadline_expires_through_the_proxy_and_the_server_sees_it(channel, app):
    app.cancelled_event.clear()
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(method("Sleep"))(b"10", timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 3
    assert app.cancelled_event.wait(5), "the server never learned the call was over"
    assert 0 < app.sleep_deadlines[-1] < 0.6, "grpc-timeout must reach the server"


def test_client_cancellation_reaches_the_server(channel, app, hop):
    app.cancelled_event.clear()
    future = channel.unary_unary(method("Sleep")).future(b"10", timeout=30)
    time.sleep(0.5)
    assert future.cancel()
    assert app.cancelled_event.wait(5), "cancellation did not reach the server"
    client = wait_for_spans(hop["outbound_spans"], 1)[0]
    assert attributes(client)[attr.RPC_GRPC_STATUS] == grpc.StatusCode.CANCELLED.value[0]


def test_upstream_dying_mid_call_is_unavailable_with_the_proxy_error(proxies, tmp_path):
    port = free_port()
    app_process = ManagedProcess([sys.executable, "-m", "tests.support.grpc_apps", str(port)], tmp_path / "app.log")
    try:
        wait_for_port(port, process=app_process.popen)
        inbound, spans = proxies.inbound("doomed", f"127.0.0.1:{port}")
        with grpc.insecure_channel(inbound) as ch:
            call = ch.unary_unary(method("Sleep")).future(b"10", timeout=10)
            time.sleep(0.5)
            app_process.kill9()
            with pytest.raises(grpc.RpcError) as raised:
                call.result()
    finally:
        app_process.stop()
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(raised.value)[attr.PROXY_ERROR_HEADER] == "connection_lost"
    assert attributes(wait_for_spans(spans, 1)[0])[attr.PROXY_ERROR] == "connection_lost"


def test_proxy_stopping_lets_calls_in_flight_finish(proxies, app):
    inbound, _spans = proxies.inbound("echo", app.address)
    listener = next(listener for listener in proxies.listeners if listener.address == inbound)
    with grpc.insecure_channel(inbound) as ch:
        ch.unary_unary(method("Unary"))(b"connected", timeout=5)
        call = ch.unary_unary(method("Sleep")).future(b"0.5", timeout=10)
        time.sleep(0.2)
        assert listener.grpc.busy
        proxies.run(listener.stop(5.0))
        assert call.result() == b"slept"
    assert not listener.grpc.busy


# ---- the proxy's own answers -------------------------------------------------------------------

def test_unknown_destination_is_unavailable_with_the_proxy_error(hop):
    with grpc.insecure_channel(hop["outbound"], options=[("grpc.default_authority", "nobody")]) as ch:
        with pytest.raises(grpc.RpcError) as raised:
            ch.unary_unary(method("Unary"))(b"x", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(raised.value)[attr.PROXY_ERROR_HEADER] == "unknown_destination"


def test_overload_is_shed_at_once_with_unavailable(proxies, hop, tmp_path):
    policy = DestinationPolicy(max_in_flight=1, max_queue=0)
    outbound, spans = proxies.outbound("client", hop["endpoints"], route_to="echo", policy=policy)
    with grpc.insecure_channel(outbound) as ch:
        slow = ch.unary_unary(method("Sleep")).future(b"1", timeout=10)
        time.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            ch.unary_unary(method("Unary"))(b"x", timeout=5)
        assert time.monotonic() - started < 0.5
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert trailers(raised.value)[attr.PROXY_ERROR_HEADER] == "queue_full"
        assert slow.result() == b"slept"


def test_destination_timeout_answers_deadline_exceeded(proxies, hop):
    policy = DestinationPolicy(timeout_s=0.3)
    outbound, spans = proxies.outbound("client", hop["endpoints"], route_to="echo", policy=policy)
    with grpc.insecure_channel(outbound) as ch:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            ch.unary_unary(method("Sleep"))(b"5", timeout=10)
        assert time.monotonic() - started < 2
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert trailers(raised.value)[attr.PROXY_ERROR_HEADER] == "timeout"
    span = wait_for_spans(spans, 1)[0]
    assert attributes(span)[attr.PROXY_ERROR] == "timeout"


# ---- retries -----------------------------------------------------------------------------------

def test_retryable_status_is_retried_and_succeeds(channel, hop, app):
    before = app.calls.get("Flaky", 0)
    assert channel.unary_unary(method("Flaky"))(b"flaky-1", timeout=5) == b"flaky-1"
    assert app.calls["Flaky"] - before == 2
    client = wait_for_spans(hop["outbound_spans"], 1)[0]
    assert attributes(client)[attr.RETRIES] == 1
    assert attributes(client)[attr.RETRY_DELAY_NS] > 0


def test_non_retryable_status_is_not_retried(channel, app):
    before = app.calls.get("Fail", 0)
    with pytest.raises(grpc.RpcError):
        channel.unary_unary(method("Fail"))(b"13|internal", timeout=5)
    assert app.calls["Fail"] - before == 1


def test_refused_endpoint_is_retried_on_another(proxies, app, tmp_path):
    inbound, _ = proxies.inbound("echo", app.address)
    dead = f"127.0.0.1:{free_port()}"
    endpoints = write_endpoints(tmp_path / "endpoints.toml", {"echo": [dead, inbound]})
    outbound, spans = proxies.outbound("client", endpoints, route_to="echo")
    with grpc.insecure_channel(outbound) as ch:
        for index in range(10):
            assert ch.unary_unary(method("Unary"))(f"{index}".encode(), timeout=5) == f"{index}".encode()
            # A streamed request waits in the proxy while it connects, then goes out whole.
            assert ch.stream_unary(method("ClientStream"))(iter([b"ab", b"cde"]), timeout=5) == b"2:5"
    recorded = wait_for_spans(spans, 20)
    assert {attributes(span)[attr.ENDPOINT] for span in recorded} == {inbound}
    assert any(attributes(span)[attr.RETRIES] for span in recorded), "the dead endpoint was never tried"


# ---- tracing -----------------------------------------------------------------------------------

def test_one_hop_gives_a_client_and_a_server_span_in_one_trace(channel, hop):
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    metadata = [("traceparent", f"00-{caller_trace}-{caller_span}-01")]
    channel.unary_unary(method("Unary"))(b"traced", metadata=metadata, timeout=5)
    client = wait_for_spans(hop["outbound_spans"], 1)[0]
    server = wait_for_spans(hop["inbound_spans"], 1)[0]
    assert client[0] == server[0] == caller_trace
    assert client[2] == caller_span and server[2] == client[1]
    assert (client[4], server[4]) == (KIND_CLIENT, KIND_SERVER)
    assert client[3] == server[3] == "tracemesh.test.Echo/Unary"
    client_attributes, server_attributes = attributes(client), attributes(server)
    for span_attributes in (client_attributes, server_attributes):
        assert span_attributes[attr.RPC_SYSTEM] == "grpc"
        assert span_attributes[attr.RPC_SERVICE] == "tracemesh.test.Echo"
        assert span_attributes[attr.RPC_METHOD] == "Unary"
        assert span_attributes[attr.RPC_GRPC_STATUS] == 0
        assert span_attributes[attr.FIRST_BYTE_NS] > 0 and span_attributes[attr.BODY_NS] >= 0
        assert attr.CONNECT_NS in span_attributes and attr.QUEUE_NS in span_attributes
    assert client_attributes[attr.PEER_SERVICE] == "echo"
    assert client_attributes[attr.ENDPOINT] == hop["inbound"]
    assert client[6] >= server[6]


def test_trace_is_started_when_the_caller_sends_none(channel, hop, app):
    channel.unary_unary(method("Unary"))(b"untraced", timeout=5)
    client = wait_for_spans(hop["outbound_spans"], 1)[0]
    server = wait_for_spans(hop["inbound_spans"], 1)[0]
    assert client[2] == "" and server[0] == client[0] and server[2] == client[1]
    assert app.seen_metadata[-1]["traceparent"] == f"00-{server[0]}-{server[1]}-01"


def test_unsampled_trace_is_propagated_but_not_recorded(channel, hop, app):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    channel.unary_unary(method("Unary"))(b"quiet", metadata=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-00")], timeout=5)
    forwarded = app.seen_metadata[-1]["traceparent"]
    assert forwarded.startswith(f"00-{trace_id}-") and forwarded.endswith("-00")
    channel.unary_unary(method("Unary"))(b"sampled", timeout=5)  # recorded after the unsampled call, if it were
    recorded = wait_for_spans(hop["outbound_spans"], 1) + wait_for_spans(hop["inbound_spans"], 1)
    assert len(recorded) == 2 and trace_id not in {span[0] for span in recorded}


def test_tracestate_and_b3_are_continued_and_rewritten(channel, hop, app):
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    metadata = [("traceparent", f"00-{trace_id}-{caller_span}-01"), ("tracestate", "vendor=opaque"),
                ("b3", f"{trace_id}-{caller_span}-1")]
    channel.unary_unary(method("Unary"))(b"b3", metadata=metadata, timeout=5)
    client = wait_for_spans(hop["outbound_spans"], 1)[0]
    server = wait_for_spans(hop["inbound_spans"], 1)[0]
    assert (client[0], client[2]) == (trace_id, caller_span) and (server[0], server[2]) == (trace_id, client[1])
    seen = app.seen_metadata[-1]
    assert seen["traceparent"] == f"00-{trace_id}-{server[1]}-01"
    assert seen["tracestate"] == "vendor=opaque"
    assert seen["b3"] == f"{trace_id}-{server[1]}-1-{client[1]}"


def test_malformed_traceparent_starts_a_new_trace(channel, hop, app):
    channel.unary_unary(method("Unary"))(b"bad", metadata=[("traceparent", "00-not-a-trace-01")], timeout=5)
    client = wait_for_spans(hop["outbound_spans"], 1)[0]
    server = wait_for_spans(hop["inbound_spans"], 1)[0]
    assert client[2] == "" and len(client[0]) == 32 and server[0] == client[0]
    assert app.seen_metadata[-1]["traceparent"] == f"00-{server[0]}-{server[1]}-01"


def test_finished_calls_are_freed_without_the_garbage_collector(channel, hop):
    """A call and its streams refer to each other while it runs; once it is over nothing may keep such a
    cycle, or every call waits for a collection (measured: ~5% of a relayed call's instructions)."""
    import gc

    from mesh.grpc import GrpcCall

    def calls_alive() -> int:
        return sum(1 for obj in gc.get_objects() if type(obj) is GrpcCall)

    unary = channel.unary_unary(method("Unary"))
    unary(b"warm", timeout=5)
    gc.collect()
    before = calls_alive()
    gc.disable()
    try:
        for n in range(20):
            unary(b"x" * n, timeout=5)
        with pytest.raises(grpc.RpcError):
            channel.unary_unary(method("Fail"))(b"5|gone", timeout=5)
        wait_for_spans(hop["inbound_spans"], 21)
        alive = calls_alive()
    finally:
        gc.enable()
    assert alive == before
