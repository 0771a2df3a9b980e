"""gRPC calls through the proxy: each HTTP/2 stream from a caller becomes one call relayed to one upstream.

A call reads top to bottom in ``GrpcCall``: find the destination, get admitted (or shed at once with
UNAVAILABLE), pick an endpoint, open a stream on a pooled multiplexed connection, forward. All of it runs
in callbacks of the two connections (a task only while queued or connecting), which is what keeps a
relayed call cheap. HEADERS, DATA and trailers pass through unchanged (metadata, grpc-status,
percent-encoded grpc-message, grpc-timeout); RST_STREAM is passed on both ways, so cancellation reaches
the server and a server's reset reaches the caller.

The proxy never parses messages, so it cannot tell unary from streaming calls. What it can tell is the
shape on the wire, and that is what retries follow: a call may be sent again only if the upstream
answered trailers-only with a retryable status (or never got the stream at all), the caller had ended
its request, and the proxy kept every request byte (at most ``MAX_REPLAY_BODY``). The per-destination
timeout bounds the call, retries included, until the upstream starts answering; after that the caller's own deadline
(grpc-timeout, enforced by client and server) governs, so long-lived streams are not cut off.

The module is compiled by Cython (``grpc.pxd``): calls and attempts are extension types deriving from
``mesh.http2.StreamListener``, so the frames of a call reach them as C calls, and their reads of the stack,
destination, balancer, load estimate, budget, admission, metrics and span buffer are struct reads.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote, unquote_to_bytes

from cython.cimports.cpython.time import monotonic, monotonic_ns, time_ns  # C calls, no Python call per read

from mesh.http2 import H2Pool, H2ServerConnection, RequestHandler, StreamListener, Writes
from mesh.pool import ConnectError
from mesh.retry import MAX_REPLAY_BODY, backoff, grpc_retryable
from mesh.shed import Shed
from mesh.trace_context import TRACE_HEADER_NAMES, extract, from_traceparent, inject, new_root, new_span_id
from spans.conventions import (
    BODY_NS, CONNECTION_REUSED, CONNECT_NS, DIRECTION, ENDPOINT, ENDPOINT_LOAD, ERROR_TYPE, FIRST_BYTE_NS, PEER_SERVICE,
    PROXY_ERROR, PROXY_ERROR_HEADER, QUEUE_NS, RETRIES, RETRY_DELAY_NS, RPC_GRPC_STATUS, RPC_METHOD, RPC_SERVICE, RPC_SYSTEM,
)
from spans.model import KIND_CLIENT, STATUS_ERROR, STATUS_UNSET

# The status codes the proxy itself reports (OK, CANCELLED, ...) are declared in ``grpc.pxd``, which also
# cimports the HTTP/2 error codes used here (CANCEL, REFUSED_STREAM, ...) from ``mesh.http2``.

# Proxy error kinds (the ``tracemesh-proxy-error`` header and the span's tracemesh.proxy_error).
UNKNOWN_DESTINATION = "unknown_destination"
NO_ENDPOINTS = "no_endpoints"
TIMEOUT = "timeout"
UPSTREAM_RESET = "upstream_reset"
CONNECTION_LOST_ERROR = "connection_lost"

logger = logging.getLogger(__name__)
_PROXY_ERROR_HEADER = PROXY_ERROR_HEADER.encode()
_TRACEPARENT = b"traceparent"


def _lowercase(name: bytes) -> bool:
    """``name`` has no ASCII capital letter (HTTP/2 field names must not, RFC 9113 8.2.1; ``extract``
    still reads a trace header whose name breaks that)."""
    for byte in name:
        if 0x41 <= byte <= 0x5A:
            return False
    return True


def split_path(path: bytes) -> tuple[str, str]:
    """``/package.Service/Method`` -> (``package.Service``, ``Method``); ('', path) when it is not that shape."""
    text = path.decode("latin-1")
    service, slash, method = text[1:].partition("/")
    if not text.startswith("/") or not slash or not service or not method or "/" in method:
        return "", text
    return service, method


# grpc-message is percent-encoded UTF-8: everything but printable ASCII other than '%' is escaped.
_MESSAGE_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if c != 0x25)


def encode_message(message: str) -> bytes:
    return quote(message, safe=_MESSAGE_SAFE).encode("ascii")


def decode_message(value: bytes) -> str:
    """The text a grpc-message header carries (malformed escapes are kept literally, as gRPC does)."""
    if b"%" in value:
        value = unquote_to_bytes(value)
    return value.decode("utf-8", "replace")


def trailers_only(status: int, message: str, proxy_error: str) -> list[tuple[bytes, bytes]]:
    """A complete gRPC response in one HEADERS frame: the proxy's own answer when it fails a call."""
    headers = [
        (b":status", b"200"),
        (b"content-type", b"application/grpc"),
        (b"grpc-status", str(status).encode()),
        (b"grpc-message", encode_message(message)),
    ]
    if proxy_error:
        headers.append((_PROXY_ERROR_HEADER, proxy_error.encode()))
    return headers


def status_of(headers) -> tuple[int | None, bytes]:
    """grpc-status and grpc-message from a trailers (or trailers-only) block."""
    status = None
    message = b""
    for name, value in headers:
        if name == b"grpc-status":
            try:
                status = int(value)
            except ValueError:
                status = UNKNOWN
        elif name == b"grpc-message":
            message = value
    return status, message


_PATH_NAMES: dict[bytes, tuple[str, tuple]] = {}  # :path -> span name and rpc.* attributes
_PATH_NAMES_LIMIT = 10_000


def _path_names(path: bytes) -> tuple[str, tuple]:
    service, method = split_path(path)
    names = (f"{service}/{method}" if service else method,
             ((RPC_SYSTEM, "grpc"), (RPC_SERVICE, service), (RPC_METHOD, method)))
    if len(_PATH_NAMES) >= _PATH_NAMES_LIMIT:
        _PATH_NAMES.clear()
    _PATH_NAMES[path] = names
    return names


class GrpcRelay(RequestHandler):
    """One listener's gRPC side (see the seam in /work/mesh-contract.md)."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.retries = stack.retry_on_status
        self.writes = Writes()  # both sides' connections: what one read causes goes out as it is handled
        self.pool = H2Pool(self.writes)
        self.connections: set[H2ServerConnection] = set()

    def connection(self) -> H2ServerConnection:
        conn = H2ServerConnection(self, self.connections.discard, self.writes)
        self.connections.add(conn)
        return conn

    def on_request(self, stream, headers, end_stream: bool) -> None:
        try:
            GrpcCall.__new__(GrpcCall).begin(self, stream, headers, end_stream)
        except Exception:  # a bug must cost one call, never the connection it shares with others
            logger.exception("gRPC call could not be started")
            stream.conn.reset(stream, INTERNAL_ERROR)

    @property
    def busy(self) -> bool:
        """Calls are in flight (what a graceful stop waits for, up to its grace period)."""
        return any(conn.streams for conn in self.connections)

    def shutdown(self) -> None:
        """GOAWAY to every caller: calls in flight finish, new ones go elsewhere."""
        for conn in list(self.connections):
            conn.shutdown()

    def close(self) -> None:
        """Upstream connections close as soon as their streams are done."""
        self.pool.close()


class _Attempt(StreamListener):
    """One try of a call on one upstream stream; its events go back to the call while it is current.
    Made by ``GrpcCall._send`` (fields in grpc.pxd; ``answered`` starts False)."""

    def on_headers(self, headers, end_stream: bool) -> None:
        call = self.call
        if call.attempt is not self:
            return
        if not self.answered:
            self.settle()
            call.first_byte_ns = monotonic_ns()
            if end_stream:
                status, _message = status_of(headers)
                if call.may_retry_status(status):
                    call.attempt_failed(("status", status, headers))
                    return
            call.response_started()
        call.response_headers(headers, end_stream)

    def on_data(self, data: bytes, end_stream: bool) -> None:
        call = self.call
        if call.attempt is self and not call.done:
            down = call.down
            down.conn.send_data(down, data, end_stream, source=self.stream)
            if end_stream:  # DATA with END_STREAM and no trailers: not valid gRPC; report as unknown
                call.finish(UNKNOWN, "response ended without grpc-status")
        else:
            self.stream.consumed(len(data))

    def on_reset(self, error_code: int) -> None:
        call = self.call
        if call.attempt is not self:
            return
        if not self.answered:
            self.settle()
            call.endpoint_failed(self.endpoint, self.ewma_t0)
            call.attempt_failed(("reset", error_code, None))
        else:
            call.upstream_reset(error_code)

    def timed_out(self) -> None:
        self.settle()
        self.call.endpoint_failed(self.endpoint, self.ewma_t0)
        stream = self.stream
        stream.conn.reset(stream, CANCEL)

    def settle(self) -> None:
        if not self.answered:
            self.answered = True
            self.endpoint.ewma.finish(self.ewma_t0, monotonic())


class GrpcCall(StreamListener):
    """One call: the caller's stream ``down`` and the current upstream attempt. Listens on ``down``.

    Everything is driven by callbacks; a task exists only while the call waits in the admission queue
    or for a new upstream connection. Made by ``GrpcRelay.on_request``, which calls ``begin``. The fields
    most calls never change start as their types' zero (0, False, None: grpc.pxd says what each is);
    ``begin`` sets only the others."""

    def begin(self, relay: GrpcRelay, down, headers, end_stream: bool) -> None:
        self.relay = relay
        self.stack = relay.stack
        self.down = down
        down.listener = self
        self.start_ns = time_ns()
        self.started = monotonic_ns()
        self.message = self.proxy_error = ""
        self.reused = True
        self._read_pseudo_headers(headers)
        self._join_trace(headers)
        self.request_ended = end_stream
        self.replay: list[bytes] | None = []  # every request DATA payload while they fit MAX_REPLAY_BODY
        self.tried: list = []
        self._start()

    def _read_pseudo_headers(self, headers: list) -> None:
        """:path and :authority (b"" when missing); pseudo-header fields come first (RFC 9113 8.3)."""
        self.path = self.authority = b""
        for name, value in headers:
            if name == b":path":
                self.path = value
            elif name == b":authority":
                self.authority = value
            elif not name.startswith(b":"):
                break

    def _join_trace(self, headers: list) -> None:
        """This hop's span joins the caller's trace as a child (or starts a trace), and the upstream
        request's trace headers make it the next hop's parent. The usual requests, with no trace header
        or a lone traceparent, take one walk over the headers and the native W3C rules; any other trace
        header (tracestate, B3, several, upper case) takes ``extract`` and ``inject``."""
        lone = -1  # where the lone traceparent is; FULL_RULES when there is more
        for index in range(len(headers)):
            name = headers[index][0]
            if name not in TRACE_HEADER_NAMES:
                if _lowercase(name) or name.lower() not in TRACE_HEADER_NAMES:
                    continue
                lone = FULL_RULES
                break
            if name != _TRACEPARENT or lone != -1:
                lone = FULL_RULES
                break
            lone = index
        if lone == FULL_RULES:
            ctx = extract(headers)
        else:
            ctx = None if lone < 0 else from_traceparent(headers[lone][1])
        if ctx is None:
            ctx, self.span_id = new_root()
        else:
            self.span_id = new_span_id()
        self.ctx = ctx
        self.sampled = ctx.sampled
        if lone == FULL_RULES:
            self.upstream_headers = inject(headers, ctx, self.span_id)
            return
        upstream = list(headers) if lone < 0 else headers[:lone] + headers[lone + 1:]
        upstream.append((_TRACEPARENT, f"00-{ctx.trace_id}-{self.span_id}-0{1 if self.sampled else 0}".encode()))
        self.upstream_headers = upstream

    # ---- the call, top to bottom ----------------------------------------------------------

    def _start(self) -> None:
        if not self.path:  # malformed HTTP/2 request (RFC 9113 8.3.1): a stream error, not a call
            self.done = True
            self.down.conn.reset(self.down, PROTOCOL_ERROR)
            return
        stack = self.stack
        destination = stack.destination_by_authority.get(self.authority) or stack.resolve_authority(self.authority)
        if destination is None:
            self.fail(UNAVAILABLE, f"no destination for {self.authority.decode('latin-1')!r}", UNKNOWN_DESTINATION)
            return
        self.destination = destination
        if destination.admission.try_acquire():
            self._admitted()
        else:
            self.waiting = asyncio.ensure_future(self._queue(destination))

    async def _queue(self, destination) -> None:
        try:
            queued_s = await destination.admission.acquire()
        except Shed as shed:
            stack = self.stack
            if stack.metrics is not None:
                stack.metrics.observe_shed(stack.direction, destination.name, shed.reason)
            self.fail(UNAVAILABLE, f"load shed by proxy ({shed.reason})", shed.reason)
            return
        self.waiting = None
        self.queue_ns = int(queued_s * 1e9)
        self._admitted()

    def _admitted(self) -> None:
        self.admitted = True
        destination = self.destination
        now = monotonic()
        destination.retry_budget.deposit(now)
        self.deadline = now + destination.policy.timeout_s
        self.stack.deadlines.pending.add(self)
        self._next_attempt()

    def _next_attempt(self) -> None:
        self.waiting = None
        if self.done:
            return
        balancer = self.destination.balancer
        if len(self.tried) >= len(balancer.endpoints):
            self.tried.clear()  # every endpoint was tried once: any may take the retry
        now = monotonic()
        endpoint = balancer.pick(now, self.tried)
        if endpoint is None:
            self.fail(UNAVAILABLE, f"no available endpoint for {self.destination.name}", NO_ENDPOINTS)
            return
        self.endpoint = endpoint
        self.endpoint_load = endpoint.ewma.load(now)
        conn = self.relay.pool.reusable(endpoint.address)
        if conn is not None:
            self._send(conn, endpoint)
        else:
            self.waiting = asyncio.ensure_future(self._connect(endpoint))

    async def _connect(self, endpoint) -> None:
        try:
            conn, connect_ns = await self.relay.pool.connect(endpoint.address, self.destination.policy.connect_timeout_s)
        except ConnectError as exc:
            self.waiting = None
            self.endpoint_failed(endpoint, None)
            self.attempt_failed(("connect", exc.kind, str(exc)))
            return
        self.waiting = None
        self.connect_ns += connect_ns
        self.reused = self.reused and connect_ns == 0
        self._send(conn, endpoint)

    def _send(self, conn, endpoint) -> None:
        attempt = _Attempt()
        attempt.call = self
        attempt.endpoint = endpoint
        attempt.ewma_t0 = endpoint.ewma.start(monotonic())
        self.attempt = attempt
        stream = conn.open_stream(attempt)
        attempt.stream = stream
        self.sent_ns = monotonic_ns()
        if not self.forwarded:
            self.forwarded = True
            backlog = self.backlog
            self.backlog = None
            conn.send_headers(stream, self.upstream_headers, self.request_ended and not backlog)
            if backlog:
                down = self.down
                for is_data, payload, end_stream in backlog:
                    if is_data:
                        conn.send_data(stream, payload, end_stream, down)
                    else:
                        conn.send_headers(stream, payload, end_stream)
        else:  # a replay: the caller ended its request and every byte of it is in self.replay (see _may_retry)
            body = b"".join(self.replay)
            conn.send_headers(stream, self.upstream_headers, not body)
            if body:
                conn.send_data(stream, body, True)

    def endpoint_failed(self, endpoint, sent_at: float | None) -> None:
        """Failure accrual for ``endpoint`` (an attempt sent at ``sent_at`` failed); ejections are counted."""
        breaker = endpoint.breaker
        ejections = breaker.ejections
        breaker.failure(monotonic(), sent_at)
        metrics = self.stack.metrics
        if breaker.ejections != ejections and metrics is not None:
            metrics.observe_ejection(self.destination.name, endpoint.address)

    def attempt_failed(self, outcome) -> None:
        """No answer from this attempt (connect error, reset, retryable status): retry or give up."""
        if self.done:
            return
        attempt = self.attempt
        if attempt is not None and attempt.stream.conn.streams.get(attempt.stream.id) is attempt.stream:
            attempt.stream.conn.reset(attempt.stream, CANCEL)
        if not self._may_retry(outcome):
            self._give_up(outcome)
            return
        self.retries += 1
        delay = backoff(self.retries)
        self.retry_delay_ns += int(delay * 1e9)
        if self.endpoint is not None:
            self.tried.append(self.endpoint)
        self.waiting = self.down.conn.loop.call_later(delay, self._next_attempt)

    def timed_out(self) -> None:
        """The destination's timeout ran out before the upstream started answering."""
        self.stack.deadlines.pending.discard(self)
        if self.done:
            return
        attempt = self.attempt
        if attempt is not None and not attempt.answered:
            attempt.timed_out()
        self._give_up(("timeout", None, None))

    def response_started(self) -> None:
        self.stack.deadlines.pending.discard(self)

    def may_retry_status(self, status: int | None) -> bool:
        return (self.relay.retries and status is not None
                and grpc_retryable(status, self.destination.policy.grpc_retryable)
                and self.request_ended and self.replay is not None and self.retries < self.destination.policy.max_retries)

    def _may_retry(self, outcome) -> bool:
        kind, detail, _extra = outcome
        if self.retries >= self.destination.policy.max_retries:
            return False
        replayable = self.request_ended and self.replay is not None
        if kind == "connect":
            safe = not self.forwarded or replayable  # nothing went out, or all of it can again
        elif not self.relay.retries:
            safe = False  # inbound: the app saw the call; only a connect that failed is tried again
        elif kind == "reset":
            safe = detail in (REFUSED_STREAM, CONNECTION_LOST) and replayable
        else:
            safe = kind == "status"
        return safe and self.destination.retry_budget.withdraw()

    def _give_up(self, outcome) -> None:
        kind, detail, extra = outcome
        if kind == "status":  # the held trailers-only answer goes to the caller as it was
            self.response_headers(extra, True)
        elif kind == "timeout":
            self.fail(DEADLINE_EXCEEDED, f"upstream did not answer within {self.destination.policy.timeout_s:g}s", TIMEOUT)
        elif kind == "connect":
            self.fail(UNAVAILABLE, extra, detail)
        elif detail in (REFUSED_STREAM, CONNECTION_LOST):
            self.fail(UNAVAILABLE, "upstream closed the stream before answering",
                      CONNECTION_LOST_ERROR if detail == CONNECTION_LOST else UPSTREAM_RESET)
        else:  # the server reset the stream (e.g. CANCEL): the caller sees the same reset
            self._reset_caller(detail)

    # ---- caller -> upstream (listener of ``down``) ------------------------------------------

    def on_data(self, data: bytes, end_stream: bool) -> None:
        if self.done:  # answered already (e.g. shed): the rest of the request goes nowhere
            self.down.consumed(len(data))
            return
        if self.replay is not None:
            self.replay_size += len(data)
            if self.replay_size <= MAX_REPLAY_BODY:
                self.replay.append(data)
            else:
                self.replay = None
        if end_stream:
            self.request_ended = True
        attempt = self.attempt
        if attempt is not None and attempt.stream.conn.streams.get(attempt.stream.id) is attempt.stream:
            attempt.stream.conn.send_data(attempt.stream, data, end_stream, source=self.down)
        elif attempt is None:
            self._hold((True, data, end_stream))
        else:
            self.down.consumed(len(data))

    def on_headers(self, headers, end_stream: bool) -> None:
        """Request trailers (gRPC clients send none, but HTTP/2 allows them): passed on, never replayed."""
        if self.done:
            return
        self.replay = None
        self.request_ended = self.request_ended or end_stream
        attempt = self.attempt
        if attempt is None:
            self._hold((False, headers, end_stream))
        elif attempt.stream.conn.streams.get(attempt.stream.id) is attempt.stream:
            attempt.stream.conn.send_headers(attempt.stream, headers, end_stream)

    def on_reset(self, error_code: int) -> None:
        """The caller cancelled (or its connection went): the upstream hears CANCEL at once."""
        if self.done:
            return
        attempt = self.attempt
        if attempt is not None:
            attempt.settle()
            stream = attempt.stream
            stream.conn.reset(stream, CANCEL if error_code == CONNECTION_LOST else error_code)
        self.finish(CANCELLED, "cancelled by caller")

    def _hold(self, frame: tuple) -> None:
        """A request frame that came before the first upstream stream: sent on when that opens."""
        if self.backlog is None:
            self.backlog = []
        self.backlog.append(frame)

    # ---- upstream -> caller ------------------------------------------------------------------

    def response_headers(self, headers, end_stream: bool) -> None:
        down = self.down
        if self.done:
            return
        down.conn.send_headers(down, headers, end_stream)
        self.headers_sent = True
        if end_stream:
            status, message = status_of(headers)
            self.finish(UNKNOWN if status is None else status, decode_message(message))

    def upstream_reset(self, error_code: int) -> None:
        """The upstream stream ended abnormally after the response had started."""
        if error_code == CONNECTION_LOST:
            self.fail(UNAVAILABLE, "upstream connection lost", CONNECTION_LOST_ERROR)
        else:
            self._reset_caller(error_code)

    def fail(self, status: int, message: str, proxy_error: str) -> None:
        """The proxy ends the call itself: trailers-only (or trailers, after headers) naming its error."""
        if self.done:
            return
        self.proxy_error = proxy_error
        down = self.down
        if down.conn.streams.get(down.id) is down and not down.local_closed:
            headers = trailers_only(status, message, proxy_error)
            down.conn.send_headers(down, headers[2:] if self.headers_sent else headers, True)
        self.finish(status, message)

    def _reset_caller(self, error_code: int) -> None:
        down = self.down
        down.conn.reset(down, error_code)
        self.finish(CANCELLED if error_code == CANCEL else INTERNAL, f"upstream reset the stream (HTTP/2 error {error_code})")

    # ---- the end: clean up both streams, free the slot, record the span ---------------------

    def finish(self, status: int, message: str) -> None:
        if self.done:
            return
        self.done = True
        self.stack.deadlines.pending.discard(self)
        self.status = status
        self.message = message
        down = self.down
        if down.conn.streams.get(down.id) is down and down.local_closed:
            down.conn.reset(down, NO_ERROR)  # we answered before the caller finished sending: stop it
        waiting = self.waiting
        if waiting is not None:
            self.waiting = None
            waiting.cancel()
        attempt = self.attempt
        destination = self.destination
        if attempt is not None:
            attempt.settle()
            up = attempt.stream
            if up.conn.streams.get(up.id) is up:
                up.conn.reset(up, CANCEL)
            if status == OK:
                if attempt.endpoint.breaker.consecutive_failures:  # else a success changes nothing
                    attempt.endpoint.breaker.success()
            elif not self.proxy_error and grpc_retryable(status, destination.policy.grpc_retryable):
                self.endpoint_failed(attempt.endpoint, attempt.ewma_t0)
            self.attempt = None  # it refers back to this call; both go as soon as nothing else holds them
        self.backlog = self.replay = None
        if self.admitted:
            destination.admission.release()
        ended = monotonic_ns()
        stack = self.stack
        if stack.metrics is not None:
            stack.metrics.observe_request(
                stack.direction, destination.name if destination is not None else "",
                self.endpoint.address if self.endpoint is not None else "",
                0, self.proxy_error, (ended - self.started) / 1e9, self.retries, status,
            )
        if self.sampled:
            stack.recorder.record(self._span(ended))

    def _span(self, ended: int) -> tuple:
        names = _PATH_NAMES.get(self.path)
        if names is None:
            names = _path_names(self.path)
        name, rpc_attributes = names
        stack = self.stack
        attributes = [
            *rpc_attributes,
            (RPC_GRPC_STATUS, self.status),
            (DIRECTION, stack.direction),
            (QUEUE_NS, self.queue_ns),
            (RETRIES, self.retries),
        ]
        if stack.span_kind == KIND_CLIENT and self.destination is not None:
            attributes.append((PEER_SERVICE, self.destination.name))
        if self.endpoint is not None:
            attributes += [
                (ENDPOINT, self.endpoint.address),
                (ENDPOINT_LOAD, self.endpoint_load),
                (CONNECT_NS, self.connect_ns),
                (CONNECTION_REUSED, self.reused),
                (RETRY_DELAY_NS, self.retry_delay_ns),
            ]
        if self.first_byte_ns:
            attributes += [
                (FIRST_BYTE_NS, self.first_byte_ns - self.sent_ns),
                (BODY_NS, ended - self.first_byte_ns),
            ]
        if self.proxy_error:
            attributes.append((PROXY_ERROR, self.proxy_error))
            attributes.append((ERROR_TYPE, self.proxy_error))
        failed = self.status != OK
        return (
            self.ctx.trace_id, self.span_id, self.ctx.parent_id, name, stack.span_kind, self.start_ns, ended - self.started,
            STATUS_ERROR if failed else STATUS_UNSET, self.message if failed else "",
            tuple(attributes),
        )

