"""Getting the proxy's spans to the collector without ever slowing a request down.

The data path only appends a span tuple to a bounded buffer (``SpanRecorder.record``, well under a
microsecond, never blocks, never raises). ``OtlpExporter`` takes batches off the buffer, encodes them
as OTLP in short slices of the event loop's time, and sends the bytes from its own thread to the
collector over OTLP/gRPC (``host:port``) or OTLP/HTTP (``http://host:port``, no grpcio: 10 MB less
RSS). When the collector is slow, down or pushing back, the exporter retries a little, then drops
the batch and pauses; meanwhile the buffer fills and further spans are dropped at ``record()``.
Every lost span is counted (``dropped`` at the buffer, ``failed`` at the exporter) so ``/metrics``
shows what tracing missed.
"""

from __future__ import annotations

import asyncio
import collections
import http.client
import logging
import os
import queue
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping

from spans import conventions
from spans.otlp_encode import AttributeValue, SpanBatchEncoder, SpanRecord, parse_export_response

log = logging.getLogger(__name__)

SCOPE_NAME = "tracemesh-proxy"
_POLL_S = 0.05  # how often the loop looks for a due batch
_ENCODE_CHUNK = 32  # spans encoded per slice of the loop's time (~150 µs) ...
_BACKLOG_SHARE = 16  # ... or this fraction of the spans waiting, when more (at most a batch)


class ExportRefused(Exception):
    """The collector did not take a batch; ``retryable`` says whether trying again later may help."""

    def __init__(self, reason: str, retryable: bool):
        super().__init__(reason)
        self.retryable = retryable


class GrpcTransport:
    """OTLP/gRPC: one ``TraceService/Export`` unary call per batch, sent as already-encoded bytes."""

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

    def send(self, payload: bytes, timeout_s: float) -> bytes:
        try:
            return self._export(payload, timeout=timeout_s)
        except self._rpc_error as error:
            code = error.code()
            raise ExportRefused(f"{code.name}: {error.details()}", code in self._retryable) from None

    def close(self) -> None:
        self._channel.close()


class HttpTransport:
    """OTLP/HTTP with binary protobuf: one POST per batch on a kept-alive connection."""

    RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})  # OTLP/HTTP spec

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"collector URL {url!r} is not http://HOST:PORT[/path]")
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path if parts.path not in ("", "/") else "/v1/traces"
        self._connection: http.client.HTTPConnection | None = None

    def send(self, payload: bytes, timeout_s: float) -> bytes:
        try:
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
            elif self._connection.sock is not None:
                self._connection.sock.settimeout(timeout_s)
            self._connection.request("POST", self._path, payload, {"Content-Type": "application/x-protobuf"})
            response = self._connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()  # a fresh connection next time
            raise ExportRefused(f"{type(error).__name__}: {error}", retryable=True) from None
        if response.status != 200:
            detail = body[:200].decode("utf-8", "replace")
            raise ExportRefused(f"HTTP {response.status}: {detail}", response.status in self.RETRYABLE_STATUSES)
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
    """Bounded buffer between the data path (one thread, the event loop) and the exporter thread.

    ``deque.append`` / ``popleft`` are atomic, so neither side takes a lock. A buffered span takes
    about 1.6 KB, so the default 8192 bounds it at ~13 MB. Capacity 0 is for a proxy without a
    collector: nothing is kept, every span is counted as dropped.

    ``taps`` are the live taps open on the proxy (``mesh.tap``); while there are none, they cost
    the data path one attribute test.
    """

    def __init__(self, capacity: int = 8192):
        if capacity < 0:
            raise ValueError(f"span buffer capacity must not be negative, got {capacity}")
        self.capacity = capacity
        self.dropped = 0  # spans refused because the buffer was full
        self.taps: tuple = ()
        self._spans: collections.deque = collections.deque()

    def record(self, span: SpanRecord) -> None:
        spans = self._spans
        if len(spans) < self.capacity:
            spans.append(span)
        else:
            self.dropped += 1
        if self.taps:
            for tap in self.taps:
                tap.offer(span)

    def __len__(self) -> int:
        return len(self._spans)

    def take(self, limit: int) -> list[SpanRecord]:
        """Removes and returns up to ``limit`` of the oldest spans (one consumer: the exporter)."""
        popleft = self._spans.popleft
        return [popleft() for _ in range(min(limit, len(self._spans)))]


class OtlpExporter:
    """Sends the recorder's spans to a collector (OTLP/gRPC or OTLP/HTTP, see ``transport_for``).

    Encoding runs on the proxy's event loop, in slices of ``_ENCODE_CHUNK`` spans scheduled with
    ``call_soon`` so requests interleave with it; only the blocking send of the encoded bytes runs in
    the exporter's thread, which spends its time in socket I/O or grpc's C core with the GIL released.
    (Encoding in that thread cost 12-23 µs of CPU per span, mostly GIL hand-offs with the loop, for
    ~5 µs of encoding; now the thread costs ~2 µs per span.) One batch is in progress at a time: while the collector is
    slow or down, spans wait in the recorder's bounded buffer, not as encoded bytes.

    A batch goes out when ``batch_size`` spans are waiting or ``interval_s`` after the last one.
    A send that fails with a retryable status is retried ``max_attempts - 1`` times with doubling
    backoff; then its spans count as ``failed`` and exporting pauses (doubling up to ``max_pause_s``)
    so a dead collector costs neither CPU nor memory. ``exported``, ``failed`` and ``batches_failed``
    only ever grow.
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
        self.collector_addr = collector_addr
        self.batch_size = batch_size
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.retry_backoff_s = retry_backoff_s
        self.max_pause_s = max_pause_s
        self.exported = 0
        self.failed = 0  # spans the collector never accepted (down, refused, rejected, malformed)
        self.malformed = 0  # span records that could not be encoded (a bug in whoever recorded them)
        self.batches_failed = 0
        self._encoder = SpanBatchEncoder(resource_attrs, scope_name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_timer: asyncio.TimerHandle | None = None
        self._next_batch_at = 0.0  # monotonic time a partial batch is due
        self._batch_in_progress = False  # encoding on the loop or sending in the thread; set by the loop only
        self._outbox: queue.SimpleQueue[tuple[bytes, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._flush_deadline = 0.0
        self._flush_failed = False
        self._transport = transport_for(collector_addr)  # a bad address fails here, before any traffic
        self._collector_healthy = True  # for logging state changes only, not every failure

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Encodes on ``loop`` (the data path's) from now on and starts the sending thread."""
        if self._thread is not None:
            raise RuntimeError("exporter already started")
        self._loop = loop
        self._next_batch_at = time.monotonic() + self.interval_s
        self._thread = threading.Thread(target=self._send_forever, name="tracemesh-otlp-exporter", daemon=True)
        self._thread.start()
        loop.call_soon_threadsafe(self._poll)

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Sends what is buffered (for at most ``flush_timeout`` seconds), then closes the connection.
        Blocks: call it from another thread than the loop's (``run_in_executor``), which must keep running."""
        if self._thread is not None:
            self._flush_deadline = time.monotonic() + flush_timeout
            self._stopping.set()
            self._loop.call_soon_threadsafe(self._encode_next_batch)
            while (len(self.recorder) or self._batch_in_progress) and not self._flush_failed:
                if time.monotonic() >= self._flush_deadline:
                    log.warning("span export: stopped with %d spans unsent", len(self.recorder))
                    break
                time.sleep(0.01)
            self._flush_deadline = 0.0  # no batch starts after this
            self._loop.call_soon_threadsafe(self._cancel_poll)
            self._outbox.put(None)
            self._thread.join(self.timeout_s + 1.0)
        self._transport.close()

    # The event loop's side: decide when a batch is due, encode it in slices, hand it to the thread.

    def _poll(self) -> None:
        self._encode_next_batch()
        self._poll_timer = self._loop.call_later(_POLL_S, self._poll)

    def _cancel_poll(self) -> None:
        if self._poll_timer is not None:
            self._poll_timer.cancel()

    def _encode_next_batch(self) -> None:
        """Starts encoding a batch if the sender is free and a full one (or, at the interval or when
        stopping, any) is waiting."""
        waiting = len(self.recorder)
        if self._batch_in_progress or not waiting:
            return
        now = time.monotonic()
        if self._stopping.is_set():
            if self._flush_failed or now >= self._flush_deadline:
                return
        elif waiting < self.batch_size and now < self._next_batch_at:
            return
        self._batch_in_progress = True
        self._next_batch_at = now + self.interval_s
        self._encode_slice(self.recorder.take(self.batch_size), 0, [], 0)

    def _encode_slice(self, batch: list[SpanRecord], first: int, fields: list[bytes], count: int) -> None:
        """Encodes the next slice of ``batch`` from ``first``, then schedules the one after, or hands the
        finished request to the sending thread.

        A slice is ``_ENCODE_CHUNK`` spans, more while spans pile up: one slice runs per loop iteration,
        and a saturated loop records more spans per iteration than that. A slice that does not encode
        is redone span by span, so a malformed record (a bug upstream) costs only itself."""
        size = max(_ENCODE_CHUNK, len(self.recorder) // _BACKLOG_SHARE)
        chunk = batch[first : first + size]
        try:
            fields.append(self._encoder.span_fields(chunk))
            count += len(chunk)
        except Exception:
            for record in chunk:
                try:
                    fields.append(self._encoder.span_fields([record]))
                    count += 1
                except Exception as error:
                    self._count_malformed(record, error)
        first += size
        if first < len(batch):
            self._loop.call_soon(self._encode_slice, batch, first, fields, count)
        elif count:
            self._outbox.put((self._encoder.request(b"".join(fields)), count))
        else:
            self._batch_in_progress = False

    def _batch_done(self) -> None:
        self._batch_in_progress = False
        self._encode_next_batch()

    # The thread's side: send, retry, pause after a failure, tell the loop the sender is free.

    def _send_forever(self) -> None:
        pause = 0.0  # > 0 while the collector is failing: how long to leave it alone
        while (item := self._outbox.get()) is not None:
            payload, count = item
            if self._send(payload, count):
                pause = 0.0
            elif self._stopping.is_set():
                self._flush_failed = True
            else:
                pause = min(self.max_pause_s, max(self.interval_s, pause * 2))
                self._stopping.wait(pause)
            self._loop.call_soon_threadsafe(self._batch_done)

    def _send(self, payload: bytes, count: int) -> bool:
        attempt = 1
        while True:
            timeout_s = self.timeout_s
            if self._stopping.is_set():
                timeout_s = max(0.01, min(timeout_s, self._flush_deadline - time.monotonic()))
            try:
                response = self._transport.send(payload, timeout_s)
            except ExportRefused as refused:
                if refused.retryable and attempt < self.max_attempts:
                    time.sleep(self.retry_backoff_s * (2 ** (attempt - 1)))
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

    def _count_malformed(self, record: object, error: Exception) -> None:
        self.failed += 1
        self.malformed += 1
        if self.malformed == 1 or self.malformed % 10_000 == 0:  # a bug upstream: say so, without flooding
            log.error("span export: %d malformed span records so far, e.g. %r: %s", self.malformed, record, error)

    def _count_success(self, count: int, response: bytes) -> None:
        try:
            rejected, message = parse_export_response(response)
        except ValueError:  # accepted, without a readable partial-success report
            rejected, message = 0, ""
        rejected = min(rejected, count)
        if rejected:
            log.warning("collector rejected %d spans: %s", rejected, message)
        self.exported += count - rejected
        self.failed += rejected
        if not self._collector_healthy:
            log.info("span export to %s recovered", self.collector_addr)
            self._collector_healthy = True

    def _count_failure(self, count: int) -> None:
        self.failed += count
        self.batches_failed += 1
