"""The collector's service graph: every accepted span batch in, nodes and edges with metrics out.

``consume`` runs on the ingest path for every batch, before any sampling of what is stored, so it
only parses the attributes of CLIENT/SERVER/PRODUCER/CONSUMER spans, pairs and counts them under
one lock, and never raises. Readers (the API, the Prometheus exposition) take the lock one window
at a time, so a long range query delays ingest by one window's merge at most.

With an ``EdgeHistory`` the graph starts from the last ``history_preload_seconds`` of windows read
back from ClickHouse (a restart keeps the live view), the windows are also written there (``write_history``, called by
``HistoryFlusher``'s thread), and the graph and edge series of a range that starts before the
kept windows read the earlier ones from ClickHouse; see ``collector.graph.history``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from collector.graph.edges import DATABASE, USER_NODE, HopStats, HopTracker, Observation
from collector.graph.history import EdgeHistory, window_columns
from collector.graph.windows import EdgeKey, EdgeStats, Window, WindowStore, stats_of
from spans.model import SpanColumns

log = logging.getLogger(__name__)

SECOND_NS = 1_000_000_000
QUANTILES = (0.5, 0.9, 0.95, 0.99)
QUANTILE_NAMES = ("p50", "p90", "p95", "p99")
MAX_KNOWN_SERVICES = 10_000

# Node kinds.
SERVICE = "service"
EXTERNAL = "external"
_KIND_RANK = {EXTERNAL: 0, DATABASE: 1, SERVICE: 2}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class ServiceGraph:
    def __init__(
        self,
        *,
        window_seconds: int = 10,
        retention_seconds: int = 3600,
        pair_wait_seconds: float = 10.0,
        max_pending_spans: int = 100_000,
        max_edges: int = 10_000,
        max_details_per_edge: int = 100,
        clock: Callable[[], int] = time.time_ns,
        history: EdgeHistory | None = None,
        history_settle_seconds: float = 30.0,
        history_preload_seconds: int = 900,
    ):
        self.window_ns = window_seconds * SECOND_NS
        self._clock = clock
        self._lock = threading.Lock()
        self._hops = HopTracker(int(pair_wait_seconds * SECOND_NS), max_pending_spans)
        self._windows = WindowStore(self.window_ns, retention_seconds * SECOND_NS, max_edges, max_details_per_edge)
        self._services: set[str] = set()
        self._failed_batches = 0
        self._history = history
        self._settle_ns = int(history_settle_seconds * SECOND_NS)
        if history is not None:
            now_ns = clock()
            first = self._windows.window_start(now_ns - min(history_preload_seconds, retention_seconds) * SECOND_NS)
            last = self._windows.window_start(now_ns) + self.window_ns
            written = history.read(first, last, self.window_ns)
            self._windows.keep_history(
                now_ns, first, {first + step * self.window_ns: window for step, window in written.items()}
            )
            self._services.update(history.services())

    # ---- write side ----------------------------------------------------------------------------

    def consume(self, columns: SpanColumns) -> None:
        """Count the requests a batch of spans describes. Thread-safe; never raises."""
        observations: list[Observation] = []
        try:
            now_ns = self._clock()
            with self._lock:
                if len(self._services) < MAX_KNOWN_SERVICES:
                    self._services.update(columns["service"])
                self._hops.process(columns, now_ns, observations)
                self._windows.record(observations, now_ns)
        except Exception:  # noqa: BLE001 - the graph must never fail an ingest
            self._failed_batches += 1
            log.exception("service graph could not read a span batch")

    def expire(self) -> None:
        """Settle half-hops whose wait is over (readers call this so quiet periods still settle)."""
        observations: list[Observation] = []
        now_ns = self._clock()
        with self._lock:
            self._hops.expire(now_ns, observations)
            self._windows.record(observations, now_ns)

    def write_history(self, everything: bool = False) -> int:
        """Write the settled windows and late deltas not yet written (all windows with
        ``everything``) to the history; returns the rows written. Raises what the store raises
        (the rows are kept for the next call)."""
        if self._history is None:
            return 0
        self.expire()
        with self._lock:
            columns = window_columns(self._windows.take_unwritten(self._clock(), self._settle_ns, everything))
        self._history.write(columns)
        return len(columns["window_start"])

    # ---- read side -----------------------------------------------------------------------------

    def now_ns(self) -> int:
        return self._clock()

    def failed_batches(self) -> int:
        """Batches ``consume`` could not read at all (logged when they happen)."""
        return self._failed_batches

    def pairing_stats(self) -> HopStats:
        with self._lock:
            return self._hops.stats()

    def edge_totals(self) -> dict[EdgeKey, EdgeStats]:
        """Per edge, a copy of everything counted since start-up."""
        self.expire()
        with self._lock:
            totals = self._windows.totals()
            copies = {}
            for edge, stats in totals.items():
                copy = copies[edge] = EdgeStats()
                copy.merge(stats)
            return copies

    def endpoint_stats(self, start_ns: int, end_ns: int) -> dict[tuple[str, str], EdgeStats]:
        """Per (callee, callee endpoint), the requests of every caller in [start_ns, end_ns) (whole
        windows) merged: the mesh-wide view of each endpoint that routing weights and scaling hints use."""
        self.expire()
        start_ns, end_ns = self._aligned(start_ns, end_ns)
        merged: dict[tuple[str, str], EdgeStats] = {}

        def add_piece(_, piece: Window) -> None:
            for ((_, server, _), endpoint), stats in piece.endpoints.items():
                stats_of(merged, (server, endpoint)).merge(stats)

        self._visit(start_ns, end_ns, end_ns - start_ns, add_piece, with_history=False)
        return merged

    def graph(self, start_ns: int, end_ns: int) -> dict:
        """Nodes and edges active in [start_ns, end_ns), each edge with its metrics and its
        breakdown per callee endpoint and per route."""
        self.expire()
        start_ns, end_ns = self._aligned(start_ns, end_ns)
        merged = Window()
        from_history = self._visit(start_ns, end_ns, end_ns - start_ns, lambda _, piece: merged.merge(piece))
        edges = merged.edges
        endpoints: dict[EdgeKey, dict[str, EdgeStats]] = {}
        routes: dict[EdgeKey, dict[str, EdgeStats]] = {}
        for (edge, endpoint), stats in merged.endpoints.items():
            endpoints.setdefault(edge, {})[endpoint] = stats
        for (edge, route), stats in merged.routes.items():
            routes.setdefault(edge, {})[route] = stats
        seconds = self._elapsed_seconds(start_ns, end_ns)
        return {
            "start": rfc3339(start_ns),
            "end": rfc3339(end_ns),
            "nodes": self._nodes(edges, seconds, from_history),
            "edges": [
                {
                    "source": edge[0],
                    "target": edge[1],
                    "connectionType": edge[2],
                    **metrics_json(stats, seconds),
                    "endpoints": _breakdown("endpoint", endpoints[edge], seconds),
                    "routes": _breakdown("route", routes[edge], seconds),
                }
                for edge, stats in sorted(edges.items())
            ],
        }

    def edge_series(
        self, start_ns: int, end_ns: int, step_ns: int, source: str | None = None, target: str | None = None
    ) -> dict:
        """Per edge (optionally only from ``source`` and/or to ``target``), one point per step."""
        self.expire()
        start_ns, end_ns = self._aligned(start_ns, end_ns)
        steps = -(-(end_ns - start_ns) // step_ns)
        per_step: dict[EdgeKey, dict[int, EdgeStats]] = {}

        def add_piece(piece_start: int, piece: Window) -> None:
            step = (piece_start - start_ns) // step_ns
            for edge, stats in piece.edges.items():
                if (source is None or edge[0] == source) and (target is None or edge[1] == target):
                    stats_of(per_step.setdefault(edge, {}), step).merge(stats)

        self._visit(start_ns, end_ns, step_ns, add_piece, source=source, target=target, edges_only=True)
        nothing = EdgeStats()

        def point(step: int, points: dict[int, EdgeStats]) -> dict:
            begin = start_ns + step * step_ns
            seconds = self._elapsed_seconds(begin, min(begin + step_ns, end_ns))
            return {"time": rfc3339(begin), **metrics_json(points.get(step, nothing), seconds)}

        return {
            "start": rfc3339(start_ns),
            "end": rfc3339(end_ns),
            "stepSeconds": step_ns / SECOND_NS,
            "series": [
                {
                    "source": edge[0],
                    "target": edge[1],
                    "connectionType": edge[2],
                    "points": [point(step, points) for step in range(steps)],
                }
                for edge, points in sorted(per_step.items())
            ],
        }

    # ---- helpers -------------------------------------------------------------------------------

    def _visit(
        self,
        start_ns: int,
        end_ns: int,
        step_ns: int,
        visit: Callable[[int, Window], None],
        *,
        with_history: bool = True,
        source: str | None = None,
        target: str | None = None,
        edges_only: bool = False,
    ) -> bool:
        """Call ``visit(start, window or block)`` over [start_ns, end_ns) in time order, no piece
        crossing a step boundary; the lock is held for one piece at a time so that a long read
        never holds up ingest for long. The windows before memory's are read from the history
        (only those from ``source`` to ``target`` where given, only the edge totals with
        ``edges_only``); True when it was read."""
        now_ns = self._clock()
        with self._lock:
            memory_start = self._windows.memory_start(now_ns)
            pieces = self._windows.pieces(start_ns, end_ns, step_ns, now_ns)
        from_history = with_history and self._history is not None and start_ns < memory_start
        if from_history:
            old = self._history.read(start_ns, min(end_ns, memory_start), step_ns, source, target, edges_only)
            for step, window in sorted(old.items()):
                visit(start_ns + step * step_ns, window)
        for piece_start, piece_size in pieces:
            with self._lock:
                piece = self._windows.piece(piece_start, piece_size)
                if piece is not None:
                    visit(piece_start, piece)
        return from_history

    def _aligned(self, start_ns: int, end_ns: int) -> tuple[int, int]:
        """The range widened to whole windows."""
        start = start_ns - start_ns % self.window_ns
        end = -(-end_ns // self.window_ns) * self.window_ns
        return start, max(end, start + self.window_ns)

    def _elapsed_seconds(self, start_ns: int, end_ns: int) -> float:
        """How much of [start_ns, end_ns) has happened: the denominator of a rate."""
        return max(0, min(end_ns, self._clock()) - start_ns) / SECOND_NS

    def _nodes(self, edges: dict[EdgeKey, EdgeStats], seconds: float, from_history: bool) -> list[dict]:
        """Every node on an edge, with its kind and the metrics of all requests into it (what
        ``tracemesh stat`` shows per service). A service sends spans (or calls out); a database is
        the target of a ``db.system`` call; anything else is an external, uninstrumented peer."""
        with self._lock:
            services = set(self._services)
        if from_history:
            services |= self._history.services()
        kinds: dict[str, str] = {}
        inbound: dict[str, EdgeStats] = {}

        def mark(name: str, kind: str) -> None:
            if _KIND_RANK[kind] >= _KIND_RANK[kinds.get(name, EXTERNAL)]:
                kinds[name] = kind

        for (client, server, connection), stats in edges.items():
            mark(client, EXTERNAL if client == USER_NODE else SERVICE)
            mark(server, SERVICE if server in services else DATABASE if connection == DATABASE else EXTERNAL)
            stats_of(inbound, server).merge(stats)
        return [
            {"name": name, "kind": kind, "inbound": metrics_json(inbound.get(name) or EdgeStats(), seconds)}
            for name, kind in sorted(kinds.items())
        ]


def metrics_json(stats: EdgeStats, seconds: float) -> dict:
    quantiles = stats.latency.quantiles(QUANTILES)
    return {
        "requests": stats.requests,
        "rps": stats.requests / seconds if seconds > 0 else 0.0,
        "errors": stats.errors,
        "errorRate": stats.errors / stats.requests if stats.requests else 0.0,
        "retries": stats.retries,
        "requestBytes": stats.request_bytes,
        "responseBytes": stats.response_bytes,
        "latencyMs": {
            name: None if value is None else round(value / 1e6, 3) for name, value in zip(QUANTILE_NAMES, quantiles)
        },
    }


def rfc3339(time_ns: int) -> str:
    moment = _EPOCH + timedelta(microseconds=time_ns // 1000)
    return moment.isoformat().replace("+00:00", "Z")


def _breakdown(label: str, details: dict[str, EdgeStats], seconds: float) -> list[dict]:
    return [{label: detail, **metrics_json(stats, seconds)} for detail, stats in sorted(details.items())]
