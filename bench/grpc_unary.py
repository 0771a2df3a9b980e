"""gRPC unary load for bench/proxy.py: a Python echo server, and a Python client that loads it.

    python bench/grpc_unary.py serve PORT
    python bench/grpc_unary.py load HOST:PORT [--duration 10] [--concurrency 32] [--rate 0] [--authority NAME]

``load`` keeps ``--concurrency`` calls in flight on one channel (grpc.aio) for ``--duration`` seconds,
or, with ``--rate``, paces them to about that many calls/s, and prints one JSON line: rps, requests,
p50/p99 in ms, errors. ``--authority`` sets :authority (the service name an outbound proxy routes by).
Both sides are grpcio, as the apps beside a Tracemesh proxy would be; the 16-byte message keeps the
server cheap so the proxy's cost shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time

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
        started = time.monotonic()
        end = started + duration
        interval = concurrency / rate if rate else 0.0

        async def worker(offset: float) -> None:
            nonlocal errors
            next_at = started + offset
            while True:
                if interval:
                    next_at += interval
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                now = time.monotonic()
                if now >= end:
                    return
                try:
                    await call(MESSAGE, timeout=10)
                except grpc.RpcError:
                    errors += 1
                latencies.append(time.monotonic() - now)

        await asyncio.gather(*(worker(index * interval / concurrency) for index in range(concurrency)))
        elapsed = time.monotonic() - started
    latencies.sort()
    count = len(latencies)
    return {
        "rps": count / elapsed,
        "requests": count,
        "p50": latencies[count // 2] * 1000 if count else 0.0,
        "p99": latencies[min(count - 1, int(count * 0.99))] * 1000 if count else 0.0,
        "non2xx": errors,
    }


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
    args = parser.parse_args()
    if args.mode == "serve":
        asyncio.run(serve(args.port))
        return 0
    print(json.dumps(asyncio.run(load(args.target, args.duration, args.concurrency, args.rate, args.authority))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
