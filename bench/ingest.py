"""Ingest throughput: OTLP/gRPC into ``tracemesh collector`` vs. raw inserts of the same rows.

For each backend (embedded chDB; a ClickHouse server when one is given or can be started) this
starts a collector, has several client processes send pre-encoded OTLP/gRPC requests of 512
realistic spans (about ten attributes each: repeated values like the method and route, unique ones
like the URL, peer port and a ratio; one span in eight has an event), waits until every span is
in the store, and reports spans/s over wall time and per CPU-second of the collector process.
Both sides first take one untimed warm-up request (start-up work such as chDB's first insert is not
timed), and the collector batches like the raw inserts (``--batch-rows``, its default 1 s delay).
Then, in the same run, it inserts the same rows (the same ``SpanColumns``, decoded beforehand and
not timed) straight into the same backend through the store and prints the ratio.

    python bench/ingest.py --spans 500000 --clients 2 [--clickhouse-url clickhouse://...|--start-clickhouse]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

from collector.store import open_store  # noqa: E402
from spans.model import empty_columns, extend_columns, row_count  # noqa: E402
from spans.otlp_decode import decode_otlp_protobuf  # noqa: E402
from tests.support.collector import collector_for  # noqa: E402

SPANS_PER_REQUEST = 512
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ROUTES = ["/api/orders/{id}", "/api/cart", "/api/users/{id}", "/health", "/api/search", "/api/checkout"]
SERVICES = ["frontend", "checkout", "cart", "users", "search"]


def attribute(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def make_request(seed: int, now: int) -> bytes:
    """One request: 512 spans of one service in traces of 8 spans, with realistic attribute variety."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    service = SERVICES[seed % len(SERVICES)]
    resource_spans.resource.attributes.extend(
        [attribute("service.name", service), attribute("host.name", f"node-{seed % 7}"),
         attribute("telemetry.sdk.language", "python")]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name, scope_spans.scope.version = "tracemesh.bench", "1.0"
    trace_id = b""
    for index in range(SPANS_PER_REQUEST):
        if index % 8 == 0:
            trace_id = rng.randbytes(16)
        span = scope_spans.spans.add(trace_id=trace_id, span_id=rng.randbytes(8), name=rng.choice(ROUTES))
        if index % 8:
            span.parent_span_id = rng.randbytes(8)
        span.kind = 2 if index % 2 else 3
        span.start_time_unix_nano = now - rng.randrange(10**9)
        span.end_time_unix_nano = span.start_time_unix_nano + rng.randrange(10**4, 10**8)
        status = rng.choice((200, 200, 200, 200, 404, 500))
        span.attributes.extend([
            attribute("http.method", rng.choice(("GET", "GET", "POST"))),
            attribute("http.route", span.name),
            attribute("http.status_code", status),
            attribute("http.url", f"http://{service}:8080{span.name.replace('{id}', str(rng.randrange(10**6)))}"),
            attribute("net.peer.ip", f"10.0.{rng.randrange(4)}.{rng.randrange(256)}"),
            attribute("net.peer.port", rng.randrange(30000, 60000)),
            attribute("http.user_agent", "python-requests/2.31"),
            attribute("retry", rng.random() < 0.05),
            attribute("sample.ratio", rng.random()),
            attribute("component", "http"),
        ])
        if status == 500:
            span.status.code, span.status.message = 2, "internal error"
        if index % 8 == 3:
            event = span.events.add(time_unix_nano=span.start_time_unix_nano + 5000, name="cache miss")
            event.attributes.append(attribute("cache.key", f"k{rng.randrange(1000)}"))
    return request.SerializeToString()


def client(address: str, seeds: list[int], now: int, in_flight: int, ready, go, results) -> None:
    """Send every request, keeping ``in_flight`` calls open; back-pressure is retried after a pause."""
    requests = [make_request(seed, now) for seed in seeds]  # every request distinct, encoded up front
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(EXPORT_METHOD)
        ready.put(len(requests))
        go.wait()
        pending = collections.deque()
        for body in requests:
            pending.append((body, export.future(body, timeout=60)))
            while len(pending) >= in_flight:
                wait_for(export, pending)
        while pending:
            wait_for(export, pending)
    results.put(len(requests) * SPANS_PER_REQUEST)


def wait_for(export, pending: collections.deque) -> None:
    body, call = pending.popleft()
    try:
        call.result()
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
            raise
        time.sleep(0.2)
        pending.append((body, export.future(body, timeout=60)))


def send_warm_up(address: str, body: bytes) -> None:
    """One request outside the measured ones, so start-up work (first insert, lazy imports) is not timed.
    Sent after the clients forked: a process that used gRPC must not fork."""
    with grpc.insecure_channel(address) as channel:
        channel.unary_unary(EXPORT_METHOD)(body, timeout=60)


def cpu_and_faults(pid: int) -> tuple[float, int]:
    """CPU seconds (utime + stime) and minor page faults of every thread of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def peak_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:", 1)[1].split()[0]) * 1024


def run_collector(store_url: str, workdir: Path, total_requests: int, clients: int, in_flight: int, batch_rows: int, now: int) -> dict:
    # The collector's own batching defaults (the test helper shortens the delay), and the raw run's batch size.
    collector = collector_for(workdir, store_url, "--batch-delay", "1.0", "--batch-rows", str(batch_rows)).start()
    try:
        pid = collector.process.popen.pid
        ready, go, results = multiprocessing.Queue(), multiprocessing.Event(), multiprocessing.Queue()
        shares = [list(range(c, total_requests, clients)) for c in range(clients)]
        processes = [multiprocessing.Process(target=client, args=(collector.grpc_address, share, now, in_flight, ready, go, results)) for share in shares]
        for process in processes:
            process.start()
        for _ in processes:
            ready.get(timeout=300)  # every client encoded its requests
        send_warm_up(collector.grpc_address, make_request(total_requests, now))
        collector.wait_inserted(SPANS_PER_REQUEST, timeout=120)
        inserted_before = collector.ready()["inserted_rows"]
        (cpu_before, faults_before), started = cpu_and_faults(pid), time.perf_counter()
        go.set()
        sent = sum(results.get(timeout=600) for _ in processes)
        acked_at = time.perf_counter()
        collector.wait_inserted(inserted_before + sent, timeout=120)
        finished = time.perf_counter()
        cpu, faults = cpu_and_faults(pid)
        read_back = collector.ready()["spool_read_back_spans"]
        peak_rss = peak_rss_bytes(pid)
        for process in processes:
            process.join()
        return {
            "spans": sent,
            "ack_seconds": acked_at - started,
            "seconds": finished - started,
            "cpu": cpu - cpu_before,
            "faults": faults - faults_before,
            "read_back": read_back,
            "peak_rss": peak_rss,
        }
    finally:
        collector.stop()


def raw_insert_rate(store_url: str, total_requests: int, batch_rows: int, now: int) -> tuple[float, float]:
    """Insert the same rows (decoded beforehand, untimed) in batches of ``batch_rows``.

    Returns rows per second of wall time and rows per CPU-second of this process (chDB's threads included).
    """
    store = open_store(store_url)
    try:
        batches, batch = [], empty_columns()
        for seed in range(total_requests):
            extend_columns(batch, decode_otlp_protobuf(make_request(seed, now)).columns)
            if row_count(batch) >= batch_rows:
                batches.append(batch)
                batch = empty_columns()
        if row_count(batch):
            batches.append(batch)
        rows = sum(row_count(b) for b in batches)
        store.insert(decode_otlp_protobuf(make_request(total_requests, now)).columns)  # the same warm-up as the collector's
        started, cpu_started = time.perf_counter(), time.process_time()
        for batch in batches:
            store.insert(batch)
        return rows / (time.perf_counter() - started), rows / (time.process_time() - cpu_started)
    finally:
        store.close()


def report(label: str, result: dict, raw_rate: float, raw_per_cpu: float) -> None:
    rate = result["spans"] / result["seconds"]
    per_cpu = result["spans"] / result["cpu"]
    print(f"{label}: {result['spans']:,} spans in {result['seconds']:.2f}s (acked in {result['ack_seconds']:.2f}s)")
    print(f"  through the collector: {rate:,.0f} spans/s wall, {per_cpu:,.0f} spans per CPU-second of the collector")
    print(f"  minor page faults of the collector: {result['faults'] / result['spans']:.3f} per span; peak RSS {result['peak_rss'] / 2**20:,.0f} MB")
    print(f"  spans the collector's writer read back from the spool files and decoded again: {result['read_back']:,}")
    print(f"  raw store.insert of the same rows: {raw_rate:,.0f} rows/s wall, {raw_per_cpu:,.0f} rows per CPU-second")
    print(f"  ratio collector/raw: {rate / raw_rate:.2f}x wall, {per_cpu / raw_per_cpu:.2f}x per CPU-second")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=500_000, help="spans to send per backend (default %(default)s)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default %(default)s)")
    parser.add_argument("--in-flight", type=int, default=4, help="concurrent requests per client (default %(default)s)")
    parser.add_argument("--batch-rows", type=int, default=100_000, help="rows per raw insert, as the collector's writer (default %(default)s)")
    parser.add_argument("--clickhouse-url", help="also measure a ClickHouse server at this clickhouse:// URL")
    parser.add_argument("--start-clickhouse", action="store_true", help="start a throw-away clickhouse-server for the run")
    args = parser.parse_args()
    print("command: python bench/ingest.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]), flush=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    total_requests = max(1, args.spans // SPANS_PER_REQUEST)
    now = time.time_ns() // 10**9 * 10**9

    with tempfile.TemporaryDirectory(prefix="tracemesh-bench-") as tmp:
        tmp = Path(tmp)
        backends = [("chDB", f"chdb://{tmp}/collector-chdb", f"chdb://{tmp}/raw-chdb")]
        server = None
        if args.start_clickhouse:
            from tests.support.clickhouse_server import ClickHouseServer

            server = ClickHouseServer(tmp / "clickhouse-server")
            args.clickhouse_url = server.start()
        if args.clickhouse_url:
            base = args.clickhouse_url.rsplit("/", 1)[0]
            backends.append(("ClickHouse server", f"{base}/bench_collector", f"{base}/bench_raw"))
        try:
            for label, collector_url, raw_url in backends:
                workdir = tmp / label.replace(" ", "-")
                workdir.mkdir()
                print(f"{label}: sending {total_requests * SPANS_PER_REQUEST:,} spans with {args.clients} clients ...", flush=True)
                result = run_collector(collector_url, workdir, total_requests, args.clients, args.in_flight, args.batch_rows, now)
                print(f"{label}: raw inserts of the same rows ...", flush=True)
                raw_rate, raw_per_cpu = raw_insert_rate(raw_url, total_requests, args.batch_rows, now)
                report(label, result, raw_rate, raw_per_cpu)
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
