"""What span export and metrics cost the proxy: record() and observe_request() per request on the
data path, OTLP encoding per span, memory per buffered span, exporter throughput over OTLP/gRPC and
OTLP/HTTP to local endpoints on 127.0.0.1, and (--proxy) what export adds to a real proxy.

    python bench/export.py [--spans 20000] [--proxy] [--duration 5] [--pairs 3] [--rate 1000] [--callgrind 2000]

Per-call and per-span costs are thread CPU time (best of several runs), so other processes on the
machine disturb them less than wall-clock time would.

--proxy runs two inbound proxies in front of the same nginx app (the setup of bench/proxy.py): one
exporting to a discarding OTLP/HTTP sink, one without a collector. ``wrk`` loads them in alternating
pairs (so a busy machine disturbs both alike): p50/p99 latency paced at --rate req/s (bench/proxy.py's
pacing script), then CPU µs per request at saturation (utime+stime from /proc over the requests wrk
completed). --callgrind N
also counts the instructions per request of each proxy under valgrind's callgrind (N sequential
requests between zeroing and dumping the counters): a figure other load on the machine cannot move.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxy as proxy_bench  # noqa: E402  (bench/proxy.py: its nginx app, wrk runner, process handling, OTLP sink)

from mesh.export import OtlpExporter, SpanRecorder, proxy_resource  # noqa: E402
from mesh.metrics import ProxyMetrics  # noqa: E402
from spans import conventions as conv  # noqa: E402
from spans import model  # noqa: E402
from spans.otlp_encode import ExportRequestFramer, encode_spans  # noqa: E402


def proxy_span(n: int) -> tuple:
    """A span shaped like the HTTP/1.1 relay's outbound CLIENT span (15 attributes)."""
    attributes = (
        (conv.HTTP_METHOD, "GET"),
        (conv.URL_PATH, f"/api/items/{n % 50}"),
        (conv.SERVER_ADDRESS, "payments"),
        (conv.DIRECTION, "outbound"),
        (conv.QUEUE_NS, 1_200 + n % 5_000),
        (conv.CONNECT_NS, 0),
        (conv.CONNECTION_REUSED, True),
        (conv.FIRST_BYTE_NS, 180_000 + n % 90_000),
        (conv.BODY_NS, 3_000 + n % 2_000),
        (conv.RETRIES, 0),
        (conv.RETRY_DELAY_NS, 0),
        (conv.ENDPOINT, f"10.0.0.{n % 4}:8080"),
        (conv.ENDPOINT_LOAD, 0.0002 * (n % 100)),
        (conv.HTTP_STATUS, 200),
        (conv.PEER_SERVICE, "payments"),
    )
    return (
        os.urandom(16).hex(), os.urandom(8).hex(), os.urandom(8).hex(), "GET", model.KIND_CLIENT,
        time.time_ns(), 250_000 + n, model.STATUS_UNSET, "", attributes,
    )  # fmt: skip


def proxy_http_fields(n: int) -> tuple:
    """The fields the HTTP/1.1 relay gives SpanRecorder.record_http for the span of proxy_span(n)."""
    constant = ((conv.SERVER_ADDRESS, "payments"), (conv.DIRECTION, "outbound"), (conv.ENDPOINT, f"10.0.0.{n % 4}:8080"),
                (conv.PEER_SERVICE, "payments"))  # fmt: skip
    return (
        os.urandom(16).hex(), os.urandom(8).hex(), os.urandom(8).hex(), model.KIND_CLIENT, time.time_ns(), 250_000 + n,
        model.STATUS_UNSET, constant, b"GET", f"/api/items/{n % 50}".encode(), 1_200 + n % 5_000, 0, True, 0, 0,
        180_000 + n % 90_000, 3_000 + n % 2_000, 0.0002 * (n % 100), 200, "", "",
    )  # fmt: skip


def per_call_ns(function, arguments: tuple, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.thread_time_ns()
        for _ in range(calls):
            function(*arguments)
        best = min(best, (time.thread_time_ns() - start) / calls)
    return best


def library_encode(records) -> bytes:
    """The same request built with the opentelemetry-proto message classes, for comparison."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "tracemesh-proxy"
    for trace_id, span_id, parent, name, kind, start, duration, code, message, attributes in records:
        span = scope_spans.spans.add()
        span.trace_id = bytes.fromhex(trace_id)
        span.span_id = bytes.fromhex(span_id)
        span.parent_span_id = bytes.fromhex(parent)
        span.name = name
        span.kind = kind
        span.start_time_unix_nano = start
        span.end_time_unix_nano = start + duration
        for key, value in attributes:
            attribute = span.attributes.add()
            attribute.key = key
            if type(value) is str:
                attribute.value.string_value = value
            elif type(value) is bool:
                attribute.value.bool_value = value
            elif type(value) is int:
                attribute.value.int_value = value
            else:
                attribute.value.double_value = value
    return request.SerializeToString()


def grpc_sink() -> tuple[str, object]:
    """An OTLP/gRPC endpoint that answers without decoding (so CPU measured is the exporter's)."""
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(lambda request, context: b"")},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return f"127.0.0.1:{port}", lambda: server.stop(0)


def http_sink() -> tuple[str, object]:
    """An OTLP/HTTP endpoint that answers 200 without decoding."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server.shutdown


def exporter_throughput(address: str, records: list) -> tuple[float, float, int]:
    """Spans/s and CPU µs/span (whole process) to push ``records`` through a started exporter."""
    recorder = SpanRecorder(capacity=len(records))
    exporter = OtlpExporter(recorder, address, proxy_resource("checkout"), interval_s=0.05)
    loop = asyncio.new_event_loop()  # where the exporter runs: a proxy's data path
    threading.Thread(target=loop.run_forever, daemon=True).start()
    exporter.start(loop)
    cpu_start, start = time.process_time(), time.perf_counter()

    async def record_all():  # on the loop, as the data path records (a recorder is not shared between threads)
        for record in records:
            recorder.record(record)
            if recorder.full_batch_waiting:
                await asyncio.sleep(0)  # lets the exporter take it, as requests interleave with it in a proxy

    asyncio.run_coroutine_threadsafe(record_all(), loop).result()
    while exporter.exported + exporter.failed < len(records) and time.perf_counter() - start < 60:
        time.sleep(0.005)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    exporter.stop(flush_timeout=1.0)
    loop.call_soon_threadsafe(loop.stop)
    return exporter.exported / elapsed, cpu / max(exporter.exported, 1) * 1e6, exporter.failed


def start_app_and_sink(procs, workdir: Path) -> tuple[int, dict[str, dict[str, str]]]:
    """The nginx app and a discarding OTLP/HTTP sink; the app's port and each proxy variant's flags."""
    app_port = proxy_bench.free_port()
    (workdir / "app.conf").write_text(proxy_bench.NGINX_APP.format(dir=workdir, port=app_port))
    procs.start("app", ["nginx", "-p", str(workdir), "-c", str(workdir / "app.conf")], app_port)
    sink_port = proxy_bench.free_port()
    procs.start("sink", [sys.executable, str(Path(proxy_bench.__file__)), "--sink", str(sink_port), "--otlp", "http"], sink_port)
    return app_port, {"export": {"collector": f"http://127.0.0.1:{sink_port}"}, "none": {}}


def start_proxies(procs, workdir: Path) -> dict[str, tuple[int, object]]:
    """Two inbound proxies in front of the app: {"export": (port, process), "none": ...}."""
    app_port, variants = start_app_and_sink(procs, workdir)
    proxies = {}
    for name, flags in variants.items():
        port = proxy_bench.free_port()
        args = proxy_bench.proxy_args(
            "app", inbound=f"127.0.0.1:{port}", app=f"127.0.0.1:{app_port}", admin=f"127.0.0.1:{proxy_bench.free_port()}", **flags
        )
        proxies[name] = port, procs.start(f"proxy-{name}", args, port)
    return proxies


def proxy_export_cost(args) -> None:
    """CPU per request and paced latency through a proxy exporting spans vs one without a collector."""
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"--proxy needs {tool} on PATH")
    with tempfile.TemporaryDirectory(prefix="tracemesh-export-bench-") as tmp:
        workdir = Path(tmp)
        paced_lua = workdir / "paced.lua"
        paced_lua.write_text(proxy_bench.PACED_LUA.format(interval_ms=1000 / args.rate))
        procs = proxy_bench.Processes(workdir)
        try:
            proxies = start_proxies(procs, workdir)
            cpu = {name: [] for name in proxies}
            paced = {name: [] for name in proxies}
            for name, (port, _) in proxies.items():
                proxy_bench.run_wrk(f"http://127.0.0.1:{port}/", 1.0, 10, paced_lua)  # warm-up: connections pooled
            for _ in range(args.pairs):  # paced first: a saturated run leaves work behind (spans, garbage)
                for name, (port, _) in proxies.items():
                    paced[name].append(proxy_bench.run_wrk(f"http://127.0.0.1:{port}/", args.duration, 10, paced_lua))
            for _ in range(args.pairs):
                for name, (port, process) in proxies.items():
                    before = proxy_bench.cpu_ticks(process.pid)
                    result = proxy_bench.run_wrk(f"http://127.0.0.1:{port}/", args.duration, 64, None)
                    ticks = proxy_bench.cpu_ticks(process.pid) - before
                    cpu[name].append(ticks / proxy_bench.CLOCK_TICKS * 1e6 / result["requests"])
        finally:
            procs.stop_all()
    print(f"\nthrough one inbound proxy (wrk -t1; 64 connections saturated, 10 paced at ~{args.rate:g} req/s; "
          f"{args.duration:g}s runs, {args.pairs} alternating pairs)")  # fmt: skip
    for name, label in (("export", "spans exported over OTLP/HTTP"), ("none", "no collector")):
        cpus = ", ".join(f"{value:.1f}" for value in cpu[name])
        p50s = ", ".join(f"{run['p50']:.3f}" for run in paced[name])
        p99s = ", ".join(f"{run['p99']:.3f}" for run in paced[name])
        print(f"  {label:<30} CPU us/req {cpus}; paced p50 ms {p50s}; p99 ms {p99s}")


def callgrind_instructions(args) -> None:
    """Instructions per request of each proxy, counted by callgrind over sequential requests."""
    if shutil.which("valgrind") is None:
        sys.exit("--callgrind needs valgrind on PATH")
    with tempfile.TemporaryDirectory(prefix="tracemesh-export-callgrind-") as tmp:
        workdir = Path(tmp)
        procs = proxy_bench.Processes(workdir)
        try:
            app_port, variants = start_app_and_sink(procs, workdir)
            print(f"\ncallgrind, {args.callgrind} sequential requests through one inbound proxy:")
            for name, flags in variants.items():
                print(f"  {name:<8} {instructions_per_request(procs, workdir, name, app_port, flags, args.callgrind):,.0f} "
                      "instructions/request")  # fmt: skip
        finally:
            procs.stop_all()


def instructions_per_request(procs, workdir: Path, name: str, app_port: int, flags: dict, requests: int) -> float:
    port = proxy_bench.free_port()
    out = workdir / f"callgrind-{name}.out"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + proxy_bench.proxy_args(
        "app", inbound=f"127.0.0.1:{port}", app=f"127.0.0.1:{app_port}", admin=f"127.0.0.1:{proxy_bench.free_port()}", **flags
    )
    log = open(workdir / f"callgrind-{name}.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=proxy_bench.REPO_ROOT, start_new_session=True)
    procs.running.append(process)  # stopped with the rest
    proxy_bench.wait_for_port(port, process, timeout=300)  # starting under valgrind is slow
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def send(count: int) -> None:
        for n in range(count):
            connection.request("GET", f"/items/{n % 50}")
            response = connection.getresponse()
            response.read()

    send(300)  # warm-up: imports done, connections pooled
    time.sleep(1.5)
    subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
    send(requests)
    time.sleep(1.5)  # the last partial batch goes out (interval 1 s)
    subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
    connection.close()
    time.sleep(0.5)
    dumps = workdir.glob(f"callgrind-{name}.out.*")  # the dump callgrind_control asked for
    total = sum(int(re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M).group(1)) for path in dumps)
    return total / requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=20_000, help="spans per measurement (default %(default)s)")
    parser.add_argument("--proxy", action="store_true", help="also measure a proxy with export vs without a collector")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run with --proxy (default %(default)s)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating export/no-collector runs (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced load with --proxy, req/s (default %(default)s)")
    parser.add_argument("--callgrind", type=int, default=0, metavar="N",
                        help="with --proxy: instructions per request over N requests under callgrind (slow; try 2000)")
    args = parser.parse_args()
    print("command: python bench/export.py " + " ".join(sys.argv[1:]))
    records = [proxy_span(n) for n in range(args.spans)]

    recorder = SpanRecorder(capacity=args.spans * 10)
    record_ns = per_call_ns(recorder.record, (records[0],), args.spans)
    print(f"SpanRecorder.record (encodes the span): {record_ns:.0f} ns CPU/call")
    recorder = SpanRecorder(capacity=args.spans * 10)
    record_http_ns = per_call_ns(recorder.record_http, proxy_http_fields(0), args.spans)
    print(f"SpanRecorder.record_http (the HTTP/1.1 relay's, its fields converted from Python objects here, which the "
          f"relay passes as C values; record() above does not count building its tuple): {record_http_ns:.0f} ns CPU/call")

    metrics = ProxyMetrics()
    observe = metrics.observe_request
    observe_ns = per_call_ns(
        lambda seconds: observe("outbound", "payments", "10.0.0.1:8080", 200, "", seconds), (0.0012,), args.spans
    )
    print(f"ProxyMetrics.observe_request: {observe_ns:.0f} ns CPU/call")

    framer = ExportRequestFramer(proxy_resource("checkout"), "tracemesh-proxy")

    def native_encode(batch) -> bytes:
        return framer.request(encode_spans(batch)[0])

    batches = [records[i : i + 512] for i in range(0, len(records), 512)]
    for encode, label in ((native_encode, "spans.otlp_encode, native"), (library_encode, "opentelemetry-proto messages")):
        best = float("inf")
        for _ in range(3):
            start = time.thread_time_ns()
            for batch in batches:
                encode(batch)
            best = min(best, (time.thread_time_ns() - start) / len(records))
        print(f"encode ({label}): {best / 1000:.2f} us CPU/span")
    payload = native_encode(batches[0])
    print(f"encoded size: {len(payload) / len(batches[0]):.0f} bytes/span")

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    buffer = SpanRecorder(capacity=len(records))
    for record in records:
        buffer.record(record)
    per_span = (tracemalloc.get_traced_memory()[0] - before) / len(records)
    tracemalloc.stop()
    del buffer
    print(f"memory per buffered span: {per_span:.0f} bytes (8192-span buffer: {per_span * 8192 / 2**20:.1f} MiB)")

    for label, make_sink in (("OTLP/gRPC", grpc_sink), ("OTLP/HTTP", http_sink)):
        address, stop_sink = make_sink()
        rate, cpu_us, failed = exporter_throughput(address, records)
        stop_sink()
        print(f"exporter over {label} to a local sink: {rate:,.0f} spans/s, {cpu_us:.1f} us CPU/span, {failed} failed")

    if args.proxy:
        proxy_export_cost(args)
        if args.callgrind:
            callgrind_instructions(args)


if __name__ == "__main__":
    main()
