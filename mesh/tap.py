"""Live taps: every request through this proxy, as it finishes, streamed to whoever is watching.

A tap is fed at the point where the data path records its span (``SpanRecorder.record``), so it sees
exactly what tracing sees, at no cost while nobody watches: the recorder holds a tuple of taps and
checks it with one attribute test. A tap filters on arrival (destination service, path prefix,
status exact or by class) so that a narrow tap is not crowded out by traffic it does not want, and
keeps at most ``capacity`` requests: when its reader is slow it drops and counts, it never blocks
the data path. The admin port streams a tap as one JSON line per request (``GET /tap``, chunked).
"""

from __future__ import annotations

import asyncio
import collections
import urllib.parse
from datetime import datetime, timezone
from typing import NamedTuple

import orjson

from spans import conventions as conv

TAP_CAPACITY = 1000  # requests waiting for one slow reader before the tap drops
MAX_TAPS = 16  # each tap filters every request on the data path
TAP_PARAMETERS = frozenset(("service", "path", "status"))
NDJSON = "application/x-ndjson"


class TapFilter(NamedTuple):
    service: str = ""  # destination service; "" = any
    path_prefix: str = ""  # "" = any
    status: int = 0  # exact HTTP status; 0 = any
    status_class: int = 0  # 5 for "5xx"; 0 = any


def parse_filter(query: str) -> TapFilter:
    """``service=&path=&status=`` (``status`` is ``503`` or ``5xx``); ValueError names what is wrong."""
    values: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name not in TAP_PARAMETERS:
            raise ValueError(f"unknown parameter {name!r}; a tap filters on service, path and status")
        if name in values:
            raise ValueError(f"{name} given more than once")
        values[name] = value
    status_text = values.get("status", "").lower()
    status = status_class = 0
    if len(status_text) == 3 and status_text[0] in "12345" and status_text[1:] == "xx":
        status_class = int(status_text[0])
    elif status_text:
        if not (status_text.isdigit() and 100 <= int(status_text) <= 599):
            raise ValueError(f"status: {status_text!r} is not an HTTP status (503) or class (5xx)")
        status = int(status_text)
    return TapFilter(values.get("service", "").lower(), values.get("path", ""), status, status_class)


class TapRequest(NamedTuple):
    """What a tap shows of one request, read from its span record."""

    direction: str
    service: str
    method: str
    path: str
    status: int  # HTTP status; 0 when none (gRPC, or no response)
    attributes: dict

    @classmethod
    def of(cls, span: tuple, own_service: str) -> TapRequest:
        attributes = dict(span[9])
        direction = attributes.get(conv.DIRECTION, "")
        service = attributes.get(conv.PEER_SERVICE) or (own_service if direction == "inbound" else "")
        if conv.RPC_SYSTEM in attributes:
            method, path = "POST", "/" + span[3]
        else:
            method, path = span[3], attributes.get(conv.URL_PATH, "")
        return cls(direction, service, method, path, attributes.get(conv.HTTP_STATUS, 0), attributes)


class Tap:
    """One watcher's bounded queue of matching requests."""

    def __init__(self, request_filter: TapFilter, own_service: str, capacity: int = TAP_CAPACITY):
        self.filter = request_filter
        self._everything = request_filter == TapFilter()
        self.own_service = own_service
        self.capacity = capacity
        self.dropped = 0
        self.closed = False
        self._spans: collections.deque = collections.deque()
        self._waiter: asyncio.Future | None = None

    def offer(self, span: tuple) -> None:
        """Called by the data path for every recorded span; never blocks, never raises."""
        try:
            if not self.matches(span):
                return
        except Exception:  # a malformed record is the recorder's problem, not the tap's
            return
        if len(self._spans) >= self.capacity:
            self.dropped += 1
            return
        self._spans.append(span)
        self._wake()

    def matches(self, span: tuple) -> bool:
        if self._everything:
            return True
        wanted = self.filter
        request = TapRequest.of(span, self.own_service)
        return (
            (not wanted.service or request.service == wanted.service)
            and request.path.startswith(wanted.path_prefix)
            and (not wanted.status or request.status == wanted.status)
            and (not wanted.status_class or request.status // 100 == wanted.status_class)
        )

    def close(self) -> None:
        self.closed = True
        self._wake()

    async def take(self) -> list[tuple]:
        """The waiting requests, once there is at least one (or the tap closed: then maybe none)."""
        while not self._spans and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        spans = list(self._spans)
        self._spans.clear()
        return spans

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class TapHub:
    """The taps open on one proxy, installed on its span recorder while there is at least one."""

    def __init__(self, recorder, own_service: str):
        self.recorder = recorder
        self.own_service = own_service
        self._taps: list[Tap] = []

    def open(self, request_filter: TapFilter, capacity: int = TAP_CAPACITY) -> Tap:
        if len(self._taps) >= MAX_TAPS:
            raise OverflowError(f"{MAX_TAPS} taps are open on this proxy already")
        tap = Tap(request_filter, self.own_service, capacity)
        self._taps.append(tap)
        self.recorder.taps = tuple(self._taps)
        return tap

    def remove(self, tap: Tap) -> None:
        tap.close()
        if tap in self._taps:
            self._taps.remove(tap)
        self.recorder.taps = tuple(self._taps)

    def close_all(self) -> None:
        for tap in list(self._taps):
            self.remove(tap)

    async def stream(self, tap: Tap, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Write ``tap``'s requests to ``writer`` as chunked JSON lines until the client goes away or
        the tap is closed; a line ``{"dropped": N}`` follows whenever the tap dropped more."""
        watcher = asyncio.create_task(self._close_on_eof(tap, reader))
        reported_drops = 0
        try:
            while not tap.closed:
                spans = await tap.take()
                lines = [orjson.dumps(request_json(span, tap.own_service)) + b"\n" for span in spans]
                if tap.dropped != reported_drops:
                    reported_drops = tap.dropped
                    lines.append(orjson.dumps({"dropped": reported_drops}) + b"\n")
                if lines:
                    payload = b"".join(lines)
                    writer.write(b"%x\r\n%b\r\n" % (len(payload), payload))
                    await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            watcher.cancel()
            self.remove(tap)

    @staticmethod
    async def _close_on_eof(tap: Tap, reader: asyncio.StreamReader) -> None:
        try:
            while await reader.read(4096):
                pass
        except ConnectionError:
            pass
        tap.close()


def request_json(span: tuple, own_service: str) -> dict:
    """One tap line: the request as the proxy saw it."""
    request = TapRequest.of(span, own_service)
    attributes = request.attributes
    line = {
        "time": _rfc3339(span[5]),
        "direction": request.direction,
        "service": request.service,
        "method": request.method,
        "path": request.path,
        "status": request.status or None,
        "durationMs": round(span[6] / 1e6, 3),
        "endpoint": attributes.get(conv.ENDPOINT, ""),
        "retries": attributes.get(conv.RETRIES, 0),
        "error": attributes.get(conv.PROXY_ERROR, ""),
        "traceId": span[0],
        "spanId": span[1],
    }
    if conv.RPC_GRPC_STATUS in attributes:
        line["grpcStatus"] = attributes[conv.RPC_GRPC_STATUS]
    return line


def _rfc3339(time_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns // 1_000_000_000, tz=timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{time_ns % 1_000_000_000 // 1_000_000:03d}Z"
