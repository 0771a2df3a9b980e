"""`tracemesh traces` and `tracemesh trace`: trace search and one trace, in a terminal.

Both read only through the collector's HTTP query API, never by opening the store: an embedded
chDB directory belongs to the one collector process that opened it. The API checks every value
(durations, times, tags), so the options pass through as typed and its 400 message is shown as is.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone

import orjson

DEFAULT_COLLECTOR_URL = "http://127.0.0.1:9411"
REQUEST_TIMEOUT_SECONDS = 30
ATTRIBUTES_WIDTH = 100

DURATION_UNITS = (("h", 3_600_000_000_000), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000))


class CollectorError(Exception):
    """The collector could not be reached or refused the request; the message says which."""


def register(subparsers) -> None:
    traces = subparsers.add_parser(
        "traces",
        help="search traces through the collector's query API",
        description="Search traces (newest first) and print one line per trace, or the API's JSON with --json.",
    )
    add_collector_options(traces)
    traces.add_argument("--service", help="only traces with a span from this service")
    traces.add_argument("--operation", help="only traces with a span of this name (within --service when given)")
    traces.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="span attribute (own, resource, scope, event or link) compared as text; repeat: all must match one span",
    )
    traces.add_argument("--min-duration", metavar="DURATION", help="e.g. 800ns, 250us, 1.5ms, 2s, 5m")
    traces.add_argument("--max-duration", metavar="DURATION")
    traces.add_argument("--start", metavar="TIME", help="RFC 3339 timestamp or Unix microseconds")
    traces.add_argument("--end", metavar="TIME", help="RFC 3339 timestamp or Unix microseconds")
    traces.add_argument("--limit", type=int, default=20, help="most traces to show (default 20, at most 1000)")
    traces.add_argument(
        "--error",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="only traces where a matching span has status ERROR (--error) or has not (--no-error)",
    )
    traces.set_defaults(run=run_traces)

    trace = subparsers.add_parser(
        "trace",
        help="show one trace as a tree of spans",
        description="Print one trace as an indented tree of spans, or the API's JSON with --json.",
    )
    add_collector_options(trace)
    trace.add_argument("trace_id", metavar="TRACE_ID", help="16 or 32 hexadecimal digits")
    trace.set_defaults(run=run_trace)


def add_collector_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--collector-url",
        type=collector_url,
        default=DEFAULT_COLLECTOR_URL,
        help=f"the collector's HTTP API (default {DEFAULT_COLLECTOR_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table or tree")


def collector_url(text: str) -> str:
    """An http(s) URL with a host, without a trailing slash; anything else is a usage error."""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # reading the port is what checks it
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http:// URL like {DEFAULT_COLLECTOR_URL}")
    return text.rstrip("/")


def run_traces(args: argparse.Namespace) -> int:
    params = [
        (name, value)
        for name, value in (
            ("service", args.service),
            ("operation", args.operation),
            ("minDuration", args.min_duration),
            ("maxDuration", args.max_duration),
            ("start", args.start),
            ("end", args.end),
            ("limit", str(args.limit)),
            ("error", None if args.error is None else str(args.error).lower()),
        )
        if value is not None
    ] + [("tag", tag) for tag in args.tag]
    return print_result(args, "/api/v1/traces?" + urllib.parse.urlencode(params), "traces", trace_table)


def run_trace(args: argparse.Namespace) -> int:
    return print_result(args, "/api/v1/traces/" + urllib.parse.quote(args.trace_id, safe=""), "spans", trace_tree)


def print_result(args: argparse.Namespace, path: str, shape_key: str, render) -> int:
    """Fetch ``path``; print the answer (which must have ``shape_key``) rendered, or as JSON."""
    try:
        body = fetch_json(args.collector_url, path)
    except CollectorError as exc:
        print(f"tracemesh: {exc}", file=sys.stderr)
        return 1
    if not (isinstance(body, dict) and shape_key in body):
        print(f"tracemesh: {args.collector_url} answered JSON that is not the query API's; is it a Tracemesh collector?",
              file=sys.stderr)
        return 1
    text = orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() if args.json else render(body)
    try:
        print(text, flush=True)
    except BrokenPipeError:  # the reader (head, less) is gone; stop quietly as other commands do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def fetch_json(base_url: str, path: str):
    url = base_url + path
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise CollectorError(f"{exc.code} from the collector: {error_message(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CollectorError(f"cannot reach the collector at {base_url}: {reason}") from None
    except orjson.JSONDecodeError:
        raise CollectorError(f"{url} did not answer with JSON; is --collector-url a Tracemesh collector?") from None


def error_message(error: urllib.error.HTTPError) -> str:
    try:
        return orjson.loads(error.read())["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return error.reason


# ---- rendering ---------------------------------------------------------------------------------


def trace_table(body: dict) -> str:
    traces = body["traces"]
    if not traces:
        return "no traces found"
    header = ("TRACE ID", "ROOT SERVICE", "ROOT OPERATION", "START (UTC)", "DURATION", "SPANS", "ERRORS")
    rows = [
        (
            trace["traceId"],
            trace["rootService"],
            trace["rootName"],
            format_time(int(trace["startTimeUnixNano"])),
            format_duration(int(trace["durationNano"])),
            str(trace["spanCount"]),
            str(trace["errorCount"]),
        )
        for trace in traces
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])


def trace_tree(trace: dict) -> str:
    """The spans as an indented tree, each span printed once, children in start order."""
    spans = trace["spans"]
    roots, children = span_forest(spans)
    trace_start = int(trace["startTimeUnixNano"])
    lines = [
        f"trace {trace['traceId']}  {trace['rootService']} {trace['rootName']}  "
        f"{format_time(trace_start)}  {format_duration(int(trace['durationNano']))}  "
        f"{trace['spanCount']} spans, {trace['errorCount']} errors"
    ]
    # Depth-first with an explicit stack: a trace may nest deeper than Python's recursion limit.
    stack: list[tuple[int, str, bool]] = []
    printed: set[int] = set()

    def push(siblings: list[int], prefix: str) -> None:
        fresh = [index for index in siblings if index not in printed]
        printed.update(fresh)
        stack.extend((index, prefix, index == fresh[-1]) for index in reversed(fresh))

    push(roots, "")
    unvisited = iter(range(len(spans)))
    while True:
        if not stack:
            # Spans in a parent cycle are reachable from no root: show each cycle from its earliest span.
            leftover = next((index for index in unvisited if index not in printed), None)
            if leftover is None:
                return "\n".join(lines)
            push([leftover], "")
        index, prefix, last = stack.pop()
        lines.append(prefix + ("└─ " if last else "├─ ") + span_line(spans[index], trace_start))
        push(children.get(index, []), prefix + ("   " if last else "│  "))


def span_forest(spans: list[dict]) -> tuple[list[int], dict[int, list[int]]]:
    """Root span positions and each span's child positions; ``spans`` is in start order.

    Zipkin clients and servers may share one span id (the server half of an RPC reuses the client's
    id and parent). Spans sharing an id nest in start order, and the last of them takes the children,
    so the server half sits under its client half. A span whose parent never arrived is a root.
    """
    by_id: dict[str, list[int]] = {}
    for index, span in enumerate(spans):
        by_id.setdefault(span["spanId"], []).append(index)
    roots: list[int] = []
    children: dict[int, list[int]] = {}
    for index, span in enumerate(spans):
        twins = by_id[span["spanId"]]
        if twins[0] != index:
            parent = twins[twins.index(index) - 1]
        elif span["parentSpanId"] in by_id and span["parentSpanId"] != span["spanId"]:
            parent = by_id[span["parentSpanId"]][-1]
        else:
            roots.append(index)
            continue
        children.setdefault(parent, []).append(index)
    return roots, children


def span_line(span: dict, trace_start: int) -> str:
    parts = [
        span["service"],
        span["name"],
        f"[{span['kind']}]",
        format_duration(int(span["durationNano"])),
        "+" + format_duration(int(span["startTimeUnixNano"]) - trace_start),
    ]
    status = span["status"]
    if status["code"] != "UNSET":
        parts.append(status["code"] + (f": {status['message']}" if status["message"] else ""))
    attributes = " ".join(f"{key}={format_value(value)}" for key, value in span["attributes"].items())
    if len(attributes) > ATTRIBUTES_WIDTH:
        attributes = attributes[: ATTRIBUTES_WIDTH - 1] + "…"
    if attributes:
        parts.append(attributes)
    return "  ".join(parts)


def format_value(value) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def format_duration(nanoseconds: int) -> str:
    """In the units the API's duration filters accept, so a value can be pasted back: 1.5ms, 250us, 800ns."""
    for unit, size in DURATION_UNITS:
        if abs(nanoseconds) >= size:
            return f"{nanoseconds / size:.3f}".rstrip("0").rstrip(".") + unit
    return f"{nanoseconds}ns"


def format_time(unix_nanoseconds: int) -> str:
    moment = datetime.fromtimestamp(unix_nanoseconds // 1_000_000_000, tz=timezone.utc)
    milliseconds = unix_nanoseconds % 1_000_000_000 // 1_000_000
    return f"{moment:%Y-%m-%d %H:%M:%S}.{milliseconds:03d}"
