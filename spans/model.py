"""The one span batch format every part of Tracemesh speaks: columns, not objects.

Decoders (OTLP protobuf/JSON, Zipkin) fill a ``SpanColumns``; the spool serialises it; the store
inserts it as one block; the service graph reads it. Building columns instead of per-span Python
objects is what keeps ingest at 100k+ spans/s per core.

Typed values (attributes, events, links) are kept as JSON text so they round-trip exactly
(string, int, double, bool, arrays, nested maps); ``tags`` holds ``key=value`` text forms of every
attribute a span carries itself or through its resource, scope, events and links, which is what
trace search matches against. A row of ``tags`` is a list or a tuple of str (the OTLP decoder makes
tuples, which the cyclic GC never tracks). The store keeps only hashes of the tags (search input),
so spans read back from it carry empty tags.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

# Span kinds, numbered as in OTLP (opentelemetry.proto.trace.v1.Span.SpanKind).
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
KIND_NAMES = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")

# Status codes, numbered as in OTLP (Status.StatusCode).
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
STATUS_NAMES = ("UNSET", "OK", "ERROR")

UNKNOWN_SERVICE = "unknown_service"

# Column name -> ClickHouse type. The order is the insert order; the store's schema follows it.
COLUMNS: dict[str, str] = {
    "trace_id": "String",  # 32 lowercase hex digits
    "span_id": "String",  # 16 lowercase hex digits
    "parent_span_id": "String",  # '' for a root span
    "trace_state": "String",
    "name": "String",
    "kind": "UInt8",  # KIND_*
    "service": "String",  # resource attribute service.name
    "start_ns": "UInt64",  # Unix epoch nanoseconds
    "duration_ns": "UInt64",
    "status_code": "UInt8",  # STATUS_*
    "status_message": "String",
    "attributes": "String",  # JSON object of typed values
    "resource_attributes": "String",  # JSON object
    "scope_name": "String",
    "scope_version": "String",
    "scope_attributes": "String",  # JSON object
    "events": "String",  # JSON list of {"time_ns", "name", "attributes"}
    "links": "String",  # JSON list of {"trace_id", "span_id", "trace_state", "attributes"}
    "tags": "Array(String)",  # "key=value" text forms, for search
}
COLUMN_NAMES: tuple[str, ...] = tuple(COLUMNS)

SpanColumns = dict[str, list]


def empty_columns() -> SpanColumns:
    return {name: [] for name in COLUMN_NAMES}


def row_count(columns: SpanColumns) -> int:
    return len(columns["trace_id"])


def extend_columns(target: SpanColumns, source: SpanColumns) -> None:
    for name in COLUMN_NAMES:
        target[name].extend(source[name])


def value_text(value: Any) -> str:
    """The text form a tag query compares against: ``123``, ``72.5``, ``true``, ``abc``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return orjson.dumps(value).decode()


def bytes_value(raw: bytes) -> str:
    """Bytes attribute values are kept as base64 text, as OTLP/JSON writes them."""
    return base64.b64encode(raw).decode()


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(text: str) -> Any:
    return orjson.loads(text)
