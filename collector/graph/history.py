"""The service graph's history: its 10-second windows written to ClickHouse and read back.

Memory keeps an hour of windows for the live view; ClickHouse (table ``edge_windows``) keeps them
as long as the spans. Each window is written as deltas (the whole window once it has settled, a
later row for requests that arrived after that), so rows are only ever added, and a read sums
them: counts add, the latency sketch's bucket counts merge with ``sumMap`` and the sketch is
rebuilt from them, so percentiles over a day are as exact as over ten seconds.

Which source answers which window (no request counted twice): the windows memory keeps (up to
the retention, an hour, up to now) come from memory only; every earlier window comes from
ClickHouse only. A collector starting up reads the last 15 minutes back from ClickHouse into
memory, marked as written, so its memory is whole from there on and what it adds to those
windows is written as deltas; its memory then grows back to the hour as time passes.
ClickHouse has a window once written: settled windows after ``settle_s`` (30 s), late deltas
(which may land in windows older than memory) within one flush interval.

Writing happens on the ``HistoryFlusher`` thread, never on the ingest path; a write the store
refuses is kept (up to ``max_pending_rows``) and retried on the next tick. ``stop`` writes
everything, the current window too, so a restart loses nothing that was counted.
"""

from __future__ import annotations

import logging
import threading

from collector.graph.sketch import LatencySketch
from collector.graph.windows import EdgeKey, EdgeStats, Window
from collector.store import SpanStore, StoreUnavailable
from collector.store.span_store import EDGE_WINDOW_COLUMNS

log = logging.getLogger(__name__)

SECOND_NS = 1_000_000_000

EDGE_VIEW = "edge"
ENDPOINT_VIEW = "endpoint"
ROUTE_VIEW = "route"


def window_columns(windows: list[tuple[int, Window]]) -> dict[str, list]:
    """The ``edge_windows`` rows of (start ns, window) pairs: one per edge, endpoint and route."""
    columns: dict[str, list] = {name: [] for name in EDGE_WINDOW_COLUMNS}
    for start_ns, window in windows:
        start_s = start_ns // SECOND_NS
        for view, table in (
            (EDGE_VIEW, {(edge, ""): stats for edge, stats in window.edges.items()}),
            (ENDPOINT_VIEW, window.endpoints),
            (ROUTE_VIEW, window.routes),
        ):
            for ((client, server, connection), detail), stats in table.items():
                _append_row(columns, start_s, client, server, connection, view, detail, stats)
    return columns


def _append_row(columns, start_s, client, server, connection, view, detail, stats: EdgeStats) -> None:
    sketch = stats.latency
    buckets = sorted(sketch.buckets.items())
    for name, value in (
        ("window_start", start_s),
        ("client", client),
        ("server", server),
        ("connection_type", connection),
        ("view", view),
        ("detail", detail),
        ("requests", stats.requests),
        ("errors", stats.errors),
        ("retries", stats.retries),
        ("request_bytes", stats.request_bytes),
        ("response_bytes", stats.response_bytes),
        ("latency_zeros", sketch.zeros),
        ("latency_sum_ns", max(sketch.total_ns, 0)),
        ("latency_min_ns", max(int(sketch.min_ns), 0) if sketch.count else 0),
        ("latency_max_ns", max(sketch.max_ns, 0)),
        ("latency_buckets", [index for index, _ in buckets]),
        ("latency_counts", [count for _, count in buckets]),
    ):
        columns[name].append(value)


def windows_from_rows(rows: dict[str, list]) -> dict[int, Window]:
    """Per step, the window that the summed rows of ``SpanStore.edge_windows`` describe."""
    windows: dict[int, Window] = {}
    for i, step in enumerate(rows["step"]):
        window = windows.get(step)
        if window is None:
            window = windows[step] = Window()
        stats = EdgeStats()
        stats.requests = rows["sum_requests"][i]
        stats.errors = rows["sum_errors"][i]
        stats.retries = rows["sum_retries"][i]
        stats.request_bytes = rows["sum_request_bytes"][i]
        stats.response_bytes = rows["sum_response_bytes"][i]
        stats.latency = LatencySketch.from_buckets(
            rows["merged_buckets"][i],
            rows["merged_counts"][i],
            zeros=rows["sum_latency_zeros"][i],
            total_ns=rows["sum_latency_sum_ns"][i],
            min_ns=rows["min_latency_min_ns"][i],
            max_ns=rows["max_latency_max_ns"][i],
        )
        edge: EdgeKey = (rows["client"][i], rows["server"][i], rows["connection_type"][i])
        view, detail = rows["view"][i], rows["detail"][i]
        if view == EDGE_VIEW:
            window.edges[edge] = stats
        elif view == ENDPOINT_VIEW:
            window.endpoints[(edge, detail)] = stats
        elif view == ROUTE_VIEW:
            window.routes[(edge, detail)] = stats
    return windows


class EdgeHistory:
    """Window rows to and from one store. Thread-safe."""

    def __init__(self, store: SpanStore, max_pending_rows: int = 1_000_000):
        self.store = store
        self.max_pending_rows = max_pending_rows
        self.written_rows = 0
        self.dropped_rows = 0
        self._pending: dict[str, list] = {name: [] for name in EDGE_WINDOW_COLUMNS}
        self._lock = threading.Lock()

    def write(self, columns: dict[str, list]) -> None:
        """Insert ``columns`` after anything a failed write left; keep them all if the store is away.

        Raises StoreUnavailable (or the store's error) after keeping the rows for the next write."""
        with self._lock:
            pending = self._pending
            for name, values in columns.items():
                pending[name].extend(values)
            excess = len(pending["window_start"]) - self.max_pending_rows
            if excess > 0:
                for values in pending.values():
                    del values[:excess]
                self.dropped_rows += excess
                log.error("graph history: store unreachable too long; dropped the %d oldest window rows", excess)
            self.store.insert_edge_windows(pending)
            self.written_rows += len(pending["window_start"])
            self._pending = {name: [] for name in EDGE_WINDOW_COLUMNS}

    def read(
        self,
        start_ns: int,
        end_ns: int,
        step_ns: int,
        source: str | None = None,
        target: str | None = None,
        edges_only: bool = False,
    ) -> dict[int, Window]:
        """Per step index (0 from ``start_ns``), the windows in [start_ns, end_ns) merged (whole
        seconds); with ``edges_only`` without their endpoints and routes."""
        rows = self.store.edge_windows(
            start_ns // SECOND_NS,
            end_ns // SECOND_NS,
            step_ns // SECOND_NS,
            client=source,
            server=target,
            view=EDGE_VIEW if edges_only else None,
        )
        return windows_from_rows(rows)

    def services(self) -> set[str]:
        """Every service that ever sent spans (they are services, not external nodes, in old graphs too)."""
        return set(self.store.services())


class HistoryFlusher:
    """A thread that writes the graph's settled windows every ``interval_s``, and everything on ``stop``."""

    def __init__(self, graph, interval_s: float = 5.0):
        self.graph = graph
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="graph-history", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(30)
        self._flush(everything=True)

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self._flush(everything=False)

    def _flush(self, everything: bool) -> None:
        try:
            self.graph.write_history(everything=everything)
        except StoreUnavailable as exc:
            log.warning("graph history: store unavailable (%s); keeping the rows for the next try", exc)
        except Exception:  # noqa: BLE001 - keep the thread alive; the rows stay pending
            log.exception("graph history: writing windows failed; keeping the rows for the next try")
