"""``tracemesh collector``: flags to a ``CollectorConfig``, logging, and the event loop."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from pathlib import Path

from collector.app import CollectorConfig, run_collector, split_address
from collector.store import StoreUnavailable


def _address(text: str) -> str:
    try:
        split_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _byte_size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    number, unit = (text[:-1], text[-1].lower()) if text[-1:].lower() in units else (text, "")
    try:
        return int(float(number) * units.get(unit, 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 512m or 2g") from None


def _duration(text: str) -> float:
    units = {"ms": 0.001, "s": 1.0}
    unit = "ms" if text.endswith("ms") else "s" if text.endswith("s") else ""
    try:
        seconds = float(text[: len(text) - len(unit)]) * units.get(unit, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 250ms or 1.5s") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: duration must be positive")
    return seconds


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "collector",
        help="receive spans (OTLP gRPC/HTTP, Zipkin v2), store them in ClickHouse, serve the query API",
        description="Run the Tracemesh collector. Spans are acknowledged once they are in an on-disk spool; "
        "a writer thread inserts them into the store in batches.",
    )
    data_dir = Path.cwd() / ".tracemesh"
    parser.add_argument("--otlp-grpc", type=_address, default="127.0.0.1:4317", metavar="ADDR", help="OTLP/gRPC listen address (default %(default)s)")
    parser.add_argument("--otlp-http", type=_address, default="127.0.0.1:4318", metavar="ADDR", help="OTLP/HTTP listen address (default %(default)s)")
    parser.add_argument("--http", type=_address, default="127.0.0.1:9411", metavar="ADDR", help="query API, Zipkin ingest and UI address (default %(default)s)")
    parser.add_argument("--control", type=_address, default="127.0.0.1:4319", metavar="ADDR", help="control gRPC address proxies register at and stream mesh state from (default %(default)s)")
    parser.add_argument("--latency-target", type=_duration, default="250ms", metavar="DURATION", help="p95 latency the autoscaling hints aim for (default %(default)s)")
    parser.add_argument("--store", default=f"chdb://{data_dir / 'data'}", metavar="URL", help="chdb:///dir (embedded, default %(default)s) or clickhouse://user:pass@host:9000/db")
    parser.add_argument("--spool", type=Path, default=data_dir / "spool", metavar="DIR", help="spool directory (default %(default)s)")
    parser.add_argument("--spool-max-bytes", type=_byte_size, default="1g", metavar="SIZE", help="refuse new spans with back-pressure beyond this spool size (default %(default)s)")
    parser.add_argument("--spool-fsync", action="store_true", help="fsync every acknowledged batch (survives power loss; slower). Without it a kill -9 still loses nothing")
    parser.add_argument("--retention-days", type=int, metavar="DAYS", help="drop days of spans older than this (default: keep forever)")
    parser.add_argument("--batch-rows", type=int, default=100_000, metavar="N", help="insert at most N spans per batch (default %(default)s)")
    parser.add_argument("--batch-delay", type=float, default=1.0, metavar="SECONDS", help="insert a batch at most this long after its first span (default %(default)s)")
    parser.add_argument("--max-request-bytes", type=_byte_size, default="16m", metavar="SIZE", help="largest request body accepted; larger gets 413 / RESOURCE_EXHAUSTED (default %(default)s)")
    parser.add_argument("--store-wait", type=float, default=30.0, metavar="SECONDS", help="how long to wait for a ClickHouse server at start (default %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Ingest allocates millions of short-lived objects and keeps big batches alive in the spool's
    # memory queue; default GC thresholds would rescan those over and over.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # chDB imports numpy when the store opens; its OpenBLAS would start a thread per core that the
    # collector never gives work but that still woke up (~1% of its CPU). Read once, at that import.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # The writer reports an unreachable ClickHouse once; the driver would log a traceback per retry.
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    config = CollectorConfig(
        store_url=args.store,
        spool_dir=args.spool,
        otlp_grpc=args.otlp_grpc,
        otlp_http=args.otlp_http,
        http=args.http,
        control=args.control,
        latency_target_s=args.latency_target,
        spool_max_bytes=args.spool_max_bytes,
        spool_fsync=args.spool_fsync,
        retention_days=args.retention_days,
        batch_rows=args.batch_rows,
        batch_delay=args.batch_delay,
        max_request_bytes=args.max_request_bytes,
        store_wait=args.store_wait,
    )
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run_collector(config, say=lambda text: print(text, flush=True)))
    except (OSError, ValueError, RuntimeError, StoreUnavailable) as exc:
        print(f"tracemesh collector: {exc}", file=sys.stderr)
        return 1
    return 0
