"""Accept connections on one address and give each to the protocol it speaks.

gRPC clients open h2c connections with prior knowledge (the HTTP/2 client preface first), everything
else is HTTP/1.1, so one port serves both: the first bytes of a connection decide, and the connection
is handed over (``transport.set_protocol``) without copying anything but those first bytes.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from mesh.http1 import Http1Server
from mesh.stack import Stack

log = logging.getLogger(__name__)

HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def grpc_relay(stack: Stack):
    """The gRPC side of a listener (``mesh.grpc.GrpcRelay``), or None in a build without it."""
    try:
        from mesh.grpc import GrpcRelay
    except ImportError:
        return None
    return GrpcRelay(stack)


class ProtocolSniffer(asyncio.Protocol):
    """The protocol of a connection's first bytes; replaces itself by HTTP/1.1 or HTTP/2."""

    __slots__ = ("stack", "grpc", "connections", "transport", "first")

    def __init__(self, stack: Stack, grpc, connections: set):
        self.stack = stack
        self.grpc = grpc
        self.connections = connections
        self.transport = None
        self.first = b""

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        first = self.first + data if self.first else data
        size = min(len(first), len(HTTP2_PREFACE))
        if first[:size] == HTTP2_PREFACE[:size]:
            if size < len(HTTP2_PREFACE):
                self.first = first  # a preface split across reads
                return
            if self.grpc is None:
                log.warning("HTTP/2 connection refused: no HTTP/2 support in this build")
                self.transport.close()
                return
            protocol = self.grpc.connection()
        else:
            protocol = Http1Server(self.stack, self.connections.discard)
            self.connections.add(protocol)
        self.transport.set_protocol(protocol)
        protocol.connection_made(self.transport)
        protocol.data_received(first)

    def connection_lost(self, exc):
        pass


class Listener:
    """One listening socket with its stack; ``stop`` stops accepting and closes idle connections."""

    def __init__(self, address: str, stack: Stack):
        self.address = address
        self.stack = stack
        self.server: asyncio.base_events.Server | None = None
        self.connections: set[Http1Server] = set()
        self.grpc = grpc_relay(stack)

    async def start(self) -> None:
        host, _, port = self.address.rpartition(":")
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: ProtocolSniffer(self.stack, self.grpc, self.connections),
            host.strip("[]") or "127.0.0.1",
            int(port),
            family=socket.AF_INET6 if host.startswith("[") else socket.AF_INET,
            reuse_address=True,
            backlog=1024,
        )

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in progress finish for up to ``grace_s``, then close everything."""
        if self.server is None:
            return
        self.server.close()
        if self.grpc is not None:
            self.grpc.shutdown()  # GOAWAY: callers finish their calls and reconnect elsewhere
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            busy = self.grpc is not None and self.grpc.busy
            for conn in list(self.connections):
                if conn.answering is None and conn.receiving is None:
                    conn.close()
                else:
                    busy = True
            if not busy:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self.grpc is not None:
            self.grpc.close()
