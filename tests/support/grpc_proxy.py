"""Proxies for the gRPC tests: the real listeners and stacks (``mesh.listener``), run on a uvloop event
loop in a thread of the test process so each test can read back the span tuples a proxy recorded
(a ``SpanCapture`` stands in for the ``SpanRecorder``, which keeps only their OTLP encoding). Sockets,
grpcio clients and servers are all real, on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import uvloop

from mesh.destination import Destinations, DestinationPolicy
from mesh.discovery import EndpointsFile
from mesh.inbound import InboundStack
from mesh.listener import Listener
from mesh.outbound import OutboundStack, RouteStack
from mesh.pool import Pools
from mesh.deadlines import Deadlines
from tests.support.processes import free_port
from tests.support.span_capture import SpanCapture

MAX_BODY_BYTES = 64 * 1024


class ProxyLoop:
    """One event loop thread hosting any number of proxy listeners; ``stop()`` closes them all."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="proxy-loop", daemon=True)
        self.thread.start()
        self.listeners: list[Listener] = []
        self.deadlines = Deadlines()
        self.sweeper = asyncio.run_coroutine_threadsafe(self.deadlines.run(), self.loop)

    def run(self, coro, timeout: float = 10.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def inbound(self, service: str, app_address: str, policy: DestinationPolicy = DestinationPolicy()) -> tuple[str, SpanCapture]:
        """A listener forwarding to the app at ``app_address``: (its address, the spans it records)."""
        recorder = SpanCapture()

        async def build():
            return InboundStack(app_address, policy, service, recorder, None, Pools(), self.deadlines, MAX_BODY_BYTES)

        return self._listen(self.run(build())), recorder

    def outbound(self, service: str, endpoints_file: Path, route_to: str | None = None,
                 policy: DestinationPolicy = DestinationPolicy()) -> tuple[str, SpanCapture]:
        """A listener sending to the services in ``endpoints_file`` (or always to ``route_to``)."""
        recorder = SpanCapture()

        async def build():
            discovery = EndpointsFile(endpoints_file)
            await discovery.load()
            destinations = Destinations(discovery, policy)
            args = (destinations, service, recorder, None, Pools(), self.deadlines, MAX_BODY_BYTES)
            return RouteStack(route_to, *args) if route_to else OutboundStack(*args)

        return self._listen(self.run(build())), recorder

    def _listen(self, stack) -> str:
        address = f"127.0.0.1:{free_port()}"
        listener = Listener(address, stack)
        self.run(listener.start())
        self.listeners.append(listener)
        return address

    def stop(self) -> None:
        for listener in self.listeners:
            self.run(listener.stop(0.5))
        self.sweeper.cancel()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def write_endpoints(path: Path, services: dict[str, list[str]]) -> Path:
    """A TOML endpoints file (the ``--endpoints`` format): service -> addresses."""
    lines = [f'{name} = [{", ".join(repr(a).replace(chr(39), chr(34)) for a in addresses)}]' for name, addresses in services.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
