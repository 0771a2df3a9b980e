"""What span export and metrics cost the proxy: record() and observe_request() per request on the
data path, OTLP encoding per span off it, memory per buffered span, and exporter throughput over
OTLP/gRPC and OTLP/HTTP to local endpoints on 127.0.0.1.

    python bench/export.py [--spans 20000]

Per-call and per-span costs are thread CPU time (best of several runs), so other processes on the
machine disturb them less than wall-clock time would.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.server
import os
import sys
import threading
import time
import tracemalloc
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mesh.export import OtlpExporter, SpanRecorder, proxy_resource  # noqa: E402
from mesh.metrics import ProxyMetrics  # noqa: E402
from spans import conventions as conv  # noqa: E402
from spans import model  # noqa: E402
from spans.otlp_encode import SpanBatchEncoder  # noqa: E402


def proxy_span(n: int) -> tuple:
    """A span shaped like the HTTP/1.1 relay's outbound CLIENT span (15 attributes)."""
    attributes = (
        (conv.HTTP_METHOD, "GET"),
        (conv.URL_PATH, f"/api/items/{n % 50}"),
        (conv.SERVER_ADDRESS, "payments"),
        (conv.DIRECTION, "outbound"),
        (conv.QUEUE_NS, 1_200 + n % 5_000),
        (conv.CONNECT_NS, 0),
        (conv.CONNECTION_REUSED, True),
        (conv.FIRST_BYTE_NS, 180_000 + n % 90_000),
        (conv.BODY_NS, 3_000 + n % 2_000),
        (conv.RETRIES, 0),
        (conv.RETRY_DELAY_NS, 0),
        (conv.ENDPOINT, f"10.0.0.{n % 4}:8080"),
        (conv.ENDPOINT_LOAD, 0.0002 * (n % 100)),
        (conv.HTTP_STATUS, 200),
        (conv.PEER_SERVICE, "payments"),
    )
    return (
        os.urandom(16).hex(), os.urandom(8).hex(), os.urandom(8).hex(), "GET", model.KIND_CLIENT,
        time.time_ns(), 250_000 + n, model.STATUS_UNSET, "", attributes,
    )  # fmt: skip


def per_call_ns(function, argument, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.thread_time_ns()
        for _ in range(calls):
            function(argument)
        best = min(best, (time.thread_time_ns() - start) / calls)
    return best


def library_encode(records) -> bytes:
    """The same request built with the opentelemetry-proto message classes, for comparison."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "tracemesh-proxy"
    for trace_id, span_id, parent, name, kind, start, duration, code, message, attributes in records:
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(trace_id)
        span.span_id = bytes.fromhex(span_id)
        span.parent_span_id = bytes.fromhex(parent)
        span.name = name
        span.kind = kind
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + duration
        for key, value in attributes:
            attribute = span.attributes.add()
            attribute.key = key
            if type(value) is str:
                attribute.value.string_value = value
            elif type(value) is bool:
                attribute.value.bool_value = value
            elif type(value) is int:
                attribute.value.int_value = value
            else:
                attribute.value.double_value = value
    return request.SerializeToString()


def grpc_sink() -> tuple[str, object]:
    """An OTLP/gRPC endpoint that answers without decoding (so CPU measured is the exporter's)."""
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return f"127.0.0.1:{port}", lambda: server.stop(0)


def http_sink() -> tuple[str, object]:
    """An OTLP/HTTP endpoint that answers 200 without decoding."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server.shutdown


def exporter_throughput(address: str, records: list) -> tuple[float, float, int]:
    """Spans/s and CPU µs/span (whole process) to push ``records`` through a started exporter."""
    recorder = SpanRecorder(capacity=len(records))
    exporter = OtlpExporter(recorder, address, proxy_resource("checkout"), interval_s=0.05)
    loop = asyncio.new_event_loop()  # where the exporter encodes: a proxy's data path
    threading.Thread(target=loop.run_forever, daemon=True).start()
    exporter.start(loop)
    cpu_start, start = time.process_time(), time.perf_counter()
    for record in records:
        recorder.record(record)
    while exporter.exported + exporter.failed < len(records) and time.perf_counter() - start < 60:
        time.sleep(0.005)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    exporter.stop(flush_timeout=1.0)
    loop.call_soon_threadsafe(loop.stop)
    return exporter.exported / elapsed, cpu / max(exporter.exported, 1) * 1e6, exporter.failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=20_000, help="spans per measurement (default %(default)s)")
    args = parser.parse_args()
    print("command: python bench/export.py --spans", args.spans)
    records = [proxy_span(n) for n in range(args.spans)]

    recorder = SpanRecorder(capacity=args.spans * 10)
    record_ns = per_call_ns(recorder.record, records[0], args.spans)
    print(f"SpanRecorder.record: {record_ns:.0f} ns CPU/call")

    metrics = ProxyMetrics()
    observe = metrics.observe_request
    observe_ns = per_call_ns(
        lambda seconds: observe("outbound", "payments", "10.0.0.1:8080", 200, "", seconds), 0.0012, args.spans
    )
    print(f"ProxyMetrics.observe_request: {observe_ns:.0f} ns CPU/call")

    encoder = SpanBatchEncoder(proxy_resource("checkout"), "tracemesh-proxy")
    batches = [records[i : i + 512] for i in range(0, len(records), 512)]
    for encode, label in ((encoder.encode, "spans.otlp_encode"), (library_encode, "opentelemetry-proto messages")):
        best = float("inf")
        for _ in range(3):
            start = time.thread_time_ns()
            for batch in batches:
                encode(batch)
            best = min(best, (time.thread_time_ns() - start) / len(records))
        print(f"encode ({label}): {best / 1000:.2f} us CPU/span")
    payload = encoder.encode(batches[0])
    print(f"encoded size: {len(payload) / len(batches[0]):.0f} bytes/span")

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buffered = [proxy_span(n) for n in range(10_000)]
    per_span = (tracemalloc.get_traced_memory()[0] - before) / len(buffered)
    tracemalloc.stop()
    del buffered
    print(f"memory per buffered span: {per_span:.0f} bytes (8192-span buffer: {per_span * 8192 / 2**20:.1f} MiB)")

    for label, make_sink in (("OTLP/gRPC", grpc_sink), ("OTLP/HTTP", http_sink)):
        address, stop_sink = make_sink()
        rate, cpu_us, failed = exporter_throughput(address, records)
        stop_sink()
        print(f"exporter over {label} to a local sink: {rate:,.0f} spans/s, {cpu_us:.1f} us CPU/span, {failed} failed")


if __name__ == "__main__":
    main()
