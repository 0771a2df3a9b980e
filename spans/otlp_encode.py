"""Span records -> OTLP ``ExportTraceServiceRequest`` bytes, fast enough to run beside a proxy (and the
collector's answer back).

The proxy records every request as a plain tuple (``SpanRecord``, see mesh-contract) and encodes them
in batches off the request path. Building the same request with the protobuf library's message
objects costs about 20 µs per span with proxy-sized attribute sets (measured with the upb backend),
which would double a proxy's CPU per request, so this module writes the protobuf wire format directly
for the handful of message fields a proxy span uses, and caches the encoded form of attribute pairs
that repeat (method, peer service, endpoint, direction, ...). Tests decode its output with the
official ``opentelemetry-proto`` classes to hold it to the schema.

    SpanRecord = (trace_id: 32 hex, span_id: 16 hex, parent_span_id: 16 hex or '', name, kind,
                  start_ns, duration_ns, status_code, status_message,
                  attributes: tuple[tuple[str, str | int | float | bool], ...])
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Union

AttributeValue = Union[str, int, float, bool]
SpanRecord = tuple[str, str, str, str, int, int, int, int, str, tuple[tuple[str, AttributeValue], ...]]

# Field tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited).
# ExportTraceServiceRequest.resource_spans = 1; ResourceSpans.resource = 1, .scope_spans = 2;
# Resource.attributes = 1; ScopeSpans.scope = 1, .spans = 2; InstrumentationScope.name = 1, .version = 2.
_LEN_FIELD_1 = b"\x0a"
_LEN_FIELD_2 = b"\x12"
# Span: trace_id 1, span_id 2, parent_span_id 4 (their tag + length bytes are the hex prefixes
# "0a10", "1208", "2208" in SpanBatchEncoder._span), name 5, kind 6 (varint), start 7 / end 8
# (fixed64), attributes 9, status 15. Status: message 2, code 3 (varint).
_NAME = b"\x2a"
_KIND = b"\x30"
_TIMES = struct.Struct("<BQBQ")  # 0x39 start fixed64, 0x41 end fixed64
_ATTRIBUTE = b"\x4a"
_STATUS = b"\x7a"
_STATUS_MESSAGE = b"\x12"
_STATUS_CODE = b"\x18"
# AnyValue: string 1, bool 2, int 3 (varint, two's complement int64), double 4 (fixed64).
_STRING_VALUE = b"\x0a"
_BOOL_VALUE = b"\x10"
_INT_VALUE = b"\x18"
_DOUBLE_VALUE = b"\x21"
_DOUBLE = struct.Struct("<d")

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SMALL_INT_LIMIT = 1024  # ints below this (status codes, counts, zero durations) are cached whole
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(128))
_CONTINUED = tuple(bytes((n | 0x80,)) for n in range(128))

# Encoded attribute pairs kept per encoder; cleared when full so high-cardinality values
# (paths with ids, client addresses) cannot grow it without bound.
CACHE_LIMIT = 8192


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int (unrolled for the common 1-3 byte sizes)."""
    if n < 0x80:
        return _SMALL_VARINTS[n]
    if n < 0x4000:
        return _CONTINUED[n & 0x7F] + _SMALL_VARINTS[n >> 7]
    if n < 0x200000:
        return _CONTINUED[n & 0x7F] + _CONTINUED[n >> 7 & 0x7F] + _SMALL_VARINTS[n >> 14]
    groups = []
    while n > 0x7F:
        groups.append(_CONTINUED[n & 0x7F])
        n >>= 7
    groups.append(_SMALL_VARINTS[n])
    return b"".join(groups)


def _length_delimited(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")


def _any_value(value: AttributeValue) -> bytes:
    kind = type(value)
    if kind is str:
        return _length_delimited(_STRING_VALUE, _utf8(value))
    if kind is bool:
        return _BOOL_VALUE + (b"\x01" if value else b"\x00")
    if kind is int and _INT64_MIN <= value <= _INT64_MAX:
        return _INT_VALUE + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if kind is float:
        return _DOUBLE_VALUE + _DOUBLE.pack(value)
    # Anything else (an int beyond int64, a subclass, a stray object) travels as its text.
    return _length_delimited(_STRING_VALUE, _utf8(str(value)))


def _key_value(key: str, value: AttributeValue) -> bytes:
    """A KeyValue message body (key = 1, value = 2)."""
    return _length_delimited(_LEN_FIELD_1, _utf8(key)) + _length_delimited(_LEN_FIELD_2, _any_value(value))


def _attribute_list(tag: bytes, attributes: Iterable[tuple[str, AttributeValue]]) -> bytes:
    return b"".join(_length_delimited(tag, _key_value(key, value)) for key, value in attributes)


class SpanBatchEncoder:
    """Encodes batches of span records for one resource and instrumentation scope.

    Keep one per exporter: the resource/scope header is built once and attribute encodings are
    cached across batches. Not thread-safe (an exporter thread owns it).
    """

    def __init__(self, resource_attrs: Mapping[str, AttributeValue], scope_name: str, scope_version: str = ""):
        resource = _attribute_list(_LEN_FIELD_1, resource_attrs.items())
        scope = _length_delimited(_LEN_FIELD_1, _utf8(scope_name))
        if scope_version:
            scope += _length_delimited(_LEN_FIELD_2, _utf8(scope_version))
        self._resource_field = _length_delimited(_LEN_FIELD_1, resource)
        self._scope_field = _length_delimited(_LEN_FIELD_1, scope)
        # Whole encoded attribute fields for repeating pairs. One dict per value type, because
        # (k, True), (k, 1) and (k, 1.0) are equal dict keys but encode differently.
        self._str_pairs: dict[tuple[str, str], bytes] = {}
        self._bool_pairs: dict[tuple[str, bool], bytes] = {}
        self._small_int_pairs: dict[tuple[str, int], bytes] = {}
        # Per key: the attribute field up to the value (an int's varint, indexed by its size; a double).
        self._int_prefixes: dict[str, tuple[bytes, ...]] = {}
        self._double_prefixes: dict[str, bytes] = {}
        self._heads: dict[tuple[str, int], bytes] = {}  # (name, kind) -> encoded name + kind fields

    def encode(self, records: Sequence[SpanRecord]) -> bytes:
        """ExportTraceServiceRequest bytes holding ``records`` under this encoder's resource and scope."""
        return self.request(self.span_fields(records))

    def span_fields(self, records: Sequence[SpanRecord]) -> bytes:
        """The encoded spans alone; pieces encoded separately may be joined and passed to ``request``."""
        span = self._span
        return b"".join([span(record) for record in records])

    def request(self, span_fields: bytes) -> bytes:
        scope_spans = self._scope_field + span_fields
        resource_spans = self._resource_field + _length_delimited(_LEN_FIELD_2, scope_spans)
        return _length_delimited(_LEN_FIELD_1, resource_spans)

    def _span(self, record: SpanRecord) -> bytes:
        """One ``ScopeSpans.spans`` field: tag, length, Span message."""
        trace_id, span_id, parent_span_id, name, kind, start_ns, duration_ns, status_code, status_message, attrs = record
        if len(trace_id) != 32 or len(span_id) != 16 or len(parent_span_id) not in (0, 16):
            # The ids' length prefixes below are fixed; a wrong length would corrupt the whole request.
            raise ValueError(f"span ids must be 32/16/16-or-0 hex digits: {trace_id!r} {span_id!r} {parent_span_id!r}")
        if parent_span_id:
            ids = bytes.fromhex(f"0a10{trace_id}1208{span_id}2208{parent_span_id}")
        else:
            ids = bytes.fromhex(f"0a10{trace_id}1208{span_id}")
        head = self._heads.get((name, kind)) or self._cached(
            self._heads, (name, kind), _length_delimited(_NAME, _utf8(name)) + _KIND + _varint(kind)
        )
        parts = [ids, head, _TIMES.pack(0x39, start_ns, 0x41, start_ns + duration_ns)]
        append = parts.append
        str_pairs = self._str_pairs
        int_prefixes = self._int_prefixes
        for pair in attrs:
            value = pair[1]
            value_type = type(value)
            if value_type is str:
                append(str_pairs.get(pair) or self._cached(str_pairs, pair, _attribute_field(pair)))
            elif value_type is int and 0 <= value <= _INT64_MAX:
                if value < _SMALL_INT_LIMIT:
                    pairs = self._small_int_pairs
                    append(pairs.get(pair) or self._cached(pairs, pair, _attribute_field(pair)))
                else:
                    key = pair[0]
                    prefixes = int_prefixes.get(key) or self._cached(int_prefixes, key, _int_prefixes(key))
                    varint = _varint(value)
                    append(prefixes[len(varint)] + varint)
            elif value_type is float:
                key = pair[0]
                prefix = self._double_prefixes.get(key) or self._cached(
                    self._double_prefixes, key, _double_prefix(key)
                )
                append(prefix + _DOUBLE.pack(value))
            elif value_type is bool:
                pairs = self._bool_pairs
                append(pairs.get(pair) or self._cached(pairs, pair, _attribute_field(pair)))
            else:
                append(_attribute_field(pair))
        if status_code or status_message:
            status = _STATUS_CODE + _varint(status_code)
            if status_message:
                status = _length_delimited(_STATUS_MESSAGE, _utf8(status_message)) + status
            append(_length_delimited(_STATUS, status))
        body = b"".join(parts)
        return _LEN_FIELD_2 + _varint(len(body)) + body

    @staticmethod
    def _cached(cache: dict, key, value):
        """Stores and returns ``value``; a full cache is emptied first, so it stays bounded."""
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = value
        return value


def _attribute_field(pair: tuple[str, AttributeValue]) -> bytes:
    return _length_delimited(_ATTRIBUTE, _key_value(*pair))


def _int_prefixes(key: str) -> tuple[bytes, ...]:
    """For each varint size 0..10, the bytes of an int attribute field that precede the varint."""
    key_field = _length_delimited(_LEN_FIELD_1, _utf8(key))
    prefixes = []
    for size in range(11):
        any_value_length = 1 + size  # int_value tag + varint
        key_value_length = len(key_field) + 1 + len(_varint(any_value_length)) + any_value_length
        prefixes.append(
            _ATTRIBUTE + _varint(key_value_length) + key_field + _LEN_FIELD_2 + _varint(any_value_length) + _INT_VALUE
        )
    return tuple(prefixes)


def _double_prefix(key: str) -> bytes:
    """The bytes of a double attribute field that precede the 8 value bytes."""
    key_field = _length_delimited(_LEN_FIELD_1, _utf8(key))
    any_value_length = 9  # double_value tag + fixed64
    key_value_length = len(key_field) + 2 + any_value_length
    return _ATTRIBUTE + _varint(key_value_length) + key_field + _LEN_FIELD_2 + b"\x09" + _DOUBLE_VALUE


def encode_export_request(
    resource_attrs: Mapping[str, AttributeValue], scope_name: str, records: Sequence[SpanRecord]
) -> bytes:
    """One-shot form of ``SpanBatchEncoder(resource_attrs, scope_name).encode(records)``."""
    return SpanBatchEncoder(resource_attrs, scope_name).encode(records)


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
