"""The native OTLP protobuf reader against an independent reading of the same bytes.

Every request here is built with the official opentelemetry-proto classes; the expected columns
are computed from the official parse (upb) with the column contract written out plainly below.
Then hostile bytes: deterministic mutations of real requests must give a batch or a PayloadError,
never a crash, and the protobuf rules the reader follows (unknown fields, merging, limits) are
checked one by one.
"""

from __future__ import annotations

import base64
import gc
import math
import random
import struct

import orjson
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from spans.model import COLUMN_NAMES, row_count
from spans.otlp_decode import PayloadError, decode_otlp_protobuf
from tests.test_ingest_decode import sdk_spans

# --- requests with every kind of value ----------------------------------------------------------

ODD_TEXTS = ["", "plain", 'quote " and \\ backslash', "tab\tnewline\ncontrol\x01\x1f", "üñíçødé 漢字 🚀", "/" * 40]
ODD_DOUBLES = [0.0, -0.0, 72.5, 1e-7, 1e16, 1.7976931348623157e308, 5e-324, math.nan, math.inf, -math.inf, 0.1 + 0.2]
ODD_INTS = [0, 1, -1, 2**63 - 1, -(2**63), 10**12]


def any_value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return AnyValue(string_value=rng.choice(ODD_TEXTS))
    if kind == 1:
        return AnyValue(int_value=rng.choice(ODD_INTS))
    if kind == 2:
        return AnyValue(double_value=rng.choice(ODD_DOUBLES + [rng.random()]))
    if kind == 3:
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == 4:
        return AnyValue(bytes_value=rng.randbytes(rng.randrange(6)))
    if kind == 5:
        return AnyValue()  # no value set
    if kind in (6, 7):
        return AnyValue(array_value=ArrayValue(values=[any_value(rng, depth + 1) for _ in range(rng.randrange(4))]))
    return AnyValue(kvlist_value=KeyValueList(values=key_values(rng, rng.randrange(4), depth + 1)))


def key_values(rng: random.Random, count: int, depth: int = 0) -> list[KeyValue]:
    keys = ["k", "http.method", "ключ", 'q"uote', ""]  # few keys: duplicates happen
    return [KeyValue(key=rng.choice(keys), value=any_value(rng, depth)) for _ in range(count)]


def varied_request(seed: int) -> ExportTraceServiceRequest:
    """Several resources and scopes; spans with every value type, events, links, unicode, empty fields."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    for r_index in range(rng.randrange(1, 3)):
        resource_spans = request.resource_spans.add()
        attributes = key_values(rng, rng.randrange(3))
        if r_index == 0:
            attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=rng.choice(["shop", "", "漢"]))))
        resource_spans.resource.attributes.extend(attributes)
        for _ in range(rng.randrange(1, 3)):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name, scope_spans.scope.version = rng.choice(ODD_TEXTS), rng.choice(["", "1.0"])
            scope_spans.scope.attributes.extend(key_values(rng, rng.randrange(2)))
            for _ in range(rng.randrange(5)):
                span = scope_spans.spans.add(
                    trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=rng.choice(ODD_TEXTS),
                    trace_state=rng.choice(["", "a=b"]), kind=rng.randrange(6),
                )
                if rng.random() < 0.7:
                    span.parent_span_id = rng.randbytes(8)
                span.start_time_unix_nano = rng.randrange(1, 2**63)
                span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(10**9)
                span.attributes.extend(key_values(rng, rng.randrange(6)))
                if rng.random() < 0.5:
                    span.status.code, span.status.message = rng.randrange(3), rng.choice(ODD_TEXTS)
                for _ in range(rng.randrange(3)):
                    event = span.events.add(time_unix_nano=rng.randrange(2**64), name=rng.choice(ODD_TEXTS))
                    event.attributes.extend(key_values(rng, rng.randrange(3)))
                for _ in range(rng.randrange(3)):
                    link = span.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), trace_state=rng.choice(["", "x=1"]))
                    link.attributes.extend(key_values(rng, rng.randrange(3)))
                spoil(span, rng)
    return request


def spoil(span, rng: random.Random) -> None:
    """Make about one span in four invalid in one of the ways the contract rejects."""
    if rng.random() > 0.25:
        return
    choice = rng.randrange(9)
    if choice == 0:
        span.trace_id = rng.randbytes(rng.choice([0, 8, 17]))
    elif choice == 1:
        span.trace_id = bytes(16)
    elif choice == 2:
        span.span_id = rng.randbytes(rng.choice([0, 4, 16]))
    elif choice == 3:
        span.span_id = bytes(8)
    elif choice == 4:
        span.parent_span_id = rng.randbytes(3)
    elif choice == 5:
        span.start_time_unix_nano = 0
    elif choice == 6:
        span.end_time_unix_nano = span.start_time_unix_nano - 1
    elif choice == 7:
        span.kind = rng.choice([6, 99])
    else:
        span.links.add(trace_id=rng.randbytes(16), span_id=rng.randbytes(7))


# --- the independent reading ---------------------------------------------------------------------

def plain(value: AnyValue):
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return getattr(value, kind)


def text(value) -> str:
    """The tag text of a value, spelled out: repr for numbers, true/false, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return orjson.dumps(value).decode()


def json_value(value):
    """What a JSON column holds for a value once parsed: NaN and infinities are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    return value


def tags(key_values_) -> list[str]:
    return [f"{kv.key}={text(plain(kv.value))}" for kv in key_values_]


def dict_tags(attributes: dict) -> list[str]:
    return [f"{key}={text(value)}" for key, value in attributes.items()]


def problem(span) -> str | None:
    if len(span.trace_id) != 16:
        return f"trace_id must be 16 bytes, got {len(span.trace_id)}"
    if span.trace_id == bytes(16):
        return "trace_id is missing (all zero)"
    if len(span.span_id) != 8:
        return f"span_id must be 8 bytes, got {len(span.span_id)}"
    if span.span_id == bytes(8):
        return "span_id is missing (all zero)"
    if len(span.parent_span_id) not in (0, 8):
        return f"parent_span_id must be empty or 8 bytes, got {len(span.parent_span_id)}"
    if span.start_time_unix_nano == 0:
        return "start_time_unix_nano is missing"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano is before start_time_unix_nano"
    if not 0 <= span.kind <= 5:
        return f"kind {span.kind} is not a SpanKind"
    if not 0 <= span.status.code <= 2:
        return f"status code {span.status.code} is not a StatusCode"
    for index, link in enumerate(span.links):
        if len(link.trace_id) != 16 or len(link.span_id) != 8:
            return f"links[{index}] needs a 16-byte trace_id and an 8-byte span_id"
    return None


def expected(body: bytes) -> tuple[list[dict], list[str]]:
    """Rows (JSON columns parsed) and rejection messages, from the official parse of ``body``."""
    request = ExportTraceServiceRequest.FromString(body)
    rows, rejected = [], []
    for r_index, resource_spans in enumerate(request.resource_spans):
        resource = {kv.key: plain(kv.value) for kv in resource_spans.resource.attributes}
        service = resource.get("service.name")
        service = service if isinstance(service, str) and service else "unknown_service"
        for s_index, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope
            scope_attributes = {kv.key: plain(kv.value) for kv in scope.attributes}
            for index, span in enumerate(scope_spans.spans):
                why = problem(span)
                if why:
                    rejected.append(f"resource_spans[{r_index}].scope_spans[{s_index}].spans[{index}]: {why}")
                    continue
                rows.append({
                    "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(), "trace_state": span.trace_state,
                    "name": span.name, "kind": span.kind, "service": service,
                    "start_ns": span.start_time_unix_nano,
                    "duration_ns": span.end_time_unix_nano - span.start_time_unix_nano,
                    "status_code": span.status.code, "status_message": span.status.message,
                    "attributes": json_value({kv.key: plain(kv.value) for kv in span.attributes}),
                    "resource_attributes": json_value(resource), "scope_name": scope.name,
                    "scope_version": scope.version, "scope_attributes": json_value(scope_attributes),
                    "events": [
                        {"time_ns": e.time_unix_nano, "name": e.name,
                         "attributes": json_value({kv.key: plain(kv.value) for kv in e.attributes})}
                        for e in span.events
                    ],
                    "links": [
                        {"trace_id": k.trace_id.hex(), "span_id": k.span_id.hex(), "trace_state": k.trace_state,
                         "attributes": json_value({kv.key: plain(kv.value) for kv in k.attributes})}
                        for k in span.links
                    ],
                    "tags": tuple(tags(span.attributes) + dict_tags(resource) + dict_tags(scope_attributes)
                                  + [t for e in span.events for t in tags(e.attributes)]
                                  + [t for k in span.links for t in tags(k.attributes)]),
                })
    return rows, rejected


JSON_COLUMNS = ("attributes", "resource_attributes", "scope_attributes", "events", "links")


def decoded_rows(body: bytes) -> tuple[list[dict], list[str]]:
    batch = decode_otlp_protobuf(body)
    assert {len(batch.columns[name]) for name in COLUMN_NAMES} == {row_count(batch.columns)}
    rows = [dict(zip(COLUMN_NAMES, values)) for values in zip(*(batch.columns[n] for n in COLUMN_NAMES))]
    for row in rows:
        for name in JSON_COLUMNS:
            row[name] = orjson.loads(row[name])
    return rows, batch.rejected


@pytest.mark.parametrize("seed", range(40))
def test_columns_match_an_independent_reading_of_the_same_request(seed):
    body = varied_request(seed).SerializeToString()
    assert decoded_rows(body) == expected(body)


def test_the_sdk_encoder_request_matches_too():
    body = encode_spans(sdk_spans()).SerializeToString()
    rows, rejected = decoded_rows(body)
    assert len(rows) == 2 and (rows, rejected) == expected(body)


def test_every_double_keeps_its_python_repr_in_tags():
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2
    )
    span.attributes.extend(KeyValue(key="d", value=AnyValue(double_value=d)) for d in ODD_DOUBLES)
    [row], _ = decoded_rows(request.SerializeToString())
    assert row["tags"] == tuple(f"d={d!r}" for d in ODD_DOUBLES)


def test_tags_and_columns_are_objects_the_garbage_collector_does_not_walk():
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="s")))
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, start_time_unix_nano=1, end_time_unix_nano=2
    )
    span.attributes.append(KeyValue(key="k", value=AnyValue(int_value=7)))
    columns = decode_otlp_protobuf(request.SerializeToString()).columns
    assert columns["tags"] == [("k=7", "service.name=s")] and not gc.is_tracked(columns["tags"][0])
    assert [name for name in COLUMN_NAMES if gc.is_tracked(columns[name])] == []


def doubles_request(values: list[float]) -> bytes:
    """One span per value, each with the attribute d=value (encoded by hand: 10^5 spans in a second)."""
    head = field(1, 2, b"\x01" * 16) + field(2, 2, b"\x02" * 8) + field(7, 1, struct.pack("<Q", 1)) + field(8, 1, struct.pack("<Q", 2))
    spans = b"".join(
        field(2, 2, head + field(9, 2, field(1, 2, b"d") + field(2, 2, field(4, 1, struct.pack("<d", v))))) for v in values
    )
    return field(1, 2, field(2, 2, spans))


def awkward_doubles(rng: random.Random) -> list[float]:
    """Uniform [0, 1), every magnitude, short decimals, integers, powers of two and their neighbours,
    raw bit patterns: both the native shortest-digits path and CPython's fallback."""
    values = [rng.random() for _ in range(40_000)]
    values += [math.copysign(10 ** rng.uniform(-6, 17), rng.random() - 0.5) for _ in range(40_000)]
    values += [round(rng.uniform(0, 10**rng.randrange(1, 8)), rng.randrange(8)) for _ in range(20_000)]
    values += [float(rng.randrange(-(2**53), 2**53)) for _ in range(5_000)]
    values += [struct.unpack("<d", rng.randbytes(8))[0] for _ in range(10_000)]
    edges = [2.0**k for k in range(-60, 64)] + [10.0**k for k in range(-8, 18)] + [1e-4, 2.0**52, 0.1, 0.3, 5e-324]
    values += [v for edge in edges for v in (edge, math.nextafter(edge, 0), math.nextafter(edge, math.inf), -edge)]
    return values


def test_doubles_keep_their_python_repr_in_tags_and_their_value_in_json():
    values = awkward_doubles(random.Random(7))
    batch = decode_otlp_protobuf(doubles_request(values))
    assert batch.columns["tags"] == [(f"d={v!r}",) for v in values]
    assert [orjson.loads(text)["d"] for text in batch.columns["attributes"]] == [json_value(v) for v in values]


# --- hostile bytes -------------------------------------------------------------------------------

def mutations(body: bytes, rng: random.Random):
    """Truncations, flipped and overwritten bytes, inserted and repeated slices of a real request."""
    for _ in range(600):
        data = bytearray(body)
        kind = rng.randrange(5)
        at = rng.randrange(len(data))
        if kind == 0:
            del data[at:]
        elif kind == 1:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            data[at] = rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x0B, 0x0C, 0x0F, 0x12])
        elif kind == 3:
            data[at:at] = rng.randbytes(rng.randrange(1, 12))
        else:
            end = min(len(data), at + rng.randrange(1, 64))
            data[at:at] = data[at:end] * rng.randrange(1, 4)
        yield bytes(data)


@pytest.mark.parametrize("seed", range(6))
def test_mutated_requests_give_a_batch_or_a_payload_error(seed):
    rng = random.Random(seed)
    body = (encode_spans(sdk_spans()) if seed == 0 else varied_request(seed)).SerializeToString()
    outcomes = {"batch": 0, "error": 0}
    for data in mutations(body, rng):
        try:
            batch = decode_otlp_protobuf(data)
        except PayloadError as exc:
            assert str(exc)
            outcomes["error"] += 1
        else:
            assert {len(batch.columns[name]) for name in COLUMN_NAMES} == {row_count(batch.columns)}
            outcomes["batch"] += 1
    assert outcomes["batch"] and outcomes["error"]  # both paths were exercised


# --- protobuf rules, one by one ------------------------------------------------------------------

def simple_request() -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="shop"))
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="op", start_time_unix_nano=10, end_time_unix_nano=25
    )
    span.attributes.add(key="a", value=AnyValue(int_value=7))
    return request


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field(number: int, wire: int, payload: bytes) -> bytes:
    if wire == 2:
        payload = varint(len(payload)) + payload
    return varint(number << 3 | wire) + payload


UNKNOWN_FIELDS = field(99, 0, varint(2**40)) + field(98, 1, bytes(8)) + field(97, 2, b"\xff\x00junk") + field(96, 5, bytes(4))


def test_unknown_fields_of_every_wire_type_are_skipped_at_every_level():
    request = simple_request()
    clean, _ = decoded_rows(request.SerializeToString())
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for message in (request, request.resource_spans[0], request.resource_spans[0].resource,
                    request.resource_spans[0].scope_spans[0], span, span.attributes[0], span.attributes[0].value):
        message.MergeFromString(UNKNOWN_FIELDS)  # upb keeps them as unknown fields and writes them back
    # A known field number with an unexpected wire type is an unknown field too (name as a varint).
    span.MergeFromString(field(5, 0, varint(3)))
    body = request.SerializeToString()
    assert decoded_rows(body) == (clean, [])


def test_repeated_singular_messages_merge_and_the_last_scalar_wins():
    request = simple_request()
    body = request.SerializeToString()
    span = request.resource_spans[0].scope_spans[0].spans[0]
    extra = field(5, 2, b"renamed") + field(15, 2, field(3, 0, varint(2))) + field(15, 2, field(2, 2, b"boom"))
    span.MergeFromString(extra)
    rows, _ = decoded_rows(request.SerializeToString())
    assert (rows[0]["name"], rows[0]["status_code"], rows[0]["status_message"]) == ("renamed", 2, "boom")
    assert decoded_rows(request.SerializeToString()) == expected(request.SerializeToString())
    assert decoded_rows(body)[0][0]["name"] == "op"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda body: body[:-1], "truncated"),
        (lambda body: body + b"\x0b", "groups are not supported"),
        (lambda body: body + b"\x0f", "invalid wire type"),
        (lambda body: body + b"\x08" + b"\xff" * 10 + b"\x01", "varint longer than 10 bytes"),
        (lambda body: body + b"\x00\x00", "invalid field number"),
        (lambda body: body.replace(b"\x2a\x02op", b"\x2a\x02\xc0\xaf"), "name is not valid UTF-8"),
        (lambda body: body.replace(b"\x2a\x02op", b"\x2a\x02\xed\xa0"), "name is not valid UTF-8"),
    ],
)
def test_malformed_bytes_fail_the_request_naming_the_problem(change, message):
    body = change(simple_request().SerializeToString())
    with pytest.raises(PayloadError, match=message):
        decode_otlp_protobuf(body)


def test_deeply_nested_values_are_refused_not_a_stack_overflow():
    value = field(3, 0, varint(1))  # AnyValue(int_value=1), wrapped in 200 arrays (upb refuses to build it)
    for _ in range(200):
        value = field(5, 2, field(1, 2, value))
    span = simple_request().resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    span += field(9, 2, field(1, 2, b"deep") + field(2, 2, value))
    with pytest.raises(PayloadError, match="nested too deeply"):
        decode_otlp_protobuf(field(1, 2, field(2, 2, field(2, 2, span))))


def test_an_empty_request_and_empty_messages_decode_to_nothing():
    assert row_count(decode_otlp_protobuf(b"").columns) == 0
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add()
    batch = decode_otlp_protobuf(request.SerializeToString())
    assert (row_count(batch.columns), batch.rejected) == (0, [])


def test_spans_of_one_trace_in_a_row_share_their_trace_id_text():
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    ids = [b"\x0a" * 16, b"\x0a" * 16, b"\x0b" * 16, b"\x0a" * 16, b"\x0a" * 15 + b"\x0b"]
    for number, trace_id in enumerate(ids):
        spans.add(trace_id=trace_id, span_id=bytes([number + 1]) * 8, start_time_unix_nano=1, end_time_unix_nano=2)
    spans.add(trace_id=b"\x0a" * 15, span_id=b"\x09" * 8)  # rejected between two spans of one trace
    spans.add(trace_id=b"\x0a" * 15 + b"\x0b", span_id=b"\x08" * 8, start_time_unix_nano=1, end_time_unix_nano=2)
    batch = decode_otlp_protobuf(request.SerializeToString())
    trace_ids = batch.columns["trace_id"]
    assert trace_ids == [i.hex() for i in ids] + [ids[-1].hex()] and len(batch.rejected) == 1
    assert trace_ids[0] is trace_ids[1] and trace_ids[4] is trace_ids[5] and trace_ids[2] is not trace_ids[3]


def test_span_names_are_read_exactly_and_a_repeated_name_shares_its_text():
    # 600 distinct names (more than the name table's slots, so entries collide and are replaced),
    # each twice in a row and again later, plus names the table does not keep (non-ASCII, long).
    names = [f"GET /api/{n}" for n in range(600)] + ["", "üñí /漢字", "x" * 129, "y" * 128]
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    order = [name for name in names for _ in range(2)] + names[::-1]
    for number, name in enumerate(order):
        spans.add(trace_id=b"\x0a" * 16, span_id=struct.pack(">Q", number + 1), name=name,
                  start_time_unix_nano=1, end_time_unix_nano=2)
    decoded = decode_otlp_protobuf(request.SerializeToString()).columns["name"]
    assert decoded == order
    assert decoded[0] is decoded[1]  # the same name in a row: one str
