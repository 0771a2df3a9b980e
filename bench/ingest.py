"""Ingest throughput: OTLP/gRPC into ``tracemesh collector`` vs. raw inserts of the same rows.

For each backend (embedded chDB; a ClickHouse server when one is given or can be started) this runs
several rounds. A round starts a fresh collector on a fresh store, has several client processes send
pre-encoded OTLP/gRPC requests of 512 realistic spans (about ten attributes each: repeated values like
the method and route, unique ones like the URL, peer port and a ratio; one span in eight has an event),
waits until every span is in the store, and then inserts the same rows (the same ``SpanColumns``,
decoded once beforehand and not timed) straight into another fresh store through ``SpanStore`` in a
process of its own. Rounds alternate which side goes first, so drift in the machine's speed (other jobs,
a VM neighbour) falls on both; the summary gives the median of the rounds' ratios.

Both sides first take one untimed warm-up request (chDB's first insert is not timed) and insert the
same batches (``--batch-rows``; the collector with its default 1 s delay). Wall time ends when the
last span is in the store. CPU time is counted twice: up to that moment, and until the process is idle
again (no more than 5% of a core for two seconds), which adds the background merges the inserts
started. Merges that a long-running store would do later, into ever larger parts, are in neither.
For the server backend the CPU is the collector's (or the raw inserter's) only, not the server's.

    python bench/ingest.py --spans 1000000 --rounds 3 [--clickhouse-url clickhouse://...|--start-clickhouse]
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402

from spans.model import empty_columns, extend_columns, row_count  # noqa: E402
from spans.otlp_decode import decode_otlp_protobuf  # noqa: E402
from tests.support.collector import collector_for  # noqa: E402

SPANS_PER_REQUEST = 512
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
FORK = multiprocessing.get_context("fork")  # children share the encoded requests and decoded rows
IDLE_SHARE, IDLE_WINDOWS = 0.05, 2  # "idle": at most 5% of a core in each of two one-second windows
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


def client(address: str, requests: list[bytes], in_flight: int, go, results) -> None:
    """Send every request, keeping ``in_flight`` calls open; back-pressure is retried after a pause."""
    with grpc.insecure_channel(address) as channel:
        export = channel.unary_unary(EXPORT_METHOD)
        channel_ready = grpc.channel_ready_future(channel)
        channel_ready.result(timeout=60)
        results.put(0)  # connected
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
    Sent from a child process: the bench process forks every round, and a process that used gRPC must not."""
    with grpc.insecure_channel(address) as channel:
        channel.unary_unary(EXPORT_METHOD)(body, timeout=60)


def cpu_and_faults(pid: int) -> tuple[float, int]:
    """CPU seconds (utime + stime) and minor page faults of every thread of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def cpu_seconds(pid: int) -> float:
    return cpu_and_faults(pid)[0]


def peak_rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmHWM:", 1)[1].split()[0]) * 1024


def cpu_when_idle(pid: int, timeout: float) -> float:
    """Process ``pid``'s CPU seconds when it went idle: the reading that began IDLE_WINDOWS consecutive
    one-second windows of at most IDLE_SHARE of a core each (its background merges done; the idle
    windows themselves are not counted). Raises after ``timeout``."""
    deadline = time.perf_counter() + timeout
    last = idle_since = cpu_seconds(pid)
    quiet = 0
    while quiet < IDLE_WINDOWS:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"process {pid} still busy {timeout:.0f}s after its last insert")
        time.sleep(1.0)
        now = cpu_seconds(pid)
        if now - last <= IDLE_SHARE:
            quiet += 1
        else:
            quiet, idle_since = 0, now
        last = now
    return idle_since


def run_collector(store_url: str, workdir: Path, requests: list[bytes], warm_up: bytes, options) -> dict:
    # The collector's own batching defaults (the test helper shortens the delay), and the raw run's batch size.
    collector = collector_for(workdir, store_url, "--batch-delay", "1.0", "--batch-rows", str(options.batch_rows)).start()
    try:
        pid = collector.process.popen.pid
        go, results = FORK.Event(), FORK.Queue()
        shares = [requests[c :: options.clients] for c in range(options.clients)]
        processes = [FORK.Process(target=client, args=(collector.grpc_address, share, options.in_flight, go, results)) for share in shares]
        for process in processes:
            process.start()
        for _ in processes:
            results.get(timeout=120)  # every client connected
        warm = FORK.Process(target=send_warm_up, args=(collector.grpc_address, warm_up))
        warm.start()
        warm.join(timeout=120)
        collector.wait_inserted(SPANS_PER_REQUEST, timeout=120)
        inserted_before = collector.ready()["inserted_rows"]
        (cpu_before, faults_before), started = cpu_and_faults(pid), time.perf_counter()
        go.set()
        sent = sum(results.get(timeout=600) for _ in processes)
        acked_at = time.perf_counter()
        collector.wait_inserted(inserted_before + sent, timeout=300)
        finished = time.perf_counter()
        cpu, faults = cpu_and_faults(pid)
        cpu_idle = cpu_when_idle(pid, options.settle_timeout)
        read_back = collector.ready()["spool_read_back_spans"]
        for process in processes:
            process.join()
        return {
            "spans": sent,
            "ack_seconds": acked_at - started,
            "seconds": finished - started,
            "cpu": cpu - cpu_before,
            "cpu_idle": cpu_idle - cpu_before,
            "faults": faults - faults_before,
            "read_back": read_back,
            "peak_rss": peak_rss_bytes(pid),
        }
    finally:
        collector.stop()


def raw_batches(requests: list[bytes], batch_rows: int) -> list:
    """The rows of every request, decoded once, in batches of ``batch_rows`` as the collector's writer makes."""
    batches, batch = [], empty_columns()
    for body in requests:
        extend_columns(batch, decode_otlp_protobuf(body).columns)
        if row_count(batch) >= batch_rows:
            batches.append(batch)
            batch = empty_columns()
    if row_count(batch):
        batches.append(batch)
    return batches


def raw_insert(store_url: str, batches: list, warm_up: bytes, settle_timeout: float, results) -> None:
    """In a process of its own (forked, so the batches are shared): insert the batches through the store."""
    from collector.store import open_store

    store = open_store(store_url)
    try:
        store.insert(decode_otlp_protobuf(warm_up).columns)  # the same warm-up as the collector's
        pid = os.getpid()
        cpu_before, started = cpu_seconds(pid), time.perf_counter()
        for batch in batches:
            store.insert(batch)
        seconds, cpu = time.perf_counter() - started, cpu_seconds(pid)
        cpu_idle = cpu_when_idle(pid, settle_timeout)
        results.put({"rows": sum(row_count(b) for b in batches), "seconds": seconds, "cpu": cpu - cpu_before, "cpu_idle": cpu_idle - cpu_before})
    finally:
        store.close()


def run_raw(store_url: str, batches: list, warm_up: bytes, settle_timeout: float) -> dict:
    results = FORK.Queue()
    process = FORK.Process(target=raw_insert, args=(store_url, batches, warm_up, settle_timeout, results))
    process.start()
    try:
        return results.get(timeout=600)
    finally:
        process.join(timeout=120)
        if process.exitcode != 0:
            raise RuntimeError(f"raw insert process exited with {process.exitcode}")


def round_figures(collector: dict, raw: dict) -> dict:
    figures = {
        "wall": collector["spans"] / collector["seconds"],
        "per_cpu": collector["spans"] / collector["cpu"],
        "per_cpu_idle": collector["spans"] / collector["cpu_idle"],
        "raw_wall": raw["rows"] / raw["seconds"],
        "raw_per_cpu": raw["rows"] / raw["cpu"],
        "raw_per_cpu_idle": raw["rows"] / raw["cpu_idle"],
    }
    figures["ratio_wall"] = figures["wall"] / figures["raw_wall"]
    figures["ratio_cpu_idle"] = figures["per_cpu_idle"] / figures["raw_per_cpu_idle"]
    return figures


def print_round(label: str, number: int, collector: dict, figures: dict) -> None:
    print(f"{label} round {number}: {collector['spans']:,} spans in {collector['seconds']:.2f}s (acked in {collector['ack_seconds']:.2f}s); "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"  collector: {figures['wall']:,.0f} spans/s wall; per CPU-second {figures['per_cpu']:,.0f} to the last insert, "
          f"{figures['per_cpu_idle']:,.0f} until idle")
    print(f"  raw store.insert: {figures['raw_wall']:,.0f} rows/s wall; per CPU-second {figures['raw_per_cpu']:,.0f} to the last insert, "
          f"{figures['raw_per_cpu_idle']:,.0f} until idle")
    print(f"  collector/raw: {figures['ratio_wall']:.2f}x wall, {figures['ratio_cpu_idle']:.2f}x per CPU-second until idle; "
          f"collector minor faults {collector['faults'] / collector['spans']:.3f} per span, peak RSS {collector['peak_rss'] / 2**20:,.0f} MB, "
          f"{collector['read_back']:,} spans read back from spool files", flush=True)


def summary(label: str, rounds: list[dict]) -> None:
    def spread(key: str, unit: str, scale: float = 1.0) -> str:
        values = sorted(r[key] * scale for r in rounds)
        return f"median {statistics.median(values):,.2f}{unit} ({', '.join(f'{v:,.2f}' for v in values)})"

    print(f"{label}, {len(rounds)} rounds:")
    print(f"  collector spans per CPU-second until idle: {spread('per_cpu_idle', 'k', 1e-3)}")
    print(f"  collector spans per CPU-second to the last insert: {spread('per_cpu', 'k', 1e-3)}")
    print(f"  collector spans/s wall: {spread('wall', 'k', 1e-3)}; raw rows/s wall: {spread('raw_wall', 'k', 1e-3)}")
    print(f"  collector/raw wall: {spread('ratio_wall', 'x')}")
    print(f"  collector/raw per CPU-second until idle: {spread('ratio_cpu_idle', 'x')}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans per round and side (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="collector and raw rounds per backend, alternating (default %(default)s)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default %(default)s)")
    parser.add_argument("--in-flight", type=int, default=4, help="concurrent requests per client (default %(default)s)")
    parser.add_argument("--batch-rows", type=int, default=100_000, help="rows per raw insert, as the collector's writer (default %(default)s)")
    parser.add_argument("--settle-timeout", type=float, default=120.0, help="longest wait for a process to go idle after its last insert, s (default %(default)s)")
    parser.add_argument("--clickhouse-url", help="also measure a ClickHouse server at this clickhouse:// URL")
    parser.add_argument("--start-clickhouse", action="store_true", help="start a throw-away clickhouse-server for the run")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    print("command: python bench/ingest.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]), flush=True)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load {os.getloadavg()[0]:.2f}", flush=True)
    total_requests = max(1, args.spans // SPANS_PER_REQUEST)
    now = time.time_ns() // 10**9 * 10**9
    print(f"encoding {total_requests:,} requests and decoding their rows for the raw side ...", flush=True)
    requests = [make_request(seed, now) for seed in range(total_requests)]
    warm_up = make_request(total_requests, now)
    batches = raw_batches(requests, args.batch_rows)

    with tempfile.TemporaryDirectory(prefix="tracemesh-bench-") as tmp:
        tmp = Path(tmp)
        backends = [("chDB", lambda side, n: f"chdb://{tmp}/{side}-chdb-{n}")]
        server = None
        if args.start_clickhouse:
            from tests.support.clickhouse_server import ClickHouseServer

            server = ClickHouseServer(tmp / "clickhouse-server")
            args.clickhouse_url = server.start()
        if args.clickhouse_url:
            base = args.clickhouse_url.rsplit("/", 1)[0]
            backends.append(("ClickHouse server", lambda side, n: f"{base}/bench_{side}_{n}"))
        try:
            for label, store_url in backends:
                rounds = []
                for number in range(1, args.rounds + 1):
                    workdir = tmp / f"{label.replace(' ', '-')}-{number}"
                    workdir.mkdir()
                    print(f"{label} round {number}: {total_requests * SPANS_PER_REQUEST:,} spans with {args.clients} clients, then raw inserts"
                          if number % 2 else f"{label} round {number}: raw inserts, then the collector", flush=True)
                    if number % 2:
                        collector = run_collector(store_url("collector", number), workdir, requests, warm_up, args)
                        raw = run_raw(store_url("raw", number), batches, warm_up, args.settle_timeout)
                    else:
                        raw = run_raw(store_url("raw", number), batches, warm_up, args.settle_timeout)
                        collector = run_collector(store_url("collector", number), workdir, requests, warm_up, args)
                    figures = round_figures(collector, raw)
                    print_round(label, number, collector, figures)
                    rounds.append(figures)
                    for leftover in tmp.glob("*-chdb-*"):
                        shutil.rmtree(leftover, ignore_errors=True)
                summary(label, rounds)
        finally:
            if server is not None:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
