"""A small set of traces that exercises every query filter, as the store's insert columns.

Times are relative to the hour before the test runs so that no retention rule ever drops them.
Each trace is built for one question a search must answer right: which span a tag lives on
(own, resource, scope, event, link), values compared as text, tags split over two spans, a
64-bit trace id, a trace whose root never arrived, a trace spread wider than a time window,
values that look like SQL, and non-ASCII names.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from spans.model import (
    COLUMN_NAMES,
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    STATUS_OK,
    STATUS_UNSET,
    SpanColumns,
    dumps,
    value_text,
)

MS = 1_000_000
S = 1_000_000_000

INJECTION = "x' OR '1'='1'; DROP TABLE spans; --"
UNICODE_SERVICE = "сервис-ü 服务"
UNICODE_NAME = "操作 / émoji 🚀"
SLASHED_SERVICE = "billing/worker"  # a path segment in /api/v1/services/{service}/operations


@dataclass
class Span:
    trace_id: str
    span_id: str
    name: str
    service: str
    start_ns: int
    duration_ns: int
    parent_span_id: str = ""
    kind: int = KIND_INTERNAL
    status_code: int = STATUS_UNSET
    status_message: str = ""
    attributes: dict = field(default_factory=dict)
    resource_attributes: dict = field(default_factory=dict)
    scope_name: str = "tracemesh.tests"
    scope_version: str = "1.0"
    scope_attributes: dict = field(default_factory=dict)
    events: list = field(default_factory=list)
    links: list = field(default_factory=list)
    trace_state: str = ""

    def row(self) -> dict:
        resource = {"service.name": self.service, **self.resource_attributes}
        attribute_sets = [self.attributes, resource, self.scope_attributes]
        attribute_sets += [event.get("attributes", {}) for event in self.events]
        attribute_sets += [link.get("attributes", {}) for link in self.links]
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "trace_state": self.trace_state,
            "name": self.name,
            "kind": self.kind,
            "service": self.service,
            "start_ns": self.start_ns,
            "duration_ns": self.duration_ns,
            "status_code": self.status_code,
            "status_message": self.status_message,
            "attributes": dumps(self.attributes),
            "resource_attributes": dumps(resource),
            "scope_name": self.scope_name,
            "scope_version": self.scope_version,
            "scope_attributes": dumps(self.scope_attributes),
            "events": dumps(self.events),
            "links": dumps(self.links),
            "tags": sorted({f"{key}={value_text(value)}" for attrs in attribute_sets for key, value in attrs.items()}),
        }


def columns(spans: list[Span]) -> SpanColumns:
    rows = [span.row() for span in spans]
    return {name: [row[name] for row in rows] for name in COLUMN_NAMES}


class Corpus:
    """The traces, by the role they play in the tests; ``base_ns`` is where trace time starts."""

    def __init__(self) -> None:
        self.base_ns = (time.time_ns() // S - 3600) * S
        base = self.base_ns
        self.checkout = "4bf92f3577b34da6a3ce929d0e0e4736"
        self.database = "5b8efff798038103d269b633813fc60c"
        self.health_64bit = "0000000000000000abcdef0123456789"
        self.orphan = "11111111111111111111111111111111"
        self.wide = "22222222222222222222222222222222"
        self.messaging = "33333333333333333333333333333333"
        self.spans = [
            # checkout: frontend -> checkout -> payments (ERROR), tags on every attachment point.
            Span(self.checkout, "00f067aa0ba902b7", "GET /checkout", "frontend", base, 120 * MS,
                 kind=KIND_SERVER, status_code=STATUS_OK, attributes={"http.method": "GET", "http.route": "/checkout"}),
            Span(self.checkout, "00f067aa0ba902b8", "charge", "checkout", base + 5 * MS, 80 * MS,
                 parent_span_id="00f067aa0ba902b7", kind=KIND_CLIENT, attributes={"peer.service": "payments"}),
            Span(self.checkout, "00f067aa0ba902b9", "POST /charge", "payments", base + 10 * MS, 60 * MS,
                 parent_span_id="00f067aa0ba902b8", kind=KIND_SERVER, status_code=STATUS_ERROR,
                 status_message="card declined",
                 attributes={"http.status_code": 500, "amount": 72.5, "retry": True, "sizes": [1, 2]},
                 resource_attributes={"deployment.environment": "prod"},
                 scope_name="payments.lib", scope_version="2.1", scope_attributes={"lib.flag": "on"},
                 events=[{"time_ns": base + 11 * MS, "name": "exception",
                          "attributes": {"exception.type": "CardError"}}],
                 links=[{"trace_id": self.database, "span_id": "eee19b7ec3c1b174", "trace_state": "k=v",
                         "attributes": {"link.reason": "follows"}}]),
            # database: an SQL-looking attribute, non-ASCII names, an 800ns span.
            Span(self.database, "eee19b7ec3c1b174", UNICODE_NAME, UNICODE_SERVICE, base + 10 * S, 2 * MS,
                 kind=KIND_SERVER, attributes={"db.statement": INJECTION, "ünïcode.key": "välue ✓"}),
            Span(self.database, "eee19b7ec3c1b175", "SELECT", UNICODE_SERVICE, base + 10 * S + MS, 800,
                 parent_span_id="eee19b7ec3c1b174", kind=KIND_CLIENT, attributes={"db.system": "clickhouse"}),
            # health: a Zipkin-style 64-bit trace id.
            Span(self.health_64bit, "abcdef0123456789", "GET /health", "frontend", base + 20 * S, 250_000,
                 kind=KIND_SERVER, attributes={"http.method": "GET", "http.route": "/health"}),
            # orphan: the root never arrived; two spans whose parent is missing.
            Span(self.orphan, "1111111111111112", "worker", "batch", base + 30 * S + 5 * MS, 3 * S,
                 parent_span_id="1111111111111110", kind=KIND_INTERNAL, attributes={"job": "nightly"}),
            Span(self.orphan, "1111111111111113", "sibling", "batch", base + 30 * S + 9 * MS, MS,
                 parent_span_id="1111111111111110", kind=KIND_INTERNAL),
            # wide: the root starts 5 minutes before its child; a window around the child still returns both.
            Span(self.wide, "2222222222222221", "long poll", "gateway", base + 40 * S, 400 * S,
                 kind=KIND_SERVER, attributes={"http.route": "/poll"}),
            Span(self.wide, "2222222222222222", "notify", "notifier", base + 340 * S, 20 * MS,
                 parent_span_id="2222222222222221", kind=KIND_CLIENT, attributes={"http.status_code": 200}),
            # messaging: producer and consumer (a service name with a slash); two tags that only match across the two spans.
            Span(self.messaging, "3333333333333331", "publish", "orders", base + 50 * S, 2 * MS,
                 kind=KIND_PRODUCER, attributes={"messaging.system": "kafka", "queue": "orders"}),
            Span(self.messaging, "3333333333333332", "consume", SLASHED_SERVICE, base + 50 * S + 3 * MS, 4 * MS,
                 parent_span_id="3333333333333331", kind=KIND_CONSUMER, attributes={"messaging.system": "kafka",
                                                                                      "consumer.group": "billing"}),
        ]

    def trace_ids_newest_first(self) -> list[str]:
        """Every trace id, ordered as an unfiltered search returns them: by its latest span start."""
        latest: dict[str, int] = {}
        for span in self.spans:
            latest[span.trace_id] = max(latest.get(span.trace_id, 0), span.start_ns)
        return sorted(latest, key=latest.__getitem__, reverse=True)

    def columns(self) -> SpanColumns:
        return columns(self.spans)
