"""Edge metrics in 10-second windows, the last hour of them kept in memory for the live view.

A window holds, per edge (client, server, connection type), one ``EdgeStats`` for the edge, one per
callee endpoint and one per route: the three views the API shows. They are kept apart rather than
as one endpoint × route product so that reading an hour merges few small sketches. An edge's
numbers over any range are the sum over the windows in the range (counts add, sketches merge).
Requests are placed by the time they completed, so a span that arrives late still lands in the
window it belongs to, as long as that window is kept. Separately, per edge, totals since start-up
feed the Prometheus counters, which must never go down when old windows are dropped.

History (``keep_history``): windows are also written to ClickHouse, each as deltas. It starts
from recent windows read back from ClickHouse (so a restarted collector keeps its live view);
a window after the current one at that moment is written whole once settled (``take_unwritten``);
a request that lands in a window already written (the read-back ones, or a span that arrived
late) is also counted in a separate delta window, written on the next take. So memory is the
whole picture of the windows it keeps (``memory_start`` on), and ClickHouse of every window once
its deltas are written.

Memory is bounded: windows older than the retention are dropped, at most ``max_edges`` edges are
kept apart (later new edges are counted as calls from their client to ``OTHER``: uninstrumented
peers named by address can be many), and an edge keeps at most ``max_details`` distinct endpoints
and routes; later ones are counted under ``OTHER``.
"""

from __future__ import annotations

from collector.graph.edges import Observation
from collector.graph.sketch import LatencySketch, bucket_index

OTHER = "~other"

EdgeKey = tuple[str, str, str]  # client, server, connection type
DetailKey = tuple[EdgeKey, str]  # an edge and one of its endpoints, or one of its routes


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

    def record(self, observation: Observation, bucket: int | None = None) -> None:
        """Count one request; ``bucket`` is ``bucket_of(observation)`` when the caller computed it."""
        _, _, _, _, _, _, duration_ns, error, retries, request_bytes, response_bytes = observation
        self.requests += 1
        self.errors += error
        self.retries += retries
        self.request_bytes += request_bytes
        self.response_bytes += response_bytes
        self.latency.add(duration_ns, bucket)

    def merge(self, other: EdgeStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.retries += other.retries
        self.request_bytes += other.request_bytes
        self.response_bytes += other.response_bytes
        self.latency.merge(other.latency)


class _EdgeDetails:
    """The endpoints and routes already given their own stats on one edge."""

    __slots__ = ("endpoints", "routes")

    def __init__(self) -> None:
        self.endpoints: set[str] = set()
        self.routes: set[str] = set()


class Window:
    """One window's stats per edge, per (edge, endpoint) and per (edge, route)."""

    __slots__ = ("edges", "endpoints", "routes")

    def __init__(self) -> None:
        self.edges: dict[EdgeKey, EdgeStats] = {}
        self.endpoints: dict[DetailKey, EdgeStats] = {}
        self.routes: dict[DetailKey, EdgeStats] = {}

    def merge(self, other: Window) -> None:
        for mine, theirs in ((self.edges, other.edges), (self.endpoints, other.endpoints), (self.routes, other.routes)):
            for key, stats in theirs.items():
                stats_of(mine, key).merge(stats)

    def record(
        self, edge: EdgeKey, endpoint: str, route: str, observation: Observation, bucket: int | None = None
    ) -> None:
        """Count one request on its edge, endpoint and route (``bucket`` as in ``EdgeStats.record``)."""
        for table, key in ((self.edges, edge), (self.endpoints, (edge, endpoint)), (self.routes, (edge, route))):
            stats = table.get(key)
            if stats is None:
                stats = table[key] = EdgeStats()
            stats.record(observation, bucket)


def bucket_of(observation: Observation) -> int | None:
    """The latency sketch bucket of a request (None for a zero duration), computed once for the
    several stats that count it."""
    return bucket_index(observation.duration_ns) if observation.duration_ns > 0 else None


def stats_of(table: dict, key) -> EdgeStats:
    """The stats under ``key``, created empty on first use."""
    stats = table.get(key)
    if stats is None:
        stats = table[key] = EdgeStats()
    return stats


class WindowStore:
    """The kept windows, plus cached merges of whole blocks of them for long range reads.

    A block (``BLOCK_WINDOWS``: a minute, or ten, of consecutive windows) that lies wholly in the
    past is merged once when first read (a ten-minute block from its one-minute blocks) and reused
    until a late request lands in one of its windows, so reading an hour merges about 6 blocks
    rather than 360 windows."""

    BLOCK_WINDOWS = (60, 6)  # largest first

    def __init__(self, window_ns: int, retention_ns: int, max_edges: int, max_details: int):
        self.window_ns = window_ns
        self.block_sizes_ns = tuple(window_ns * count for count in self.BLOCK_WINDOWS)
        self.retention_ns = retention_ns
        self.max_edges = max_edges
        self.max_details = max_details
        self._windows: dict[int, Window] = {}
        self._blocks: dict[tuple[int, int], Window] = {}  # (start, size) -> merged windows
        self._totals: dict[EdgeKey, EdgeStats] = {}
        self._details: dict[EdgeKey, _EdgeDetails] = {}
        self._oldest_kept = 0
        self._unwritten_from: int | None = None  # windows from here on are not yet written whole
        self._late: dict[int, Window] = {}  # deltas of windows before _unwritten_from

    def keep_history(self, now_ns: int, first_ns: int, written: dict[int, Window]) -> None:
        """Start from the ``written`` windows (start -> window, read back from history from window
        ``first_ns`` on; earlier ones are not kept) and, from now on, track what
        ``take_unwritten`` has not handed out yet."""
        self._oldest_kept = max(self._oldest_kept, first_ns)
        for start, window in written.items():
            if start >= self.memory_start(now_ns):
                self._windows[start] = window
        self._unwritten_from = self.window_start(now_ns) + self.window_ns

    def memory_start(self, now_ns: int) -> int:
        """The first window kept in memory."""
        return max(self._oldest_kept, self.window_start(now_ns - self.retention_ns))

    def take_unwritten(self, now_ns: int, settle_ns: int, everything: bool = False) -> list[tuple[int, Window]]:
        """(start, window) to write to history: every delta so far, then the whole windows that
        ended at least ``settle_ns`` ago (all of them, the current one too, with ``everything``).
        The whole windows are live objects: read them under the owner's lock."""
        if self._unwritten_from is None:
            return []
        current = self.window_start(now_ns)
        horizon = current + self.window_ns if everything else self.window_start(now_ns - settle_ns)
        taken = sorted(self._late.items())
        self._late = {}
        for start in sorted(start for start in self._windows if self._unwritten_from <= start < horizon):
            taken.append((start, self._windows[start]))
        self._unwritten_from = max(self._unwritten_from, horizon)
        return taken

    def window_start(self, time_ns: int) -> int:
        return time_ns - time_ns % self.window_ns

    def record(self, observations: list[Observation], now_ns: int) -> None:
        """Count ``observations``; those from the future count in the current window."""
        current = self.window_start(now_ns)
        if current - self.retention_ns > self._oldest_kept:
            self._drop_before(self.window_start(current - self.retention_ns))
        windows, totals, blocks = self._windows, self._totals, self._blocks
        for observation in observations:
            edge = (observation.client, observation.server, observation.connection)
            total = totals.get(edge)
            if total is None:
                if len(totals) >= self.max_edges:
                    edge = (observation.client, OTHER, observation.connection)
                    total = totals.get(edge)
                if total is None:
                    total = totals[edge] = EdgeStats()
                    self._details[edge] = _EdgeDetails()
            bucket = bucket_of(observation)
            total.record(observation, bucket)
            start = min(self.window_start(observation.time_ns), current)
            written = self._unwritten_from is not None and start < self._unwritten_from
            if start < self._oldest_kept and not written:
                continue  # older than anything kept and no history: only the totals remember it
            endpoint, route = self._detail(edge, observation)
            if written:
                delta = self._late.get(start)
                if delta is None:
                    delta = self._late[start] = Window()
                delta.record(edge, endpoint, route, observation, bucket)
                if start < self._oldest_kept:
                    continue
            window = windows.get(start)
            if window is None:
                window = windows[start] = Window()
            window.record(edge, endpoint, route, observation, bucket)
            if blocks:
                for size in self.block_sizes_ns:
                    blocks.pop((start - start % size, size), None)

    def pieces(self, start_ns: int, end_ns: int, step_ns: int, now_ns: int) -> list[tuple[int, int]]:
        """How to read the windows in [start_ns, end_ns) (window-aligned) in steps of ``step_ns``,
        in time order: (start, size) of whole past blocks, the largest that fit within one step,
        and of single kept windows."""
        current = self.window_start(now_ns)
        position = max(start_ns, self.memory_start(now_ns))
        end_ns = min(end_ns, current + self.window_ns)
        pieces = []
        while position < end_ns:
            step_end = position - (position - start_ns) % step_ns + step_ns
            size = next(
                (
                    size
                    for size in self.block_sizes_ns
                    if position % size == 0 and position + size <= min(step_end, end_ns, current)
                ),
                self.window_ns,
            )
            if size != self.window_ns or position in self._windows:
                pieces.append((position, size))
            position += size
        return pieces

    def piece(self, start_ns: int, size_ns: int) -> Window | None:
        """One window, or the merge of a block of them (cached until a late request changes it)."""
        if size_ns == self.window_ns:
            return self._windows.get(start_ns)
        merged = self._blocks.get((start_ns, size_ns))
        if merged is None:
            merged = self._blocks[(start_ns, size_ns)] = Window()
            smaller = next((size for size in self.block_sizes_ns if size < size_ns), self.window_ns)
            for part_start in range(start_ns, start_ns + size_ns, smaller):
                part = self.piece(part_start, smaller)
                if part is not None:
                    merged.merge(part)
        return merged

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
        for block in [block for block in self._blocks if block[0] < oldest_kept]:
            del self._blocks[block]
        for window_start in [start for start in self._windows if start < oldest_kept]:
            window = self._windows.pop(window_start)
            if self._unwritten_from is not None and window_start >= self._unwritten_from:
                self._late[window_start] = window  # not written yet: history still gets it
