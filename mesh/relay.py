"""One HTTP/1.1 request through the proxy, from the downstream request head to the last response byte.

The data path of both directions, read top to bottom:

    start: refuse what cannot be proxied -> resolve the destination -> continue/start the trace and
           rewrite its headers -> admission (shed) -> deadline -> attempt
    attempt: balancer pick (p2c peak-EWMA, ejected endpoints skipped) -> pooled or new connection
             -> send head and buffered body
    response: 502/503/504 or a failed connection -> retry when safe and within budget, after backoff
              -> otherwise relay head and body downstream, streaming, with back-pressure both ways
    finish: endpoint health and load, admission release, connection back to the pool, ONE span
            (encoded natively from the exchange's fields) and the metrics observation

It is a callback state machine, not a coroutine: a request costs no task, no future and no timer
(deadlines are swept by ``mesh.deadlines.Deadlines``). Only a new connection, a queued admission and a
retry's backoff go through the event loop. The module is compiled by Cython (``relay.pxd`` declares
``Exchange`` an extension type with typed fields, setup.py): the interpreter was most of the proxy's
CPU per request, and typed fields make the reads and calls above C struct reads and C calls.
"""

from __future__ import annotations

import asyncio

from cython.cimports.cpython.time import monotonic, monotonic_ns, time_ns  # C calls, no Python call per read

from mesh import trace_context
from mesh._http1_heads import HAS_CONTENT_LENGTH, field_pairs as _field_pairs, request_fields as _request_fields
from mesh._http1_heads import request_head as _request_head, response_head as _response_head
from mesh.http1_framing import LAST_CHUNK, PAUSE_UNSENT_BODY, PAUSE_UPSTREAM_FULL, chunk, error_response
from mesh.pool import ConnectError
from mesh.retry import CONNECT_FAILED, CONNECTION_LOST, MAX_REPLAY_BODY, backoff, http_retryable
from mesh.shed import Shed
from mesh.stack import authority_name
from spans.model import STATUS_ERROR, STATUS_UNSET

_extract = trace_context.extract
_from_traceparent = trace_context.from_traceparent
_trace_header_lines = trace_context.trace_header_lines
_traceparent_line = trace_context.traceparent_line
_new_trace_id = trace_context.new_trace_id
_new_span_id = trace_context.new_span_id
_HEAD = b"HEAD"
_CONNECT = b"CONNECT"
_HTTP_SCHEME = b"http://"
_SLASH = 0x2F  # b"/"[0]
_PAUSED_BY_EXCHANGE = PAUSE_UNSENT_BODY | PAUSE_UPSTREAM_FULL  # reasons to stop reading only an exchange lifts


class Exchange:
    """One request/response pair; created by the downstream connection when the request head is in."""

    # Instances come from ``new_exchange``.
    # start -------------------------------------------------------------------------------------
    def start(self) -> None:
        self.started = True
        stack = self.stack
        headers = self.headers
        # The forwarded fields as header lines, without hop-by-hop and trace headers (mesh/_http1_heads.c).
        try:
            lines, host, self.content_length, self.chunked, traced = _request_fields(headers, False)
        except ValueError as exc:  # Content-Length values that disagree, Connection naming too many fields
            self.join_trace(None)
            self.respond_locally(400, "malformed_request: " + str(exc).lower(), close=True)
            return
        if self.chunked or self.content_length > 0:
            self.request_done = self.message_complete
        if not traced:
            ctx = self.join_trace(None)
        elif traced is True:  # tracestate, B3 or several trace headers: the full rules
            ctx = self.join_trace(_extract(_field_pairs(headers)))
        else:  # the only trace header, a traceparent (its value): parsed without a walk over the headers
            ctx = self.join_trace(_from_traceparent(traced))
        span_id = self.span_id

        if self.upgrade:
            # Upgrades (WebSocket, h2c) and CONNECT tunnels are not proxied. A bodiless upgrade request
            # is served as plain HTTP/1.1 (Upgrade is hop-by-hop, the app never sees it); others are refused.
            if self.method == _CONNECT or not self.request_done:
                self.respond_locally(501, "upgrade_not_supported", close=True)
                return
        if self.content_length > stack.max_body_bytes:
            self.respond_locally(413, "request_too_large", close=True)
            return
        target = self.target
        authority = host
        if (not target or target[0] != _SLASH) and target[:7].lower() == _HTTP_SCHEME:  # absolute-form, as sent to an http_proxy
            slash = target.find(b"/", 7)
            authority = target[7:slash] if slash > 0 else target[7:]
            target = target[slash:] if slash > 0 else b"/"
            # the URI's authority wins over Host
            lines = _request_fields(headers, True)[0] + b"host: " + authority + b"\r\n"
        destination = self.destination = (
            stack.only_destination
            or stack.destination_by_authority.get(authority)
            or stack.resolve_authority(authority)
        )
        if destination is None:
            self.destination_name = authority_name(authority)
            self.respond_locally(502, "unknown_destination")
            return
        self.destination_name = destination.name

        trace_lines = (
            _trace_header_lines(ctx, span_id) if traced is True and ctx is not None
            # a new root's or a lone traceparent's context is W3C only: its one line, no wrapper call
            else _traceparent_line(self.trace_id, span_id, self.sampled)
        )  # fmt: skip
        self.forward_head = _request_head(self.method, target, lines, trace_lines, self.chunked)

        now = monotonic()
        destination.retry_budget.deposit(now)
        admission = destination.admission
        if admission.try_acquire():
            self.admitted = True
            self.attempt(now)
        else:
            stack.loop.create_task(self.wait_for_admission(admission))

    def join_trace(self, ctx):
        """This hop's span joins the caller's trace (``ctx``) as a child, or starts a new sampled trace
        when there is none (its ids drawn directly: a context object for it cost ~1,000 instructions per
        request); returns ``ctx``."""
        self.span_id = _new_span_id()
        if ctx is None:
            self.trace_id, self.parent_id, self.sampled = _new_trace_id(), "", True
        else:
            self.trace_id, self.parent_id, self.sampled = ctx.trace_id, ctx.parent_id, ctx.sampled
        return ctx

    async def wait_for_admission(self, admission) -> None:
        try:
            waited = await admission.acquire()
        except Shed as shed:
            if not self.finished:
                self.stack.metrics.observe_shed(self.stack.direction, self.destination_name, shed.reason)
                self.respond_locally(503, "shed_" + shed.reason)
            return
        if self.finished:  # the client went away while queued
            admission.release()
            return
        self.admitted = True
        self.queue_ns = int(waited * 1e9)
        self.attempt(monotonic())

    # attempt -----------------------------------------------------------------------------------
    def attempt(self, now: float | None = None) -> None:
        """Send the request to an endpoint. The first attempt, once admitted, is given ``now``, when the
        destination's timeout starts; a retry (after its backoff) is not."""
        if self.finished:
            return
        if now is None:
            now = monotonic()
        else:
            self.deadline = now + self.destination.policy.timeout_s
            self.stack.deadlines.pending.add(self)
        balancer = self.destination.balancer
        endpoint = balancer.pick(now, self.tried)
        if endpoint is None and self.tried:
            endpoint = balancer.pick(now)  # every endpoint tried: the best one again
        if endpoint is None:
            self.respond_locally(503, "no_endpoints")
            return
        self.endpoint = endpoint
        self.endpoint_load = endpoint.ewma.load_and_start(now)
        self.ewma_t0 = now
        pools = self.stack.pools
        pool = pools.by_address.get(endpoint.address) or pools.get(
            endpoint.address, self.destination.policy.connect_timeout_s
        )
        conn = pool.take_idle()
        if conn is not None:
            self.reused = True
            self.connect_ns = 0
            self.send(conn)
        else:
            self.reused = False
            self.connect_ns = monotonic_ns()
            self.stack.loop.create_task(pool.connect()).add_done_callback(self.connected)

    def connected(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if self.finished:
            if error is None:
                task.result().release(reusable=True)
            return
        if error is not None:
            self.upstream_failed(error.kind if isinstance(error, ConnectError) else "connect_error")
            return
        self.connect_ns = monotonic_ns() - self.connect_ns
        self.send(task.result())

    def send(self, conn) -> None:
        self.conn = conn
        body = self.body
        if body:
            parts = [self.forward_head]
            parts += map(chunk, body) if self.chunked else body
            if self.request_done and self.chunked:
                parts.append(LAST_CHUNK)
            data = b"".join(parts)
            if not self.replayable:
                self.body = None
        elif self.request_done and self.chunked:
            data = self.forward_head + LAST_CHUNK
        else:
            data = self.forward_head
        conn.send(self, data, self.method == _HEAD)
        self.sent_ns = monotonic_ns()
        if self.downstream.paused & PAUSE_UNSENT_BODY:
            self.downstream.resume(PAUSE_UNSENT_BODY)

    # request body (from downstream) ------------------------------------------------------------
    def request_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.body_bytes += len(data)
        if self.body_bytes > self.stack.max_body_bytes:
            self.fail("request_too_large", 413)
            return
        if self.replayable or self.conn is None:  # kept for a replay, or until there is a connection
            if self.body is None:
                self.body = [data]
            else:
                self.body.append(data)
            if self.body_bytes > MAX_REPLAY_BODY:
                self.replayable = False
        if self.conn is not None:
            self.conn.write(chunk(data) if self.chunked else data)
            if not self.replayable:
                self.body = None
        elif self.body_bytes > MAX_REPLAY_BODY:
            self.downstream.pause(PAUSE_UNSENT_BODY)

    def request_complete(self) -> None:
        self.message_complete = True
        if self.request_done:
            return
        self.request_done = True
        if not self.finished and self.conn is not None and self.chunked:
            self.conn.write(LAST_CHUNK)

    def request_aborted(self, reason: str) -> None:
        if not self.finished and self.started:
            self.abort("client_" + reason.split(":")[0])

    # response (from upstream) ------------------------------------------------------------------
    def interim_response(self, head: bytes) -> None:
        if self.version == "1.1":
            self.downstream.write(_response_head(head)[0])

    def response_head(self, status: int, message: bytes, framing: int, head_len: int) -> None:
        """Relay the response head: the upstream's bytes minus hop-by-hop lines, labelled HTTP/1.1
        (the first ``head_len`` bytes of ``message``; ``framing`` flags say how its body is delimited),
        plus our framing. A response read whole has its whole body after the head, relayed with it."""
        if status >= 502 and status <= 504 and self.retry(status, ""):
            return
        self.status = status
        self.response_started = True
        if self.deadline:  # the timeout bounds the wait for an answer, not a long stream's transfer
            self.stack.deadlines.pending.discard(self)
            self.deadline = 0.0
        if status >= 500:
            self.breaker_failure(monotonic())
        elif self.endpoint.breaker.consecutive_failures:  # else a success changes nothing (no call)
            self.endpoint.breaker.success()
        has_length = framing & HAS_CONTENT_LENGTH
        extra = b""
        if has_length or self.method == _HEAD or status == 204 or status == 304:
            pass  # Content-Length (if any) was forwarded as is
        elif self.version == "1.1":
            self.rechunk = True
            extra = b"transfer-encoding: chunked\r\n"
        else:
            self.close_after = True  # HTTP/1.0 client: the body ends when the connection does
        if self.close_after or not self.keep_alive:
            self.keep_alive = False
            extra += b"connection: close\r\n"
        elif self.version == "1.0":
            extra += b"connection: keep-alive\r\n"
        if head_len < len(message):
            self.response_bytes = len(message) - head_len
            if self.response_bytes > self.stack.max_body_bytes:
                self.abort("response_too_large")
                return
        self.downstream.write(message[: head_len - 2] + extra + message[head_len - 2 :] if extra else message)

    def response_body(self, data: bytes) -> None:
        self.response_bytes += len(data)
        if self.response_bytes > self.stack.max_body_bytes:
            self.abort("response_too_large")
            return
        self.downstream.write(chunk(data) if self.rechunk else data)

    def response_complete(self) -> None:
        if self.rechunk:
            self.downstream.write(LAST_CHUNK)
        self.finish(self.request_done)

    # failures ----------------------------------------------------------------------------------
    def upstream_failed(self, kind: str) -> None:
        """The connection to the endpoint failed (connect error, reset, bad response)."""
        if self.finished:
            return
        if self.response_started:
            self.abort(kind)
            return
        if self.retry(0, kind):
            return
        self.endpoint_failed()
        self.respond_locally(503 if kind.startswith("connect") else 502, kind)

    def retry(self, status: int, error: str) -> bool:
        """Try another attempt if it is safe, budgeted and in time; True when one is scheduled."""
        if error.startswith("connect"):
            error = CONNECT_FAILED  # nothing was sent: safe for any method
        elif error == "upstream_closed":
            error = CONNECTION_LOST  # sent, but no response byte came back
        if (
            self.finished
            or self.retries >= self.destination.policy.max_retries
            or not self.replayable
            # inbound retries only what never reached the app (or a stale pooled connection)
            or not (self.stack.retry_on_status or error == CONNECT_FAILED or (error and self.reused))
            or not http_retryable(self.method, status or None, error or None)
            or not self.destination.retry_budget.withdraw()
        ):
            return False
        self.endpoint_failed()
        self.tried = (*self.tried, self.endpoint)
        self.retries += 1
        delay = backoff(self.retries)
        self.retry_delay_ns += int(delay * 1e9)
        self.stack.loop.call_later(delay, self.attempt)
        return True

    def endpoint_failed(self) -> None:
        """The current attempt failed: the endpoint's health and load learn it; its connection is dropped."""
        endpoint = self.endpoint
        if endpoint is not None and self.ewma_t0 >= 0:
            now = monotonic()
            self.breaker_failure(now)
            endpoint.ewma.finish(self.ewma_t0, now)
            self.ewma_t0 = -1.0
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()

    def breaker_failure(self, now: float) -> None:
        breaker = self.endpoint.breaker
        ejections = breaker.ejections
        breaker.failure(now, self.ewma_t0)
        if breaker.ejections != ejections:
            self.stack.metrics.observe_ejection(self.destination_name, self.endpoint.address)

    def timed_out(self) -> None:
        self.stack.deadlines.pending.discard(self)
        if not self.finished:
            self.endpoint_failed()
            self.respond_locally(504, "timeout")

    def respond_locally(self, status: int, proxy_error: str, close: bool = False) -> None:
        """Answer on the proxy's own behalf (no upstream response was relayed)."""
        self.status = status
        self.error = proxy_error
        self.response_started = True
        close = close or not self.keep_alive
        self.keep_alive = not close
        self.downstream.write(error_response(status, proxy_error, close))
        self.finish(reusable=False)

    def fail(self, proxy_error: str, status: int) -> None:
        if self.response_started:
            self.abort(proxy_error)
        else:
            self.endpoint_failed()
            self.respond_locally(status, proxy_error, close=True)

    def abort(self, proxy_error: str) -> None:
        """Give up mid-exchange: both connections are closed, the error recorded."""
        self.error = self.error or proxy_error
        self.keep_alive = False
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.close()
        self.finish(reusable=False)
        self.downstream.close()

    # flow control ------------------------------------------------------------------------------
    def downstream_full(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def downstream_drained(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def downstream_lost(self) -> None:
        if not self.finished and self.started:
            self.error = self.error or "client_closed"
            conn = self.conn
            if conn is not None:
                self.conn = None
                conn.close()
            self.finish(reusable=False)

    # finish ------------------------------------------------------------------------------------
    def finish(self, reusable: bool) -> None:
        if self.finished:
            return
        self.finished = True
        end = monotonic_ns()
        stack = self.stack
        if self.deadline:
            stack.deadlines.pending.discard(self)
        if self.ewma_t0 >= 0:
            self.endpoint.ewma.finish(self.ewma_t0, end / 1e9)  # monotonic_ns() is time.monotonic()'s clock
        conn = self.conn
        first_byte_ns = 0
        if conn is not None:
            self.conn = None
            first_byte_ns = conn.first_byte_ns
            conn.release(reusable and not self.close_after)
        if self.admitted:
            self.destination.admission.release()
        downstream = self.downstream
        if downstream.paused & _PAUSED_BY_EXCHANGE:
            downstream.resume(_PAUSED_BY_EXCHANGE)
        self.record(end, first_byte_ns)
        downstream.exchange_finished(self, self.keep_alive and not self.close_after)

    def record(self, end: int, first_byte_ns: int) -> None:
        """ONE span (when sampled) and the metrics observation of the finished exchange."""
        stack = self.stack
        status = self.status
        error = self.error
        endpoint = self.endpoint
        destination = self.destination_name
        duration = end - self.t_start
        if self.sampled:
            sent = self.sent_ns
            stack.recorder.record_http(  # the span's fields, passed to the native encoder as C values
                self.trace_id,
                self.span_id,
                self.parent_id,
                stack.span_kind,
                self.start_ns,
                duration,
                STATUS_ERROR if status >= 500 or error else STATUS_UNSET,
                stack.span_attributes_cache.get(endpoint) or stack.span_attributes(destination, endpoint),
                self.method,
                self.target,
                self.queue_ns,
                self.connect_ns,
                self.reused,
                self.retries,
                self.retry_delay_ns,
                first_byte_ns - sent if first_byte_ns and sent else 0,
                end - first_byte_ns if first_byte_ns else 0,
                self.endpoint_load,
                status,
                error,
                error or (str(status) if status >= 500 else ""),  # error.type
            )
        stack.metrics.observe_request(
            stack.direction,
            destination,
            endpoint.address if endpoint is not None else "",
            status,
            error,
            duration / 1e9,
            self.retries,
        )


def new_exchange(stack, downstream, method, target, version, headers, keep_alive, upgrade) -> Exchange:
    """The exchange of a request whose head ``downstream`` (an ``Http1Server`` of ``stack``'s listener)
    has read. Fields not set here start as 0, False or None."""
    exchange = Exchange()
    exchange.stack = stack
    exchange.downstream = downstream
    exchange.method = method
    exchange.target = target
    exchange.version = version
    exchange.headers = headers  # as received: [(name, value)] from llhttp, field lines from whole_request
    exchange.keep_alive = keep_alive
    exchange.upgrade = upgrade
    exchange.start_ns = time_ns()
    exchange.t_start = monotonic_ns()
    exchange.request_done = True  # until a body is announced
    exchange.replayable = True  # body still holds the whole body received so far
    exchange.content_length = -1
    exchange.destination_name = ""
    exchange.forward_head = b""
    exchange.ewma_t0 = -1.0  # >= 0 while the endpoint counts this request as pending
    exchange.tried = ()
    exchange.error = ""
    return exchange
