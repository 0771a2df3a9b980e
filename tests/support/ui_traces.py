"""The known traces the browser tests load into a collector, as OTLP/JSON requests.

A small shop seen through Tracemesh proxies: ``frontend`` (called by users) calls ``catalog`` (two
endpoints; ``catalog`` queries the database ``catalog-db``) and ``checkout``; ``checkout`` calls
``payments`` and the uninstrumented ``geo.example.com``. Every hop is a proxy's outbound CLIENT span
carrying the ``tracemesh.*`` timing breakdown, with the callee proxy's inbound SERVER span under it.
Some checkouts fail in ``payments``; one trace has a span named like an HTML injection; one has a
child that starts before its parent (clock skew).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field

from spans import conventions as sc

MS = 1_000_000
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_VALUE = "<script>alert(2)</script>"

_ids = itertools.count(1)


def _span_id() -> str:
    return f"{next(_ids):016x}"


def _value(value) -> dict:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def _attributes(values: dict) -> list[dict]:
    return [{"key": key, "value": _value(value)} for key, value in values.items()]


@dataclass
class TraceBuilder:
    """Spans of one trace, grouped per service as one OTLP resource each."""

    trace_id: str
    spans: dict[str, list[dict]] = field(default_factory=dict)

    def span(self, service: str, name: str, kind: int, start_ns: int, duration_ns: int, parent: str = "",
             error: bool = False, attributes: dict | None = None, events: list | None = None) -> str:
        span_id = _span_id()
        self.spans.setdefault(service, []).append({
            "traceId": self.trace_id,
            "spanId": span_id,
            "parentSpanId": parent,
            "name": name,
            "kind": kind,
            "startTimeUnixNano": str(start_ns),
            "endTimeUnixNano": str(start_ns + duration_ns),
            "attributes": _attributes(attributes or {}),
            "events": events or [],
            "status": {"code": 2, "message": "payment declined"} if error else {"code": 1},
        })
        return span_id

    def hop(self, caller: str, callee: str, route: str, start_ns: int, duration_ns: int, parent: str,
            endpoint: str, error: bool = False, retries: int = 0, callee_traced: bool = True) -> str:
        """One proxied request: the caller proxy's CLIENT span (with the timing breakdown) and, when
        the callee has a proxy, its SERVER span under it. Returns the innermost span's id."""
        queue, connect, retry_wait = 200_000, 1 * MS if retries else 0, 3 * MS * retries
        body = duration_ns // 10
        first_byte = duration_ns - queue - connect - retry_wait - body
        client = self.span(caller, route, 3, start_ns, duration_ns, parent, error, {
            sc.DIRECTION: "outbound", sc.PEER_SERVICE: callee, sc.ENDPOINT: endpoint, "http.route": route.split(" ")[-1],
            sc.HTTP_METHOD: route.split(" ")[0], sc.HTTP_STATUS: 500 if error else 200,
            sc.QUEUE_NS: queue, sc.CONNECT_NS: connect, sc.CONNECTION_REUSED: connect == 0,
            sc.FIRST_BYTE_NS: first_byte, sc.BODY_NS: body, sc.RETRIES: retries, sc.RETRY_DELAY_NS: retry_wait,
        })
        if not callee_traced:
            return client, start_ns, start_ns + duration_ns
        offset = queue + connect + retry_wait
        server = self.span(callee, route, 2, start_ns + offset, first_byte, client, error,
                           {sc.DIRECTION: "inbound", sc.HTTP_STATUS: 500 if error else 200})
        return server, start_ns + offset, start_ns + offset + first_byte

    def request(self) -> dict:
        return {"resourceSpans": [
            {
                "resource": {"attributes": _attributes({sc.SERVICE_NAME: service, sc.PROXY_RESOURCE: True})},
                "scopeSpans": [{"scope": {"name": "tracemesh.proxy", "version": "0.1"}, "spans": spans}],
            }
            for service, spans in self.spans.items()
        ]}


def shop_trace(index: int, start_ns: int, fail: bool = False) -> TraceBuilder:
    """user -> frontend -> catalog (-> catalog-db) and -> checkout -> payments, geo.example.com."""
    trace = TraceBuilder(f"{0xa0000000000000000000000000000000 + index:032x}")
    total = (40 + 9 * index) * MS
    root = trace.span("frontend", "GET /checkout", 2, start_ns, total, attributes={
        sc.DIRECTION: "inbound", sc.HTTP_METHOD: "GET", "http.route": "/checkout", sc.HTTP_STATUS: 500 if fail else 200,
    }, error=fail)
    # frontend calls catalog and checkout at once; checkout takes longer (the critical path).
    catalog, catalog_start, _ = trace.hop("frontend", "catalog", "GET /items", start_ns + 14 * MS, 12 * MS, root,
                        endpoint=f"10.0.0.{1 + index % 2}:8080")
    trace.span("catalog", "SELECT items", 3, catalog_start + 2 * MS, 6 * MS, catalog,
               attributes={"db.system": "postgresql", sc.PEER_SERVICE: "catalog-db"})
    checkout, begin, end = trace.hop("frontend", "checkout", "POST /orders", start_ns + 14 * MS, total - 16 * MS, root,
                                     endpoint="10.0.1.1:8080", error=fail, retries=1 if fail else 0)
    trace.hop("checkout", "payments", "POST /charge", begin + 1 * MS, end - begin - 8 * MS, checkout,
              endpoint="10.0.2.1:9000", error=fail)
    trace.hop("checkout", "geo.example.com", "GET /distance", end - 6 * MS, 5 * MS, checkout,
              endpoint="93.184.216.34:443", callee_traced=False)
    return trace


def xss_trace(start_ns: int) -> TraceBuilder:
    trace = TraceBuilder("b" * 32)
    root = trace.span("frontend", XSS_NAME, 2, start_ns, 20 * MS, attributes={"user.comment": XSS_VALUE}, events=[
        {"timeUnixNano": str(start_ns + 5 * MS), "name": XSS_NAME, "attributes": _attributes({"note": XSS_VALUE})},
    ])
    trace.span("frontend", "render", 1, start_ns + 2 * MS, 10 * MS, root)
    return trace


def skewed_trace(start_ns: int) -> TraceBuilder:
    """The callee's clock runs 30 ms behind: its SERVER span starts before the CLIENT span calling it."""
    trace = TraceBuilder("c" * 32)
    root = trace.span("frontend", "GET /skewed", 2, start_ns, 50 * MS)
    client = trace.span("frontend", "GET /slow", 3, start_ns + 10 * MS, 30 * MS, root)
    server = trace.span("catalog", "GET /slow", 2, start_ns - 15 * MS, 25 * MS, client)
    trace.span("catalog", "lookup", 1, start_ns - 10 * MS, 10 * MS, server)
    return trace


def known_traces(now_ns: int | None = None) -> dict[str, TraceBuilder]:
    """The traces by role; shop traces are spread over the last minute."""
    now_ns = now_ns or time.time_ns()
    traces = {f"shop-{i}": shop_trace(i, now_ns - (60 - 5 * i) * 1000 * MS, fail=i in (3, 7)) for i in range(10)}
    traces["xss"] = xss_trace(now_ns - 20_000 * MS)
    traces["skewed"] = skewed_trace(now_ns - 10_000 * MS)
    return traces


def span_count(traces: dict[str, TraceBuilder]) -> int:
    return sum(len(spans) for trace in traces.values() for spans in trace.spans.values())


def otlp_json(trace: TraceBuilder) -> bytes:
    return json.dumps(trace.request()).encode()
