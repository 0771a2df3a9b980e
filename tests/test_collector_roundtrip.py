"""Real clients into a real ``tracemesh collector``, read back through its query API.

OTel's OTLP exporters (gRPC and HTTP/protobuf) on both stores, py-zipkin, the shared conformance
files over HTTP, malformed payloads on every receiver, request size limits and back-pressure.
"""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import grpc
import orjson
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status as SpanStatus, StatusCode
from py_zipkin import Kind
from py_zipkin.transport import SimpleHTTPTransport
from py_zipkin.zipkin import zipkin_span

from tests.support.clickhouse_server import clickhouse_server_url, store_url  # noqa: F401  (fixtures)
from tests.support.collector import collector_for

CONFORMANCE = Path(__file__).resolve().parents[1].parent / "shared" / "conformance"
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TYPED_ATTRIBUTES = {
    "s": "text",
    "i": 9007199254740993,  # more than a double holds exactly
    "f": 72.5,
    "b": False,
    "strings": ["a", "é"],
    "ints": [1, -2],
    "floats": [0.25],
    "bools": [True],
}
KIND_NAMES = {SpanKind.INTERNAL: "INTERNAL", SpanKind.SERVER: "SERVER", SpanKind.CLIENT: "CLIENT",
              SpanKind.PRODUCER: "PRODUCER", SpanKind.CONSUMER: "CONSUMER"}


@pytest.fixture
def collector(tmp_path, store_url):  # noqa: F811
    running = collector_for(tmp_path, store_url).start()
    yield running
    running.stop()


def export_rich_trace(exporter, service: str) -> list:
    """A server span (typed attributes, event), a client child (error, link), a producer grandchild."""
    recorded = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "replica": 2}))
    provider.add_span_processor(SimpleSpanProcessor(recorded))
    tracer = provider.get_tracer("roundtrip.scope", "3.1", attributes={"scope.ok": True})
    with tracer.start_as_current_span("handle", kind=SpanKind.SERVER, attributes=TYPED_ATTRIBUTES) as server:
        server.add_event("picked", {"queue": "q1", "depth": 4})
        link = Link(server.get_span_context(), {"why": "fan-out"})
        with tracer.start_as_current_span("call", kind=SpanKind.CLIENT, links=[link]) as client:
            client.set_status(SpanStatus(StatusCode.ERROR, "upstream 503"))
            with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER):
                pass
    provider.shutdown()
    spans = recorded.get_finished_spans()
    assert exporter.export(spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    return spans


def plain(attributes) -> dict:
    """SDK attributes as JSON gives them back: sequences are lists."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in attributes.items()}


def assert_stored(api_trace: dict, sdk_spans, service: str) -> None:
    stored = {span["spanId"]: span for span in api_trace["spans"]}
    assert len(stored) == len(sdk_spans)
    for sdk in sdk_spans:
        context = sdk.get_span_context()
        span = stored[f"{context.span_id:016x}"]
        assert span["traceId"] == f"{context.trace_id:032x}"
        assert span["parentSpanId"] == (f"{sdk.parent.span_id:016x}" if sdk.parent else "")
        assert span["name"] == sdk.name and span["kind"] == KIND_NAMES[sdk.kind]
        assert span["service"] == service
        assert int(span["startTimeUnixNano"]) == sdk.start_time
        assert int(span["durationNano"]) == sdk.end_time - sdk.start_time
        assert span["status"] == {"code": sdk.status.status_code.name, "message": sdk.status.description or ""}
        assert span["attributes"] == plain(sdk.attributes)
        assert span["resource"]["attributes"]["replica"] == 2
        assert span["scope"] == {"name": "roundtrip.scope", "version": "3.1", "attributes": {"scope.ok": True}}
        assert [(int(e["timeUnixNano"]), e["name"], e["attributes"]) for e in span["events"]] == [
            (e.timestamp, e.name, plain(e.attributes)) for e in sdk.events
        ]
        assert [(l["traceId"], l["spanId"], l["attributes"]) for l in span["links"]] == [
            (f"{l.context.trace_id:032x}", f"{l.context.span_id:016x}", plain(l.attributes)) for l in sdk.links
        ]


def test_otel_exporters_over_grpc_and_http_round_trip_every_field(collector):
    grpc_spans = export_rich_trace(GrpcExporter(endpoint=collector.grpc_address, insecure=True), "via-grpc")
    http_spans = export_rich_trace(HttpExporter(endpoint=collector.otlp_http_url), "via-http")
    collector.wait_inserted(len(grpc_spans) + len(http_spans))
    for spans, service in ((grpc_spans, "via-grpc"), (http_spans, "via-http")):
        trace_id = f"{spans[0].get_span_context().trace_id:032x}"
        assert_stored(collector.trace(trace_id), spans, service)
    found = collector.get_json("/api/v1/traces?service=via-grpc&tag=queue=q1&tag=replica=2")
    assert [t["traceId"] for t in found["traces"]] == [f"{grpc_spans[0].get_span_context().trace_id:032x}"]


@pytest.fixture
def chdb_collector(tmp_path):
    running = collector_for(tmp_path, None, "--max-request-bytes", "1m").start()
    yield running
    running.stop()


def test_py_zipkin_spans_round_trip(chdb_collector):
    transport = SimpleHTTPTransport("127.0.0.1", chdb_collector.api_port)
    with zipkin_span(service_name="zk-web", span_name="GET /", transport_handler=transport, sample_rate=100.0,
                     kind=Kind.SERVER, use_128bit_trace_id=True, binary_annotations={"http.path": "/"}) as root:
        root.add_annotation("cache miss")
        with zipkin_span(service_name="zk-web", span_name="query", kind=Kind.CLIENT,
                         binary_annotations={"db": "orders"}):
            time.sleep(0.002)
    trace_id = root.zipkin_attrs.trace_id
    chdb_collector.wait_inserted(2)
    spans = {s["name"]: s for s in chdb_collector.trace(trace_id)["spans"]}
    assert spans["GET /"]["kind"] == "SERVER" and spans["query"]["kind"] == "CLIENT"
    assert spans["query"]["parentSpanId"] == spans["GET /"]["spanId"] == root.zipkin_attrs.span_id
    assert spans["GET /"]["attributes"]["http.path"] == "/" and spans["query"]["attributes"]["db"] == "orders"
    assert [e["name"] for e in spans["GET /"]["events"]] == ["cache miss"]
    assert int(spans["query"]["durationNano"]) >= 2_000_000 and spans["query"]["service"] == "zk-web"


def test_conformance_files_ingest_over_http(chdb_collector):
    traces = sorted((CONFORMANCE / "zipkin-traces").glob("*.json"))
    if not traces:
        pytest.skip("shared conformance data not found")
    expected: dict[str, int] = {}
    for path in traces:
        document = json.loads(path.read_text())
        spans = document if isinstance(document, list) else [document]
        status, _, body = chdb_collector.post(f"{chdb_collector.api_url}/api/v2/spans", orjson.dumps(spans), "application/json")
        assert status == 202, (path.name, body)
        for span in spans:
            trace_id = span["traceId"].rjust(32, "0")
            expected[trace_id] = expected.get(trace_id, 0) + 1
    otlp = (CONFORMANCE / "otlp" / "trace.json").read_bytes()
    status, _, body = chdb_collector.post(chdb_collector.otlp_http_url, otlp, "application/json")
    assert status == 200 and json.loads(body) == {}
    expected["5b8efff798038103d269b633813fc60c"] = 1
    chdb_collector.wait_inserted(sum(expected.values()))
    for trace_id, count in expected.items():
        assert chdb_collector.trace(trace_id)["spanCount"] == count, trace_id


def grpc_export(address: str, body: bytes):
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(EXPORT_METHOD)
        return call.with_call(body, timeout=10)


def rich_request() -> bytes:
    recorded = InMemorySpanExporter()
    export_rich_trace(recorded, "malformed-tests")
    return encode_spans(recorded.get_finished_spans())


def test_malformed_payloads_are_rejected_with_the_problem_named_and_good_spans_kept(chdb_collector):
    with pytest.raises(grpc.RpcError) as failure:
        grpc_export(chdb_collector.grpc_address, b"\x0a\xff\x01")
    assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid OTLP ExportTraceServiceRequest" in failure.value.details()

    request = rich_request()
    request.resource_spans[0].scope_spans[0].spans[1].span_id = b"\x01\x02"
    reply, _ = grpc_export(chdb_collector.grpc_address, request.SerializeToString())
    partial = ExportTraceServiceResponse.FromString(reply).partial_success
    assert partial.rejected_spans == 1
    assert partial.error_message == "resource_spans[0].scope_spans[0].spans[1]: span_id must be 8 bytes, got 2"

    status, _, body = chdb_collector.post(chdb_collector.otlp_http_url, b'{"resourceSpans": 5}', "application/json")
    assert status == 400 and "resourceSpans must be a JSON array" in json.loads(body)["message"]
    status, _, body = chdb_collector.post(chdb_collector.otlp_http_url, b"\xff\xff", "application/x-protobuf")
    assert status == 400 and "not a valid OTLP" in Status.FromString(body).message
    status, _, body = chdb_collector.post(chdb_collector.otlp_http_url, b"{}", "text/plain")
    assert status == 415

    good = {"traceId": "ab" * 8, "id": "cd" * 8, "name": "kept", "timestamp": 1_700_000_000_000_000}
    bad = {"traceId": "zz" * 8, "id": "ef" * 8}
    status, _, body = chdb_collector.post(f"{chdb_collector.api_url}/api/v2/spans", orjson.dumps([good, bad]), "application/json")
    assert status == 400
    assert body.decode() == "stored 1 spans, rejected 1: span 1 (id efefefefefefefef): traceId must be 16 or 32 hex digits, got 'zzzzzzzzzzzzzzzz'"

    chdb_collector.wait_inserted(3)  # two good spans of the gRPC request, the good Zipkin span
    assert chdb_collector.trace("0" * 16 + "ab" * 8)["spans"][0]["name"] == "kept"
    trace_id = request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex()
    assert chdb_collector.trace(trace_id)["spanCount"] == 2


def test_gzip_bodies_are_accepted_and_oversize_bodies_get_413(chdb_collector):
    request = rich_request().SerializeToString()
    status, _, _ = chdb_collector.post(chdb_collector.otlp_http_url, gzip.compress(request), "application/x-protobuf",
                                       {"Content-Encoding": "gzip"})
    assert status == 200
    huge = orjson.dumps([{"traceId": "ab" * 8, "id": "cd" * 8, "name": "x" * 1_100_000}])
    status, _, _ = chdb_collector.post(f"{chdb_collector.api_url}/api/v2/spans", huge, "application/json")
    assert status == 413
    status, _, _ = chdb_collector.post(chdb_collector.otlp_http_url, gzip.compress(b" " * 1_100_000 + b"{}"),
                                       "application/json", {"Content-Encoding": "gzip"})
    assert status == 413  # the limit applies to the decompressed body
    with pytest.raises(grpc.RpcError) as failure:
        grpc_export(chdb_collector.grpc_address, b"\x0a" + b"\x00" * 1_100_000)
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    chdb_collector.wait_inserted(3)


def test_a_full_spool_answers_with_back_pressure_clients_understand(tmp_path):
    collector = collector_for(tmp_path, None, "--spool-max-bytes", "1").start()  # full from the start
    try:
        with pytest.raises(grpc.RpcError) as failure:
            grpc_export(collector.grpc_address, rich_request().SerializeToString())
        assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry_info = dict(failure.value.trailing_metadata())["google.rpc.retryinfo-bin"]
        assert RetryInfo.FromString(retry_info).retry_delay.seconds == 1
        for url, content_type in ((collector.otlp_http_url, "application/json"),
                                  (f"{collector.api_url}/api/v2/spans", "application/json")):
            status, headers, _ = collector.post(url, b"[]" if "spans" in url else b"{}", content_type)
            assert (status, headers.get("Retry-After")) == (503, "1")
        assert collector.ready()["refused_requests"] == 3
    finally:
        collector.stop()
