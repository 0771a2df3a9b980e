"""Proxy benchmark: the same load direct, through one proxy, through one hop, and (HTTP) through nginx.

    python bench/proxy.py [--duration 10] [--connections 64] [--rate 1000] [--paced-rounds 3]
                          [--skip http|grpc] [--otlp http|grpc]

The upstream "app" is nginx answering a fixed 13-byte body (so the app costs as little as possible and
the proxies are what is measured). Scenarios, each loaded by ``wrk`` (one thread) at saturation and
paced at ~--rate requests/s:

  direct       wrk -> app
  proxy        wrk -> tracemesh inbound proxy -> app                 (tracing on: spans exported)
  hop          wrk -> tracemesh outbound proxy -> inbound proxy -> app (Host names the service)
  raw relay    wrk -> bench/raw_relay.py -> app: the least a Python proxy can do (uvloop, httptools
               finding message ends, bytes forwarded as they came; no routing, tracing or policy)
  nginx        wrk -> nginx reverse proxy (keep-alive upstream) -> app

Paced load is one request every 1000/--rate ms, sent by whichever of the --paced-connections is free
(a wrk Lua ``delay()`` that keeps a schedule on wrk's own clock, see PACED_LUA). A fixed delay per
connection does not pace: wrk's timers fire on whole-millisecond ticks, so every connection's timer
ends on the same tick and the requests leave together (10 connections x 10 ms was 10 requests at once
every ~10 ms: 90% of requests arrived within 200 µs of the previous one). That measured how long a
single-threaded proxy takes to work through a burst of 10, not its latency at ~1k rps. The paced
runs come first, before any saturated run can leave work behind (spans to export, garbage), and in
--paced-rounds rounds that each run every scenario in turn, so a shared machine's load falls on all
scenarios alike; added latency is each round's scenario p50/p99 minus direct's, median over rounds.

Spans go to a discarding OTLP sink (``--sink`` mode of this script; OTLP/HTTP by default, the export
that keeps a proxy within its RSS budget, or OTLP/gRPC with ``--otlp grpc``) so the proxies do all their
tracing work while the collector's own cost stays out of the figures. CPU per request is the proxy
processes' utime+stime (from /proc/PID/stat) over the saturated run divided by the requests wrk
completed; RSS is VmRSS after the runs. Added latency at saturation is the scenario's p50/p99 minus
direct's. The gRPC unary part runs the same three tracemesh scenarios against a grpcio echo app, loaded
by ``bench/grpc_unary.py`` (a grpc.aio client in its own process: --grpc-concurrency calls in flight, or
one call every 1/--rate s, at most --paced-connections in flight, missed slots skipped). The proxy CPU is per call.
Everything listens on 127.0.0.1 free ports; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
ARGS: argparse.Namespace  # the command line, set by main()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

NGINX_APP = """
worker_processes 1; daemon off; master_process off; error_log {dir}/app-error.log; pid {dir}/app.pid;
events {{ worker_connections 4096; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ default_type text/plain; return 200 "hello world\\n"; }} }} }}
"""

NGINX_PROXY = """
worker_processes 1; daemon off; master_process off; error_log {dir}/proxy-error.log; pid {dir}/proxy.pid;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream app {{ server 127.0.0.1:{app_port}; keepalive 128; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
"""

PACED_LUA = """
-- One request every {interval_ms:g} ms, sent by whichever connection is free. The slots are kept on
-- wrk's clock (gettimeofday, read through LuaJIT's ffi) and rounded to the whole milliseconds its
-- timers run on; a slot missed while wrk was not running is skipped, not sent late in a burst.
local ffi = require("ffi")
ffi.cdef[[
typedef struct {{ long tv_sec; long tv_usec; }} paced_timeval;
int gettimeofday(paced_timeval *tv, void *tz);
]]
local now = ffi.new("paced_timeval")
local interval_ms, first_ms, slot = {interval_ms!r}, nil, 0

function delay()
  ffi.C.gettimeofday(now, nil)
  local now_ms = tonumber(now.tv_sec) * 1000 + tonumber(now.tv_usec) / 1000
  first_ms = first_ms or now_ms
  slot = math.max(slot + 1, math.ceil((now_ms - first_ms) / interval_ms))
  return math.floor(first_ms + slot * interval_ms) - math.floor(now_ms)
end
"""

HOST_LUA = 'wrk.headers["Host"] = "app"\n'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} not open")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the full line)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def to_ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(url: str, duration: float, connections: int, script: Path | None) -> dict:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    command.append(url)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    for pct in ("50", "99"):
        match = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        result[f"p{pct}"] = to_ms(*match.groups())
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non2xx"] = int(errors.group(1)) if errors else 0
    return result


class Processes:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.running: list[subprocess.Popen] = []

    def start(self, name: str, args: list[str], port: int) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True)
        self.running.append(process)
        wait_for_port(port, process)
        return process

    def stop_all(self) -> None:
        for process in self.running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def proxy_args(service: str, **flags: str) -> list[str]:
    args = [sys.executable, "-m", "tracemesh", "proxy", "--service", service]
    for name, value in flags.items():
        args += [f"--{name.replace('_', '-')}", value]
    return args


def serve_sink(port: int, protocol: str) -> None:
    """A discarding OTLP trace receiver (what the proxies export to during the benchmark)."""
    if protocol == "http":
        serve_http_sink(port)
        return
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    server.stop(0)


def serve_http_sink(port: int) -> None:
    import http.server

    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # kept-alive connections, as the exporter uses them

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()  # until SIGTERM


def start_sink(procs: Processes, name: str) -> str:
    """Starts the discarding sink; returns the proxies' --collector value for it."""
    port = free_port()
    procs.start(name, [sys.executable, str(Path(__file__).resolve()), "--sink", str(port), "--otlp", ARGS.otlp], port)
    return f"http://127.0.0.1:{port}" if ARGS.otlp == "http" else f"127.0.0.1:{port}"


class Scenario(NamedTuple):
    name: str
    pids: list[int]  # the processes whose CPU and RSS are the scenario's cost
    saturated_load: Callable[[float], dict]  # (duration) -> wrk-like results: rps, requests, p50, p99, non2xx
    paced_load: Callable[[float], dict]


def measure(scenarios: list[Scenario]) -> list[dict]:
    """Paced rounds over all scenarios first, then one saturated run per scenario (CPU, RSS).

    The first scenario is the baseline the others' added latency is measured against."""
    for scenario in scenarios:
        scenario.paced_load(1.0)  # warm-up: connections pooled, code paths hot
    round_duration = max(1, round(ARGS.duration / ARGS.paced_rounds))  # wrk takes whole seconds
    rounds = [[scenario.paced_load(round_duration) for scenario in scenarios] for _ in range(ARGS.paced_rounds)]
    rows = []
    for index, scenario in enumerate(scenarios):
        scenario.saturated_load(1.0)  # warm-up: as many connections pooled as the saturated load uses
        before = sum(cpu_ticks(pid) for pid in scenario.pids)
        saturated = scenario.saturated_load(ARGS.duration)
        ticks = sum(cpu_ticks(pid) for pid in scenario.pids) - before
        paced = [results[index] for results in rounds]
        baseline = [results[0] for results in rounds]
        rows.append({
            "name": scenario.name,
            "saturated": saturated,
            "paced_rps": statistics.mean(result["rps"] for result in paced),
            "paced_added": {
                pct: statistics.median(result[pct] - base[pct] for result, base in zip(paced, baseline))
                for pct in ("p50", "p99")
            },
            "paced_non2xx": sum(result["non2xx"] for result in paced),
            "cpu_us": ticks / CLOCK_TICKS * 1e6 / max(saturated["requests"], 1),
            "rss_mb": sum(rss_mb(pid) for pid in scenario.pids),
        })  # fmt: skip
    return rows


def wrk_scenario(name: str, url: str, pids: list[int], script: Path | None, paced_script: Path) -> Scenario:
    return Scenario(
        name,
        pids,
        lambda duration: run_wrk(url, duration, ARGS.connections, script),
        lambda duration: run_wrk(url, duration, ARGS.paced_connections, paced_script),
    )


def http_scenarios(args, procs: Processes, workdir: Path) -> list[dict]:
    app_port, nginx_port = free_port(), free_port()
    (workdir / "app.conf").write_text(NGINX_APP.format(dir=workdir, port=app_port))
    (workdir / "nginx.conf").write_text(NGINX_PROXY.format(dir=workdir, port=nginx_port, app_port=app_port))
    app = procs.start("app", ["nginx", "-p", str(workdir), "-c", str(workdir / "app.conf")], app_port)
    nginx = procs.start("nginx", ["nginx", "-p", str(workdir), "-c", str(workdir / "nginx.conf")], nginx_port)
    collector = start_sink(procs, "sink")

    inbound_port, outbound_port = free_port(), free_port()
    hop_inbound_port = free_port()
    endpoints = workdir / "endpoints.yaml"
    endpoints.write_text(f'app: ["127.0.0.1:{hop_inbound_port}"]\n')
    inbound = procs.start(
        "proxy-inbound",
        proxy_args("app", inbound=f"127.0.0.1:{inbound_port}", app=f"127.0.0.1:{app_port}",
                   collector=collector, admin=f"127.0.0.1:{free_port()}"),
        inbound_port,
    )  # fmt: skip
    hop_inbound = procs.start(
        "hop-inbound",
        proxy_args("app", inbound=f"127.0.0.1:{hop_inbound_port}", app=f"127.0.0.1:{app_port}",
                   collector=collector, admin=f"127.0.0.1:{free_port()}"),
        hop_inbound_port,
    )  # fmt: skip
    hop_outbound = procs.start(
        "hop-outbound",
        proxy_args("client", outbound=f"127.0.0.1:{outbound_port}", endpoints=str(endpoints),
                   collector=collector, admin=f"127.0.0.1:{free_port()}"),
        outbound_port,
    )  # fmt: skip
    raw_port = free_port()
    raw = procs.start(
        "raw-relay", [sys.executable, str(BENCH_DIR / "raw_relay.py"), "--listen", str(raw_port), "--upstream", str(app_port)],
        raw_port,
    )  # fmt: skip

    paced_lua = workdir / "paced.lua"
    paced_lua.write_text(PACED_LUA.format(interval_ms=1000 / args.rate))
    paced_host_lua = workdir / "paced_host.lua"
    paced_host_lua.write_text(HOST_LUA + PACED_LUA.format(interval_ms=1000 / args.rate))
    host_lua = workdir / "host.lua"
    host_lua.write_text(HOST_LUA)

    return measure([
        wrk_scenario("direct", f"http://127.0.0.1:{app_port}/", [app.pid], None, paced_lua),
        wrk_scenario("proxy", f"http://127.0.0.1:{inbound_port}/", [inbound.pid], None, paced_lua),
        wrk_scenario("hop", f"http://127.0.0.1:{outbound_port}/", [hop_outbound.pid, hop_inbound.pid], host_lua,
                     paced_host_lua),
        wrk_scenario("raw relay", f"http://127.0.0.1:{raw_port}/", [raw.pid], None, paced_lua),
        wrk_scenario("nginx", f"http://127.0.0.1:{nginx_port}/", [nginx.pid], None, paced_lua),
    ])


def grpc_load(target: str, authority: str | None = None):
    """The gRPC unary load of bench/grpc_unary.py (a grpc.aio client), saturated or paced."""

    def run(duration: float, rate: float = 0.0) -> dict:
        command = [sys.executable, str(BENCH_DIR / "grpc_unary.py"), "load", target, "--duration", f"{duration:g}",
                   "--concurrency", str(ARGS.paced_connections if rate else ARGS.grpc_concurrency)]
        if rate:
            command += ["--rate", f"{rate:g}"]
        if authority:
            command += ["--authority", authority]
        return json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)

    return run, lambda duration: run(duration, ARGS.rate)


def grpc_scenarios(args, procs: Processes, workdir: Path) -> list[dict]:
    """gRPC unary: direct, through one proxy, through one hop (grpcio echo app, grpc.aio load client)."""
    app_port = free_port()
    app = procs.start("grpc-app", [sys.executable, str(BENCH_DIR / "grpc_unary.py"), "serve", str(app_port)], app_port)
    collector = start_sink(procs, "grpc-sink")
    inbound_port, hop_inbound_port, outbound_port = free_port(), free_port(), free_port()
    endpoints = workdir / "grpc-endpoints.yaml"
    endpoints.write_text(f'echo: ["127.0.0.1:{hop_inbound_port}"]\n')
    inbound = procs.start(
        "grpc-proxy-inbound",
        proxy_args("echo", inbound=f"127.0.0.1:{inbound_port}", app=f"127.0.0.1:{app_port}", collector=collector,
                   admin=f"127.0.0.1:{free_port()}"),
        inbound_port,
    )  # fmt: skip
    hop_inbound = procs.start(
        "grpc-hop-inbound",
        proxy_args("echo", inbound=f"127.0.0.1:{hop_inbound_port}", app=f"127.0.0.1:{app_port}", collector=collector,
                   admin=f"127.0.0.1:{free_port()}"),
        hop_inbound_port,
    )  # fmt: skip
    hop_outbound = procs.start(
        "grpc-hop-outbound",
        proxy_args("client", outbound=f"127.0.0.1:{outbound_port}", endpoints=str(endpoints), collector=collector,
                   admin=f"127.0.0.1:{free_port()}"),
        outbound_port,
    )  # fmt: skip
    return measure([
        Scenario("direct", [app.pid], *grpc_load(f"127.0.0.1:{app_port}")),
        Scenario("proxy", [inbound.pid], *grpc_load(f"127.0.0.1:{inbound_port}")),
        Scenario("hop", [hop_outbound.pid, hop_inbound.pid], *grpc_load(f"127.0.0.1:{outbound_port}", "echo")),
    ])


def print_table(title: str, rows: list[dict]) -> None:
    if not rows:
        return
    direct = rows[0]
    nginx = next((row for row in rows if row["name"] == "nginx"), None)
    print(f"\n{title}")
    print(f"{'':<10}{'saturated':^67}{f'paced, median of {ARGS.paced_rounds} rounds':^29}")
    print(
        f"{'scenario':<10}{'req/s':>10}{'x direct':>10}{'x nginx':>9}{'CPU us/req':>12}{'RSS MB':>8}"
        f"{'+p50 ms':>9}{'+p99 ms':>9}{'paced rps':>11}{'+p50 ms':>9}{'+p99 ms':>9}"
    )
    for row in rows:
        sat, added = row["saturated"], row["paced_added"]
        cpu = f"{row['cpu_us']:.1f}"
        rss = f"{row['rss_mb']:.1f}"
        versus_nginx = f"{sat['rps'] / nginx['saturated']['rps']:.2f}" if nginx else "-"
        print(
            f"{row['name']:<10}{sat['rps']:>10.0f}{sat['rps'] / direct['saturated']['rps']:>10.2f}{versus_nginx:>9}"
            f"{cpu:>12}{rss:>8}{sat['p50'] - direct['saturated']['p50']:>9.3f}{sat['p99'] - direct['saturated']['p99']:>9.3f}"
            f"{row['paced_rps']:>11.0f}{added['p50']:>9.3f}{added['p99']:>9.3f}"
        )
        if sat["non2xx"] or row["paced_non2xx"]:
            print(f"  !! {row['name']}: {sat['non2xx'] + row['paced_non2xx']} non-2xx responses")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run (default %(default)s)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections at saturation (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1000.0, help="paced load, requests/s (default %(default)s)")
    parser.add_argument("--paced-connections", type=int, default=10, help="connections of the paced load")
    parser.add_argument("--paced-rounds", type=int, default=3,
                        help="paced runs per scenario, interleaved, of about --duration/rounds whole seconds each "
                             "(default %(default)s)")
    parser.add_argument("--grpc-concurrency", type=int, default=32, help="gRPC calls in flight at saturation")
    parser.add_argument("--skip", choices=("http", "grpc"), action="append", default=[], help="leave a part out")
    parser.add_argument("--otlp", choices=("http", "grpc"), default="http",
                        help="how the proxies export spans (default %(default)s)")
    parser.add_argument("--sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    global ARGS
    args = ARGS = parser.parse_args()
    if args.sink:
        serve_sink(args.sink, args.otlp)
        return 0
    if args.paced_rounds < 1 or args.rate <= 0:
        parser.error("--paced-rounds and --rate must be positive")
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            print(f"bench/proxy.py needs {tool} on PATH", file=sys.stderr)
            return 2
    print("command: python bench/proxy.py " + " ".join(sys.argv[1:]))
    print(f"machine: {os.cpu_count()} cores, {os.uname().release}; wrk -t1, {args.connections} connections "
          f"saturated, {args.paced_connections} paced at ~{args.rate:g} req/s evenly spread ({args.paced_rounds} "
          f"interleaved rounds), {args.duration:g}s each; "
          f"spans exported over OTLP/{args.otlp.upper()}")
    with tempfile.TemporaryDirectory(prefix="tracemesh-bench-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        try:
            if "http" not in args.skip:
                print_table("HTTP/1.1 (app: nginx returning 13 bytes; tracing on, spans exported)",
                            http_scenarios(args, procs, workdir))  # fmt: skip
            if "grpc" not in args.skip:
                print_table(f"gRPC unary (app: grpcio echo, 16-byte messages; grpc.aio client, {args.grpc_concurrency} "
                            "calls in flight saturated)", grpc_scenarios(args, procs, workdir))  # fmt: skip
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
