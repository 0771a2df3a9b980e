"""Span batches for the service-graph tests, built as the ``SpanColumns`` the collector hands over."""

from __future__ import annotations

import itertools
import random

from spans.model import COLUMN_NAMES, KIND_CLIENT, KIND_SERVER, STATUS_ERROR, STATUS_OK, SpanColumns, dumps, value_text
from spans.conventions import DIRECTION, PEER_SERVICE, PROXY_RESOURCE, SERVICE_INSTANCE_ID, SERVICE_NAME

MS = 1_000_000
S = 1_000_000_000

_ids = itertools.count(1)


def new_trace_id() -> str:
    return f"{random.getrandbits(128):032x}"


def new_span_id() -> str:
    return f"{next(_ids):016x}"


def span(
    trace_id: str,
    service: str,
    kind: int,
    start_ns: int,
    duration_ns: int,
    *,
    span_id: str | None = None,
    parent: str = "",
    name: str = "GET",
    error: bool = False,
    attributes: dict | None = None,
    resource: dict | None = None,
) -> dict:
    """One span row; ``span_id`` defaults to a fresh id."""
    attributes = attributes or {}
    resource = {SERVICE_NAME: service, **(resource or {})}
    return {
        "trace_id": trace_id,
        "span_id": span_id or new_span_id(),
        "parent_span_id": parent,
        "trace_state": "",
        "name": name,
        "kind": kind,
        "service": service,
        "start_ns": start_ns,
        "duration_ns": duration_ns,
        "status_code": STATUS_ERROR if error else STATUS_OK,
        "status_message": "boom" if error else "",
        "attributes": dumps(attributes),
        "resource_attributes": dumps(resource),
        "scope_name": "tests.graph",
        "scope_version": "1",
        "scope_attributes": "{}",
        "events": "[]",
        "links": "[]",
        "tags": [f"{key}={value_text(value)}" for key, value in {**attributes, **resource}.items()],
    }


def proxy_hop(
    trace_id: str,
    caller: str,
    callee: str,
    start_ns: int,
    duration_ns: int,
    *,
    parent: str = "",
    error: bool = False,
    attributes: dict | None = None,
    instance: str = "",
) -> list[dict]:
    """The two spans two Tracemesh proxies record for one request: the caller's outbound CLIENT
    span and, as its child, the callee's inbound SERVER span."""
    client = span(
        trace_id,
        caller,
        KIND_CLIENT,
        start_ns,
        duration_ns,
        parent=parent,
        error=error,
        attributes={DIRECTION: "outbound", PEER_SERVICE: callee, **(attributes or {})},
        resource={PROXY_RESOURCE: True},
    )
    server = span(
        trace_id,
        callee,
        KIND_SERVER,
        start_ns + duration_ns // 10,
        duration_ns * 8 // 10,
        parent=client["span_id"],
        error=error,
        attributes={DIRECTION: "inbound"},
        resource={PROXY_RESOURCE: True, SERVICE_INSTANCE_ID: instance} if instance else {PROXY_RESOURCE: True},
    )
    return [client, server]


def columns(rows: list[dict]) -> SpanColumns:
    return {name: [row[name] for row in rows] for name in COLUMN_NAMES}
