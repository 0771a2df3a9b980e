"""What the service graph costs on the ingest path: CPU per span of ``ServiceGraph.consume``.

The batches are what a meshed request looks like: per request, the caller app's CLIENT span,
the two proxy spans, the callee app's SERVER span and ``--internal`` INTERNAL spans; one request
in four goes through no proxy (its client and server spans must be paired), and for half the
requests the callee's spans come first. Also times a graph query over the last hour.

With ``--mix ingest`` the batches are bench/ingest.py's OTLP export requests of 512 spans
(decoded beforehand): CLIENT and SERVER spans with random parents that never pair, so every span
waits until the pending limit evicts it, as in a long ingest run.

    python bench/graph.py [--requests 20000] [--internal 2] [--batch 512]
    python bench/graph.py --mix ingest [--requests 400]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.graph.service_graph import ServiceGraph  # noqa: E402
from spans.conventions import ENDPOINT, HTTP_METHOD, HTTP_STATUS, PEER_SERVICE, RETRIES, SERVER_ADDRESS  # noqa: E402
from spans.model import KIND_CLIENT, KIND_INTERNAL, KIND_SERVER  # noqa: E402
from tests.support.graph_spans import MS, S, columns, new_trace_id, proxy_hop, span  # noqa: E402

SERVICES = ["frontend", "cart", "catalog", "checkout", "payments", "users", "search", "ads"]


def request_spans(index: int, now_ns: int, internal: int) -> list[dict]:
    trace_id = new_trace_id()
    caller = SERVICES[index % len(SERVICES)]
    callee = SERVICES[(index * 7 + 3) % len(SERVICES)]
    start = now_ns - 5 * S + index * 1000
    http = {HTTP_METHOD: "GET", HTTP_STATUS: 200, "url.path": f"/items/{index % 50}"}
    app_client = span(trace_id, caller, KIND_CLIENT, start, 12 * MS,
                      attributes={**http, PEER_SERVICE: callee, SERVER_ADDRESS: "127.0.0.1"})
    proxy_client, proxy_server = proxy_hop(
        trace_id, caller, callee, start + MS, (index % 97 + 1) * 100_000, parent=app_client["span_id"],
        attributes={**http, RETRIES: int(index % 5 == 0), ENDPOINT: f"10.1.0.{index % 4}:8080"},
    )
    app_server = span(trace_id, callee, KIND_SERVER, start + 2 * MS, 8 * MS, parent=proxy_server["span_id"],
                      attributes={**http, "http.route": "/items/{id}"})
    inner = [span(trace_id, callee, KIND_INTERNAL, start + 3 * MS, MS, parent=app_server["span_id"],
                  attributes={"db.statement": "SELECT 1"}) for _ in range(internal)]
    if index % 4 == 3:  # no proxies on this hop
        app_server["parent_span_id"] = app_client["span_id"]
        return [app_client, app_server, *inner]
    return [app_client, proxy_client, proxy_server, app_server, *inner]


def mesh_batches(requests: int, internal: int, batch: int, now: int) -> list[dict]:
    rows = []
    for index in range(requests):
        spans = request_spans(index, now, internal)
        # Odd requests: the callee side comes one batch later, as from another process.
        rows += spans if index % 2 == 0 else spans[::-1]
    return [columns(rows[i : i + batch]) for i in range(0, len(rows), batch)]


def ingest_batches(requests: int, now: int) -> list[dict]:
    from ingest import make_request  # bench/ingest.py, next to this file

    from spans.otlp_decode import decode_otlp_protobuf

    return [decode_otlp_protobuf(make_request(seed, now)).columns for seed in range(requests)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", choices=("mesh", "ingest"), default="mesh", help="which spans (see above)")
    parser.add_argument("--requests", type=int, help="meshed requests (20000), or OTLP requests with --mix ingest (400)")
    parser.add_argument("--internal", type=int, default=2, help="INTERNAL spans per request")
    parser.add_argument("--batch", type=int, default=512, help="spans per consume() call")
    args = parser.parse_args()

    now = time.time_ns()
    if args.mix == "mesh":
        batches = mesh_batches(args.requests or 20_000, args.internal, args.batch, now)
    else:
        batches = ingest_batches(args.requests or 400, now)
    spans = sum(len(batch["trace_id"]) for batch in batches)

    # The input batches are the bench's own garbage-collector load, not the graph's: keep the
    # collector's full passes from walking them.
    gc.collect()
    gc.freeze()
    graph = ServiceGraph()
    started = time.process_time()
    for batch in batches:
        graph.consume(batch)
    cpu = time.process_time() - started
    print(f"consume: {spans} spans in {len(batches)} batches of {len(batches[0]['trace_id'])}: "
          f"{cpu:.3f} s CPU = {cpu / spans * 1e6:.2f} us/span ({spans / cpu:,.0f} spans/s)")
    started = time.perf_counter()
    answer = graph.graph(now - 3600 * S, now)
    print(f"graph query over the last hour: {(time.perf_counter() - started) * 1e3:.1f} ms, "
          f"{len(answer['edges'])} edges, {sum(e['requests'] for e in answer['edges'])} requests")
    print(f"pairing: {graph.pairing_stats()}")
    print("command: python bench/graph.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
