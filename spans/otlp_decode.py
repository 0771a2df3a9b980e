"""OTLP trace requests (protobuf and OTLP/JSON) to ``SpanColumns``: the collector's hot path.

Decoding one Python object per attribute is what makes OTLP ingest slow, so the protobuf request
is parsed (by the upb C implementation) against a *raw-attributes view* of the OTLP schema: the
same wire format, except that span, event and link attributes stay undecoded ``KeyValue`` bytes.
Real traffic repeats most attributes (``http.method=GET``, the same routes and peers), so each
distinct ``KeyValue`` encoding is turned into its JSON fragment and ``key=value`` tag once and
then found by a dict lookup, and each span's ``attributes`` text is a join of fragments.

OTLP/JSON is converted to the protobuf message (hex ids, which ``json_format`` would read as
base64, are converted first) and then takes the same path, so both formats obey the same rules.

Bad spans are rejected one by one (OTLP's ``partial_success``) with a message naming the span's
position and the problem; only a payload that cannot be parsed at all fails as a whole.
"""

from __future__ import annotations

import base64
from itertools import chain, islice
from operator import attrgetter, le, sub
from dataclasses import dataclass, field

import orjson
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

from spans.model import (
    KIND_CONSUMER,
    STATUS_ERROR,
    UNKNOWN_SERVICE,
    SpanColumns,
    bytes_value,
    empty_columns,
    value_text,
)

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest
ExportTraceServiceResponse = trace_service_pb2.ExportTraceServiceResponse

_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)
_CACHE_LIMIT = 200_000  # distinct KeyValue encodings remembered


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


# --- the raw-attributes view of the OTLP trace schema -------------------------------------------

def _raw_attributes_request_class():
    """ExportTraceServiceRequest, with span/event/link ``attributes`` typed ``repeated bytes``."""
    trace_file = descriptor_pb2.FileDescriptorProto()
    trace_pb2.DESCRIPTOR.CopyToProto(trace_file)
    service_file = descriptor_pb2.FileDescriptorProto()
    trace_service_pb2.DESCRIPTOR.CopyToProto(service_file)

    package = "tracemesh.otlp_raw_attributes"
    view = descriptor_pb2.FileDescriptorProto(
        name="tracemesh/otlp_raw_attributes.proto", package=package, syntax="proto3"
    )
    view.dependency.extend(trace_file.dependency)
    old_prefix = f".{trace_file.package}."

    def retarget(message: descriptor_pb2.DescriptorProto) -> None:
        for fld in message.field:
            if fld.type_name.endswith(".KeyValue") and fld.name == "attributes":
                fld.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                fld.ClearField("type_name")
            elif fld.type_name.startswith(old_prefix):
                fld.type_name = f".{package}.{fld.type_name[len(old_prefix):]}"
        for nested in message.nested_type:
            retarget(nested)

    for message in trace_file.message_type:
        copy = view.message_type.add()
        copy.CopyFrom(message)
        retarget(copy)
    request = next(m for m in service_file.message_type if m.name == "ExportTraceServiceRequest")
    copy = view.message_type.add()
    copy.CopyFrom(request)
    retarget(copy)

    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(view.name)
    except KeyError:
        pool.Add(view)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.ExportTraceServiceRequest"))


_RawAttributesRequest = _raw_attributes_request_class()


# --- typed values -------------------------------------------------------------------------------

def any_value(value) -> object:
    """An OTLP ``AnyValue`` as the plain Python value stored in the JSON columns."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return bytes_value(value.bytes_value)
    return getattr(value, kind)


def attributes_dict(key_values) -> dict:
    return {kv.key: any_value(kv.value) for kv in key_values}


def attribute_tags(attributes: dict) -> list[str]:
    return [f"{key}={value_text(value)}" for key, value in attributes.items()]


class _KeyValueTexts(dict):
    """Raw ``KeyValue`` bytes -> ``"key":json`` fragment, filling ``tags`` (-> ``key=value``) too.

    A miss costs about as much as decoding the attribute the plain way, so the scalar cases are
    spelled out here rather than going through ``any_value`` and ``value_text``.
    """

    def __init__(self):
        super().__init__()
        self.tags: dict[bytes, str] = {}
        self.key_prefixes: dict[str, str] = {}  # key -> '"key":'

    def __missing__(self, raw: bytes) -> str:
        try:
            kv = KeyValue.FromString(raw)
        except DecodeError as exc:  # the raw-attributes view leaves KeyValue checks to this parse
            raise PayloadError(f"an attribute is not a valid OTLP KeyValue: {exc}") from None
        key, value = kv.key, kv.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            text = value.string_value
            json_text = orjson.dumps(text).decode()
        elif kind == "int_value":
            text = json_text = str(value.int_value)
        elif kind == "bool_value":
            text = json_text = "true" if value.bool_value else "false"
        elif kind == "double_value":
            number = value.double_value
            text, json_text = repr(number), orjson.dumps(number).decode()
        else:
            plain = any_value(value)
            text, json_text = value_text(plain), orjson.dumps(plain).decode()
        prefix = self.key_prefixes.get(key)
        if prefix is None:
            prefix = self.key_prefixes[key] = orjson.dumps(key).decode() + ":"
        self.tags[raw] = key + "=" + text  # before the fragment: other threads read tags after it
        fragment = self[raw] = prefix + json_text
        return fragment


_shared_texts = _KeyValueTexts()  # shared by all receiver threads: more hits than one per thread


def _texts() -> _KeyValueTexts:
    """The cache to use for one request; replaced (never cleared under a reader) when it is full."""
    global _shared_texts
    if len(_shared_texts) > _CACHE_LIMIT:
        _shared_texts = _KeyValueTexts()
    return _shared_texts


# --- validation ---------------------------------------------------------------------------------

def _span_problem(span) -> str | None:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16:
        return f"trace_id must be 16 bytes, got {len(trace_id)}"
    if trace_id == _ZERO_TRACE_ID:
        return "trace_id is missing (all zero)"
    if len(span_id) != 8:
        return f"span_id must be 8 bytes, got {len(span_id)}"
    if span_id == _ZERO_SPAN_ID:
        return "span_id is missing (all zero)"
    if len(parent) not in (0, 8):
        return f"parent_span_id must be empty or 8 bytes, got {len(parent)}"
    if not span.start_time_unix_nano:
        return "start_time_unix_nano is missing"
    if span.end_time_unix_nano < span.start_time_unix_nano:
        return "end_time_unix_nano is before start_time_unix_nano"
    if span.kind > KIND_CONSUMER:
        return f"kind {span.kind} is not a SpanKind"
    if span.status.code > STATUS_ERROR:
        return f"status code {span.status.code} is not a StatusCode"
    for link_index, link in enumerate(span.links):
        if len(link.trace_id) != 16 or len(link.span_id) != 8:
            return f"links[{link_index}] needs a 16-byte trace_id and an 8-byte span_id"
    return None


# Span fields read column-wise with C-level getters: every field is read from upb exactly once.
_FIELD_NAMES = (
    "trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind",
    "start_time_unix_nano", "end_time_unix_nano", "status", "attributes", "events", "links",
)
_FIELD_GETTERS = tuple((name, attrgetter(name)) for name in _FIELD_NAMES)
_status_code, _status_message = attrgetter("code"), attrgetter("message")


def _span_fields(spans: list) -> dict[str, list]:
    fields = {name: list(map(get, spans)) for name, get in _FIELD_GETTERS}
    fields["status_code"] = list(map(_status_code, fields["status"]))
    return fields


def _all_spans_valid(fields: dict[str, list]) -> bool:
    """The common case, checked with C-speed builtins before any per-span work."""
    trace_ids, span_ids = fields["trace_id"], fields["span_id"]
    starts = fields["start_time_unix_nano"]
    return (
        set(map(len, trace_ids)) == {16}
        and set(map(len, span_ids)) == {8}
        and set(map(len, fields["parent_span_id"])) <= {0, 8}
        and _ZERO_TRACE_ID not in trace_ids
        and _ZERO_SPAN_ID not in span_ids
        and 0 not in starts
        and all(map(le, starts, fields["end_time_unix_nano"]))
        and max(fields["kind"]) <= KIND_CONSUMER
        and max(fields["status_code"]) <= STATUS_ERROR
        and all(_links_valid(links) for links in fields["links"] if links)
    )


def _links_valid(links) -> bool:
    return all(len(link.trace_id) == 16 and len(link.span_id) == 8 for link in links)


def _good_span_fields(spans: list, path: str, known_problems: dict[str, str], rejected: list[str]) -> dict | None:
    fields = _span_fields(spans)
    if not known_problems and _all_spans_valid(fields):
        return fields
    good = []
    for index, span in enumerate(spans):
        where = f"{path}.spans[{index}]"
        problem = known_problems.get(where) or _span_problem(span)
        if problem is None:
            good.append(span)
        else:
            rejected.append(f"{where}: {problem}")
    return _span_fields(good) if good else None


# --- columns ------------------------------------------------------------------------------------

def _event_json(event, fragment_of, tag_of, tags: list[str]) -> str:
    raw = list(event.attributes)
    attributes = ",".join(map(fragment_of, raw))  # fills the tag cache, so tags after
    tags.extend(map(tag_of, raw))
    return f'{{"time_ns":{event.time_unix_nano},"name":{orjson.dumps(event.name).decode()},"attributes":{{{attributes}}}}}'


def _link_json(link, fragment_of, tag_of, tags: list[str]) -> str:
    raw = list(link.attributes)
    attributes = ",".join(map(fragment_of, raw))
    tags.extend(map(tag_of, raw))
    return (
        f'{{"trace_id":"{link.trace_id.hex()}","span_id":"{link.span_id.hex()}",'
        f'"trace_state":{orjson.dumps(link.trace_state).decode()},"attributes":{{{attributes}}}}}'
    )


def _append_spans(columns: SpanColumns, fields: dict, resource: tuple, scope: tuple, texts: _KeyValueTexts) -> None:
    service, resource_json, resource_tags = resource
    scope_name, scope_version, scope_json, scope_tags = scope
    shared_tags = resource_tags + scope_tags
    fragment_of, tag_of = texts.__getitem__, texts.tags.__getitem__
    count = len(fields["trace_id"])

    columns["trace_id"].extend(map(bytes.hex, fields["trace_id"]))
    columns["span_id"].extend(map(bytes.hex, fields["span_id"]))
    columns["parent_span_id"].extend(map(bytes.hex, fields["parent_span_id"]))
    columns["trace_state"].extend(fields["trace_state"])
    columns["name"].extend(fields["name"])
    columns["kind"].extend(fields["kind"])
    columns["service"].extend([service] * count)
    columns["start_ns"].extend(fields["start_time_unix_nano"])
    columns["duration_ns"].extend(map(sub, fields["end_time_unix_nano"], fields["start_time_unix_nano"]))
    columns["status_code"].extend(fields["status_code"])
    columns["status_message"].extend(map(_status_message, fields["status"]))
    columns["resource_attributes"].extend([resource_json] * count)
    columns["scope_name"].extend([scope_name] * count)
    columns["scope_version"].extend([scope_version] * count)
    columns["scope_attributes"].extend([scope_json] * count)

    # Attributes of all spans at once: one flat list through the caches (C loops), then cut per span.
    raw_lists = fields["attributes"]
    counts = list(map(len, raw_lists))
    flat = list(chain.from_iterable(raw_lists))
    fragments = iter(list(map(fragment_of, flat)))  # fills the tag cache for misses, so tags after
    tags_flat = iter(list(map(tag_of, flat)))
    columns["attributes"].extend(["{" + ",".join(islice(fragments, n)) + "}" for n in counts])
    tags_column = [list(islice(tags_flat, n)) + shared_tags for n in counts]

    events_column = ["[]"] * count
    for index, events in enumerate(fields["events"]):
        if events:
            tags = tags_column[index]
            events_column[index] = "[" + ",".join([_event_json(e, fragment_of, tag_of, tags) for e in events]) + "]"
    links_column = ["[]"] * count
    for index, links in enumerate(fields["links"]):
        if links:
            tags = tags_column[index]
            links_column[index] = "[" + ",".join([_link_json(k, fragment_of, tag_of, tags) for k in links]) + "]"
    columns["events"].extend(events_column)
    columns["links"].extend(links_column)
    columns["tags"].extend(tags_column)


def _resource_part(resource) -> tuple:
    attributes = attributes_dict(resource.attributes)
    service = attributes.get("service.name")
    if not isinstance(service, str) or not service:
        service = UNKNOWN_SERVICE
    return service, orjson.dumps(attributes).decode(), attribute_tags(attributes)


def _scope_part(scope) -> tuple:
    attributes = attributes_dict(scope.attributes)
    return scope.name, scope.version, orjson.dumps(attributes).decode(), attribute_tags(attributes)


def _decode_request(request, known_problems: dict[str, str]) -> DecodedBatch:
    texts = _texts()
    batch = DecodedBatch(empty_columns())
    for r_index, resource_spans in enumerate(request.resource_spans):
        resource = _resource_part(resource_spans.resource)
        for s_index, scope_spans in enumerate(resource_spans.scope_spans):
            spans = list(scope_spans.spans)
            if not spans:
                continue
            path = f"resource_spans[{r_index}].scope_spans[{s_index}]"
            fields = _good_span_fields(spans, path, known_problems, batch.rejected)
            if fields:
                _append_spans(batch.columns, fields, resource, _scope_part(scope_spans.scope), texts)
    return batch


def decode_otlp_protobuf(body: bytes) -> DecodedBatch:
    """A serialized ``ExportTraceServiceRequest`` to columns."""
    try:
        request = _RawAttributesRequest.FromString(body)
    except DecodeError as exc:
        raise PayloadError(f"not a valid OTLP ExportTraceServiceRequest protobuf: {exc}") from None
    return _decode_request(request, {})


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
    return _decode_request(_RawAttributesRequest.FromString(request.SerializeToString()), known_problems)


def export_response(batch: DecodedBatch) -> ExportTraceServiceResponse:
    """The OTLP reply: empty on full success, ``partial_success`` naming rejected spans otherwise."""
    response = ExportTraceServiceResponse()
    if batch.rejected:
        response.partial_success.rejected_spans = len(batch.rejected)
        response.partial_success.error_message = batch.error_message()
    return response
