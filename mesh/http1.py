"""HTTP/1.1 on both sides of the proxy: the downstream server connection and the upstream client connection.

A proxy must relay messages without holding them whole and at a few microseconds each (aiohttp costs
~150 µs per proxied request here), so these are raw asyncio protocols around httptools (llhttp, C):
the parser finds the message boundaries, these classes do framing, keep-alive, pipelining order,
interim responses and flow control, and hand each request to an exchange (``mesh.relay``) that
decides where it goes. Neither protocol knows about tracing or load balancing.

Framing rules the relay relies on:
- header fields are forwarded as they came (names keep their case and are compared without it);
  hop-by-hop headers (``Connection`` and the ones it names, ``Keep-Alive``, ``TE``, ``Trailer``,
  ``Transfer-Encoding``, ``Upgrade``, ``Proxy-Connection``) never cross the proxy
  (``mesh/_http1_heads.c``); bodies are re-framed per hop (Content-Length kept, else chunked);
- writes made while a protocol is parsing one read are batched into one ``transport.write``.

The common message, a keep-alive request or a Content-Length response that arrives whole in one read,
skips llhttp: ``whole_request`` / ``whole_response`` (``mesh/_http1_heads.c``) check it more strictly
than llhttp would and hand over its pieces in one call (llhttp's callbacks cost a Python call each).
Whatever they refuse goes to llhttp unchanged, and they are only tried while llhttp is between messages.

Both classes are compiled as extension types (``http1.pxd``, setup.py), typed together with the
exchange they carry. They are asyncio protocols by their methods, not by inheritance: an extension
type cannot derive from ``asyncio.Protocol``, a Python class.
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools
from cython.cimports.cpython.time import monotonic, monotonic_ns  # C calls, no Python call per read
from cython.cimports.mesh.relay import new_exchange  # a C call (relay and this module type each other)

from mesh._http1_heads import response_head, whole_request, whole_response
from mesh.http1_framing import PAUSE_PIPELINE, PAUSE_UPSTREAM_FULL, error_response

MAX_HEAD_BYTES = 64 * 1024  # request line/status line plus headers (checked per read, so approximately)
MAX_HEADERS = 128

class HeadTooLarge(Exception):
    """Raised from a parser callback when a message head has more than MAX_HEADERS fields."""


class Http1Server:
    """One downstream connection. Requests are answered in order; each becomes an exchange."""

    def __init__(self, stack, on_close=None):
        self.stack = stack  # where the requests go (mesh.stack)
        self.on_close = on_close
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self.receiving = None  # exchange whose request is being parsed
        self.answering = None  # exchange whose response is being written
        self.waiting: deque = deque()  # pipelined exchanges behind `answering`
        self.paused = 0  # PAUSE_* bits
        self.closed = False
        self.eof = False
        self.lingering = False  # refused: reading only to discard, so the refusal is not lost to a reset
        self.write_buffer: list | None = None  # batched writes while parsing one read
        self.head_bytes = -1  # bytes read since a request head began; -1 outside heads
        self._url = b""
        self._headers: list = []

    # asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if self.head_bytes >= 0:
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._reject(431, "header_too_large")
                return
        elif self.receiving is None:
            # Between messages: a whole request in this read is taken without the parser.
            whole = whole_request(data)
            if whole is not None:  # a keep-alive request, handled as llhttp's callbacks would
                # (unbuffered: this read holds no other request whose answer could share the write)
                method, target, version, headers, body = whole
                self._request(method, target, version, headers, True, False)
                if body:
                    self.on_body(body)
                self.on_message_complete()
                return
        self.write_buffer = []
        try:
            self._parse(data)
        finally:
            self.flush()
        if self.head_bytes == 0:  # a head began in this read and is not complete: count all of it
            self.head_bytes = len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._reject(431, "header_too_large")

    def eof_received(self):
        # A half-closed client still gets its answers; the connection closes after them.
        self.eof = True
        if self.lingering:
            self.close()
            return False
        if self.receiving is not None:
            self.receiving.request_aborted("closed_mid_request")
            self.receiving = None
        return self.answering is not None

    def connection_lost(self, exc):
        self.closed = True
        for exchange in (self.receiving, self.answering, *self.waiting):
            if exchange is not None:
                exchange.downstream_lost()
        self.receiving = self.answering = None
        self.waiting.clear()
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self):
        if self.answering is not None:
            self.answering.downstream_full()

    def resume_writing(self):
        if self.answering is not None:
            self.answering.downstream_drained()

    # httptools callbacks (only for what whole_request leaves to llhttp) -------------------------
    def on_message_begin(self):
        self.head_bytes = 0
        self._url = b""

    def on_url(self, url: bytes):
        self._url += url  # in pieces when the URL is split across reads

    def on_header(self, name: bytes, value: bytes):
        self._headers.append((name, value))  # after the head: trailers, into a list nobody reads

    def on_headers_complete(self):
        headers = self._headers
        self._headers = []
        self.head_bytes = -1
        if len(headers) > MAX_HEADERS:
            raise HeadTooLarge()
        parser = self.parser
        self._request(
            parser.get_method(), self._url, parser.get_http_version(), headers, parser.should_keep_alive(),
            parser.should_upgrade(),
        )  # fmt: skip

    def _request(self, method, target, version, headers, keep_alive, upgrade) -> None:
        """A request head is in: its exchange starts, or waits behind the ones being answered."""
        exchange = new_exchange(self.stack, self, method, target, version, headers, keep_alive, upgrade)
        self.receiving = exchange
        if self.answering is None:
            self.answering = exchange
            exchange.start()
        else:
            self.waiting.append(exchange)
            self.pause(PAUSE_PIPELINE)

    def on_body(self, body: bytes):
        self.receiving.request_body(body)

    def on_message_complete(self):
        exchange = self.receiving
        if exchange is not None:
            self.receiving = None
            exchange.request_complete()
            if self.answering is None:
                self._answer_next()

    # used by the exchange ---------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.write_buffer is not None:
            self.write_buffer.append(data)
        elif not self.closed:
            self.transport.write(data)

    def flush(self) -> None:
        buffered = self.write_buffer
        self.write_buffer = None
        if buffered and not self.closed:
            self.transport.write(b"".join(buffered) if len(buffered) > 1 else buffered[0])

    def pause(self, reason: int) -> None:
        if not self.paused and not self.closed:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and not self.closed:
                self.transport.resume_reading()

    def exchange_finished(self, exchange, keep_alive: bool) -> None:
        """The response of ``exchange`` is fully written: start the next request's, or close."""
        if exchange is not self.answering:
            return
        self.answering = None
        if not keep_alive:
            if self.receiving is exchange:
                self.linger()  # answered before the request was read through (413, early app answer)
            else:
                self.close()
        elif self.receiving is not exchange and (self.waiting or self.eof):
            self._answer_next()  # else: nothing waits, or its body is still arriving, read and dropped

    def _answer_next(self) -> None:
        if self.waiting:
            self.answering = self.waiting.popleft()
            if not self.waiting:
                self.resume(PAUSE_PIPELINE)
            self.answering.start()
        elif self.eof:
            self.close()

    def linger(self, seconds: float = 2.0) -> None:
        """Close after a refusal without losing it: closing a socket with unread input sends a reset,
        which can destroy the response before the client reads it. So: send, half-close, and read
        (discarding) until the client closes or ``seconds`` pass."""
        self.flush()
        if self.closed or self.lingering:
            return
        self.lingering = True
        self.transport.write_eof()
        if self.paused:
            self.paused = 0
            self.transport.resume_reading()
        asyncio.get_running_loop().call_later(seconds, self.close)

    def close(self) -> None:
        self.flush()
        if not self.closed:
            self.closed = True
            self.transport.close()

    # refusals ---------------------------------------------------------------------------------
    def _reject(self, status: int, proxy_error: str) -> None:
        """Bad bytes on the connection: answer if nothing else is being answered, then close."""
        if self.receiving is not None:
            self.receiving.request_aborted(proxy_error)
            self.receiving = None
        self.waiting.clear()
        if self.answering is None:
            self.write(error_response(status, proxy_error, close=True))
            self.linger()
        else:
            self.answering.close_after = True
            self.pause(PAUSE_PIPELINE)

    def _parse(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # llhttp stops after an Upgrade/CONNECT request; the exchange refused the upgrade (see
            # relay.Exchange.start), so what follows is parsed as HTTP/1.1 again, by a fresh parser.
            self.parser = httptools.HttpRequestParser(self)
            rest = data[upgrade.args[0] :]
            if rest and not self.closed and not self.lingering:
                self._parse(rest)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._reject(431, "header_too_large")
            else:
                raise
        except httptools.HttpParserError as exc:
            self._reject(400, "malformed_request: " + str(exc).lower())


class Http1Client:
    """One upstream connection, owned by an endpoint pool; carries one exchange at a time."""

    def __init__(self, pool):
        self.pool = pool
        self.transport = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange = None
        self.closed = False
        self.idle_since = 0.0
        self.reusable = True
        self.first_byte_ns = 0
        self.head_bytes = -1  # bytes of a response head read so far; -1 outside heads
        self.head_buffer = b""  # the response head being read, from its first byte
        self.data = b""  # the read being parsed
        self.data_offset = 0  # where in it the next message starts (after an interim response)
        self.response_framing = 0  # HAS_CONTENT_LENGTH / HAS_TRANSFER_ENCODING of the response being read
        self._in_body = False
        self._expect_head_only = False
        self._parser_spent = False

    # asyncio callbacks ------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for (or a close notice): this connection is not reusable.
            self.reusable = False
            self.close()
            return
        downstream = exchange.downstream
        if self.head_bytes < 0:
            if not self._in_body:
                # Between messages: a whole response in this read is taken without the parser.
                whole = whole_response(data, self._expect_head_only)
                if whole is not None:  # relayed as llhttp's callbacks would, head and body in one write
                    status, message, framing, keep_alive, head_len = whole
                    if not self.first_byte_ns:
                        self.first_byte_ns = monotonic_ns()
                    if not keep_alive:
                        self.reusable = False
                    exchange.response_head(status, message, framing, head_len)
                    if self.exchange is exchange:  # else the exchange dropped this connection (a retry, an abort)
                        exchange.response_complete()
                    return
        else:
            self.head_buffer += data
            self.head_bytes += len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._fail("response_header_too_large")
                return
        self.data = data
        self.data_offset = 0
        if downstream.write_buffer is None:
            downstream.write_buffer = []
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("unrequested_upgrade")
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._fail("response_header_too_large")
            else:
                raise
        except httptools.HttpParserError as exc:
            self._fail("malformed_response: " + str(exc).lower())
        finally:
            downstream.flush()
        if self.head_bytes == 0:  # a head began in this read and is not complete: count all of it
            self.head_bytes = len(data)
            if self.head_bytes > MAX_HEAD_BYTES:
                self._fail("response_header_too_large")

    def connection_lost(self, exc):
        self.closed = True
        self.pool.discard(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            if self._in_body and not self.response_framing:  # no Content-Length, not chunked
                exchange.response_complete()  # the body was delimited by the connection's close
            else:
                exchange.upstream_failed("connection_reset" if exchange.response_started else "upstream_closed")

    def pause_writing(self):
        if self.exchange is not None:
            self.exchange.downstream.pause(PAUSE_UPSTREAM_FULL)

    def resume_writing(self):
        if self.exchange is not None:
            self.exchange.downstream.resume(PAUSE_UPSTREAM_FULL)

    # used by the exchange ---------------------------------------------------------------------
    def send(self, exchange, data: bytes, head_only_response: bool) -> None:
        if self._parser_spent:
            self.parser = httptools.HttpResponseParser(self)
            self._parser_spent = False
        self.exchange = exchange
        self.first_byte_ns = 0
        self._expect_head_only = head_only_response
        self.transport.write(data)

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    def release(self, reusable: bool) -> None:
        """The exchange is done with this connection: back among its pool's idle ones (when the pool
        keeps fewer than ``max_idle``), or closed. Done here rather than by a pool method: a call less
        per request."""
        self.exchange = None
        pool = self.pool
        if reusable and self.reusable and not self.closed and len(pool.idle) < pool.max_idle:
            self.idle_since = monotonic()
            pool.idle.append(self)
        else:
            self.close()

    def close(self) -> None:
        self.exchange = None
        if not self.closed:
            self.closed = True
            self.transport.close()
            self.pool.discard(self)

    def pause_reading(self):
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self):
        if not self.closed:
            self.transport.resume_reading()

    # httptools callbacks ----------------------------------------------------------------------
    # No on_header: a response head is relayed as the bytes it came in (hop-by-hop lines removed by
    # the exchange), which saves a Python call and a tuple per header field.
    def on_message_begin(self):
        if not self.first_byte_ns:
            self.first_byte_ns = monotonic_ns()
        self.head_bytes = 0
        self.head_buffer = self.data[self.data_offset :] if self.data_offset else self.data

    def on_headers_complete(self):
        buffer = self.head_buffer
        end = buffer.find(b"\r\n\r\n") + 4
        head = buffer[:end] if end < len(buffer) else buffer
        self.data_offset = len(self.data) - (len(buffer) - end)
        self.head_buffer = b""
        self.head_bytes = -1
        exchange = self.exchange
        if exchange is None:
            return
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            if status != 101:
                exchange.interim_response(head)
            return
        if not parser.should_keep_alive():
            self.reusable = False
        head, self.response_framing = response_head(head)
        exchange.response_head(status, head, self.response_framing, len(head))
        if self.exchange is not exchange:
            return  # the exchange dropped this connection (a retry, an abort)
        if self._expect_head_only:
            # A response to HEAD has no body whatever its Content-Length says; llhttp cannot be
            # told, so this parser is done and the next request gets a fresh one.
            self._parser_spent = True
            exchange.response_complete()
        else:
            self._in_body = True

    def on_body(self, body: bytes):
        if self._in_body and self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self):
        if self._in_body:
            self._in_body = False
            if self.exchange is not None:
                self.exchange.response_complete()

    def _fail(self, error: str) -> None:
        exchange = self.exchange
        self.reusable = False
        self.close()
        if exchange is not None:
            exchange.upstream_failed(error)
