"""The service graph over HTTP: the graph of a time range, and per-edge time series.

Parameters are read exactly as the trace API reads them (``start``/``end`` as RFC 3339 or Unix
microseconds, durations with units, unknown or repeated parameters refused), by the same
functions, so a client can use one time format everywhere. The answer is computed in the
default executor: merging an hour of windows must not stall the event loop that also serves
ingest. A range older than the collector's memory is read from ClickHouse; when the store cannot
be reached the answer is 503, not a graph silently missing its history.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from collector.graph.service_graph import SECOND_NS, ServiceGraph
from collector.query_api import (
    BadParameter,
    check_parameters,
    json_error,
    json_response,
    parse_duration,
    parse_time,
    single_parameter,
)
from collector.store import StoreUnavailable

GRAPH_KEY = web.AppKey("service_graph", ServiceGraph)

DEFAULT_RANGE_NS = 5 * 60 * SECOND_NS
MAX_POINTS = 1_000  # per series; the live view keeps 360 windows anyway

GRAPH_PARAMETERS = ("start", "end")
EDGES_PARAMETERS = ("from", "to", "start", "end", "step")


def setup_graph_api(app: web.Application, graph: ServiceGraph) -> None:
    """Add ``GET /api/v1/graph`` and ``GET /api/v1/edges`` to ``app``, reading ``graph``."""
    app[GRAPH_KEY] = graph
    app.router.add_get("/api/v1/graph", get_graph)
    app.router.add_get("/api/v1/edges", get_edges)


async def get_graph(request: web.Request) -> web.Response:
    check_parameters(request, GRAPH_PARAMETERS)
    graph = request.app[GRAPH_KEY]
    try:
        start_ns, end_ns = time_range(request.query, graph.now_ns())
    except BadParameter as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    return await _answer(graph.graph, start_ns, end_ns)


async def get_edges(request: web.Request) -> web.Response:
    check_parameters(request, EDGES_PARAMETERS)
    graph = request.app[GRAPH_KEY]
    try:
        start_ns, end_ns = time_range(request.query, graph.now_ns())
        step_ns = step(request.query, graph.window_ns, start_ns, end_ns)
        source = single_parameter(request.query, "from")
        target = single_parameter(request.query, "to")
    except BadParameter as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from exc
    return await _answer(graph.edge_series, start_ns, end_ns, step_ns, source, target)


async def _answer(compute, *args) -> web.Response:
    try:
        answer = await asyncio.get_running_loop().run_in_executor(None, compute, *args)
    except StoreUnavailable as exc:
        raise json_error(web.HTTPServiceUnavailable, f"the graph's history is unavailable: {exc}") from exc
    return json_response(answer)


def time_range(params, now_ns: int) -> tuple[int, int]:
    """[start, end) in Unix nanoseconds; by default the five minutes up to now."""
    end_text, start_text = single_parameter(params, "end"), single_parameter(params, "start")
    end_ns = now_ns if end_text is None else parse_time("end", end_text)
    start_ns = end_ns - DEFAULT_RANGE_NS if start_text is None else parse_time("start", start_text)
    if start_ns >= end_ns:
        raise BadParameter("start must be before end")
    return start_ns, end_ns


def step(params, window_ns: int, start_ns: int, end_ns: int) -> int:
    """The step of a series: a duration (``30s``, ``1m``) or whole seconds, a multiple of the window."""
    text = single_parameter(params, "step")
    if text is None:
        return window_ns
    step_ns = int(text) * SECOND_NS if text.isascii() and text.isdigit() else parse_duration("step", text)
    window_seconds = window_ns // SECOND_NS
    if step_ns <= 0 or step_ns % window_ns:
        raise BadParameter(f"step: {text!r} is not a positive multiple of the {window_seconds}s window")
    if (end_ns - start_ns) // step_ns >= MAX_POINTS:
        raise BadParameter(f"step: {text!r} makes more than {MAX_POINTS} points over this range; use a larger step")
    return step_ns
