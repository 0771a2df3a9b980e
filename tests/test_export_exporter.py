"""Span export against real OTLP receivers on 127.0.0.1, over gRPC and over HTTP: spans arrive in
batches with the proxy's resource, and a collector that is down, refusing or stalled never blocks
recording, never grows memory past the buffer, and every lost span is counted."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import ScopeSpans

from mesh.export import (
    SCOPE_NAME,
    GrpcTransport,
    HttpTransport,
    OtlpExporter,
    SpanRecorder,
    proxy_resource,
    transport_for,
)
from spans import conventions, model
from tests.support.processes import REPO_ROOT, free_port
from tests.support.trace_sink import PERMANENT, RETRYABLE, GrpcTraceSink, HttpTraceSink, loop_in_thread, wait_until

SINKS = {"grpc": GrpcTraceSink, "http": HttpTraceSink}


def span(n: int):
    return (
        "%032x" % (n + 1),
        "%016x" % (n + 1),
        "",
        "GET",
        model.KIND_CLIENT,
        1_763_000_000_000_000_000 + n,
        1000 + n,
        model.STATUS_UNSET,
        "",
        ((conventions.HTTP_METHOD, "GET"), (conventions.HTTP_STATUS, 200), (conventions.QUEUE_NS, n)),
    )


@pytest.fixture(params=sorted(SINKS))
def sink_class(request):
    return SINKS[request.param]


@pytest.fixture
def sink(sink_class):
    server = sink_class()
    yield server
    server.stop()


def record_on(loop, recorder: SpanRecorder, spans) -> None:
    """Records ``spans`` on the exporter's event loop, as a proxy's data path does (a recorder is not
    shared between threads)."""

    async def record_all():
        for record in spans:
            recorder.record(record)

    asyncio.run_coroutine_threadsafe(record_all(), loop).result(30)


@pytest.fixture
def loop():
    with loop_in_thread() as running:
        yield running


@pytest.fixture
def record(loop):
    return functools.partial(record_on, loop)


@pytest.fixture
def exporters(loop):
    """Builds exporters with test-friendly timings and always stops them."""
    started = []

    def build(recorder, address, **options):
        settings = dict(interval_s=0.1, timeout_s=0.5, retry_backoff_s=0.02, max_pause_s=0.3)
        exporter = OtlpExporter(recorder, address, proxy_resource("checkout", "checkout-1"), **{**settings, **options})
        exporter.start(loop)
        started.append(exporter)
        return exporter

    yield build
    for exporter in started:
        exporter.stop(flush_timeout=1.0)


def accounted(recorder: SpanRecorder, exporter: OtlpExporter) -> int:
    return exporter.exported + exporter.failed + recorder.dropped + len(recorder)


def taken_span_ids(recorder: SpanRecorder) -> tuple[list[int], int]:
    """The n of each span(n) in the recorder's next batch, and the count it reports."""
    span_fields, count = recorder.take()
    return [int(s.span_id.hex(), 16) - 1 for s in ScopeSpans.FromString(bytes(span_fields)).spans], count


def test_recorder_keeps_order_in_batches_and_counts_what_does_not_fit():
    recorder = SpanRecorder(capacity=5, batch_size=2)
    for n in range(7):
        recorder.record(span(n))
    assert (len(recorder), recorder.dropped, recorder.full_batch_waiting) == (5, 2, True)
    assert taken_span_ids(recorder) == ([0, 1], 2)
    assert taken_span_ids(recorder) == ([2, 3], 2)
    assert not recorder.full_batch_waiting
    assert taken_span_ids(recorder) == ([4], 1)
    assert taken_span_ids(recorder) == ([], 0)
    assert len(recorder) == 0
    for bad in ({"capacity": -1}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            SpanRecorder(**bad)


def test_a_framed_batch_is_filled_again_and_new_batches_start_with_room_for_the_largest():
    recorder = SpanRecorder(capacity=10, batch_size=4)
    for n in range(4):
        recorder.record(span(n))
    first, count = recorder.take()
    size, first_bytes = len(first), bytes(first)
    assert count == 4 and ScopeSpans.FromString(first_bytes).spans[3].span_id.hex() == "%016x" % 4
    recorder.recycle(first)  # as the exporter does once a batch is framed
    assert len(first) == 0 and first.capacity >= size
    for n in range(4, 12):
        recorder.record(span(n))
    assert (len(recorder), recorder.dropped) == (8, 0)
    second, _ = recorder.take()  # made while no framed batch was back: with room for a full one from the start
    assert second is not first and second.capacity == size == len(second)
    third, _ = recorder.take()  # the first batch's memory, filled again
    assert third is first and len(third) == size
    recorder.record(span(12))
    assert taken_span_ids(recorder) == ([12], 1)
    assert ScopeSpans.FromString(bytes(third)).spans[0].span_id.hex() == "%016x" % 9


def test_a_malformed_record_is_not_kept_and_is_counted():
    recorder = SpanRecorder()
    recorder.record(("not-hex", *span(1)[1:]))
    recorder.record(span(2))
    assert (len(recorder), recorder.malformed, recorder.dropped) == (1, 1, 0)
    assert taken_span_ids(recorder) == ([2], 1)


def test_a_recorder_without_capacity_keeps_nothing_and_counts_everything():
    recorder = SpanRecorder(capacity=0)  # a proxy with no collector configured
    for n in range(100):
        recorder.record(span(n))
    assert (len(recorder), recorder.dropped) == (0, 100)


def test_spans_arrive_in_batches_with_the_proxy_resource_and_scope(sink, exporters, record):
    recorder = SpanRecorder()
    exporter = exporters(recorder, sink.address, batch_size=100)
    record(recorder, (span(n) for n in range(250)))

    assert wait_until(lambda: exporter.exported == 250)
    received = sink.spans()
    assert sorted(int(s.span_id.hex(), 16) - 1 for s in received) == list(range(250))
    assert max(len(r.resource_spans[0].scope_spans[0].spans) for r in sink.requests) == 100
    request = sink.requests[0]
    resource = {kv.key: kv.value for kv in request.resource_spans[0].resource.attributes}
    assert resource[conventions.SERVICE_NAME].string_value == "checkout"
    assert resource[conventions.SERVICE_INSTANCE_ID].string_value == "checkout-1"
    assert resource[conventions.PROXY_RESOURCE].bool_value is True
    assert request.resource_spans[0].scope_spans[0].scope.name == SCOPE_NAME
    assert exporter.failed == 0 and recorder.dropped == 0


def test_a_partial_batch_goes_out_after_the_interval(sink, exporters, record):
    recorder = SpanRecorder()
    exporter = exporters(recorder, sink.address, batch_size=512, interval_s=0.2)
    record(recorder, [span(1)])
    assert wait_until(lambda: exporter.exported == 1, timeout=5)


def test_collector_down_then_up_recording_stays_bounded_and_export_resumes(sink_class, exporters, record):
    port = free_port()
    recorder = SpanRecorder(capacity=200)
    address = f"http://127.0.0.1:{port}" if sink_class is HttpTraceSink else f"127.0.0.1:{port}"
    exporter = exporters(recorder, address, batch_size=50)

    record(recorder, (span(n) for n in range(5000)))  # far more than the buffer holds, with no collector listening
    assert len(recorder) <= recorder.capacity
    assert recorder.dropped > 0
    assert wait_until(lambda: exporter.failed > 0, timeout=5)
    assert exporter.exported == 0
    assert wait_until(lambda: accounted(recorder, exporter) == 5000)  # once no batch is in flight

    sink = sink_class(port)  # the collector comes (back) up on the same address
    try:
        record(recorder, (span(n) for n in range(5000, 5100)))
        assert wait_until(lambda: len(sink.spans()) >= 100, timeout=15)
        assert wait_until(lambda: len(recorder) == 0, timeout=5)
        assert exporter.exported == len(sink.spans())
        assert wait_until(lambda: accounted(recorder, exporter) == 5100)
    finally:
        sink.stop()


def test_collector_killed_mid_stream_loses_only_counted_spans(sink, exporters, record):
    recorder = SpanRecorder(capacity=500)
    exporter = exporters(recorder, sink.address, batch_size=50)
    record(recorder, (span(n) for n in range(100)))
    assert wait_until(lambda: exporter.exported == 100)

    sink.stop()
    record(recorder, (span(n) for n in range(100, 3100)))
    assert wait_until(lambda: exporter.failed > 0, timeout=10)
    assert len(recorder) <= recorder.capacity
    assert exporter.exported == 100
    assert wait_until(lambda: accounted(recorder, exporter) == 3100)


def test_push_back_is_retried_a_bounded_number_of_times_then_counted(sink, exporters, record):
    sink.refuse = RETRYABLE  # RESOURCE_EXHAUSTED / HTTP 503
    recorder = SpanRecorder()
    exporter = exporters(recorder, sink.address, batch_size=10, max_attempts=3, max_pause_s=30.0)
    record(recorder, (span(n) for n in range(10)))

    assert wait_until(lambda: exporter.failed == 10)
    assert exporter.batches_failed == 1
    assert sink.calls == 3  # the first try and two retries; then a long pause, no hammering
    assert exporter.exported == 0


def test_a_non_retryable_status_drops_the_batch_at_once(sink, exporters, record):
    sink.refuse = PERMANENT  # INVALID_ARGUMENT / HTTP 400
    recorder = SpanRecorder()
    exporter = exporters(recorder, sink.address, batch_size=5, max_attempts=3)
    record(recorder, (span(n) for n in range(5)))
    assert wait_until(lambda: exporter.failed == 5)
    assert sink.calls == 1


def test_a_stalled_collector_times_out_while_recording_goes_on(sink, exporters, record):
    sink.delay_s = 1.0
    recorder = SpanRecorder(capacity=100)
    exporter = exporters(recorder, sink.address, batch_size=10, timeout_s=0.2, max_attempts=1)
    record(recorder, (span(n) for n in range(1000)))
    assert recorder.dropped >= 1000 - 100 - 10
    assert wait_until(lambda: exporter.failed >= 10, timeout=5)
    assert exporter.exported == 0


def test_spans_the_collector_rejects_count_as_failed(sink, exporters, record):
    sink.reject_spans = 2
    recorder = SpanRecorder()
    exporter = exporters(recorder, sink.address, batch_size=10)
    record(recorder, (span(n) for n in range(10)))
    assert wait_until(lambda: exporter.exported + exporter.failed == 10)
    assert (exporter.exported, exporter.failed) == (8, 2)


def test_collector_address_picks_the_transport():
    grpc_transport = transport_for("127.0.0.1:4317")
    assert isinstance(grpc_transport, GrpcTransport)
    grpc_transport.close()
    assert isinstance(transport_for("http://127.0.0.1:4318"), HttpTransport)
    with pytest.raises(ValueError, match="not http://HOST:PORT"):
        transport_for("https://collector:4318")


def test_exporting_over_http_loads_neither_grpcio_nor_protobuf():
    """grpcio and the protobuf runtime cost the proxy 10 + 3 MB of RSS; OTLP/HTTP export works without."""
    sink = HttpTraceSink()
    script = f"""
import sys
from mesh.admin import AdminServer
from mesh.export import OtlpExporter, SpanRecorder, proxy_resource
from mesh.metrics import ProxyMetrics
import asyncio, threading
loop = asyncio.new_event_loop()
threading.Thread(target=loop.run_forever, daemon=True).start()
recorder = SpanRecorder()
exporter = OtlpExporter(recorder, "{sink.address}", proxy_resource("checkout"))
exporter.start(loop)
loop.call_soon_threadsafe(recorder.record, ("%032x" % 1, "%016x" % 1, "", "GET", 2, 1, 1, 0, "", ()))
exporter.stop(flush_timeout=5)
assert exporter.exported == 1, (exporter.exported, exporter.failed)
assert "grpc" not in sys.modules, "grpcio was imported"
assert "google.protobuf" not in sys.modules, "the protobuf runtime was imported"
"""
    try:
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert len(sink.spans()) == 1
    finally:
        sink.stop()


def test_stop_flushes_what_is_buffered(sink):
    recorder = SpanRecorder()
    exporter = OtlpExporter(recorder, sink.address, proxy_resource("checkout"), interval_s=60.0)
    with loop_in_thread() as loop:
        exporter.start(loop)
        record_on(loop, recorder, (span(n) for n in range(700)))
        exporter.stop(flush_timeout=5.0)
    assert exporter.exported == 700
    assert len(sink.spans()) == 700


class _Unprintable:
    def __str__(self):
        raise RuntimeError("no text")


HOSTILE = {
    7: lambda good: ("not-hex", *good[1:]),
    20: lambda good: None,
    33: lambda good: good[:9],
    50: lambda good: (*good[:9], (("k", _Unprintable()),)),
    64: lambda good: (*good[:6], -1, *good[7:]),
    99: lambda good: (*good[:9], ((b"key", "v"),)),
}


def test_malformed_records_cost_only_themselves_and_are_counted_and_logged(sink, exporters, record, caplog):
    recorder = SpanRecorder()
    exporter = exporters(recorder, sink.address, batch_size=100)
    record(recorder, (HOSTILE[n](span(n)) if n in HOSTILE else span(n) for n in range(100)))
    assert wait_until(lambda: exporter.exported == 100 - len(HOSTILE))
    assert (exporter.failed, exporter.malformed) == (len(HOSTILE), len(HOSTILE))
    received = {int(s.span_id.hex(), 16) - 1 for s in sink.spans()}  # span(n) has span id n + 1
    assert received == set(range(100)) - set(HOSTILE)
    assert "1 malformed span records so far, the latest: trace_id must be 32 hex digits, got 'not-hex'" in caplog.text


def test_stop_on_the_event_loop_itself_is_refused_rather_than_deadlocking(sink):
    exporter = OtlpExporter(SpanRecorder(), sink.address, proxy_resource("checkout"))

    async def stop_from_the_loop():
        with pytest.raises(RuntimeError, match="call it off the event loop"):
            exporter.stop(flush_timeout=1.0)

    with loop_in_thread() as loop:
        exporter.start(loop)
        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)  # the exporter's task has begun
        asyncio.run_coroutine_threadsafe(stop_from_the_loop(), loop).result(5)
        exporter.stop(flush_timeout=1.0)
