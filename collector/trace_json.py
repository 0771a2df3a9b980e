"""Stored span columns as the query API's JSON: one trace with its spans and a summary.

The shape follows OTLP/JSON where it can (camelCase, hex ids, nanosecond times as decimal strings
because Unix nanoseconds do not fit a JavaScript number), with two simplifications a reader wants:
kinds and status codes by name, and attributes as one object of typed values rather than OTLP's
list of key/value wrappers. The summary (root, start, duration, counts, services) is what a trace
list shows without walking the spans.
"""

from __future__ import annotations

from spans.model import COLUMN_NAMES, KIND_NAMES, STATUS_ERROR, STATUS_NAMES, SpanColumns, loads


def trace_json(columns: SpanColumns) -> dict:
    """One trace's spans (all sharing a trace id, at least one) as the API's trace object."""
    rows = sorted(
        (dict(zip(COLUMN_NAMES, values)) for values in zip(*(columns[name] for name in COLUMN_NAMES))),
        key=lambda row: (row["start_ns"], row["span_id"]),
    )
    root = find_root(rows)
    start_ns = rows[0]["start_ns"]
    end_ns = max(row["start_ns"] + row["duration_ns"] for row in rows)
    return {
        "traceId": root["trace_id"],
        "rootService": root["service"],
        "rootName": root["name"],
        "startTimeUnixNano": str(start_ns),
        "durationNano": str(end_ns - start_ns),
        "spanCount": len(rows),
        "errorCount": sum(1 for row in rows if row["status_code"] == STATUS_ERROR),
        "services": sorted({row["service"] for row in rows}),
        "spans": [span_json(row) for row in rows],
    }


def find_root(rows: list[dict]) -> dict:
    """The span without a parent; failing that (a root not yet or never received), the earliest
    span whose parent is missing from the trace. ``rows`` is sorted by start time."""
    span_ids = {row["span_id"] for row in rows}
    orphans = [row for row in rows if row["parent_span_id"] not in span_ids]
    return next((row for row in orphans if not row["parent_span_id"]), orphans[0] if orphans else rows[0])


def span_json(row: dict) -> dict:
    return {
        "traceId": row["trace_id"],
        "spanId": row["span_id"],
        "parentSpanId": row["parent_span_id"],
        "traceState": row["trace_state"],
        "name": row["name"],
        "kind": name_of(KIND_NAMES, row["kind"]),
        "service": row["service"],
        "startTimeUnixNano": str(row["start_ns"]),
        "durationNano": str(row["duration_ns"]),
        "status": {"code": name_of(STATUS_NAMES, row["status_code"]), "message": row["status_message"]},
        "attributes": json_value(row["attributes"], {}),
        "resource": {"attributes": json_value(row["resource_attributes"], {})},
        "scope": {
            "name": row["scope_name"],
            "version": row["scope_version"],
            "attributes": json_value(row["scope_attributes"], {}),
        },
        "events": [
            {
                "timeUnixNano": str(event["time_ns"]),
                "name": event["name"],
                "attributes": event.get("attributes") or {},
            }
            for event in json_value(row["events"], [])
        ],
        "links": [
            {
                "traceId": link["trace_id"],
                "spanId": link["span_id"],
                "traceState": link.get("trace_state", ""),
                "attributes": link.get("attributes") or {},
            }
            for link in json_value(row["links"], [])
        ],
    }


def name_of(names: tuple[str, ...], number: int) -> str:
    """The name of a kind or status code; numbers from a newer protocol read as the first name (unspecified)."""
    return names[number] if 0 <= number < len(names) else names[0]


def json_value(text: str, empty: dict | list) -> dict | list:
    return loads(text) if text else empty
