"""Getting the proxy's spans to the collector without ever slowing a request down.

The data path hands each span to a bounded buffer (``SpanRecorder.record``, or ``record_http`` with an
HTTP exchange's fields as C values: the span is encoded there and then by native code, ~0.5 µs in all,
never blocks, never raises). ``OtlpExporter`` is one
task on the proxy's event loop: it takes a batch of encoded spans off the buffer, frames it as one
request and sends it to the collector over OTLP/HTTP (``http://host:port``: a raw asyncio connection
on the same loop, so no thread and no GIL hand-offs; no grpcio: 10 MB less RSS) or OTLP/gRPC
(``host:port``: grpcio's asynchronous call, one wake-up of the loop per batch). When the collector is slow, down or pushing back, the exporter retries
a little, then drops the batch and pauses; meanwhile the buffer fills and further spans are dropped at
``record()``. Every lost span is counted (``dropped`` at the buffer, ``failed`` at the exporter) so
``/metrics`` shows what tracing missed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping

import httptools

from spans import conventions
from spans.otlp_encode import (
    HTTP_SPAN_KEYS,
    AttributeValue,
    ExportRequestFramer,
    SpanBatch,
    SpanRecord,
    append_span,
    http_span_record,
    parse_export_response,
)

# The encoder's C API (spans/otlp_spans.h, declared in export.pxd), imported once: record_http passes an
# exchange's fields to it as C values, with no tuple and no Python call.
otlp_spans_import()

log = logging.getLogger(__name__)

SCOPE_NAME = "tracemesh-proxy"


class ExportRefused(Exception):
    """The collector did not take a batch; ``retryable`` says whether trying again later may help."""

    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.retryable = retryable


class GrpcTransport:
    """OTLP/gRPC: one ``TraceService/Export`` unary call per batch, sent as already-encoded bytes.

    The call runs in grpcio's own threads (its C core); the loop is woken once when it completes."""

    METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    # Reconnect soon after a restarted collector comes back (gRPC's default backoff grows to 120 s).
    CHANNEL_OPTIONS = (
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    )

    def __init__(self, target: str):
        import grpc  # imported here so that proxies exporting over OTLP/HTTP do not load grpcio

        self._rpc_error = grpc.RpcError
        # Statuses that mean "try again later" (OTLP spec); anything else drops the batch at once.
        self._retryable = frozenset(
            {
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.ABORTED,
                grpc.StatusCode.CANCELLED,
            }
        )
        self._channel = grpc.insecure_channel(target, options=self.CHANNEL_OPTIONS)
        # Bytes in (already encoded), bytes out (parsed by parse_export_response).
        self._export = self._channel.unary_unary(self.METHOD, request_serializer=None, response_deserializer=None)

    async def send(self, payload: bytes, timeout_s: float) -> bytes:
        loop = asyncio.get_running_loop()
        completed = loop.create_future()
        call = self._export.future(payload, timeout=timeout_s)
        call.add_done_callback(lambda _: _call_soon_from_any_thread(loop, _resolve, completed))
        try:
            await completed
        except asyncio.CancelledError:
            call.cancel()
            raise
        try:
            return call.result()
        except self._rpc_error as error:
            code = error.code()
            raise ExportRefused(f"{code.name}: {error.details()}", code in self._retryable) from None

    def close(self) -> None:
        self._channel.close()


def _call_soon_from_any_thread(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class _CollectorConnection(asyncio.Protocol):
    """One kept-alive HTTP/1.1 connection to the collector, one request at a time; httptools (the C
    parser the data path uses) reads the responses."""

    MAX_RESPONSE_BODY = 64 * 1024  # an ExportTraceServiceResponse is a few bytes; more is not a collector

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._body_size = 0
        self._response: asyncio.Future | None = None

    async def exchange(self, request_head: bytes, payload: bytes) -> tuple[int, bytes]:
        """Sends one request; its response's (status, body). Raises ExportRefused when the connection fails."""
        self._response = asyncio.get_running_loop().create_future()
        self._body, self._body_size = [], 0
        self.transport.writelines((request_head, payload))
        try:
            return await self._response
        finally:
            self._response = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ExportRefused(f"malformed HTTP response: {error}", retryable=True))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ExportRefused("the collector closed the connection", retryable=True))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # httptools callbacks

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.MAX_RESPONSE_BODY:
            self._fail(ExportRefused("the response body is too large for an OTLP response", retryable=False))
        else:
            self._body.append(body)

    def on_message_complete(self) -> None:
        self.keep_alive = self._parser.should_keep_alive()
        if self._response is None or self._response.done():  # an answer to no request: not a collector to keep
            self.close()
        else:
            self._response.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def _fail(self, refused: ExportRefused) -> None:
        self.close()
        if self._response is not None and not self._response.done():
            self._response.set_exception(refused)


class HttpTransport:
    """OTLP/HTTP with binary protobuf: one POST per batch on a kept-alive connection, opened and used
    on the exporter's event loop."""

    RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})  # OTLP/HTTP spec

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"collector URL {url!r} is not http://HOST:PORT[/path]")
        self._host, self._port = parts.hostname, parts.port
        path = parts.path if parts.path not in ("", "/") else "/v1/traces"
        self._request_head = (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/x-protobuf\r\n"
            "Content-Length: {}\r\n\r\n"
        )
        self._connection: _CollectorConnection | None = None

    async def send(self, payload: bytes, timeout_s: float) -> bytes:
        head = self._request_head.format(len(payload)).encode("latin-1")
        try:
            async with asyncio.timeout(timeout_s):
                if self._connection is None or self._connection.closed:
                    _, self._connection = await asyncio.get_running_loop().create_connection(
                        _CollectorConnection, self._host, self._port
                    )
                status, body = await self._connection.exchange(head, payload)
        except TimeoutError:
            self.close()  # a late answer must not be read as the next request's
            raise ExportRefused(f"no answer within {timeout_s:g}s", retryable=True) from None
        except OSError as error:
            self.close()
            raise ExportRefused(f"{type(error).__name__}: {error}", retryable=True) from None
        if not self._connection.keep_alive:
            self.close()
        if status != 200:
            detail = body[:200].decode("utf-8", "replace")
            raise ExportRefused(f"HTTP {status}: {detail}", status in self.RETRYABLE_STATUSES)
        return body

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def transport_for(collector: str) -> GrpcTransport | HttpTransport:
    """``http://host:port[/path]`` -> OTLP/HTTP; ``host:port`` -> OTLP/gRPC."""
    if "://" in collector:
        return HttpTransport(collector)
    return GrpcTransport(collector)


def proxy_resource(service: str, instance_id: str | None = None) -> dict[str, AttributeValue]:
    """The OTLP resource of a proxy's spans: the service it fronts, which instance, and a marker
    telling the collector these spans come from a Tracemesh proxy, not from the application."""
    return {
        conventions.SERVICE_NAME: service,
        conventions.SERVICE_INSTANCE_ID: instance_id or f"{socket.gethostname()}:{os.getpid()}",
        conventions.PROXY_RESOURCE: True,
        "telemetry.sdk.name": "tracemesh",
        "telemetry.sdk.language": "python",
    }


class SpanRecorder:
    """Bounded buffer of spans between the data path and the exporter (both on the proxy's event loop).

    ``record()`` encodes the span at once (``append_span``, ~0.4 µs for a proxy span) into the open
    batch, so nothing of a request outlives it: a buffered span is ~0.6 KB of bytes, where a buffered
    tuple span took ~1.6 KB in ~17 objects that the garbage collector kept walking (measured: ~1 µs
    per span of collections, more than the encoding). The default 8192 spans bound it at ~5 MB. A
    batch is closed at ``batch_size`` spans (the exporter sets its own). Capacity 0 is for a proxy
    without a collector: nothing is kept or encoded, every span is counted as dropped.

    A batch (``SpanBatch``) starts with room for as many bytes as the largest batch so far, and the
    exporter hands each one back once framed (``recycle``) for the next batch to fill again: a batch
    that started empty regrew, copying itself every few spans (300-840 instructions a span by callgrind).
    At most one such spare is kept.

    Not shared between threads: ``record()`` and ``take()`` both run on the loop (a span recorded
    from another thread could land in a batch after its count was read).

    A malformed record (a bug in whoever recorded it) is not kept; it is counted as ``malformed``
    and logged without flooding. ``taps`` are the live taps open on the proxy (``mesh.tap``); while
    there are none, they cost the data path one attribute test.
    """

    def __init__(self, capacity: int = 8192, batch_size: int = 512):
        if capacity < 0 or batch_size < 1:
            raise ValueError(f"span buffer capacity must be >= 0 and batch size >= 1, got {capacity}, {batch_size}")
        self.capacity = capacity
        self.batch_size = batch_size
        self.dropped = 0  # spans refused because the buffer was full
        self.malformed = 0  # span records that could not be encoded
        self.taps: tuple = ()
        self.on_full_batch: Callable[[], None] | None = None  # called as a batch closes (the exporter's wake-up)
        self._spans = 0  # buffered, in all batches
        self._closed: collections.deque[tuple[SpanBatch, int]] = collections.deque()  # full batches, oldest first
        self._open = SpanBatch()  # span fields of the batch being filled
        self._open_spans = 0
        self._spare: SpanBatch | None = None  # a framed batch, emptied, for the next one to fill
        self._batch_bytes = 0  # the size of the largest closed batch: the room a new batch starts with
        self._http_keys = HTTP_SPAN_KEYS  # (a typed field: no module-global lookup per span)

    def record(self, span: SpanRecord) -> None:
        if self._spans < self.capacity:
            self._appended(append_span(self._open, span))
        else:
            self.dropped += 1
        if self.taps:
            for tap in self.taps:
                tap.offer(span)

    def record_http(
        self, trace_id, span_id, parent_span_id, kind, start_ns, duration_ns, status_code, constant_attributes,
        method, target, queue_ns, connect_ns, connection_reused, retries, retry_delay_ns, first_byte_ns, body_ns,
        endpoint_load, http_status, proxy_error, error_type,
    ) -> None:  # fmt: skip
        """Records the span of one HTTP exchange from its fields (those of ``append_http_span``, typed in
        export.pxd), which reach the encoder as C values: no tuple of them and no SpanRecord is built
        unless a tap is open."""
        if self._spans < self.capacity:
            self._appended(otlp_append_http_span(
                self._open, self._http_keys, trace_id, span_id, parent_span_id, kind, start_ns, duration_ns,
                status_code, constant_attributes, method, target, queue_ns, connect_ns, connection_reused, retries,
                retry_delay_ns, first_byte_ns, body_ns, endpoint_load, http_status, proxy_error, error_type,
            ))  # fmt: skip
        else:
            self.dropped += 1
        if self.taps:
            span = http_span_record((
                trace_id, span_id, parent_span_id, kind, start_ns, duration_ns, status_code, constant_attributes,
                method, target, queue_ns, connect_ns, connection_reused, retries, retry_delay_ns, first_byte_ns,
                body_ns, endpoint_load, http_status, proxy_error, error_type,
            ))  # fmt: skip
            for tap in self.taps:
                tap.offer(span)

    def _appended(self, malformed: str | None) -> None:
        """Counts what an encoder call did to the open batch: one more span (the batch closes when full),
        or nothing appended and the reason it was malformed."""
        if malformed is None:
            self._spans += 1
            self._open_spans += 1
            if self._open_spans >= self.batch_size:
                self._close_batch()
        else:
            self._count_malformed(malformed)

    def _close_batch(self) -> None:
        self._batch_bytes = max(self._batch_bytes, len(self._open))
        self._closed.append((self._open, self._open_spans))
        self._open, self._open_spans = self._fresh_batch(), 0
        if self.on_full_batch is not None:
            self.on_full_batch()

    def _fresh_batch(self) -> SpanBatch:
        spare = self._spare
        if spare is None:
            return SpanBatch(self._batch_bytes)
        self._spare = None
        return spare

    def __len__(self) -> int:
        return self._spans

    @property
    def full_batch_waiting(self) -> bool:
        return bool(self._closed)

    def take(self) -> tuple[SpanBatch, int]:
        """Removes the oldest batch, full or not: its span fields (for ``ExportRequestFramer``) and how
        many spans they hold. One consumer: the exporter."""
        if self._closed:
            span_fields, count = self._closed.popleft()
        else:
            span_fields, count = self._open, self._open_spans
            self._open, self._open_spans = self._fresh_batch(), 0
        self._spans -= count
        return span_fields, count

    def recycle(self, span_fields: SpanBatch) -> None:
        """Takes back a batch from ``take()`` whose bytes are no longer needed (framed into a request):
        emptied, it is the next batch to fill, with the memory it has."""
        span_fields.clear()
        self._spare = span_fields

    def _count_malformed(self, reason: str) -> None:
        self.malformed += 1
        if self.malformed == 1 or self.malformed % 10_000 == 0:  # a bug upstream: say so, without flooding
            log.error("span export: %d malformed span records so far, the latest: %s", self.malformed, reason)


class OtlpExporter:
    """Sends the recorder's spans to a collector (OTLP/gRPC or OTLP/HTTP, see ``transport_for``).

    Everything runs as one task on the proxy's event loop (``start(loop)``). The recorder has encoded
    the spans already; a batch only gets its request framing, then is sent with asynchronous I/O on
    the same loop. (Encoding in a thread of its own cost 12-23 µs of CPU per span, mostly GIL
    hand-offs with the loop; sending from a thread ~2 µs per span the same way; encoding batches of
    buffered tuples on the loop 5-9 µs plus the garbage collector's walks over them.) One batch is
    in progress at a time: while the collector is slow or
    down, spans wait in the recorder's bounded buffer.

    A batch goes out when ``batch_size`` spans are waiting (the recorder closes batches at that size)
    or ``interval_s`` after the last one.
    A send that fails with a retryable status is retried ``max_attempts - 1`` times with doubling
    backoff; then its spans count as ``failed`` and exporting pauses (doubling up to ``max_pause_s``)
    so a dead collector costs neither CPU nor memory. ``failed`` includes the recorder's malformed
    records. ``exported``, ``failed``, ``malformed`` and ``batches_failed`` only ever grow.
    """

    def __init__(
        self,
        recorder: SpanRecorder,
        collector_addr: str,
        resource_attrs: Mapping[str, AttributeValue],
        batch_size: int = 512,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.1,
        max_pause_s: float = 5.0,
        scope_name: str = SCOPE_NAME,
    ):
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be at least 1")
        self.recorder = recorder
        recorder.batch_size = batch_size
        self.collector_addr = collector_addr
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.max_pause_s = max_pause_s
        self.exported = 0
        self.batches_failed = 0
        self._not_accepted = 0  # spans the collector never took (down, refused, rejected)
        self._framer = ExportRequestFramer(resource_attrs, scope_name)
        self._transport = transport_for(collector_addr)  # a bad address fails here, before any traffic
        self._collector_healthy = True  # for logging state changes only, not every failure
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._running: concurrent.futures.Future | None = None  # the task, seen from other threads
        self._next_batch_at = 0.0  # monotonic time a partial batch is due
        self._stopping = False
        self._flush_deadline = 0.0
        self._wakeup: asyncio.Future | None = None  # what a nap waits on; stop() resolves it early
        self._woken_by_full_batch = False  # whether a closed batch ends the current nap too

    @property
    def malformed(self) -> int:
        """Span records that could not be encoded (a bug in whoever recorded them)."""
        return self.recorder.malformed

    @property
    def failed(self) -> int:
        """Spans recorded but never accepted by the collector: not taken, or malformed."""
        return self._not_accepted + self.recorder.malformed

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Exports from ``loop`` (the data path's, running) from now on. May be called from any thread."""
        if self._running is not None:
            raise RuntimeError("exporter already started")
        self._loop = loop
        self._next_batch_at = time.monotonic() + self.interval_s
        # Woken when a batch fills rather than polling for one (a wake-up costs the loop as much as
        # encoding tens of spans). Thread-safe, for recorders fed from other threads in tests.
        self.recorder.on_full_batch = lambda: _call_soon_from_any_thread(loop, self._full_batch)
        self._running = asyncio.run_coroutine_threadsafe(self._run(), loop)

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Sends what is buffered (for at most ``flush_timeout`` seconds), then closes the connection.
        Blocks: call it from another thread than the loop's (``run_in_executor``), which must keep running."""
        if self._running is None:
            self._transport.close()
            return
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("OtlpExporter.stop() blocks until the flush is done: call it off the event loop")
        self._loop.call_soon_threadsafe(self._request_stop, time.monotonic() + flush_timeout)
        try:
            self._running.result(timeout=flush_timeout + 1.0)
        except concurrent.futures.TimeoutError:
            self._running.cancel()  # the task closes the connection as it ends

    def _full_batch(self) -> None:
        if self._wakeup is not None and self._woken_by_full_batch:
            _resolve(self._wakeup)

    def _request_stop(self, flush_deadline: float) -> None:
        self._stopping = True
        self._flush_deadline = flush_deadline
        if self._wakeup is not None:
            _resolve(self._wakeup)

    async def _run(self) -> None:
        self._loop_thread = threading.get_ident()
        pause = 0.0  # > 0 while the collector is failing: how long to leave it alone
        try:
            while await self._batch_due():
                span_fields, count = self.recorder.take()
                self._next_batch_at = time.monotonic() + self.interval_s
                payload = self._framer.request(span_fields)
                self.recorder.recycle(span_fields)
                if await self._send(payload, count):
                    pause = 0.0
                elif self._stopping:
                    break  # the collector is not taking spans: do not spend the flush time on it
                else:
                    pause = min(self.max_pause_s, max(self.interval_s, pause * 2))
                    await self._nap(pause)
            if len(self.recorder):
                log.warning("span export: stopped with %d spans unsent", len(self.recorder))
        finally:
            self._transport.close()

    async def _batch_due(self) -> bool:
        """Waits until a full batch (or, at the interval, any) is waiting; False once stopped and done.
        When stopping, whatever is waiting is due until the flush deadline."""
        while True:
            waiting = len(self.recorder)
            now = time.monotonic()
            if self._stopping:
                return bool(waiting) and now < self._flush_deadline
            if self.recorder.full_batch_waiting or (waiting and now >= self._next_batch_at):
                return True
            # until a partial batch is due (with nothing waiting: another interval), or a batch fills
            await self._nap(self._next_batch_at - now if now < self._next_batch_at else self.interval_s, full_batch=True)

    async def _nap(self, seconds: float, full_batch: bool = False) -> None:
        """Sleeps ``seconds``, or less if stop() is called meanwhile (not at all once it was), or, with
        ``full_batch``, when the recorder closes a batch."""
        if self._stopping:
            return
        self._woken_by_full_batch = full_batch
        self._wakeup = self._loop.create_future()
        timer = self._loop.call_later(seconds, _resolve, self._wakeup)
        try:
            await self._wakeup
        finally:
            timer.cancel()
            self._wakeup = None

    async def _send(self, payload: bytes, count: int) -> bool:
        attempt = 1
        while True:
            timeout_s = self.timeout_s
            if self._stopping:
                timeout_s = max(0.01, min(timeout_s, self._flush_deadline - time.monotonic()))
            try:
                response = await self._transport.send(payload, timeout_s)
            except ExportRefused as refused:
                if refused.retryable and attempt < self.max_attempts:
                    await asyncio.sleep(self.retry_backoff_s * (2 ** (attempt - 1)))
                    attempt += 1
                    continue
                self._count_failure(count)
                if self._collector_healthy:
                    log.warning(
                        "span export to %s failed (%s); dropping spans until it recovers", self.collector_addr, refused
                    )
                    self._collector_healthy = False
                return False
            self._count_success(count, response)
            return True

    def _count_success(self, count: int, response: bytes) -> None:
        try:
            rejected, message = parse_export_response(response)
        except ValueError:  # accepted, without a readable partial-success report
            rejected, message = 0, ""
        rejected = min(rejected, count)
        if rejected:
            log.warning("collector rejected %d spans: %s", rejected, message)
        self.exported += count - rejected
        self._not_accepted += rejected
        if not self._collector_healthy:
            log.info("span export to %s recovered", self.collector_addr)
            self._collector_healthy = True

    def _count_failure(self, count: int) -> None:
        self._not_accepted += count
        self.batches_failed += 1
