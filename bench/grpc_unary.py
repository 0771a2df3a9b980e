"""gRPC unary load for bench/proxy.py: a Python echo server, and a Python client that loads it.

    python bench/grpc_unary.py serve PORT
    python bench/grpc_unary.py load HOST:PORT [--duration 10] [--concurrency 32] [--rate 0] [--authority NAME]
    python bench/grpc_unary.py callgrind [--calls 2000] [--outbound]

``load`` keeps ``--concurrency`` calls in flight on one channel (grpc.aio) for ``--duration`` seconds,
or, with ``--rate``, starts one call every 1/rate s (at most ``--concurrency`` in flight), and prints
one JSON line: rps, requests, p50/p99 in ms (from each call's start to its answer), errors (non2xx),
and missed paced slots. ``--authority`` sets :authority (the service name an outbound proxy routes by).
Both sides are grpcio, as the apps beside a Tracemesh proxy would be; the 16-byte message keeps the
server cheap so the proxy's cost shows.

``callgrind`` counts the instructions one proxy spends per relayed call: the proxy (inbound in front of
the echo app, or with ``--outbound`` routing by :authority to it) runs under valgrind's callgrind,
exporting spans to bench/proxy.py's discarding sink, and relays ``--calls`` sequential unary calls
between zeroing and dumping its counters (after 300 warm-up calls): a figure that other load on the
machine cannot move, for comparing changes to the relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

METHOD = "/bench.Echo/Unary"
MESSAGE = b"x" * 16


async def serve(port: int) -> None:
    server = grpc.aio.server()

    async def echo(request: bytes, context) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(echo)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


async def load(target: str, duration: float, concurrency: int, rate: float, authority: str | None) -> dict:
    options = [("grpc.default_authority", authority)] if authority else []
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(METHOD)
        for _ in range(20):  # warm: connection up, paths hot
            await call(MESSAGE, timeout=10)
        latencies: list[float] = []
        errors = 0

        async def one() -> None:
            nonlocal errors
            sent = time.monotonic()
            try:
                await call(MESSAGE, timeout=10)
            except grpc.RpcError:
                errors += 1
            latencies.append(time.monotonic() - sent)

        started = time.monotonic()
        end = started + duration
        missed = await paced(one, end, concurrency, 1.0 / rate) if rate else await saturated(one, end, concurrency)
        elapsed = time.monotonic() - started
    latencies.sort()
    count = len(latencies)
    return {
        "rps": count / elapsed,
        "requests": count,
        "p50": latencies[count // 2] * 1000 if count else 0.0,
        "p99": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else 0.0,
        "non2xx": errors,
        "missed": missed,
    }


async def saturated(one, end: float, concurrency: int) -> int:
    """``concurrency`` callers each calling ``one()`` back to back until ``end`` (no slots to miss)."""

    async def caller() -> None:
        while time.monotonic() < end:
            await one()

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return 0


async def paced(one, end: float, concurrency: int, interval: float) -> int:
    """Starts ``one()`` once every ``interval`` seconds until ``end``, with at most ``concurrency`` calls
    in flight; returns how many slots were missed (the client fell behind or every caller was busy).

    The schedule is kept by a thread sleeping in ``time.sleep`` (tens of µs late), which hands each slot
    to the loop. The loop's own timers are no good at 1 ms intervals: epoll waits whole milliseconds,
    rounded up, so a timer fires anywhere from 0 to 1 ms late, depending on what woke the loop last;
    callers each sleeping on their own schedule measured 22% of calls leaving within 0.2 ms of the
    previous one and the gaps bimodal (0.1 / 1.8 ms), i.e. pairs where even 1 ms spacing was asked.
    A missed slot is skipped, never sent late in a burst (as bench/proxy.py paces wrk).
    """
    loop = asyncio.get_running_loop()
    in_flight: set[asyncio.Task] = set()
    missed = 0

    def start_call() -> None:
        nonlocal missed
        if len(in_flight) >= concurrency:
            missed += 1
            return
        task = loop.create_task(one())
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)

    def keep_schedule() -> int:
        first = time.monotonic()
        slot = 0
        skipped = 0
        while True:
            now = time.monotonic()
            due = math.ceil((now - first) / interval)
            skipped += max(0, due - slot - 1)
            slot = max(slot + 1, due)
            at = first + slot * interval
            if at >= end:
                return skipped
            time.sleep(at - now)
            loop.call_soon_threadsafe(start_call)

    skipped = await loop.run_in_executor(None, keep_schedule)
    while in_flight:
        await asyncio.wait(set(in_flight))
    return missed + skipped


def callgrind_instructions(calls: int, outbound: bool) -> float:
    """Instructions per call of one proxy relaying ``calls`` sequential unary calls (see the module doc)."""
    import proxy as proxy_bench  # bench/proxy.py: process handling, proxy command lines, the OTLP sink

    with tempfile.TemporaryDirectory(prefix="tracemesh-grpc-callgrind-") as tmp:
        workdir = Path(tmp)
        procs = proxy_bench.Processes(workdir)
        try:
            app_port, sink_port, port = proxy_bench.free_port(), proxy_bench.free_port(), proxy_bench.free_port()
            procs.start("app", [sys.executable, __file__, "serve", str(app_port)], app_port)
            procs.start("sink", [sys.executable, proxy_bench.__file__, "--sink", str(sink_port), "--otlp", "http"], sink_port)
            if outbound:
                (workdir / "endpoints.yaml").write_text(f'echo: ["127.0.0.1:{app_port}"]\n')
                flags = {"outbound": f"127.0.0.1:{port}", "endpoints": str(workdir / "endpoints.yaml")}
            else:
                flags = {"inbound": f"127.0.0.1:{port}", "app": f"127.0.0.1:{app_port}"}
            out = workdir / "callgrind.out"
            command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + proxy_bench.proxy_args(
                "echo", collector=f"http://127.0.0.1:{sink_port}", admin=f"127.0.0.1:{proxy_bench.free_port()}", **flags
            )
            log = open(workdir / "callgrind.log", "wb")
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=proxy_bench.REPO_ROOT,
                                       start_new_session=True)  # fmt: skip
            procs.running.append(process)  # stopped with the rest
            proxy_bench.wait_for_port(port, process, timeout=300)  # starting under valgrind is slow
            options = [("grpc.default_authority", "echo")] if outbound else []
            with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
                call = channel.unary_unary(METHOD)
                for _ in range(300):  # warm-up: connections up and pooled, paths hot
                    call(MESSAGE, timeout=60)
                time.sleep(1.5)
                subprocess.run(["callgrind_control", "-z", str(process.pid)], check=True, capture_output=True)
                for _ in range(calls):
                    call(MESSAGE, timeout=60)
                time.sleep(1.5)  # the last partial batch of spans goes out (interval 1 s)
                subprocess.run(["callgrind_control", "-d", str(process.pid)], check=True, capture_output=True)
            time.sleep(0.5)
            dumps = workdir.glob("callgrind.out.*")  # the dump callgrind_control asked for
            total = sum(int(re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M).group(1))
                        for path in dumps)  # fmt: skip
        finally:
            procs.stop_all()
    return total / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    serve_parser = sub.add_parser("serve", help="run the echo server")
    serve_parser.add_argument("port", type=int)
    load_parser = sub.add_parser("load", help="load a target and print one JSON line")
    load_parser.add_argument("target")
    load_parser.add_argument("--duration", type=float, default=10.0)
    load_parser.add_argument("--concurrency", type=int, default=32)
    load_parser.add_argument("--rate", type=float, default=0.0, help="paced calls/s (0: as fast as possible)")
    load_parser.add_argument("--authority")
    callgrind_parser = sub.add_parser("callgrind", help="instructions per call of one proxy under callgrind (slow)")
    callgrind_parser.add_argument("--calls", type=int, default=2000)
    callgrind_parser.add_argument("--outbound", action="store_true", help="an outbound proxy (default: inbound)")
    args = parser.parse_args()
    if args.mode == "callgrind":
        print("command: python bench/grpc_unary.py " + " ".join(sys.argv[1:]))
        side = "outbound" if args.outbound else "inbound"
        print(f"{side} proxy: {callgrind_instructions(args.calls, args.outbound):,.0f} instructions per call "
              f"({args.calls} sequential unary calls)")  # fmt: skip
        return 0
    if args.mode == "serve":
        asyncio.run(serve(args.port))
        return 0
    print(json.dumps(asyncio.run(load(args.target, args.duration, args.concurrency, args.rate, args.authority))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
