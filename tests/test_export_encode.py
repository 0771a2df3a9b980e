"""The proxy's hand-written OTLP encoder produces exactly what the official protobuf classes (and
the collector's decoder) read back: ids, parentage, timing, status and typed attributes."""

from __future__ import annotations

import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from spans import conventions, model
from spans.otlp_encode import CACHE_LIMIT, SpanBatchEncoder, encode_export_request, parse_export_response

RESOURCE = {"service.name": "payments", "service.instance.id": "host:42", "tracemesh.proxy": True}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
START = 1_763_000_000_123_456_789

CLIENT_SPAN = (
    TRACE_ID,
    "00f067aa0ba902b7",
    "b7ad6b7169203331",
    "GET",
    model.KIND_CLIENT,
    START,
    2_345_678,
    model.STATUS_ERROR,
    "upstream answered 503 ✗",
    (
        (conventions.HTTP_METHOD, "GET"),
        (conventions.HTTP_STATUS, 503),
        (conventions.URL_PATH, "/pay/€uro"),
        (conventions.SERVER_PORT, 8080),
        (conventions.CONNECTION_REUSED, True),
        ("tracemesh.flag_off", False),
        (conventions.CONNECT_NS, 0),
        (conventions.FIRST_BYTE_NS, 1_999_999),
        (conventions.BODY_NS, 2**40),
        ("test.max_int64", 2**63 - 1),
        ("test.negative", -5),
        ("test.too_big_for_int64", 2**64),
        (conventions.ENDPOINT_LOAD, 0.0125),
        ("test.negative_double", -1.5),
        (conventions.ENDPOINT, "127.0.0.1:9001"),
    ),
)
ROOT_SERVER_SPAN = (TRACE_ID, "1111111111111111", "", "payments.Pay/Charge", model.KIND_SERVER, START, 0, 0, "", ())


def _any_value(value) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value) if -(2**63) <= value < 2**63 else AnyValue(string_value=str(value))
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=value)


def _expected_span(record) -> Span:
    """The same record built with the official message classes."""
    trace_id, span_id, parent, name, kind, start, duration, status_code, status_message, attributes = record
    return Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent),
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
        attributes=[KeyValue(key=key, value=_any_value(value)) for key, value in attributes],
        status=Status(code=status_code, message=status_message) if status_code or status_message else None,
    )


def _decoded_spans(payload: bytes) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(payload)
    (resource_spans,) = request.resource_spans
    (scope_spans,) = resource_spans.scope_spans
    return list(scope_spans.spans)


def test_official_protobuf_classes_read_back_every_field_and_attribute_type():
    payload = encode_export_request(RESOURCE, "tracemesh-proxy", [CLIENT_SPAN, ROOT_SERVER_SPAN])

    request = ExportTraceServiceRequest.FromString(payload)
    assert request == ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource={"attributes": [KeyValue(key=k, value=_any_value(v)) for k, v in RESOURCE.items()]},
                scope_spans=[
                    ScopeSpans(
                        scope={"name": "tracemesh-proxy"},
                        spans=[_expected_span(CLIENT_SPAN), _expected_span(ROOT_SERVER_SPAN)],
                    )
                ],
            )
        ]
    )
    client = request.resource_spans[0].scope_spans[0].spans[0]
    assert client.parent_span_id.hex() == "b7ad6b7169203331"
    assert client.end_time_unix_nano - client.start_time_unix_nano == 2_345_678
    assert client.status.message == "upstream answered 503 ✗"
    assert not request.resource_spans[0].scope_spans[0].spans[1].parent_span_id


def test_empty_batch_is_a_valid_request_with_resource_and_scope():
    request = ExportTraceServiceRequest.FromString(encode_export_request(RESOURCE, "tracemesh-proxy", []))
    assert request.resource_spans[0].scope_spans[0].scope.name == "tracemesh-proxy"
    assert len(request.resource_spans[0].resource.attributes) == len(RESOURCE)
    assert not request.resource_spans[0].scope_spans[0].spans


def test_randomised_batches_match_the_official_encoding_across_cache_hits_and_evictions():
    rng = random.Random(7)
    encoder = SpanBatchEncoder(RESOURCE, "tracemesh-proxy")
    paths = [f"/items/{n}" for n in range(CACHE_LIMIT + 500)]  # forces the caches to be emptied
    for _ in range(6):
        records = []
        for _ in range(1000):
            attributes = (
                (conventions.HTTP_METHOD, rng.choice(["GET", "POST", "DELETE"])),
                (conventions.URL_PATH, rng.choice(paths)),
                (conventions.HTTP_STATUS, rng.choice([200, 204, 404, 503, 0])),
                (conventions.QUEUE_NS, rng.randrange(0, 2**rng.randrange(1, 63))),
                (conventions.CONNECTION_REUSED, rng.random() < 0.5),
                (conventions.ENDPOINT_LOAD, rng.random() * 10),
            )
            records.append(
                (
                    "%032x" % rng.getrandbits(128),
                    "%016x" % rng.getrandbits(64),
                    rng.choice(["", "%016x" % rng.getrandbits(64)]),
                    rng.choice(["GET", "POST", "svc.Api/Call"]),
                    rng.choice([model.KIND_CLIENT, model.KIND_SERVER]),
                    START + rng.randrange(10**9),
                    rng.randrange(10**10),
                    rng.choice([model.STATUS_UNSET, model.STATUS_ERROR]),
                    rng.choice(["", "deadline exceeded"]),
                    attributes,
                )
            )
        assert _decoded_spans(encoder.encode(records)) == [_expected_span(record) for record in records]


def test_the_same_key_with_bool_int_and_float_values_keeps_each_type():
    record = (*ROOT_SERVER_SPAN[:9], (("v", True), ("v", 1), ("v", 1.0), ("v", "1")))
    encoder = SpanBatchEncoder(RESOURCE, "s")
    for _ in range(2):  # second pass is served from the caches
        (span,) = _decoded_spans(encoder.encode([record]))
        assert [attribute.value.WhichOneof("value") for attribute in span.attributes] == [
            "bool_value",
            "int_value",
            "double_value",
            "string_value",
        ]


def test_collector_decoder_reads_proxy_spans_into_columns():
    otlp_decode = pytest.importorskip("spans.otlp_decode")
    batch = otlp_decode.decode_otlp_protobuf(
        encode_export_request(RESOURCE, "tracemesh-proxy", [CLIENT_SPAN, ROOT_SERVER_SPAN])
    )
    columns = batch.columns
    assert columns["trace_id"] == [TRACE_ID, TRACE_ID]
    assert columns["span_id"] == ["00f067aa0ba902b7", "1111111111111111"]
    assert columns["parent_span_id"] == ["b7ad6b7169203331", ""]
    assert columns["service"] == ["payments", "payments"]
    assert columns["kind"] == [model.KIND_CLIENT, model.KIND_SERVER]
    assert columns["duration_ns"] == [2_345_678, 0]
    assert columns["status_code"][0] == model.STATUS_ERROR
    attributes = model.loads(columns["attributes"][0])
    assert attributes[conventions.HTTP_STATUS] == 503
    assert attributes[conventions.URL_PATH] == "/pay/€uro"
    assert attributes[conventions.CONNECTION_REUSED] is True
    assert attributes[conventions.ENDPOINT_LOAD] == 0.0125
    assert attributes["test.negative"] == -5
    assert model.loads(columns["resource_attributes"][0])["tracemesh.proxy"] is True
    assert columns["scope_name"] == ["tracemesh-proxy", "tracemesh-proxy"]


@pytest.mark.parametrize(
    "response, expected",
    [
        (ExportTraceServiceResponse(), (0, "")),
        (ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess()), (0, "")),
        (
            ExportTraceServiceResponse(
                partial_success=ExportTracePartialSuccess(rejected_spans=300, error_message="span 3: bad id ✗")
            ),
            (300, "span 3: bad id ✗"),
        ),
    ],
)
def test_export_responses_written_by_the_protobuf_classes_are_read_back(response, expected):
    assert parse_export_response(response.SerializeToString()) == expected


def test_unknown_response_fields_are_skipped_and_garbage_is_refused():
    known = ExportTraceServiceResponse(partial_success={"rejected_spans": 2}).SerializeToString()
    # field 9 varint, field 10 fixed64, field 11 fixed32, field 12 bytes: what a newer collector might add
    unknown = b"\x48\x96\x01" + b"\x51" + bytes(8) + b"\x5d" + bytes(4) + b"\x62\x02hi"
    assert parse_export_response(unknown + known) == (2, "")
    for garbage in (b"\x0a\x05ab", b"\xff", b"\x0b", b"\x08" + b"\xff" * 11):
        with pytest.raises(ValueError):
            parse_export_response(garbage)


@pytest.mark.parametrize(
    "ids",
    [
        ("abc", "00f067aa0ba902b7", ""),
        (TRACE_ID, "00f067aa0ba902b", ""),
        (TRACE_ID, "00f067aa0ba902b7", "b7ad"),
        (TRACE_ID, "zzf067aa0ba902b7", ""),
    ],
)
def test_malformed_ids_are_refused_rather_than_corrupting_the_request(ids):
    with pytest.raises(ValueError):
        encode_export_request(RESOURCE, "s", [(*ids, *ROOT_SERVER_SPAN[3:])])
