"""Query latency with many spans stored: trace by id and trace searches, through ``SpanStore``.

Fills the store with synthetic traces generated inside ClickHouse (``INSERT ... SELECT`` from
``numbers()``: building 10 million rows in Python would take minutes), then times each query
(median of several runs, each with a different trace id / service). Also times ``SpanStore.insert``
of one 50k-span batch built in Python, the size the collector's writer sends.

    python bench/query.py                                   # chDB in a temp dir, 10M spans
    python bench/query.py --store clickhouse://default:@127.0.0.1:9000/bench --spans 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from collector.store import SpanStore, TraceQuery, open_backend  # noqa: E402
from collector.store import sql  # noqa: E402
from spans.model import COLUMN_NAMES, STATUS_ERROR, empty_columns, row_count  # noqa: E402

SPANS_PER_TRACE = 10
SERVICES = 20
OPERATIONS_PER_SERVICE = 10
HOUR_NS = 3600 * 10**9
SPREAD_NS = 24 * HOUR_NS  # traces start within the last day (two day partitions, usually)

# Synthetic spans: trace number t = number / 10, span s = number % 10; span 0 is the root (SERVER),
# the rest are its CLIENT children on other services. About 2% of spans are errors (status 500).
# Traces start in trace-number order over the last day, so each insert holds a stretch of time,
# as a collector's inserts do.
# Rows go into span_input, whose views fill the stored tables, as SpanStore.insert's do.
FILL_SQL = """
INSERT INTO span_input ({columns})
SELECT
    lower(hex(MD5(toString(trace_no)))) AS trace_id,
    substring(lower(hex(MD5(toString(number)))), 1, 16) AS span_id,
    if(span_no = 0, '', substring(lower(hex(MD5(toString(trace_no * %(spans_per_trace)s)))), 1, 16)) AS parent_span_id,
    '' AS trace_state,
    concat('operation-', toString(cityHash64(number) %% %(operations)s)) AS name,
    if(span_no = 0, 2, 3) AS kind,
    concat('service-', toString((trace_no + span_no) %% %(services)s)) AS service,
    %(first_start_ns)s + trace_no * %(ns_per_trace)s + span_no * 1000000 AS start_ns,
    1000 + cityHash64(number, 1) %% 500000000 AS duration_ns,
    if(is_error, {status_error}, 0) AS status_code,
    if(is_error, 'internal error', '') AS status_message,
    concat('{{"http.method":"GET","http.status_code":', status, ',"user.id":"', user_id, '"}}') AS attributes,
    concat('{{"service.name":"', service, '","host.name":"host-', host, '"}}') AS resource_attributes,
    'io.opentelemetry.bench' AS scope_name,
    '1.0' AS scope_version,
    '{{}}' AS scope_attributes,
    '[]' AS events,
    '[]' AS links,
    ['http.method=GET', concat('http.status_code=', status), concat('user.id=', user_id),
     concat('host.name=host-', host), concat('service.name=', service)] AS tags
FROM (
    SELECT
        number,
        intDiv(number, %(spans_per_trace)s) AS trace_no,
        number %% %(spans_per_trace)s AS span_no,
        cityHash64(number, 2) %% 50 = 0 AS is_error,
        if(is_error, '500', '200') AS status,
        toString(cityHash64(intDiv(number, %(spans_per_trace)s), 3) %% 100000) AS user_id,
        toString(number %% 50) AS host
    FROM numbers(%(offset)s, %(count)s)
)
""".format(columns=", ".join(COLUMN_NAMES), status_error=STATUS_ERROR)


def trace_id_of(trace_no: int) -> str:
    return hashlib.md5(str(trace_no).encode()).hexdigest()


def fill(backend, spans: int, first_start_ns: int, chunk: int) -> float:
    started = time.perf_counter()
    for offset in range(0, spans, chunk):
        count = min(chunk, spans - offset)
        params = dict(
            spans_per_trace=SPANS_PER_TRACE,
            operations=OPERATIONS_PER_SERVICE,
            services=SERVICES,
            first_start_ns=first_start_ns,
            ns_per_trace=SPREAD_NS * SPANS_PER_TRACE // spans,
            offset=offset,
            count=count,
        )
        backend.execute([sql.render(FILL_SQL, params)])
        rate = (offset + count) / (time.perf_counter() - started)
        print(f"  filled {offset + count:,} spans ({rate:,.0f} spans/s)", flush=True)
    return time.perf_counter() - started


def timed(call, runs: int) -> tuple[float, object]:
    """Median wall time in ms over ``runs`` calls of ``call(i)``, and the last result."""
    times, result = [], None
    for run in range(runs):
        started = time.perf_counter()
        result = call(run)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def python_batch(rows: int, start_ns: int) -> dict[str, list]:
    """A realistic writer batch built in Python (what decoders hand the writer)."""
    block = empty_columns()
    for number in range(rows):
        trace_no = 10**9 + number // SPANS_PER_TRACE
        values = {
            "trace_id": trace_id_of(trace_no),
            "span_id": f"{number:016x}",
            "parent_span_id": "" if number % SPANS_PER_TRACE == 0 else f"{number - number % SPANS_PER_TRACE:016x}",
            "trace_state": "",
            "name": f"operation-{number % OPERATIONS_PER_SERVICE}",
            "kind": 2,
            "service": f"service-{number % SERVICES}",
            "start_ns": start_ns + number * 1000,
            "duration_ns": 1_000_000 + number,
            "status_code": 0,
            "status_message": "",
            "attributes": '{"http.method":"GET","http.status_code":200,"user.id":"%d"}' % (number % 100000),
            "resource_attributes": '{"service.name":"service-%d","host.name":"host-%d"}' % (number % SERVICES, number % 50),
            "scope_name": "io.opentelemetry.bench",
            "scope_version": "1.0",
            "scope_attributes": "{}",
            "events": "[]",
            "links": "[]",
            "tags": ["http.method=GET", "http.status_code=200", f"user.id={number % 100000}", f"host.name=host-{number % 50}"],
        }
        for name in COLUMN_NAMES:
            block[name].append(values[name])
    return block


def main() -> int:
    parser = argparse.ArgumentParser(description="Time trace-by-id and trace search with many spans stored.")
    parser.add_argument("--store", help="store URL (default: chDB in a new temp dir)")
    parser.add_argument("--spans", type=int, default=10_000_000, help="spans to store first (default 10,000,000)")
    parser.add_argument("--runs", type=int, default=15, help="runs per query; the median is reported")
    parser.add_argument(
        "--fill-rows",
        type=int,
        default=1_000_000,
        help="spans per fill insert (default %(default)s; the collector inserts 100,000 at a time, which leaves more parts)",
    )
    parser.add_argument(
        "--filled",
        action="store_true",
        help="the store already holds --spans spans from an earlier run (within the last hour or so): only query",
    )
    args = parser.parse_args()
    scratch = None if args.store else tempfile.mkdtemp(prefix="tracemesh-bench-")  # removed at the end
    url = args.store or f"chdb://{scratch}"
    print(f"command: python bench/query.py {shlex.join(sys.argv[1:])}")
    print(f"store: {url}")

    backend = open_backend(url)
    store = SpanStore(backend)
    try:
        now_ns = time.time_ns()
        if not args.filled:
            fill_store(store, backend, args.spans, now_ns, args.fill_rows)
        query_store(store, args.spans, args.runs, now_ns)
    finally:
        store.close()
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def fill_store(store: SpanStore, backend, spans: int, now_ns: int, fill_rows: int) -> None:
    batch = python_batch(50_000, now_ns - SPREAD_NS - HOUR_NS)
    store.insert(batch)  # warm-up: the first insert creates the day partitions' first parts
    cpu_before = process_cpu_s()
    insert_ms, _ = timed(lambda run: store.insert(batch), 5)
    cpu_ms = (process_cpu_s() - cpu_before) / 5 * 1000
    print(
        f"insert one {row_count(batch):,}-span batch (SpanStore.insert, median of 5): {insert_ms:.0f} ms wall"
        f" = {row_count(batch) / insert_ms * 1000:,.0f} spans/s; this process's CPU {cpu_ms:.0f} ms per batch"
        " (chDB: includes the engine's work; server: client side only)"
    )
    print(f"filling {spans:,} spans ({SPANS_PER_TRACE} per trace, {SERVICES} services, over 24 h)")
    fill_s = fill(backend, spans, now_ns - SPREAD_NS, fill_rows)
    print(f"fill: {fill_s:.1f} s ({spans / fill_s:,.0f} spans/s incl. materialized views)")


def query_store(store: SpanStore, spans: int, runs: int, now_ns: int) -> None:
    stride = max(1, spans // SPANS_PER_TRACE // runs)
    window_1h = dict(start_ns=now_ns - HOUR_NS, end_ns=now_ns)
    queries = {
        "trace by id": lambda run: store.trace(trace_id_of(run * stride + 7)),
        "search service, last 1h, limit 20": lambda run: store.search(
            TraceQuery(service=f"service-{run % SERVICES}", **window_1h)
        ),
        "search service+operation+tag, last 6h": lambda run: store.search(
            TraceQuery(
                service=f"service-{run % SERVICES}",
                operation=f"operation-{run % OPERATIONS_PER_SERVICE}",
                tags=(("http.status_code", "500"),),
                start_ns=now_ns - 6 * HOUR_NS,
                end_ns=now_ns,
            )
        ),
        "search service, duration >= 450ms, error, 24h": lambda run: store.search(
            TraceQuery(service=f"service-{run % SERVICES}", min_duration_ns=450_000_000, error=True)
        ),
        "search tag only (user.id), last 1h": lambda run: store.search(
            TraceQuery(tags=(("user.id", str(run * 7919 % 100000)),), **window_1h)
        ),
    }
    for name, call in queries.items():
        call(0)  # warm-up: first touch of marks and files
        median_ms, result = timed(call, runs)
        found = row_count(result) if isinstance(result, dict) else f"{len(result)} traces"
        print(f"{name:<48} median {median_ms:7.1f} ms  (last result: {found})")


if __name__ == "__main__":
    sys.exit(main())
