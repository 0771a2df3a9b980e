"""Getting the proxy's spans to the collector without ever slowing a request down.

The data path only appends a span tuple to a bounded buffer (``SpanRecorder.record``, well under a
microsecond, never blocks, never raises). A separate thread (``OtlpExporter``) takes batches off the
buffer, encodes them as OTLP and sends them to the collector over OTLP/gRPC (``host:port``) or
OTLP/HTTP (``http://host:port``, no grpcio: 10 MB less RSS). When the collector is slow,
down or pushing back, the exporter retries a little, then drops the batch and pauses; meanwhile the
buffer fills and further spans are dropped at ``record()``. Every lost span is counted (``dropped``
at the buffer, ``failed`` at the exporter) so ``/metrics`` shows what tracing missed.
"""

from __future__ import annotations

import collections
import http.client
import logging
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping

from spans import conventions
from spans.otlp_encode import AttributeValue, SpanBatchEncoder, SpanRecord, parse_export_response

log = logging.getLogger(__name__)

SCOPE_NAME = "tracemesh-proxy"
_POLL_S = 0.05  # how often the exporter looks for a full batch
_ENCODE_CHUNK = 32  # spans encoded between offers of the GIL to the data path (~150 µs of work)


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
    """Sends the recorder's spans to a collector (OTLP/gRPC or OTLP/HTTP, see ``transport_for``) from its
    own thread.

    A batch goes out when ``batch_size`` spans are waiting or ``interval_s`` after the last send.
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
        self._stopping = threading.Event()
        self._flush_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._transport = transport_for(collector_addr)  # a bad address fails here, before any traffic
        self._collector_healthy = True  # for logging state changes only, not every failure

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("exporter already started")
        self._thread = threading.Thread(target=self._run, name="tracemesh-otlp-exporter", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout: float = 5.0) -> None:
        """Sends what is buffered (for at most ``flush_timeout`` seconds), then closes the connection."""
        if self._thread is not None:
            self._flush_deadline = time.monotonic() + flush_timeout
            self._stopping.set()
            self._thread.join(flush_timeout + self.timeout_s + 1.0)
        self._transport.close()

    def _run(self) -> None:
        pause = 0.0  # > 0 while the collector is failing: how long to leave it alone
        next_send = time.monotonic() + self.interval_s
        while not self._stopping.wait(pause or _POLL_S):
            due = pause > 0 or time.monotonic() >= next_send
            if len(self.recorder) < self.batch_size and not due:
                continue
            if self._send_waiting(partial=due):
                pause = 0.0
            else:
                pause = min(self.max_pause_s, max(self.interval_s, pause * 2))
            next_send = time.monotonic() + self.interval_s
        self._flush()

    def _send_waiting(self, partial: bool) -> bool:
        """Sends full batches (and a last partial one if ``partial``); False once one fails."""
        while len(self.recorder) >= self.batch_size or (partial and len(self.recorder)):
            if self._stopping.is_set():
                return True  # _flush takes over
            if not self._send(self.recorder.take(self.batch_size), self.timeout_s):
                return False
        return True

    def _flush(self) -> None:
        while len(self.recorder):
            remaining = self._flush_deadline - time.monotonic()
            if remaining <= 0:
                log.warning("span export: stopped with %d spans unsent", len(self.recorder))
                return
            if not self._send(self.recorder.take(self.batch_size), min(self.timeout_s, remaining)):
                return

    def _send(self, batch: list[SpanRecord], timeout_s: float) -> bool:
        payload, count = self._encode(batch)
        if not count:
            return True
        attempt = 1
        while True:
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

    def _encode(self, batch: list[SpanRecord]) -> tuple[bytes, int]:
        """The request for ``batch`` and how many spans it holds.

        Encodes in small chunks, offering the GIL to the event loop between them: a thread that holds
        it keeps a waiting thread out for up to the switch interval (5 ms), which would add that much
        latency to requests arriving mid-batch. A chunk that does not encode is redone span by span,
        so a malformed record (a bug upstream) costs only itself."""
        chunks, count = [], 0
        for first in range(0, len(batch), _ENCODE_CHUNK):
            chunk = batch[first : first + _ENCODE_CHUNK]
            try:
                chunks.append(self._encoder.span_fields(chunk))
                count += len(chunk)
            except Exception:
                for record in chunk:
                    try:
                        chunks.append(self._encoder.span_fields([record]))
                        count += 1
                    except Exception as error:
                        self._count_malformed(record, error)
            time.sleep(0)
        return self._encoder.request(b"".join(chunks)), count

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
