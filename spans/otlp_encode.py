"""Span records -> OTLP ``ExportTraceServiceRequest`` bytes, cheap enough to run beside a proxy (and the
collector's answer back).

The proxy records every request as a plain tuple (``SpanRecord``, see mesh-contract). Building the
same request with the protobuf library's message objects costs about 20 µs per span with proxy-sized
attribute sets (upb backend), and writing the wire format in Python still 5-9 µs, a quarter of a
proxy's CPU per request. So spans are written by a native module (``append_span``: about 0.3 µs per
proxy span, every record checked), one at a time as they are recorded, into a ``SpanBatch`` whose memory
is reused from batch to batch; ``ExportRequestFramer`` wraps a batch of them in the resource/scope header
and the request framing. Tests decode the output with
the official ``opentelemetry-proto`` classes to hold it to the schema.

    SpanRecord = (trace_id: 32 hex, span_id: 16 hex, parent_span_id: 16 hex or '', name, kind,
                  start_ns, duration_ns, status_code, status_message,
                  attributes: tuple[tuple[str, str | int | float | bool], ...])

Attribute values keep their OTLP type (str, bool, int64, double); anything else (an int beyond int64,
a subclass, another object) travels as its ``str()`` text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Union

from spans import conventions as conv
from spans._otlp_spans import SpanBatch, append_http_span, append_span, encode_resource

__all__ = ["AttributeValue", "SpanRecord", "SpanBatch", "append_span", "HTTP_SPAN_KEYS", "append_http_span",
           "http_span_record", "encode_spans", "ExportRequestFramer", "encode_export_request",
           "parse_export_response"]  # fmt: skip

AttributeValue = Union[str, int, float, bool]
SpanRecord = tuple[str, str, str, str, int, int, int, int, str, tuple[tuple[str, AttributeValue], ...]]

# The attribute keys of append_http_span's fields from the method on, in their order (the last three are
# left out when 0 or ''). A proxy records an HTTP exchange's span from its fields in one native call: building
# the ~15 (key, value) pairs as tuples for append_span cost ~3x the encoding itself. The encoder reads this tuple,
# and encodes each constant-attributes tuple, once and keeps the result while the same tuple object comes again.
HTTP_SPAN_KEYS = (
    conv.HTTP_METHOD, conv.URL_PATH, conv.QUEUE_NS, conv.CONNECT_NS, conv.CONNECTION_REUSED, conv.RETRIES,
    conv.RETRY_DELAY_NS, conv.FIRST_BYTE_NS, conv.BODY_NS, conv.ENDPOINT_LOAD, conv.HTTP_STATUS, conv.PROXY_ERROR,
    conv.ERROR_TYPE,
)  # fmt: skip
_HTTP_OPTIONAL = len(HTTP_SPAN_KEYS) - 3


def http_span_record(fields: tuple) -> SpanRecord:
    """The SpanRecord of what ``append_http_span`` encodes from the same ``fields``, for whoever reads
    spans as records (live taps)."""
    trace_id, span_id, parent_span_id, kind, start_ns, duration_ns, status_code, constant, method, target = fields[:10]
    name = method.decode("latin-1")
    values = (name, target.partition(b"?")[0].decode("latin-1"), *fields[10:])
    attributes = constant + tuple(
        (key, value)
        for i, (key, value) in enumerate(zip(HTTP_SPAN_KEYS, values))
        if i < _HTTP_OPTIONAL or not (type(value) is int and value == 0 or isinstance(value, str) and not value)
    )
    return trace_id, span_id, parent_span_id, name, kind, start_ns, duration_ns, status_code, values[-2], attributes


# Length-delimited field tags, (field number << 3) | 2. ExportTraceServiceRequest.resource_spans = 1;
# ResourceSpans.resource = 1, .scope_spans = 2; ScopeSpans.scope = 1 (its spans, 2, come from
# append_span); InstrumentationScope.name = 1, .version = 2.
_FIELD_1 = b"\x0a"
_FIELD_2 = b"\x12"


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    groups = bytearray()
    while n > 0x7F:
        groups.append(n & 0x7F | 0x80)
        n >>= 7
    groups.append(n)
    return bytes(groups)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def encode_spans(records: Sequence[SpanRecord]) -> tuple[SpanBatch, list[tuple[int, str]]]:
    """The span fields of every well-formed record, and (index, why) for each one left out."""
    span_fields = SpanBatch()
    malformed = []
    for index, record in enumerate(records):
        reason = append_span(span_fields, record)
        if reason is not None:
            malformed.append((index, reason))
    return span_fields, malformed


class ExportRequestFramer:
    """Wraps span fields (from ``append_span``) in an ExportTraceServiceRequest for one resource and
    instrumentation scope, whose encoding is built once. A malformed resource attribute raises
    ValueError here."""

    def __init__(self, resource_attrs: Mapping[str, AttributeValue], scope_name: str, scope_version: str = ""):
        scope = _length_delimited(_FIELD_1, scope_name.encode("utf-8", "replace"))
        if scope_version:
            scope += _length_delimited(_FIELD_2, scope_version.encode("utf-8", "replace"))
        self._resource_field = _length_delimited(_FIELD_1, encode_resource(tuple(resource_attrs.items())))
        self._scope_field = _length_delimited(_FIELD_1, scope)

    def request(self, span_fields: SpanBatch | bytes) -> bytes:
        # Nested length-delimited messages, joined once (the span fields are most of the bytes):
        # request{ resource_spans{ resource, scope_spans{ scope, spans... } } }
        scope_spans_len = len(self._scope_field) + len(span_fields)
        scope_spans_head = _FIELD_2 + _varint(scope_spans_len)
        resource_spans_len = len(self._resource_field) + len(scope_spans_head) + scope_spans_len
        return b"".join(
            (_FIELD_1, _varint(resource_spans_len), self._resource_field, scope_spans_head, self._scope_field, span_fields)
        )


def encode_export_request(
    resource_attrs: Mapping[str, AttributeValue], scope_name: str, records: Sequence[SpanRecord]
) -> bytes:
    """One request holding all of ``records``; raises ValueError naming the first malformed one."""
    span_fields, malformed = encode_spans(records)
    if malformed:
        index, reason = malformed[0]
        raise ValueError(f"span record {index}: {reason}")
    return ExportRequestFramer(resource_attrs, scope_name).request(span_fields)


def parse_export_response(payload: bytes) -> tuple[int, str]:
    """(rejected_spans, error_message) of an ``ExportTraceServiceResponse``: the exporter's half of
    the exchange, read without loading the protobuf runtime (3 MB of a proxy's RSS) for two fields.
    Raises ValueError on bytes that are not a protobuf message."""
    rejected, message = 0, ""
    for field, value in _fields(payload):
        if field == 1 and isinstance(value, bytes):  # partial_success
            for inner_field, inner_value in _fields(value):
                if inner_field == 1 and isinstance(inner_value, int):
                    rejected = inner_value
                elif inner_field == 2 and isinstance(inner_value, bytes):
                    message = inner_value.decode("utf-8", "replace")
    return rejected, message


def _fields(payload: bytes):
    """(field number, value) pairs of one message level: int for varints, bytes for the rest."""
    position, end = 0, len(payload)
    while position < end:
        tag, position = _read_varint(payload, position)
        field, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = _read_varint(payload, position)
        elif wire_type == 2:
            length, position = _read_varint(payload, position)
            value, position = payload[position : position + length], position + length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            value, position = payload[position : position + size], position + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        if position > end:
            raise ValueError("truncated protobuf message")
        yield field, value


def _read_varint(payload: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if position >= len(payload) or shift > 63:
            raise ValueError("truncated or overlong protobuf varint")
        byte = payload[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
