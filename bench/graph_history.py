"""What the service graph's history costs: writing its windows to ClickHouse and reading a day back.

Fills a day of 10-second windows (8,640) of a mesh with ``--edges`` edges, each with
``--details`` endpoints and as many routes (rows per window: edges × (1 + 2 × details)), written
the way the collector's history thread writes them (``EdgeHistory.write`` of settled windows, one
insert per ``--hours-per-insert``), then times ``/api/v1/graph`` over the day and
``/api/v1/edges`` over the day at a 5-minute step, as a collector answers them once the range is
older than its memory.

    python bench/graph_history.py [--store chdb:///tmp/bench-history] [--edges 20] [--details 5]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.graph.edges import Observation  # noqa: E402
from collector.graph.history import EdgeHistory, window_columns  # noqa: E402
from collector.graph.service_graph import ServiceGraph  # noqa: E402
from collector.graph.windows import Window  # noqa: E402
from collector.store import open_store  # noqa: E402

S = 1_000_000_000
WINDOW_NS = 10 * S
DAY_NS = 86_400 * S


def sample_window(edges: int, details: int, requests_per_edge: int, rng: random.Random) -> Window:
    """One window of ``requests_per_edge`` requests on each edge, spread over its endpoints and routes."""
    window = Window()
    for edge_number in range(edges):
        edge = (f"svc{edge_number % 10}", f"svc{(edge_number * 3 + 1) % 10}-{edge_number}", "request")
        for i in range(requests_per_edge):
            observation = Observation(
                client=edge[0], server=edge[1], connection=edge[2], time_ns=0,
                duration_ns=int(rng.lognormvariate(16, 1)), error=i % 20 == 0, retries=0,
                request_bytes=100, response_bytes=1000,
                endpoint=f"10.0.0.{i % details}:8080", route=f"/route/{i % details}",
            )
            window.record(edge, observation.endpoint, observation.route, observation)
    return window


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store URL (default: chDB in a temporary directory)")
    parser.add_argument("--edges", type=int, default=20)
    parser.add_argument("--details", type=int, default=5, help="endpoints (and routes) per edge")
    parser.add_argument("--requests", type=int, default=50, help="requests per edge and window")
    parser.add_argument("--hours-per-insert", type=int, default=1)
    args = parser.parse_args()

    directory = None
    if args.store is None:
        directory = tempfile.mkdtemp(prefix="bench-history-")
        args.store = f"chdb://{directory}/chdb"
    store = open_store(args.store)
    try:
        template = sample_window(args.edges, args.details, args.requests, random.Random(1))
        day = (time.time_ns() // DAY_NS - 2) * DAY_NS  # two days ago: older than any memory
        history = EdgeHistory(store)
        rows = 0
        started = time.perf_counter()
        per_insert = args.hours_per_insert * 360
        for first in range(0, DAY_NS // WINDOW_NS, per_insert):
            columns = window_columns([(day + (first + i) * WINDOW_NS, template) for i in range(per_insert)])
            history.write(columns)
            rows += len(columns["window_start"])
        elapsed = time.perf_counter() - started
        print(f"write: {rows:,} rows (a day of windows, {rows // 8640} per window) in {elapsed:.2f} s "
              f"= {rows / elapsed:,.0f} rows/s (row building included)")

        reader = ServiceGraph(clock=lambda: day + 3 * DAY_NS, history=history)
        for name, read in (
            ("graph over the day", lambda: reader.graph(day, day + DAY_NS)),
            ("edge series over the day, 5 min step", lambda: reader.edge_series(day, day + DAY_NS, 300 * S)),
            ("graph over one hour", lambda: reader.graph(day, day + 3600 * S)),
        ):
            times = []
            for _ in range(3):
                started = time.perf_counter()
                answer = read()
                times.append(time.perf_counter() - started)
            edges = len(answer["edges"] if "edges" in answer else answer["series"])
            print(f"{name}: best of 3 {min(times) * 1e3:.0f} ms ({edges} edges)")
    finally:
        store.close()
        if directory:
            shutil.rmtree(directory, ignore_errors=True)
    print("command: python bench/graph_history.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
