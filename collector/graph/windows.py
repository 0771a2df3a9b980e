"""Edge metrics in 10-second windows, the last hour of them kept in memory for the live view.

A window holds one ``EdgeStats`` per (client, server, connection type, callee endpoint, route), the
finest detail the API shows; an edge's numbers over any range are the sum of its details over the
windows in the range (counts add, sketches merge). Requests are placed by the time they completed,
so a span that arrives late still lands in the window it belongs to, as long as that window is
kept. Separately, per edge, totals since start-up feed the Prometheus counters, which must never go
down when old windows are dropped.

Memory is bounded: windows older than the retention are dropped, and an edge keeps at most
``max_details`` distinct endpoints and routes; later ones are counted under ``OTHER``.
"""

from __future__ import annotations

from collections.abc import Iterator

from collector.graph.edges import Observation
from collector.graph.sketch import LatencySketch

OTHER = "~other"

EdgeKey = tuple[str, str, str]  # client, server, connection type
DetailKey = tuple[str, str, str, str, str]  # client, server, connection type, endpoint, route


class EdgeStats:
    """Requests, errors, retries, bytes and the latency sketch of some requests on an edge."""

    __slots__ = ("requests", "errors", "retries", "request_bytes", "response_bytes", "latency")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.retries = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.latency = LatencySketch()

    def record(self, observation: Observation) -> None:
        self.requests += 1
        self.errors += observation.error
        self.retries += observation.retries
        self.request_bytes += observation.request_bytes
        self.response_bytes += observation.response_bytes
        self.latency.add(observation.duration_ns)

    def merge(self, other: EdgeStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.retries += other.retries
        self.request_bytes += other.request_bytes
        self.response_bytes += other.response_bytes
        self.latency.merge(other.latency)


class _EdgeDetails:
    """The endpoints and routes already given their own series on one edge."""

    __slots__ = ("endpoints", "routes")

    def __init__(self) -> None:
        self.endpoints: set[str] = set()
        self.routes: set[str] = set()


class WindowStore:
    def __init__(self, window_ns: int, retention_ns: int, max_details: int):
        self.window_ns = window_ns
        self.retention_ns = retention_ns
        self.max_details = max_details
        self._windows: dict[int, dict[DetailKey, EdgeStats]] = {}
        self._totals: dict[EdgeKey, EdgeStats] = {}
        self._details: dict[EdgeKey, _EdgeDetails] = {}
        self._oldest_kept = 0

    def window_start(self, time_ns: int) -> int:
        return time_ns - time_ns % self.window_ns

    def record(self, observations: list[Observation], now_ns: int) -> None:
        """Count ``observations``; those from the future count in the current window."""
        current = self.window_start(now_ns)
        if current - self.retention_ns > self._oldest_kept:
            self._drop_before(current - self.retention_ns)
        windows, totals = self._windows, self._totals
        for observation in observations:
            edge = (observation.client, observation.server, observation.connection)
            total = totals.get(edge)
            if total is None:
                total = totals[edge] = EdgeStats()
                self._details[edge] = _EdgeDetails()
            total.record(observation)
            start = min(self.window_start(observation.time_ns), current)
            if start < self._oldest_kept:
                continue  # older than anything kept: only the totals remember it
            window = windows.get(start)
            if window is None:
                window = windows[start] = {}
            key = (*edge, *self._detail(edge, observation))
            stats = window.get(key)
            if stats is None:
                stats = window[key] = EdgeStats()
            stats.record(observation)

    def windows_between(self, start_ns: int, end_ns: int) -> Iterator[tuple[int, dict[DetailKey, EdgeStats]]]:
        """(window start, its stats) for the kept windows starting in [start_ns, end_ns)."""
        for window_start, window in self._windows.items():
            if start_ns <= window_start < end_ns:
                yield window_start, window

    def window(self, start_ns: int) -> dict[DetailKey, EdgeStats] | None:
        return self._windows.get(start_ns)

    def totals(self) -> dict[EdgeKey, EdgeStats]:
        """Per edge, everything counted since start-up (live objects: read under the owner's lock)."""
        return self._totals

    def _detail(self, edge: EdgeKey, observation: Observation) -> tuple[str, str]:
        details = self._details[edge]
        endpoint, route = observation.endpoint, observation.route
        if endpoint not in details.endpoints:
            if len(details.endpoints) < self.max_details:
                details.endpoints.add(endpoint)
            else:
                endpoint = OTHER
        if route not in details.routes:
            if len(details.routes) < self.max_details:
                details.routes.add(route)
            else:
                route = OTHER
        return endpoint, route

    def _drop_before(self, oldest_kept: int) -> None:
        self._oldest_kept = oldest_kept
        for window_start in [start for start in self._windows if start < oldest_kept]:
            del self._windows[window_start]
