"""The collector process: receivers -> intake (decode + spool) -> writer thread -> store.

One process runs the gRPC server (its own thread pool), two aiohttp apps on one event loop (OTLP/HTTP,
and the HTTP API port with Zipkin ingest, the query API and ``/ready``), the writer thread and the
thread that writes the service graph's windows to the store for history. Every
blocking store call happens in the writer thread or the query API's executor, never on the loop.
Shutdown stops the listeners first, then gives the writer a bounded time to drain; whatever is left
stays in the spool and is replayed by the next start.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from collector.control.api import render_control_metrics, setup_hints_api
from collector.control.hints import HintRules
from collector.control.plane import ControlPlane
from collector.control.registry import Registry
from collector.control.server import start_control_server
from collector.graph import ServiceGraph
from collector.graph.api import setup_graph_api
from collector.graph.history import EdgeHistory, HistoryFlusher
from collector.graph.prometheus import render_prometheus
from collector.ingest.intake import Intake
from collector.ingest.otlp_grpc import start_grpc_server
from collector.ingest.otlp_http import otlp_http_app
from collector.ingest.zipkin import add_zipkin_routes
from collector.query_api import setup_query_api
from collector.spool import DEFAULT_MEMORY_SPANS, Spool
from collector.store import SpanStore, StoreUnavailable, open_store
from collector.writer import SpoolWriter
from ui.serve import setup_ui

log = logging.getLogger(__name__)


@dataclass
class CollectorConfig:
    store_url: str
    spool_dir: Path
    otlp_grpc: str = "127.0.0.1:4317"
    otlp_http: str = "127.0.0.1:4318"
    http: str = "127.0.0.1:9411"
    control: str = "127.0.0.1:4319"
    latency_target_s: float = 0.25
    spool_max_bytes: int = 1 << 30
    spool_fsync: bool = False
    retention_days: int | None = None
    batch_rows: int = 100_000
    batch_delay: float = 1.0
    max_request_bytes: int = 16 << 20
    store_wait: float = 30.0
    drain_timeout: float = 5.0


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def open_store_waiting(url: str, retention_days: int | None, wait_s: float, say: Callable[[str], None]) -> SpanStore:
    """Open the store, waiting up to ``wait_s`` for a ClickHouse server that is still starting."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return open_store(url, retention_days=retention_days)
        except StoreUnavailable as exc:
            if time.monotonic() >= deadline:
                raise
            say(f"store not reachable yet ({exc}); retrying")
            time.sleep(1.0)


def ready_handler(intake: Intake, writer: SpoolWriter):
    async def ready(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "spool_bytes": intake.spool.record_bytes,
                "spool_full": intake.spool.is_full(),
                "spool_read_back_spans": intake.spool.read_back_spans,
                **dataclasses.asdict(intake.stats),
                **dataclasses.asdict(writer.stats),
            }
        )

    return ready


def metrics_handler(graph: ServiceGraph, plane: ControlPlane):
    def render() -> str:
        return render_prometheus(graph) + render_control_metrics(plane)

    async def metrics(request: web.Request) -> web.Response:
        text = await asyncio.get_running_loop().run_in_executor(None, render)
        return web.Response(text=text, content_type="text/plain", headers={"X-Prometheus-Version": "0.0.4"})

    return metrics


def build_api_app(
    intake: Intake,
    writer: SpoolWriter,
    store: SpanStore,
    graph: ServiceGraph,
    plane: ControlPlane,
    max_request_bytes: int,
) -> web.Application:
    """The HTTP API port's app: Zipkin ingest, ``/ready``, ``/metrics``, the query, graph and hints APIs.

    Every route it serves is described in collector/openapi.json (a test holds the two together).
    """
    app = web.Application(client_max_size=max_request_bytes)
    add_zipkin_routes(app, intake)
    app.router.add_get("/ready", ready_handler(intake, writer))
    app.router.add_get("/metrics", metrics_handler(graph, plane))
    setup_query_api(app, store)
    setup_graph_api(app, graph)
    setup_hints_api(app, plane)
    return app


async def _serve(app: web.Application, address: str) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = split_address(address)
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_collector(config: CollectorConfig, say: Callable[[str], None] = print) -> None:
    """Serve until SIGTERM/SIGINT, then stop cleanly."""
    store = await asyncio.to_thread(open_store_waiting, config.store_url, config.retention_days, config.store_wait, say)
    # The spool keeps in memory what arrives while the writer catches up, up to three full batches
    # (~1.15 KB a decoded span: ~350 MB at 100k-span batches): a record read back from disk is decoded a
    # second time (in a 1M-span burst with a 100k-span cap, ~30% of the spans were).
    spool = Spool(
        config.spool_dir,
        max_bytes=config.spool_max_bytes,
        memory_spans=max(DEFAULT_MEMORY_SPANS, 3 * config.batch_rows),
        fsync=config.spool_fsync,
    )
    if spool.record_bytes:
        say(f"spool {config.spool_dir}: {spool.record_bytes} bytes left from a previous run; replaying them")
    writer = SpoolWriter(spool, store, config.batch_rows, config.batch_delay, config.retention_days)
    writer.start()
    graph = await asyncio.to_thread(ServiceGraph, history=EdgeHistory(store))  # reads recent windows back
    history_flusher = HistoryFlusher(graph)
    history_flusher.start()
    intake = Intake(spool, consumers=(graph.consume,))
    registry = Registry()
    plane = ControlPlane(graph, registry, hint_rules=HintRules(latency_target_s=config.latency_target_s))
    api_app = build_api_app(intake, writer, store, graph, plane, config.max_request_bytes)
    setup_ui(api_app)  # the web UI beside the API it reads (not part of the API document)

    grpc_server = control_server = None
    runners: list[web.AppRunner] = []
    try:
        grpc_server = start_grpc_server(intake, config.otlp_grpc, config.max_request_bytes)
        plane.start()
        control_server = start_control_server(plane, registry, config.control, heartbeat_s=registry.lease_s / 4)
        runners.append(await _serve(otlp_http_app(intake, config.max_request_bytes), config.otlp_http))
        runners.append(await _serve(api_app, config.http))
        say(
            f"tracemesh collector: OTLP/gRPC on {config.otlp_grpc}, OTLP/HTTP on http://{config.otlp_http}/v1/traces, "
            f"Zipkin + query API on http://{config.http}, control on {config.control} (store {config.store_url}, spool {config.spool_dir})"
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        say("stopping: no new requests; inserting what is spooled")
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=2).wait()
        plane.stop()
        if control_server is not None:
            control_server.stop(grace=0).wait()
        for runner in runners:
            await runner.cleanup()
        await asyncio.to_thread(history_flusher.stop)  # every window counted, the current one too
        await asyncio.to_thread(writer.stop, config.drain_timeout)
        spool.close()
        store.close()
        left = spool.record_bytes
        say(f"stopped; {writer.stats.inserted_rows} spans inserted" + (f", {left} bytes kept in the spool" if left else ""))
