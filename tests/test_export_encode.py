"""The proxy's OTLP encoder (native spans, Python framing) produces exactly what the official protobuf
classes (and the collector's decoder) read back: ids, parentage, timing, status and typed attributes;
and hostile span records cost only themselves, each with a clear reason, never a crash."""

from __future__ import annotations

import asyncio
import random
import tracemalloc

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from mesh.export import SpanRecorder
from mesh.tap import TapHub, parse_filter
from spans import conventions, model
from spans.otlp_encode import (
    HTTP_SPAN_KEYS,
    ExportRequestFramer,
    SpanBatch,
    append_http_span,
    append_span,
    encode_export_request,
    encode_spans,
    http_span_record,
    parse_export_response,
)

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


def test_randomised_batches_match_the_official_encoding():
    rng = random.Random(7)
    framer = ExportRequestFramer(RESOURCE, "tracemesh-proxy")
    paths = [f"/items/{n}/ünïcode" for n in range(500)]
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
        span_fields, malformed = encode_spans(records)
        assert malformed == []
        assert _decoded_spans(framer.request(span_fields)) == [_expected_span(record) for record in records]


HTTP_CONSTANT = ((conventions.SERVER_ADDRESS, "payments"), (conventions.DIRECTION, "outbound"),
                 (conventions.ENDPOINT, "10.0.0.7:8080"), (conventions.PEER_SERVICE, "payments"))  # fmt: skip


def _http_fields(rng: random.Random) -> tuple:
    """append_http_span's fields, as an exchange's end gives them."""
    status = rng.choice([200, 204, 404, 503, 504, 0])
    error = rng.choice(["", "", "timeout", "connect_refused"])
    return (
        "%032x" % rng.getrandbits(128), "%016x" % rng.getrandbits(64), rng.choice(["", "%016x" % rng.getrandbits(64)]),
        rng.choice([model.KIND_SERVER, model.KIND_CLIENT]), START + rng.randrange(10**12), rng.randrange(2**40),
        model.STATUS_ERROR if status >= 500 or error else model.STATUS_UNSET, rng.choice([HTTP_CONSTANT, HTTP_CONSTANT[:3], ()]),
        rng.choice([b"GET", b"POST", b"DELETE", b"PURGE", b"M\xe9THOD"]),
        rng.choice([b"/", b"/pay?card=1", b"", b"/caf\xe9/x?y?z", b"*", b"/" + b"a" * 300]),
        rng.randrange(0, 2**rng.randrange(1, 63)), rng.choice([0, 1_234_567]), rng.random() < 0.5, rng.randrange(4),
        rng.choice([0, 25_000_000]), rng.randrange(10**7), rng.randrange(10**9), rng.random() * 10, status, error,
        error or (str(status) if status >= 500 else ""),
    )  # fmt: skip


def test_http_spans_written_from_fields_equal_their_records_written_by_the_official_classes():
    rng = random.Random(11)
    for _ in range(2000):
        fields = _http_fields(rng)
        buffer = SpanBatch()
        assert append_http_span(buffer, HTTP_SPAN_KEYS, fields) is None
        record = http_span_record(fields)
        assert ScopeSpans.FromString(bytes(buffer)).spans == [_expected_span(record)]
        from_record = SpanBatch()
        assert append_span(from_record, record) is None
        assert bytes(buffer) == bytes(from_record)


def test_the_proxy_records_http_spans_through_the_c_api_with_the_bytes_of_their_fields():
    # SpanRecorder.record_http passes the fields as C values (spans/otlp_spans.h): the same spans, byte for byte,
    # as the fields' tuple through append_http_span (held to the official classes above); a tap gets their records
    rng = random.Random(29)
    recorder = SpanRecorder(capacity=3000, batch_size=3000)
    tap = TapHub(recorder, "client").open(parse_filter(""), capacity=3000)
    expected = SpanBatch()
    records = []
    for _ in range(2000):
        fields = _http_fields(rng)
        recorder.record_http(*fields)
        assert append_http_span(expected, HTTP_SPAN_KEYS, fields) is None
        records.append(http_span_record(fields))
    span_fields, count = recorder.take()
    assert (count, recorder.malformed, recorder.dropped) == (2000, 0, 0)
    assert bytes(span_fields) == bytes(expected)
    assert asyncio.run(tap.take()) == records


@pytest.mark.parametrize(
    "position, value, reason",
    [
        (0, None, "trace_id must be 32 hex digits, got a NoneType"),
        (5, -1, "duration_ns must be an int from 0 to 2**63-1, got -1"),
        (6, -1, "status_code must be an int from 0 to 2**31-1, got -1"),
        (3, -2, "kind must be an int from 0 to 2**31-1, got -2"),
        (8, "GET", "method must be bytes, got 'GET'"),
        (20, None, "error_type must be a str, got a NoneType"),
    ],
)
def test_malformed_fields_recorded_through_the_c_api_are_counted_and_not_kept(position, value, reason, caplog):
    recorder = SpanRecorder()
    fields = list(_http_fields(random.Random(31)))
    recorder.record_http(*fields)
    fields[position] = value
    recorder.record_http(*fields)
    assert (len(recorder), recorder.malformed) == (1, 1)
    assert reason in caplog.text
    span_fields, count = recorder.take()
    assert count == 1 and len(ScopeSpans.FromString(bytes(span_fields)).spans) == 1


def test_a_span_batch_keeps_its_memory_when_cleared_and_cannot_change_while_read():
    batch = SpanBatch(1000)
    assert (len(batch), batch.capacity, bytes(batch)) == (0, 1000, b"")
    records = [_with(1, "%016x" % (n + 1)) for n in range(50)]
    for record in records:
        assert append_span(batch, record) is None
    grown = batch.capacity
    assert grown >= len(batch) > 1000
    written = bytes(batch)
    assert ScopeSpans.FromString(written).spans == [_expected_span(record) for record in records]
    batch.clear()
    assert (len(batch), batch.capacity) == (0, grown)
    for record in records:  # refilled in place: the same bytes, no more room
        assert append_span(batch, record) is None
    assert (bytes(batch), batch.capacity) == (written, grown)
    with memoryview(batch) as view:  # what a reader sees stays as it is
        with pytest.raises(BufferError):
            append_span(batch, CLIENT_SPAN)
        with pytest.raises(BufferError):
            batch.clear()
        assert view.readonly and view.tobytes() == written
    batch.clear()
    assert append_span(batch, CLIENT_SPAN) is None
    with pytest.raises(ValueError):
        SpanBatch(-1)


def _http_span_bytes(fields: tuple, keys: tuple = HTTP_SPAN_KEYS) -> bytes:
    buffer = SpanBatch()
    assert append_http_span(buffer, keys, fields) is None
    return bytes(buffer)


def _official_http_span(fields: tuple, constant: tuple) -> bytes:
    """The span of `fields` (with `constant` as a tuple) written by the official classes, field by field;
    a lone surrogate travels as '?' (str.encode's "replace")."""
    constant = tuple(
        (key, value.encode("utf-8", "replace").decode() if type(value) is str else value) for key, value in constant
    )
    span = _expected_span(http_span_record((*fields[:7], constant, *fields[8:])))
    return ScopeSpans(spans=[span]).SerializeToString()


def test_constant_attributes_written_from_their_cache_or_afresh_give_the_official_bytes():
    # The encoder keeps the encoded fields of a constant-attributes tuple by its identity: the first span of a
    # tuple writes them afresh, later ones copy them; a list, or a tuple holding a value whose str() runs code,
    # is written afresh every time. All of them must give what the official classes write, byte for byte.
    class Text(str):
        pass

    fields = list(_http_fields(random.Random(5)))
    constants = [
        HTTP_CONSTANT,
        ((conventions.SERVER_ADDRESS, "caf\u00e9 \u2713"), ("lone", "x\udc80y"), ("n", -7), ("f", 0.5), ("b", False)),
        (("odd", Text("sub")), ("big", 2**70)),
        (),
    ]
    for constant in constants:
        fields[7] = constant
        official = _official_http_span(tuple(fields), constant)
        for given in (constant, constant, list(constant), constant):
            fields[7] = given
            assert _http_span_bytes(tuple(fields)) == official


def test_constant_attribute_tuples_beyond_the_cache_freed_and_replaced_keep_their_own_bytes():
    # Thousands of distinct tuples (the cache holds a few hundred), each dropped after use so that later ones
    # may be built at the address of an earlier one; every span carries its own tuple's attributes.
    rng = random.Random(9)
    fields = list(_http_fields(rng))
    kept = []
    for n in range(3000):
        constant = ((conventions.SERVER_ADDRESS, f"service-{n}"), (conventions.ENDPOINT, f"10.0.{n % 256}.{n >> 8}:80"))
        fields[7] = constant
        official = _official_http_span(tuple(fields), constant)
        assert _http_span_bytes(tuple(fields)) == official
        assert _http_span_bytes(tuple(fields)) == official
        if n % 7 == 0:
            kept.append((constant, official))
        del constant
    for constant, official in kept:  # cached, evicted or never kept: all the same bytes
        fields[7] = constant
        assert _http_span_bytes(tuple(fields)) == official


def test_keys_given_as_another_tuple_or_with_a_key_that_is_not_text_are_read_each_time():
    fields = _http_fields(random.Random(13))
    assert _http_span_bytes(fields, tuple(list(HTTP_SPAN_KEYS))) == _http_span_bytes(fields)
    renamed = tuple(f"x.{key}" for key in HTTP_SPAN_KEYS)
    for _ in range(2):  # (the last keys tuple is kept: once read afresh, then from the cache)
        (span,) = ScopeSpans.FromString(_http_span_bytes(fields, renamed)).spans
        (official,) = ScopeSpans.FromString(_official_http_span(fields, fields[7])).spans
        constant = len(fields[7])
        assert [kv.key for kv in span.attributes] == [
            kv.key if n < constant else f"x.{kv.key}" for n, kv in enumerate(official.attributes)
        ]
        assert [kv.value for kv in span.attributes] == [kv.value for kv in official.attributes]
    assert _http_span_bytes(fields) == _official_http_span(fields, fields[7])
    # a key that is not a str is refused only when its value is written (error_type is '' here: left out)
    fields = (*fields[:7], HTTP_CONSTANT[:3], *fields[8:18], 200, "", "")
    odd_keys = (*HTTP_SPAN_KEYS[:-1], 42)
    assert _http_span_bytes(fields, odd_keys) == _http_span_bytes(fields)
    buffer = SpanBatch()
    odd_keys = (*HTTP_SPAN_KEYS[:2], b"queue", *HTTP_SPAN_KEYS[3:])
    assert append_http_span(buffer, odd_keys, fields) == "attribute 5 key must be a str, got a bytes"
    assert not buffer


def test_a_value_whose_str_records_another_http_span_leaves_both_spans_and_the_caches_right():
    buffer = SpanBatch()
    inner_constant = ((conventions.SERVER_ADDRESS, "inner"),)
    inner_keys = tuple(f"inner.{key}" for key in HTTP_SPAN_KEYS)
    inner_fields = (*_http_fields(random.Random(17))[:7], inner_constant, *_http_fields(random.Random(17))[8:])

    class Recording:
        def __str__(self):  # a nested call, mid-way through the outer one, with keys and constants of its own
            assert append_http_span(buffer, inner_keys, inner_fields) is None
            return "recorded"

    outer_constant = ((conventions.SERVER_ADDRESS, "outer"), ("odd", Recording()))
    outer = (*_http_fields(random.Random(19))[:7], outer_constant, *_http_fields(random.Random(19))[8:])
    assert append_http_span(buffer, HTTP_SPAN_KEYS, outer) is None
    written = bytes(buffer)
    inner_span = _http_span_bytes(inner_fields, inner_keys)
    outer_span = _official_http_span(outer, ((conventions.SERVER_ADDRESS, "outer"), ("odd", "recorded")))
    assert written == inner_span + outer_span
    # and afterwards each tuple still gives its own span
    assert _http_span_bytes(inner_fields, inner_keys) == inner_span
    assert _http_span_bytes(inner_fields, inner_keys) == inner_span
    fields = (*outer[:7], HTTP_CONSTANT, *outer[8:])
    assert _http_span_bytes(fields) == _official_http_span(fields, HTTP_CONSTANT)


def test_an_http_span_names_its_method_and_path_and_leaves_out_what_did_not_happen():
    fields = (TRACE_ID, "00f067aa0ba902b7", "", model.KIND_SERVER, START, 5_000, model.STATUS_ERROR, HTTP_CONSTANT[:3],
              b"GET", b"/caf\xe9?q=1", 0, 0, True, 0, 0, 0, 0, 0.0, 0, "timeout", "timeout")  # fmt: skip
    buffer = SpanBatch()
    assert append_http_span(buffer, HTTP_SPAN_KEYS, fields) is None
    (span,) = ScopeSpans.FromString(bytes(buffer)).spans
    attributes = {kv.key: kv.value for kv in span.attributes}
    assert span.name == "GET" and span.status.message == "timeout" and span.status.code == model.STATUS_ERROR
    assert attributes[conventions.URL_PATH].string_value == "/café"
    assert conventions.HTTP_STATUS not in attributes  # no response
    assert attributes[conventions.PROXY_ERROR].string_value == attributes[conventions.ERROR_TYPE].string_value == "timeout"
    assert attributes[conventions.CONNECTION_REUSED].bool_value is True
    assert attributes[conventions.ENDPOINT_LOAD].WhichOneof("value") == "double_value"
    assert [kv.key for kv in span.attributes][:3] == [key for key, _ in HTTP_CONSTANT[:3]]


@pytest.mark.parametrize(
    "position, value, reason",
    [
        (0, "4bf9", "trace_id must be 32 hex digits, got '4bf9'"),
        (6, -1, "status_code must be an int from 0 to 2**31-1, got -1"),
        (7, (("k",),), "attribute 0 must be a (key, value) tuple, got a tuple"),
        (8, "GET", "method must be bytes, got 'GET'"),
        (9, None, "attribute 1 value must be bytes, got a NoneType"),
        (19, 5, "status_message must be a str, got 5"),
        (5, -3, "duration_ns must be an int from 0 to 2**63-1, got -3"),
        (3, 2**31, "kind must be an int from 0 to 2**31-1, got 2147483648"),
        (10, 2**64, "queue_ns must be an int of 64 bits, got an int beyond 64 bits"),
        (13, True, "retries must be an int of 64 bits, got a bool"),
        (12, 1, "connection_reused must be a bool, got 1"),
        (17, 1, "endpoint_load must be a float, got 1"),
        (20, None, "error_type must be a str, got a NoneType"),
    ],
)
def test_malformed_http_span_fields_append_nothing_and_say_why(position, value, reason):
    good = list(_http_fields(random.Random(3)))
    good[7] = ()
    fields = list(good)
    fields[position] = value
    buffer = SpanBatch()
    assert append_span(buffer, CLIENT_SPAN) is None
    kept = bytes(buffer)
    assert append_http_span(buffer, HTTP_SPAN_KEYS, tuple(fields)) == reason
    assert append_http_span(buffer, HTTP_SPAN_KEYS[:-1], tuple(good)).startswith("keys must be a tuple of 13 str")
    assert append_http_span(buffer, HTTP_SPAN_KEYS, tuple(fields[:-1])).startswith("fields must be a tuple of 21")
    assert bytes(buffer) == kept
    with pytest.raises(TypeError):
        append_http_span(buffer, HTTP_SPAN_KEYS)


def test_the_same_key_with_bool_int_and_float_values_keeps_each_type():
    record = (*ROOT_SERVER_SPAN[:9], (("v", True), ("v", 1), ("v", 1.0), ("v", "1")))
    (span,) = _decoded_spans(encode_export_request(RESOURCE, "s", [record]))
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


class _Unprintable:
    def __str__(self):
        raise RuntimeError("no text for you")

    def __repr__(self):
        raise RuntimeError("no repr either")


class _NotText:
    def __str__(self):
        return 42  # str() refuses a __str__ that returns a non-str


class _Interrupting:
    def __str__(self):
        raise KeyboardInterrupt


def _with(field: int, value):
    record = list(ROOT_SERVER_SPAN)
    record[field] = value
    return tuple(record)


HOSTILE_RECORDS = [
    (["not", "a", "tuple"], "a span record must be a tuple of 10 fields, got a list"),
    (None, "a span record must be a tuple of 10 fields, got a NoneType"),
    (ROOT_SERVER_SPAN[:9], "a span record must be a tuple of 10 fields, got a tuple"),
    ((*ROOT_SERVER_SPAN, "extra"), "a span record must be a tuple of 10 fields"),
    (_with(0, "abc"), "trace_id must be 32 hex digits, got 'abc'"),
    (_with(0, b"4bf92f3577b34da6a3ce929d0e0e4736"), "trace_id must be 32 hex digits, got a bytes"),
    (_with(0, "x" * 32), "trace_id must be 32 hex digits"),
    (_with(1, "00f067aa0ba902b\udc80"), "span_id must be 16 hex digits"),
    (_with(1, 0xF067AA0BA902B7), "span_id must be 16 hex digits, got 67667974448284343"),
    (_with(2, "b7ad"), "parent_span_id must be 16 hex digits or '', got 'b7ad'"),
    (_with(2, None), "parent_span_id must be 16 hex digits or '', got a NoneType"),
    (_with(3, b"GET"), "name must be a str, got a bytes"),
    (_with(3, _Unprintable()), "name must be a str, got a _Unprintable"),
    (_with(4, -1), "kind must be an int from 0 to 2**31-1, got -1"),
    (_with(4, 2**31), "kind must be an int from 0 to 2**31-1, got 2147483648"),
    (_with(4, "2"), "kind must be an int from 0 to 2**31-1, got '2'"),
    (_with(5, -5), "start_ns must be an int from 0 to 2**64-1, got -5"),
    (_with(5, 2**64), "start_ns must be an int from 0 to 2**64-1, got an int beyond 64 bits"),
    (_with(5, 1.5), "start_ns must be an int from 0 to 2**64-1, got a float"),
    (_with(6, -1), "duration_ns must be an int from 0 to 2**64-1-start_ns, got -1"),
    (_with(6, 2**64 - START), "duration_ns must be an int from 0 to 2**64-1-start_ns"),
    (_with(7, 2.0), "status_code must be an int from 0 to 2**31-1, got a float"),
    (_with(8, None), "status_message must be a str, got a NoneType"),
    (_with(9, {"k": "v"}), "attributes must be a tuple of (key, value) pairs, got a dict"),
    (_with(9, "kv"), "attributes must be a tuple of (key, value) pairs, got 'kv'"),
    (_with(9, (("k", "v"), ("lonely",))), "attribute 1 must be a (key, value) tuple, got a tuple"),
    (_with(9, (["k", "v"],)), "attribute 0 must be a (key, value) tuple, got a list"),
    (_with(9, ((b"k", "v"),)), "attribute 0 key must be a str, got a bytes"),
    (_with(9, (("k", _Unprintable()),)), "attribute 0 value (a _Unprintable) could not be made text"),
    (_with(9, (("k", "v"), ("k2", _NotText()))), "attribute 1 value (a _NotText) could not be made text"),
    (_with(9, (("k", 10**5000),)), "attribute 0 value (a int) could not be made text"),  # past str()'s digit limit
]


def test_hostile_records_are_left_out_each_with_a_clear_reason_and_the_rest_encoded():
    good = [_with(1, "%016x" % (n + 1)) for n in range(len(HOSTILE_RECORDS) + 1)]
    records = [record for pair in zip(good, (hostile for hostile, _ in HOSTILE_RECORDS)) for record in pair] + good[-1:]

    span_fields, malformed = encode_spans(records)

    assert [index for index, _ in malformed] == list(range(1, 2 * len(HOSTILE_RECORDS), 2))
    for (_, reason), (_, expected) in zip(malformed, HOSTILE_RECORDS):
        assert expected in reason
    assert _decoded_spans(ExportRequestFramer(RESOURCE, "s").request(span_fields)) == [
        _expected_span(record) for record in good
    ]
    with pytest.raises(ValueError, match=r"^span record 1: a span record must be a tuple of 10 fields"):
        encode_export_request(RESOURCE, "s", records)


def test_odd_but_encodable_values_travel_as_text_and_lone_surrogates_as_question_marks():
    class Code(int):
        def __str__(self):
            return "code-seven"

    record = (
        *ROOT_SERVER_SPAN[:3], "GET \udcff", *ROOT_SERVER_SPAN[4:8], "bad \ud800 byte",
        [("k\udc80", "v\udc80"), ("code", Code(7)), ("none", None), ("raw", b"\x00"), ("big", -(2**64)), ("list", [1])],
    )  # fmt: skip

    (span,) = _decoded_spans(encode_export_request(RESOURCE, "s", [record]))

    assert span.name == "GET ?"
    assert span.status.message == "bad ? byte"
    assert [(kv.key, kv.value.string_value) for kv in span.attributes] == [
        ("k?", "v?"), ("code", "code-seven"), ("none", "None"), ("raw", "b'\\x00'"),
        ("big", str(-(2**64))), ("list", "[1]"),
    ]  # fmt: skip


def test_upper_case_hex_ids_read_back_the_same():
    upper = (TRACE_ID.upper(), "00F067AA0BA902B7", "B7AD6B7169203331", *CLIENT_SPAN[3:])
    assert _decoded_spans(encode_export_request(RESOURCE, "s", [upper])) == [_expected_span(CLIENT_SPAN)]


def test_every_ascii_character_in_every_id_position_is_read_as_bytes_fromhex_reads_it():
    # the encoder reads ids eight digits at a time: each position of each word, each character
    for field, size in ((0, 32), (1, 16), (2, 16)):
        ids = [TRACE_ID, "00f067aa0ba902b7", "b7ad6b7169203331"]
        for position in range(size):
            for code in range(128):
                value = ids[field][:position] + chr(code) + ids[field][position + 1 :]
                record = (*ids[:field], value, *ids[field + 1 :], *CLIENT_SPAN[3:])
                buffer = SpanBatch()
                reason = append_span(buffer, record)
                if chr(code) in "0123456789abcdefABCDEF":
                    assert reason is None
                    span = ScopeSpans.FromString(bytes(buffer)).spans[0]
                    written = (span.trace_id, span.span_id, span.parent_span_id)
                    assert written == tuple(bytes.fromhex(text) for text in record[:3])
                else:
                    assert reason is not None and not buffer, (field, position, code)


def test_a_value_whose_str_records_a_span_itself_gets_both_spans_written_whole():
    buffer = SpanBatch()

    class Recording:
        def __str__(self):
            assert append_span(buffer, CLIENT_SPAN) is None  # a nested call, mid-way through the outer one
            return "recorded"

    assert append_span(buffer, _with(9, (("k", Recording()),))) is None
    outer = _expected_span(_with(9, (("k", "recorded"),)))
    assert list(ScopeSpans.FromString(bytes(buffer)).spans) == [_expected_span(CLIENT_SPAN), outer]


def test_interrupts_and_wrong_buffers_are_not_a_records_fault():
    with pytest.raises(KeyboardInterrupt):
        append_span(SpanBatch(), _with(9, (("k", _Interrupting()),)))
    with pytest.raises(TypeError, match="batch must be a SpanBatch, got bytearray"):
        append_span(bytearray(), CLIENT_SPAN)
    with pytest.raises(TypeError, match="takes 2 arguments"):
        append_span(SpanBatch())
    with pytest.raises(ValueError, match="attribute 0 key must be a str"):
        ExportRequestFramer({1: "one"}, "s")


def test_encoding_hostile_batches_again_and_again_does_not_grow_memory():
    records = [CLIENT_SPAN, *(hostile for hostile, _ in HOSTILE_RECORDS[:-1])]  # (the 5000-digit str() is slow)
    def encode(records):
        buffer = SpanBatch()
        return [append_span(buffer, record) for record in records]

    for _ in range(50):  # warm: interned reasons, allocator pools
        encode(records)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(1000):
            encode(records)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024  # a leak of one object per call would be > 100 KB


def test_http_spans_of_ever_new_constant_tuples_hold_no_more_memory_than_the_bounded_cache():
    fields = list(_http_fields(random.Random(23)))

    def encode(first: int) -> None:
        buffer = SpanBatch()
        for n in range(first, first + 1000):  # a new tuple each time: every span stores it, dropping another
            fields[7] = ((conventions.SERVER_ADDRESS, f"service-{n}"), (conventions.ENDPOINT, "10.0.0.1:80"))
            assert append_http_span(buffer, HTTP_SPAN_KEYS, tuple(fields)) is None

    encode(0)  # fills the cache
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for first in range(1000, 6000, 1000):
            encode(first)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024  # a tuple kept per span would be > 1 MB
