"""OTLP trace requests (protobuf and OTLP/JSON) to ``SpanColumns``: the collector's hot path.

Building Python protobuf objects (one per span, attribute and value) costs ~10 us per realistic
span, ten times the ingest budget, so the protobuf request is read straight from the wire by the
native ``spans._otlp_columns`` module, which creates only the column values. The policy stays
here: what a resource contributes (its service name, attribute JSON and tags) and what a scope
contributes are computed by the two functions below from plain attribute dicts the module builds.

OTLP/JSON is converted to the protobuf message (hex ids, which ``json_format`` would read as
base64, are converted first) and then takes the same path, so both formats obey the same rules.

Bad spans are rejected one by one (OTLP's ``partial_success``) with a message naming the span's
position and the problem; only a payload that cannot be parsed at all fails as a whole.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from spans import _otlp_columns
from spans.model import COLUMN_NAMES, UNKNOWN_SERVICE, SpanColumns, dumps, value_text

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportTraceServiceResponse = trace_service_pb2.ExportTraceServiceResponse

if _otlp_columns.COLUMN_NAMES != COLUMN_NAMES:
    raise ImportError("spans/_otlp_columns.c writes other columns than spans.model.COLUMN_NAMES; rebuild it")


class PayloadError(ValueError):
    """The payload as a whole cannot be decoded (not protobuf / not JSON / wrong shape)."""


@dataclass
class DecodedBatch:
    """The spans that decoded, and one message per span that did not."""

    columns: SpanColumns
    rejected: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.columns["trace_id"])

    def error_message(self, limit: int = 5) -> str:
        shown = "; ".join(self.rejected[:limit])
        more = len(self.rejected) - limit
        return f"{shown}; and {more} more" if more > 0 else shown


def _attribute_tags(attributes: dict) -> list[str]:
    return [f"{key}={value_text(value)}" for key, value in attributes.items()]


def _resource_part(attributes: dict) -> tuple[str, str, list[str]]:
    """(service, attributes JSON, tags) shared by every span of one resource."""
    service = attributes.get("service.name")
    if not isinstance(service, str) or not service:
        service = UNKNOWN_SERVICE
    return service, dumps(attributes), _attribute_tags(attributes)


def _scope_part(name: str, version: str, attributes: dict) -> tuple[str, str, str, list[str]]:
    """(name, version, attributes JSON, tags) shared by every span of one instrumentation scope."""
    return name, version, dumps(attributes), _attribute_tags(attributes)


def _decode_request(body: bytes, known_problems: dict[str, str]) -> DecodedBatch:
    try:
        columns, rejected = _otlp_columns.decode(body, known_problems, _resource_part, _scope_part)
    except ValueError as exc:  # the native reader names the problem and where it is
        raise PayloadError(str(exc)) from None
    return DecodedBatch(dict(zip(COLUMN_NAMES, columns)), rejected)


def decode_otlp_protobuf(body: bytes) -> DecodedBatch:
    """A serialized ``ExportTraceServiceRequest`` to columns."""
    return _decode_request(body, {})


# --- OTLP/JSON ----------------------------------------------------------------------------------

def _hex_id(holder: dict, names: tuple[str, str], size: int, required: bool) -> str | None:
    """Replace a hex id in an OTLP/JSON object by the base64 ``json_format`` expects; or say why not."""
    name = next((n for n in names if n in holder), None)
    text = holder.get(name) if name else None
    if text in (None, ""):
        if name:
            del holder[name]
        return f"{names[0]} is missing" if required else None
    if not isinstance(text, str) or len(text) != size * 2:
        return f"{names[0]} must be {size * 2} hex digits, got {text!r}"
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        return f"{names[0]} is not hex: {text!r}"
    holder[name] = base64.b64encode(raw).decode()
    return None


def _json_span_problem(span: dict) -> str | None:
    problem = (
        _hex_id(span, ("traceId", "trace_id"), 16, True)
        or _hex_id(span, ("spanId", "span_id"), 8, True)
        or _hex_id(span, ("parentSpanId", "parent_span_id"), 8, False)
    )
    if problem:
        return problem
    for link_index, link in enumerate(span.get("links") or ()):
        if not isinstance(link, dict):
            return f"links[{link_index}] is not an object"
        problem = _hex_id(link, ("traceId", "trace_id"), 16, True) or _hex_id(link, ("spanId", "span_id"), 8, True)
        if problem:
            return f"links[{link_index}].{problem}"
    return None


def _parse_json(document: dict, message_class, where: str):
    try:
        return json_format.ParseDict(document, message_class(), ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise PayloadError(f"{where}: {exc}") from None


def _list_field(holder: dict, names: tuple[str, str], where: str) -> list:
    items = next((holder[n] for n in names if n in holder), None)
    if items is None:
        return []
    if not isinstance(items, list):
        raise PayloadError(f"{where}.{names[0]} must be a JSON array")
    return items


def load_json(body: bytes | str) -> object:
    """A request body's JSON document; PayloadError naming the syntax problem if it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not valid JSON: {exc}") from None


def decode_otlp_json(body: bytes | str) -> DecodedBatch:
    """An OTLP/JSON ``ExportTraceServiceRequest`` (hex ids, either case) to columns."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise PayloadError("an OTLP/JSON request must be a JSON object with resourceSpans")

    request = ExportTraceServiceRequest()
    known_problems: dict[str, str] = {}
    for r_index, resource_spans in enumerate(_list_field(document, ("resourceSpans", "resource_spans"), "request")):
        r_where = f"resource_spans[{r_index}]"
        if not isinstance(resource_spans, dict):
            raise PayloadError(f"{r_where} is not an object")
        scope_list = _list_field(resource_spans, ("scopeSpans", "scope_spans"), r_where)
        shell = {k: v for k, v in resource_spans.items() if k not in ("scopeSpans", "scope_spans")}
        resource_message = request.resource_spans.add()
        resource_message.CopyFrom(_parse_json(shell, trace_pb2.ResourceSpans, r_where))
        for s_index, scope_spans in enumerate(scope_list):
            s_where = f"{r_where}.scope_spans[{s_index}]"
            if not isinstance(scope_spans, dict):
                raise PayloadError(f"{s_where} is not an object")
            span_list = _list_field(scope_spans, ("spans",), s_where)
            shell = {k: v for k, v in scope_spans.items() if k != "spans"}
            scope_message = resource_message.scope_spans.add()
            scope_message.CopyFrom(_parse_json(shell, trace_pb2.ScopeSpans, s_where))
            for index, span in enumerate(span_list):
                where = f"{s_where}.spans[{index}]"
                span_message = scope_message.spans.add()
                problem = _json_span_problem(span) if isinstance(span, dict) else "is not an object"
                if problem is None:
                    try:
                        span_message.CopyFrom(json_format.ParseDict(span, trace_pb2.Span(), ignore_unknown_fields=True))
                    except (json_format.ParseError, TypeError, ValueError) as exc:
                        problem = str(exc)
                if problem is not None:
                    known_problems[where] = problem
    return _decode_request(request.SerializeToString(), known_problems)


def export_response(batch: DecodedBatch) -> ExportTraceServiceResponse:
    """The OTLP reply: empty on full success, ``partial_success`` naming rejected spans otherwise."""
    response = ExportTraceServiceResponse()
    if batch.rejected:
        response.partial_success.rejected_spans = len(batch.rejected)
        response.partial_success.error_message = batch.error_message()
    return response
