"""The sidecar proxy process: build every part from the configuration, serve, stop gracefully.

One event loop (uvloop) runs the data path of every listener and the span exporter (spans are encoded
as they are recorded, into a bounded buffer, and sent in batches), so a slow or dead collector never
touches a request. On SIGTERM the proxy stops being ready, stops accepting, lets requests in progress
finish (``grace_s``), flushes spans and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
from dataclasses import dataclass, field

import uvloop

from mesh.admin import AdminServer
from mesh.control_client import ControlClient
from mesh.destination import DestinationPolicy, Destinations
from mesh.discovery import EndpointsFile
from mesh.export import OtlpExporter, SpanRecorder, proxy_resource
from mesh.inbound import InboundStack
from mesh.listener import Listener
from mesh.metrics import ProxyMetrics
from mesh.outbound import OutboundStack, RouteStack
from mesh.pool import Pools, split_address
from mesh.deadlines import Deadlines
from mesh.tap import TapHub

log = logging.getLogger("tracemesh.proxy")


@dataclass
class ProxyConfig:
    service: str
    inbound: str | None
    app: str | None
    outbound: str | None
    collector: str | None
    admin: str | None
    endpoints: str | None = None
    control: str | None = None  # the collector's control address: registration, endpoints, weights
    advertise: str | None = None  # the inbound address registered at control, when it differs from the bound one
    zone: str = ""
    routes: list[tuple[str, str]] = field(default_factory=list)  # (listen address, service)
    policy: DestinationPolicy = DestinationPolicy()
    overrides: dict[str, DestinationPolicy] = field(default_factory=dict)
    inbound_policy: DestinationPolicy = DestinationPolicy()
    max_body_bytes: int = 256 * 1024 * 1024
    span_buffer: int = 8192
    grace_s: float = 5.0


class NoEndpoints:
    """Discovery when no ``--endpoints`` file is given: no service is known outbound."""

    def has(self, service: str) -> bool:
        return False

    def resolve(self, service: str) -> tuple[str, ...]:
        return ()

    def subscribe(self, listener) -> None:
        pass


class Proxy:
    def __init__(self, config: ProxyConfig):
        self.config = config
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}"
        self.recorder = SpanRecorder(config.span_buffer if config.collector else 0)  # 0: nothing to export to
        resource = proxy_resource(config.service, self.instance_id)
        self.exporter = OtlpExporter(self.recorder, config.collector, resource) if config.collector else None
        self.metrics = ProxyMetrics()
        self.metrics.track_span_export(self.recorder, self.exporter)
        self.endpoints_file = EndpointsFile(config.endpoints) if config.endpoints else None
        fallback = self.endpoints_file or NoEndpoints()
        self.control = (
            ControlClient(config.control, config.service, self.instance_id, config.advertise or config.inbound or "",
                          config.zone, fallback)
            if config.control
            else None
        )
        self.discovery = self.control or fallback
        self.destinations = Destinations(self.discovery, config.policy, config.overrides)
        self.pools = Pools(config.policy.connect_timeout_s)
        self.deadlines = Deadlines()
        self.admin = AdminServer(self.metrics.registry, TapHub(self.recorder, config.service))
        self.listeners: list[Listener] = []
        self._tasks: list[asyncio.Task] = []

    def build_listeners(self) -> None:
        c = self.config
        common = dict(service=c.service, recorder=self.recorder, metrics=self.metrics, pools=self.pools,
                      deadlines=self.deadlines, max_body_bytes=c.max_body_bytes)  # fmt: skip
        if c.inbound:
            self.listeners.append(Listener(c.inbound, InboundStack(c.app, c.inbound_policy, **common)))
        if c.outbound:
            self.listeners.append(Listener(c.outbound, OutboundStack(self.destinations, **common)))
        for address, service in c.routes:
            self.listeners.append(Listener(address, RouteStack(service, self.destinations, **common)))

    async def start(self) -> None:
        c = self.config
        if self.endpoints_file is not None:
            await self.endpoints_file.load()
            self._tasks.append(asyncio.create_task(self.endpoints_file.run()))
        if self.control is not None:
            self.control.start(self.destinations)
            self._tasks.append(asyncio.create_task(self.control.run()))
        self._tasks.append(asyncio.create_task(self.pools.sweep_forever()))
        self._tasks.append(asyncio.create_task(self.deadlines.run()))
        if self.exporter is not None:
            self.exporter.start(asyncio.get_running_loop())
        if c.admin:
            host, port = split_address(c.admin)
            await self.admin.start(host, port)
        self.build_listeners()
        self.metrics.track_destinations(self)
        for listener in self.listeners:
            await listener.start()
        log.info(
            "tracemesh proxy for %s: %s", c.service, ", ".join(f"{type(l.stack).__name__} on {l.address}" for l in self.listeners)
        )
        self._tasks.append(asyncio.create_task(self.become_ready()))
        # Every full garbage collection walks every tracked object, and the ~26k built at start-up
        # (modules, classes, configuration) live as long as the process: walking them only stalled
        # the loop, 13-16 ms of CPU per full collection at ~1k rps (3-4 ms once frozen).
        gc.collect()
        gc.freeze()

    def __iter__(self):
        """Every destination of this proxy (outbound ones and the inbound app), for the metrics."""
        yield from self.destinations
        for listener in self.listeners:
            if isinstance(listener.stack, InboundStack):
                yield listener.stack.app

    async def become_ready(self) -> None:
        """Ready once the local app accepts connections (at once when there is no inbound side)."""
        if self.config.app:
            host, port = split_address(self.config.app)
            while True:
                try:
                    _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
                except (OSError, TimeoutError):
                    await asyncio.sleep(0.2)
                    continue
                writer.close()
                break
        self.admin.ready = True
        log.info("ready")

    async def stop(self) -> None:
        self.admin.ready = False
        await asyncio.gather(*(listener.stop(self.config.grace_s) for listener in self.listeners))
        for task in self._tasks:
            task.cancel()
        self.pools.close()
        if self.control is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.control.stop)
        if self.exporter is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.exporter.stop, 2.0)
        await self.admin.stop()


async def serve(config: ProxyConfig) -> None:
    proxy = Proxy(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await proxy.start()
    await stopping.wait()
    log.info("stopping: draining for up to %gs", config.grace_s)
    await proxy.stop()


def run(config: ProxyConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(config))
    return 0

