"""The proxy's admin port: what orchestrators and Prometheus ask a sidecar.

``/live`` answers as long as the process serves HTTP at all; ``/ready`` only once the proxy has said
it is ready (listeners bound, app reachable), so traffic is not routed to it before; ``/metrics`` is
the Prometheus text of the proxy's registry (``prometheus_client`` writes it); ``/tap`` streams the
requests through the proxy as they finish (``mesh.tap``), one JSON line each, until the client leaves.

Three GET routes answered once per connection do not need a web framework: importing aiohttp's
server adds 11 MB to the proxy's RSS (measured: 36 -> 47 MB), more than a quarter of its 40 MB
budget. So this is a small asyncio server on the proxy's own event loop, which also means a scrape
reads the data path's counters on the thread that writes them.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mesh.tap import NDJSON, TapHub, parse_filter

log = logging.getLogger(__name__)

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT_S = 5.0  # a client that does not finish its request head in time is dropped
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
_ENDPOINTS = b"admin endpoints: /live /ready /metrics /tap\n"
_TEXT = "text/plain; charset=utf-8"


class AdminServer:
    """``ready`` starts False; the proxy sets it to True when it can take traffic (and back to False
    when it starts draining). Without ``taps`` there is no ``/tap``."""

    def __init__(self, registry: CollectorRegistry, taps: TapHub | None = None):
        self.registry = registry
        self.taps = taps
        self.ready = False
        self.port: int | None = None  # the bound port, once started (useful with port 0)
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_REQUEST_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.taps is not None:
            self.taps.close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for one request."""
        if method not in ("GET", "HEAD"):
            return 405, _TEXT, b"only GET and HEAD\n"
        if path == "/live":
            return 200, _TEXT, b"live\n"
        if path == "/ready":
            return (200, _TEXT, b"ready\n") if self.ready else (503, _TEXT, b"not ready\n")
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        return 404, _TEXT, _ENDPOINTS

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                status, content_type, body = 400, _TEXT, b"malformed HTTP/1.x request line\n"
                method = "GET"
            else:
                method, target, _ = parts
                path, _, query = target.partition("?")
                if path == "/tap" and method == "GET" and self.taps is not None:
                    refusal = await self._tap(query, reader, writer)
                    if refusal is None:
                        return
                    status, content_type, body = refusal
                else:
                    status, content_type, body = self.respond(method, path)
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass  # the client went away, sent too much, or too slowly: nothing to answer
        except Exception:  # an admin request must never take the proxy down
            log.exception("admin request failed")
        finally:
            writer.close()

    async def _tap(self, query: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        """Stream a tap until the client leaves; or, when none can be opened, the error to answer."""
        try:
            tap = self.taps.open(parse_filter(query))
        except ValueError as error:
            return 400, _TEXT, f"{error}\n".encode()
        except OverflowError as error:
            return 503, _TEXT, f"{error}\n".encode()
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: {NDJSON}\r\nTransfer-Encoding: chunked\r\n"
            "Cache-Control: no-store\r\nConnection: close\r\n\r\n".encode()
        )
        await self.taps.stream(tap, reader, writer)
        return None
