"""The proxy's admin port: what orchestrators and Prometheus ask a sidecar.

It runs on its own port, apart from the data path, so aiohttp's convenience costs nothing per proxied
request. ``/live`` answers as long as the process serves HTTP at all; ``/ready`` only once the proxy
has said it is ready (listeners bound, app reachable), so traffic is not routed to it before;
``/metrics`` is the Prometheus text of the proxy's registry.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class AdminServer:
    """``ready`` starts False; the proxy sets it to True when it can take traffic (and back to False
    when it starts draining)."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.ready = False
        self.port: int | None = None  # the bound port, once started (useful with port 0)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/live", self._live)
        app.router.add_get("/ready", self._ready)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response(text="live\n")

    async def _ready(self, request: web.Request) -> web.Response:
        if self.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
