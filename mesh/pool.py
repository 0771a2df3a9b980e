"""Upstream connection pools, one per endpoint address: reuse keep-alive connections, bound the connect.

Reusing a connection saves a TCP handshake and an accept on the app per request, which is most of the
latency a proxy adds at low load. The pool is last-in-first-out so a few connections stay warm and the
rest age out (``idle_timeout_s``, kept below common app keep-alive timeouts so the app rarely closes a
connection just as the proxy reuses it). Whether a request got a fresh or a reused connection, and how
long the connect took, goes on its span.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mesh.http1 import Http1Client

DEFAULT_MAX_IDLE = 256
DEFAULT_IDLE_TIMEOUT_S = 30.0


class ConnectError(Exception):
    """The endpoint could not be reached: ``kind`` is ``connect_timeout`` or ``connect_refused``."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class EndpointPool:
    """Idle HTTP/1.1 connections to one ``host:port`` (a connection done with a request puts itself
    back: ``Http1Client.release``)."""

    def __init__(self, address: str, connect_timeout_s: float, max_idle: int = DEFAULT_MAX_IDLE):
        self.address = address
        self.host, self.port = split_address(address)
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self.idle: list[Http1Client] = []

    def take_idle(self) -> Http1Client | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                return conn
        return None

    async def connect(self) -> Http1Client:
        from mesh.http1 import Http1Client  # here, not at the top: http1's connections know their pool

        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, conn = await loop.create_connection(lambda: Http1Client(self), self.host, self.port)
        except TimeoutError:
            raise ConnectError("connect_timeout", f"{self.address} after {self.connect_timeout_s:g}s") from None
        except OSError as exc:
            raise ConnectError("connect_refused", f"{self.address}: {exc.strerror or exc}") from None
        return conn

    def discard(self, conn: Http1Client) -> None:
        """Called when a connection closes, idle or not."""
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def close_idle(self, older_than: float) -> None:
        keep = []
        for conn in self.idle:
            if conn.idle_since < older_than:
                conn.close()
            else:
                keep.append(conn)
        self.idle = keep


class Pools:
    """Every endpoint pool of one listener stack, with a periodic sweep of stale idle connections."""

    def __init__(self, connect_timeout_s: float = 1.0, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S):
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.by_address: dict[str, EndpointPool] = {}

    def get(self, address: str, connect_timeout_s: float | None = None) -> EndpointPool:
        pool = self.by_address.get(address)
        if pool is None:
            pool = self.by_address[address] = EndpointPool(address, connect_timeout_s or self.connect_timeout_s)
        return pool

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.idle_timeout_s / 4)
            older_than = time.monotonic() - self.idle_timeout_s
            for pool in list(self.by_address.values()):
                pool.close_idle(older_than)

    def close(self) -> None:
        for pool in self.by_address.values():
            pool.close_idle(float("inf"))
