"""The floor of a Python HTTP/1.1 proxy on this machine: raw asyncio protocols on uvloop with httptools.

    python bench/raw_relay.py --listen PORT --upstream PORT

A baseline for bench/proxy.py, measured in the same run as the tracemesh proxy and nginx. It does the
least an HTTP-aware keep-alive proxy can: each downstream connection gets its own upstream connection,
httptools finds where each request and response ends, and the bytes are forwarded as they arrived.
No routing, no pool, no header rewriting, no tracing, no metrics, no timeouts: what is left is the cost
of the event loop, the parser and the sockets, which any proxy written this way pays.
"""

from __future__ import annotations

import argparse
import asyncio

import httptools
import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, downstream: Downstream):
        self.downstream = downstream
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)  # the response's end, as a proxy must know it (ignored here)
        self.downstream.transport.write(data)

    def connection_lost(self, exc):
        self.downstream.transport.close()


class Downstream(asyncio.Protocol):
    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.waiting: list[bytes] = []  # bytes read before the upstream connection was open

    def connection_made(self, transport):
        self.transport = transport
        asyncio.get_running_loop().create_task(self.connect())

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(lambda: Upstream(self), "127.0.0.1", self.upstream_port)
        if self.waiting:
            self.upstream.transport.write(b"".join(self.waiting))
            self.waiting = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)  # the request's end, as a proxy must know it (ignored here)
        if self.upstream is None:
            self.waiting.append(data)
        else:
            self.upstream.transport.write(data)

    def connection_lost(self, exc):
        if self.upstream is not None:
            self.upstream.transport.close()


async def serve(listen_port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Downstream(upstream_port), "127.0.0.1", listen_port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1 to accept requests on")
    parser.add_argument("--upstream", type=int, required=True, help="port on 127.0.0.1 of the app")
    args = parser.parse_args()
    uvloop.run(serve(args.listen, args.upstream))


if __name__ == "__main__":
    main()
