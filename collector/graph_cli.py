"""`tracemesh stat`, `tracemesh edges` and `tracemesh top`: the service graph in a terminal.

All three read ``GET /api/v1/graph`` over the last ``--window`` and show a slice of it: the requests
into each service (``stat``, like ``linkerd viz stat``), each caller → callee edge (``edges``), and
the busiest routes, refreshed in place (``top``). Like ``tracemesh traces`` they go through the
collector's HTTP API only, and the numbers are the API's: rates over the part of the window that
has passed, percentiles from mergeable sketches, so the terminal and the API never disagree.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import urllib.parse

import orjson

from collector.query_cli import DEFAULT_COLLECTOR_URL, CollectorError, collector_url, fetch_json
from spans.cli_args import positive_int

DEFAULT_TOP_ROWS = 20
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
_CLEAR_SCREEN = "\x1b[H\x1b[2J"


def register(subparsers) -> None:
    stat = subparsers.add_parser(
        "stat",
        help="per service: success rate, RPS and latency percentiles of its inbound requests",
        description="For each service (or one), the requests into it over the last --window: success rate, "
        "requests per second and p50/p95/p99 latency as its callers saw them.",
    )
    stat.add_argument("service", nargs="?", metavar="SERVICE", help="only this service")
    add_graph_options(stat, "1m")
    stat.set_defaults(run=run_stat)

    edges = subparsers.add_parser(
        "edges",
        help="per caller → callee edge: RPS, success rate, latency percentiles, retries",
        description="Each caller → callee edge of the service graph over the last --window.",
    )
    edges.add_argument("--from", dest="source", metavar="SERVICE", help="only edges from this caller")
    edges.add_argument("--to", dest="target", metavar="SERVICE", help="only edges to this callee")
    add_graph_options(edges, "1m")
    edges.set_defaults(run=run_edges)

    top = subparsers.add_parser(
        "top",
        help="live view of the busiest routes",
        description="The busiest routes (caller → callee, route) over the last --window, refreshed every "
        "--interval in place (successive tables when stdout is not a terminal). Ctrl-C stops.",
    )
    add_graph_options(top, "10s")
    top.add_argument("--interval", type=duration_seconds, default=2.0, metavar="DURATION",
                     help="time between refreshes (default 2s)")
    top.add_argument("--count", type=positive_int, metavar="N", help="stop after N refreshes (default: until Ctrl-C)")
    top.add_argument("--rows", type=positive_int, default=DEFAULT_TOP_ROWS, metavar="N",
                     help=f"routes shown per refresh (default {DEFAULT_TOP_ROWS})")
    top.set_defaults(run=run_top)


def add_graph_options(parser: argparse.ArgumentParser, default_window: str) -> None:
    parser.add_argument("--window", type=duration_seconds, default=duration_seconds(default_window), metavar="DURATION",
                        help=f"how far back to look, e.g. 10s, 1m, 1h (default {default_window}; the collector "
                        "keeps an hour, in 10 s windows)")
    parser.add_argument("--collector-url", type=collector_url, default=DEFAULT_COLLECTOR_URL,
                        help=f"the collector's HTTP API (default {DEFAULT_COLLECTOR_URL})")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (numbers unrounded)")


def duration_seconds(text: str) -> float:
    """``10s``, ``1m``, ``1h30m``, ``500ms`` -> seconds; anything else is a usage error."""
    if not text or _DURATION.sub("", text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 10s, 1m or 1h30m")
    seconds = sum(float(number) * _DURATION_SECONDS[unit] for number, unit in _DURATION.findall(text))
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive duration")
    return seconds


# ---- the three views ---------------------------------------------------------------------------


def run_stat(args: argparse.Namespace) -> int:
    def rows(graph: dict) -> list[dict]:
        return [
            {"service": node["name"], "kind": node["kind"], **row_metrics(node["inbound"])}
            for node in graph["nodes"]
            if (args.service is None or node["name"] == args.service)
            # services always (a service nobody calls shows "-"); other nodes only when called
            and (node["kind"] == "service" or node["inbound"]["requests"])
        ]

    columns = (("SERVICE", "service"), ("KIND", "kind"), *METRIC_COLUMNS)
    return show_once(args, rows, "services", columns, f"no traffic to {args.service}" if args.service else "no traffic")


def run_edges(args: argparse.Namespace) -> int:
    def rows(graph: dict) -> list[dict]:
        return [
            {"source": edge["source"], "target": edge["target"], "connectionType": edge["connectionType"],
             **row_metrics(edge)}
            for edge in graph["edges"]
            if (args.source is None or edge["source"] == args.source)
            and (args.target is None or edge["target"] == args.target)
        ]

    columns = (("FROM", "source"), ("TO", "target"), ("TYPE", "connectionType"), *METRIC_COLUMNS, ("RETRIES", "retries", str))
    return show_once(args, rows, "edges", columns, "no edges")


def run_top(args: argparse.Namespace) -> int:
    columns = (("FROM", "source"), ("TO", "target"), ("ROUTE", "route"), *METRIC_COLUMNS)
    in_place = sys.stdout.isatty() and not args.json
    refreshes = 0
    try:
        while True:
            graph = fetch_graph(args)
            routes = busiest_routes(graph, args.rows)
            if args.json:
                text = orjson.dumps({"start": graph["start"], "end": graph["end"], "routes": routes}).decode()
            else:
                heading = f"busiest routes {graph['start']} – {graph['end']} (every {args.interval:g}s, Ctrl-C stops)"
                text = heading + "\n" + (table(routes, columns) if routes else "no traffic")
                if in_place:
                    text = _CLEAR_SCREEN + text
                elif refreshes:
                    text = "\n" + text
            print(text, flush=True)
            refreshes += 1
            if refreshes == args.count:
                return 0
            time.sleep(args.interval)
    except CollectorError as exc:
        print(f"tracemesh: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return quiet_broken_pipe()


def busiest_routes(graph: dict, limit: int) -> list[dict]:
    routes = [
        {"source": edge["source"], "target": edge["target"], "route": route["route"], **row_metrics(route)}
        for edge in graph["edges"]
        for route in edge["routes"]
    ]
    routes.sort(key=lambda row: (-row["rps"], row["source"], row["target"], row["route"]))
    return routes[:limit]


# ---- shared ------------------------------------------------------------------------------------

# (heading, key, format) for the metric columns every view shows.
METRIC_COLUMNS = (
    ("SUCCESS", "successRate", lambda rate: f"{rate * 100:.2f}%"),
    ("RPS", "rps", lambda rps: f"{rps:.2f}"),
    ("P50", "p50", lambda ms: f"{ms:g}ms"),
    ("P95", "p95", lambda ms: f"{ms:g}ms"),
    ("P99", "p99", lambda ms: f"{ms:g}ms"),
    ("REQUESTS", "requests", str),
)


def row_metrics(metrics: dict) -> dict:
    """The API's metrics of one node, edge or route as one flat row; rates and percentiles are None
    without requests (shown as ``-``)."""
    requests = metrics["requests"]
    latency = metrics["latencyMs"]
    return {
        "requests": requests,
        "rps": metrics["rps"],
        "successRate": 1 - metrics["errorRate"] if requests else None,
        "errors": metrics["errors"],
        "retries": metrics["retries"],
        "p50": latency["p50"],
        "p90": latency["p90"],
        "p95": latency["p95"],
        "p99": latency["p99"],
    }


def fetch_graph(args: argparse.Namespace) -> dict:
    """The graph of the last ``--window`` seconds (up to the collector's now)."""
    start_us = int((time.time() - args.window) * 1_000_000)
    graph = fetch_json(args.collector_url, "/api/v1/graph?" + urllib.parse.urlencode({"start": start_us}))
    if not (isinstance(graph, dict) and "nodes" in graph and "edges" in graph):
        raise CollectorError(f"{args.collector_url} answered JSON that is not the graph API's; is it a Tracemesh collector?")
    return graph


def show_once(args: argparse.Namespace, rows_of, key: str, columns: tuple, empty: str) -> int:
    try:
        graph = fetch_graph(args)
    except CollectorError as exc:
        print(f"tracemesh: {exc}", file=sys.stderr)
        return 1
    rows = rows_of(graph)
    if args.json:
        text = orjson.dumps({"start": graph["start"], "end": graph["end"], key: rows}, option=orjson.OPT_INDENT_2).decode()
    else:
        text = table(rows, columns) if rows else f"{empty} between {graph['start']} and {graph['end']}"
    try:
        print(text, flush=True)
    except BrokenPipeError:
        return quiet_broken_pipe()
    return 0


def table(rows: list[dict], columns: tuple) -> str:
    """Left-aligned names, right-aligned numbers; ``-`` where there is no value."""
    header = [column[0] for column in columns]
    cells = [
        [("-" if row[column[1]] is None else (column[2] if len(column) > 2 else str)(row[column[1]])) for column in columns]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(columns))]
    numeric = [len(column) > 2 for column in columns]
    return "\n".join(
        "  ".join(cell.rjust(width) if right else cell.ljust(width) for cell, width, right in zip(line, widths, numeric)).rstrip()
        for line in [header, *cells]
    )


def quiet_broken_pipe() -> int:
    """The reader (head, less) is gone; stop quietly as other commands do."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
