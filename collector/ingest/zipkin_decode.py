"""Zipkin v2 JSON spans to ``SpanColumns``, mapped onto the OTLP-shaped model.

Mapping (the same one the OpenTelemetry Zipkin exporter uses, read backwards):
``localEndpoint.serviceName`` is the service (resource ``service.name``), its ip/port become
``net.host.ip``/``net.host.port``; ``remoteEndpoint`` becomes ``peer.service``, ``net.peer.ip`` and
``net.peer.port``; tags are string attributes and an ``error`` tag sets status ERROR with the tag
as message; annotations are events; ``shared``/``debug`` are kept as ``zipkin.shared``/
``zipkin.debug``. 64-bit trace ids are left-padded with zeros to 128 bits, microseconds become
nanoseconds. A span without ``timestamp`` (Zipkin allows it for late-arriving annotations) starts
at its first annotation, or else at the time it was received, and is marked ``zipkin.timestamp_missing``.
"""

from __future__ import annotations

import time

from spans.model import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_PRODUCER,
    KIND_SERVER,
    KIND_UNSPECIFIED,
    STATUS_ERROR,
    STATUS_UNSET,
    UNKNOWN_SERVICE,
    dumps,
    empty_columns,
    value_text,
)
from spans.otlp_decode import DecodedBatch, PayloadError, load_json

ZIPKIN_KINDS = {"CLIENT": KIND_CLIENT, "SERVER": KIND_SERVER, "PRODUCER": KIND_PRODUCER, "CONSUMER": KIND_CONSUMER}
_HEX_DIGITS = frozenset("0123456789abcdef")


class SpanProblem(ValueError):
    pass


def _hex_id(span: dict, name: str, lengths: tuple[int, ...], required: bool = True) -> str:
    value = span.get(name)
    if value in (None, ""):
        if required:
            raise SpanProblem(f"{name} is missing")
        return ""
    if not isinstance(value, str):
        raise SpanProblem(f"{name} must be a hex string, got {value!r}")
    value = value.lower()
    if len(value) not in lengths or not _HEX_DIGITS.issuperset(value):
        wanted = " or ".join(str(n) for n in lengths)
        raise SpanProblem(f"{name} must be {wanted} hex digits, got {value!r}")
    return value


def _microseconds(span: dict, name: str) -> int | None:
    value = span.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpanProblem(f"{name} must be a non-negative integer of microseconds, got {value!r}")
    return value


def _endpoint(span: dict, name: str) -> dict:
    endpoint = span.get(name) or {}
    if not isinstance(endpoint, dict):
        raise SpanProblem(f"{name} must be an object")
    return endpoint


def _span_row(span: dict, received_ns: int) -> tuple:
    if not isinstance(span, dict):
        raise SpanProblem("is not a JSON object")
    trace_id = _hex_id(span, "traceId", (16, 32)).rjust(32, "0")
    span_id = _hex_id(span, "id", (16,))
    parent_id = _hex_id(span, "parentId", (16,), required=False)
    kind_name = span.get("kind")
    if kind_name is not None and kind_name not in ZIPKIN_KINDS:
        raise SpanProblem(f"kind must be one of {', '.join(ZIPKIN_KINDS)}, got {kind_name!r}")
    tags = span.get("tags") or {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise SpanProblem("tags must be an object of string values")
    annotations = span.get("annotations") or []
    if not isinstance(annotations, list):
        raise SpanProblem("annotations must be an array")
    events = []
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or not isinstance(annotation.get("value"), str):
            raise SpanProblem(f"annotations[{index}] needs a string value")
        at = _microseconds(annotation, "timestamp")
        if at is None:
            raise SpanProblem(f"annotations[{index}].timestamp is missing")
        events.append({"time_ns": at * 1000, "name": annotation["value"], "attributes": {}})

    attributes: dict = dict(tags)
    start_us = _microseconds(span, "timestamp")
    duration_us = _microseconds(span, "duration") or 0
    if start_us is None:
        attributes["zipkin.timestamp_missing"] = True
        start_ns = min(e["time_ns"] for e in events) if events else received_ns
    else:
        start_ns = start_us * 1000

    local = _endpoint(span, "localEndpoint")
    remote = _endpoint(span, "remoteEndpoint")
    local_ip = local.get("ipv4") or local.get("ipv6")
    if local_ip:
        attributes["net.host.ip"] = local_ip
    if local.get("port"):
        attributes["net.host.port"] = local["port"]
    if remote.get("serviceName"):
        attributes["peer.service"] = remote["serviceName"]
    remote_ip = remote.get("ipv4") or remote.get("ipv6")
    if remote_ip:
        attributes["net.peer.ip"] = remote_ip
    if remote.get("port"):
        attributes["net.peer.port"] = remote["port"]
    if span.get("shared"):
        attributes["zipkin.shared"] = True
    if span.get("debug"):
        attributes["zipkin.debug"] = True

    service = local.get("serviceName") or UNKNOWN_SERVICE
    if not isinstance(service, str):
        raise SpanProblem("localEndpoint.serviceName must be a string")
    name = span.get("name") or ""
    if not isinstance(name, str):
        raise SpanProblem("name must be a string")
    error = tags.get("error")
    resource = {"service.name": service}
    tag_texts = [f"{k}={value_text(v)}" for k, v in attributes.items()]
    tag_texts.append(f"service.name={service}")
    return (
        trace_id, span_id, parent_id, "", name, ZIPKIN_KINDS.get(kind_name, KIND_UNSPECIFIED), service,
        start_ns, duration_us * 1000, STATUS_ERROR if error is not None else STATUS_UNSET, error or "",
        dumps(attributes), dumps(resource), "", "", "{}", dumps(events), "[]", tag_texts,
    )


def decode_zipkin_json(body: bytes | str) -> DecodedBatch:
    """A Zipkin v2 ``ListOfSpans`` to columns; bad spans are listed by index, good ones kept."""
    document = load_json(body)
    if not isinstance(document, list):
        raise PayloadError("a Zipkin v2 request must be a JSON array of spans")
    batch = DecodedBatch(empty_columns())
    received_ns = time.time_ns()
    rows = []
    for index, span in enumerate(document):
        try:
            rows.append(_span_row(span, received_ns))
        except SpanProblem as problem:
            span_id = span.get("id") if isinstance(span, dict) else None
            label = f"span {index}" + (f" (id {span_id})" if isinstance(span_id, str) else "")
            batch.rejected.append(f"{label}: {problem}")
    for name, values in zip(batch.columns, zip(*rows)):
        batch.columns[name].extend(values)
    return batch
