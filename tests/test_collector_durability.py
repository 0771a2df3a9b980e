"""Nothing acknowledged is lost: not by ``kill -9`` of the collector, not by a ClickHouse outage.

A client sends numbered OTLP/gRPC requests (one trace of ``SPANS_PER_REQUEST`` spans each) and
remembers which ones were acknowledged; after the failure and the recovery, every acknowledged
trace must be in the store with all its spans.
"""

from __future__ import annotations

import threading
import time

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from tests.support.clickhouse_server import clickhouse_server_url, private_clickhouse_server, store_url  # noqa: F401
from tests.support.collector import collector_for

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_REQUEST = 100


def numbered_request(number: int) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="durable")))
    spans = resource_spans.scope_spans.add().spans
    start = time.time_ns()
    for index in range(SPANS_PER_REQUEST):
        span = spans.add(trace_id=trace_id_of(number), span_id=(index + 1).to_bytes(8, "big"), name=f"op-{index}")
        span.start_time_unix_nano, span.end_time_unix_nano = start, start + 1000 + index
        span.attributes.append(KeyValue(key="request", value=AnyValue(int_value=number)))
    return request.SerializeToString()


def trace_id_of(number: int) -> bytes:
    return (0xD0 << 120 | number).to_bytes(16, "big")


class NumberedSender:
    """Sends request 0, 1, 2, ... in a thread until stopped; ``acked`` holds the acknowledged numbers."""

    def __init__(self, address: str):
        self.address = address
        self.acked: list[int] = []
        self.refused: list[grpc.StatusCode] = []
        self._stop = threading.Event()
        self._sending = threading.Event()
        self._sending.set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join(30)

    def wait_acked(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            assert time.monotonic() < deadline, f"only {len(self.acked)} of {count} requests acknowledged"
            time.sleep(0.01)

    def pause(self) -> None:
        self._sending.clear()
        time.sleep(0.2)  # let the request in flight finish

    def resume(self) -> None:
        self._sending.set()

    def wait_refused(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.refused:
            assert time.monotonic() < deadline, "never refused"
            time.sleep(0.01)

    def _run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            export = channel.unary_unary(EXPORT_METHOD)
            number = 0
            while not self._stop.is_set() and number < 5000:
                if not self._sending.wait(0.1):
                    continue
                try:
                    export(numbered_request(number), timeout=5)
                    self.acked.append(number)
                except grpc.RpcError as error:
                    self.refused.append(error.code())
                    time.sleep(0.02)
                number += 1


def wait_spool_drained(collector, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while (state := collector.ready())["spool_bytes"]:
        assert time.monotonic() < deadline, f"spool not drained: {state}"
        time.sleep(0.1)


def assert_all_stored(collector, numbers: list[int]) -> None:
    expected = {f"{index + 1:016x}" for index in range(SPANS_PER_REQUEST)}
    for number in numbers:
        trace = collector.trace(trace_id_of(number).hex())
        assert {span["spanId"] for span in trace["spans"]} == expected, f"request {number}"


def test_kill_9_during_ingest_loses_no_acknowledged_span(tmp_path, store_url):  # noqa: F811
    # A long batch delay keeps the newest acknowledged spans only in the spool when the kill lands.
    collector = collector_for(tmp_path, store_url, "--batch-delay", "3")
    collector.start()
    with NumberedSender(collector.grpc_address) as sender:
        sender.wait_acked(20)
        time.sleep(0.5)
        state = collector.ready()
        collector.kill9()
        acked = list(sender.acked)
    assert state["inserted_rows"] < state["accepted_spans"], "the kill should land while spans wait in the spool"
    assert acked, "the client got acknowledgements"

    collector.extra_args = ()
    collector.start()
    try:
        wait_spool_drained(collector)
        assert_all_stored(collector, acked)
    finally:
        collector.stop()


def test_clickhouse_outage_loses_no_acknowledged_span_and_fills_the_spool_into_back_pressure(
    tmp_path, private_clickhouse_server  # noqa: F811
):
    collector = collector_for(tmp_path, private_clickhouse_server.url, "--spool-max-bytes", "4m").start()
    try:
        with NumberedSender(collector.grpc_address) as sender:
            sender.wait_acked(5)
            sender.pause()
            private_clickhouse_server.stop()
            before_outage = len(sender.acked)
            sender.resume()
            sender.wait_refused()  # the spool reached its limit: RESOURCE_EXHAUSTED, not a silent drop
        assert set(sender.refused) == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert len(sender.acked) > before_outage, "requests kept being acknowledged while ClickHouse was down"
        assert collector.ready()["store_available"] is False

        private_clickhouse_server.start()
        wait_spool_drained(collector)
        assert_all_stored(collector, sender.acked)
    finally:
        collector.stop()
