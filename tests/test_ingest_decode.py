"""Decoders to span columns: OTLP protobuf as the OTel SDK encodes it, OTLP/JSON, Zipkin v2 JSON."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from collector.ingest.zipkin_decode import decode_zipkin_json
from spans.model import (
    COLUMN_NAMES,
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    loads,
    row_count,
)
from spans.otlp_decode import PayloadError, decode_otlp_json, decode_otlp_protobuf

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = REPO_ROOT.parent / "shared" / "conformance"
TYPED_ATTRIBUTES = {
    "s": "text",
    "i": -(2**62),
    "f": 72.5,
    "b": True,
    "strings": ["a", "b"],
    "ints": [1, 2, 3],
    "floats": [0.5, 1.25],
    "bools": [True, False],
}


def conformance_file(*parts: str) -> Path:
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared conformance data not found at {path}")
    return path


def rows(columns) -> list[dict]:
    return [dict(zip(COLUMN_NAMES, values)) for values in zip(*(columns[n] for n in COLUMN_NAMES))]


def sdk_spans():
    """Real OTel SDK spans: a server parent with every attribute type, an event, a linked client child."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout", "deployment.count": 3}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tracemesh.tests", "2.0", attributes={"scope.flag": True})
    with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes=TYPED_ATTRIBUTES) as parent:
        parent.add_event("cache miss", {"key": "cart:42", "bytes": 512})
        link = Link(parent.get_span_context(), {"link.reason": "retry"})
        with tracer.start_as_current_span("SELECT cart", kind=SpanKind.CLIENT, links=[link]) as child:
            child.set_status(Status(StatusCode.ERROR, "timeout"))
    provider.shutdown()
    return exporter.get_finished_spans()


def test_otlp_protobuf_from_the_sdk_encoder_keeps_every_field():
    finished = sdk_spans()
    batch = decode_otlp_protobuf(encode_spans(finished).SerializeToString())
    assert batch.rejected == []
    by_name = {row["name"]: row for row in rows(batch.columns)}
    for span in finished:
        row = by_name[span.name]
        context = span.get_span_context()
        assert row["trace_id"] == f"{context.trace_id:032x}"
        assert row["span_id"] == f"{context.span_id:016x}"
        assert row["parent_span_id"] == (f"{span.parent.span_id:016x}" if span.parent else "")
        assert row["start_ns"] == span.start_time
        assert row["duration_ns"] == span.end_time - span.start_time  # nanoseconds, unrounded
        assert row["service"] == "checkout"
        assert loads(row["resource_attributes"])["deployment.count"] == 3
        assert (row["scope_name"], row["scope_version"]) == ("tracemesh.tests", "2.0")
        assert loads(row["scope_attributes"]) == {"scope.flag": True}
    server, client = by_name["GET /cart"], by_name["SELECT cart"]
    assert (server["kind"], client["kind"]) == (KIND_SERVER, KIND_CLIENT)
    assert loads(server["attributes"]) == TYPED_ATTRIBUTES
    assert (client["status_code"], client["status_message"]) == (STATUS_ERROR, "timeout")
    [event] = loads(server["events"])
    assert event["name"] == "cache miss" and event["attributes"] == {"key": "cart:42", "bytes": 512}
    assert event["time_ns"] == finished[1].events[0].timestamp
    [link] = loads(client["links"])
    assert (link["trace_id"], link["span_id"]) == (server["trace_id"], server["span_id"])
    assert link["attributes"] == {"link.reason": "retry"}
    assert {"i=-4611686018427387904", "f=72.5", "b=true", 'strings=["a","b"]', "key=cart:42", "bytes=512",
            "service.name=checkout", "scope.flag=true"} <= set(server["tags"])
    assert "link.reason=retry" in client["tags"]


def test_bytes_and_nested_values_round_trip_through_the_json_columns():
    document = json.loads(conformance_file("otlp", "trace.json").read_text())
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] = [
        {"key": "raw", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
        {"key": "map", "value": {"kvlistValue": {"values": [{"key": "n", "value": {"intValue": "7"}}]}}},
        {"key": "nested", "value": {"arrayValue": {"values": [{"arrayValue": {"values": [{"boolValue": False}]}}]}}},
        {"key": "empty", "value": {}},
    ]
    [row] = rows(decode_otlp_json(json.dumps(document)).columns)
    assert loads(row["attributes"]) == {"raw": "AP8=", "map": {"n": 7}, "nested": [[False]], "empty": None}
    assert {"raw=AP8=", 'map={"n":7}', "nested=[[false]]"} <= set(row["tags"])


def test_otlp_json_example_with_uppercase_hex_ids():
    batch = decode_otlp_json(conformance_file("otlp", "trace.json").read_bytes())
    [row] = rows(batch.columns)
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c"
    assert (row["span_id"], row["parent_span_id"]) == ("eee19b7ec3c1b174", "eee19b7ec3c1b173")
    assert (row["start_ns"], row["duration_ns"], row["kind"]) == (1544712660000000000, 10**9, KIND_SERVER)
    assert row["service"] == "my.service"
    assert loads(row["scope_attributes"]) == {"my.scope.attribute": "some scope attribute"}
    assert loads(row["attributes"]) == {"my.span.attr": "some value"}


def test_otlp_json_accepts_enum_names_lowercase_ids_and_numeric_int64():
    document = json.loads(conformance_file("otlp", "trace.json").read_text())
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span.update(traceId=span["traceId"].lower(), kind="SPAN_KIND_PRODUCER", startTimeUnixNano=1544712660000000000)
    span["status"] = {"code": "STATUS_CODE_ERROR", "message": "boom"}
    [row] = rows(decode_otlp_json(json.dumps(document)).columns)
    assert (row["kind"], row["status_code"], row["status_message"]) == (KIND_PRODUCER, STATUS_ERROR, "boom")
    assert row["trace_id"] == "5b8efff798038103d269b633813fc60c"


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"traceId": "5B8EFFF7"}, "traceId must be 32 hex digits"),
        ({"spanId": "XYZ19B7EC3C1B174"}, "spanId is not hex"),
        ({"spanId": None}, "spanId is missing"),
        ({"startTimeUnixNano": "soon"}, "startTimeUnixNano"),
        ({"endTimeUnixNano": "1"}, "end_time_unix_nano is before start_time_unix_nano"),
    ],
)
def test_otlp_json_bad_span_is_rejected_by_position_and_the_rest_kept(change, problem):
    document = json.loads(conformance_file("otlp", "trace.json").read_text())
    spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    bad = copy.deepcopy(spans[0])
    bad.update(change)
    spans[:] = [spans[0], bad, dict(spans[0], spanId="00000000000000AA")]
    batch = decode_otlp_json(json.dumps(document))
    assert batch.columns["span_id"] == ["eee19b7ec3c1b174", "00000000000000aa"]
    [message] = batch.rejected
    assert message.startswith("resource_spans[0].scope_spans[0].spans[1]: ") and problem in message


def test_otlp_protobuf_bad_ids_are_rejected_by_position():
    request = encode_spans(sdk_spans())
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x01" * 8
    spans[1].span_id = bytes(8)
    batch = decode_otlp_protobuf(request.SerializeToString())
    assert row_count(batch.columns) == 0
    assert batch.rejected == [
        "resource_spans[0].scope_spans[0].spans[0]: trace_id must be 16 bytes, got 8",
        "resource_spans[0].scope_spans[0].spans[1]: span_id is missing (all zero)",
    ]


@pytest.mark.parametrize(
    "decode, body, problem",
    [
        (decode_otlp_protobuf, b"\xff\xff\xff", "not a valid OTLP ExportTraceServiceRequest"),
        (decode_otlp_json, b"{not json", "not valid JSON"),
        (decode_otlp_json, b"[]", "must be a JSON object"),
        (decode_otlp_json, b'{"resourceSpans": {}}', "resourceSpans must be a JSON array"),
        (decode_zipkin_json, b'{"traceId": "1"}', "must be a JSON array of spans"),
        (decode_zipkin_json, b"\x00", "not valid JSON"),
    ],
)
def test_unparseable_payloads_fail_as_a_whole(decode, body, problem):
    with pytest.raises(PayloadError, match=problem):
        decode(body)


def test_an_attribute_that_is_not_a_key_value_fails_the_request_instead_of_crashing():
    raw = encode_spans(sdk_spans()).SerializeToString()
    assert b"\x0a\x01s\x12" in raw  # the attribute key "s"; made invalid UTF-8 below
    with pytest.raises(PayloadError, match="an attribute is not a valid OTLP KeyValue"):
        decode_otlp_protobuf(raw.replace(b"\x0a\x01s\x12", b"\x0a\x01\xff\x12", 1))


def zipkin_traces() -> list[Path]:
    directory = CONFORMANCE / "zipkin-traces"
    return sorted(directory.glob("*.json")) if directory.exists() else []


def zipkin_spans(path: Path) -> list[dict]:
    document = json.loads(path.read_text())
    return document if isinstance(document, list) else [document]  # two files hold one bare span


@pytest.mark.parametrize("path", zipkin_traces(), ids=lambda p: p.name)
def test_zipkin_conformance_traces_decode_field_by_field(path):
    spans = zipkin_spans(path)
    batch = decode_zipkin_json(orjson.dumps(spans))
    assert batch.rejected == []
    decoded = rows(batch.columns)
    assert len(decoded) == len(spans)
    kinds = {None: 0, "CLIENT": KIND_CLIENT, "SERVER": KIND_SERVER, "PRODUCER": KIND_PRODUCER, "CONSUMER": KIND_CONSUMER}
    for span, row in zip(spans, decoded):
        assert row["trace_id"] == span["traceId"].rjust(32, "0")
        assert (row["span_id"], row["parent_span_id"]) == (span["id"], span.get("parentId", ""))
        assert row["name"] == span.get("name", "")
        assert row["kind"] == kinds[span.get("kind")]
        assert row["service"] == span.get("localEndpoint", {}).get("serviceName", "unknown_service")
        if "timestamp" in span:
            assert row["start_ns"] == span["timestamp"] * 1000
        assert row["duration_ns"] == span.get("duration", 0) * 1000
        attributes = loads(row["attributes"])
        for key, value in span.get("tags", {}).items():
            assert attributes[key] == value and f"{key}={value}" in row["tags"]
        remote = span.get("remoteEndpoint", {})
        if "serviceName" in remote:
            assert attributes["peer.service"] == remote["serviceName"]
        if remote.get("ipv4") or remote.get("ipv6"):
            assert attributes["net.peer.ip"] == remote.get("ipv4") or remote.get("ipv6")
        assert attributes.get("zipkin.shared", False) == span.get("shared", False)
        events = loads(row["events"])
        assert [(e["time_ns"], e["name"]) for e in events] == [
            (a["timestamp"] * 1000, a["value"]) for a in span.get("annotations", [])
        ]
        if "error" in span.get("tags", {}):
            assert (row["status_code"], row["status_message"]) == (STATUS_ERROR, span["tags"]["error"])


def test_zipkin_span_without_timestamp_starts_at_its_first_annotation():
    span = {"traceId": "a" * 16, "id": "b" * 16, "annotations": [{"timestamp": 20, "value": "ws"}, {"timestamp": 10, "value": "wr"}]}
    [row] = rows(decode_zipkin_json(json.dumps([span])).columns)
    assert row["start_ns"] == 10_000 and loads(row["attributes"])["zipkin.timestamp_missing"] is True


def test_zipkin_bad_spans_are_named_and_good_ones_kept():
    good = {"traceId": "A" * 32, "id": "b" * 16, "name": "ok", "timestamp": 1, "debug": True}
    spans = [good, {"traceId": "a" * 12, "id": "b" * 16}, {"traceId": "a" * 16, "id": "c" * 16, "kind": "SIDEWAYS"}, "x"]
    batch = decode_zipkin_json(json.dumps(spans))
    [row] = rows(batch.columns)
    assert row["trace_id"] == "a" * 32 and loads(row["attributes"])["zipkin.debug"] is True
    assert batch.rejected == [
        "span 1 (id bbbbbbbbbbbbbbbb): traceId must be 16 or 32 hex digits, got 'aaaaaaaaaaaa'",
        "span 2 (id cccccccccccccccc): kind must be one of CLIENT, SERVER, PRODUCER, CONSUMER, got 'SIDEWAYS'",
        "span 3: is not a JSON object",
    ]
