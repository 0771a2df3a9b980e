"""HTTP/2 connections for the proxy's gRPC path, framed by hand because the relay must be cheap.

The `h2` package costs about 180 µs of CPU per unary call on each side of a connection here; a proxy
hop has two sides, which alone would keep gRPC far below 0.6x direct throughput. A relay needs much
less than a general HTTP/2 library: it never interprets bodies, only moves DATA frames from one stream
to another while honouring both peers' flow-control windows. So this module keeps HTTP/2 framing,
SETTINGS, PING, GOAWAY, RST_STREAM and flow control; header compression is `mesh.hpack_codec`.

Flow control is what bounds memory: receive credit (WINDOW_UPDATE) for bytes read from one peer is given
back only when those bytes have been written toward the other peer (``send_data(..., source=stream)``),
so a fast sender can never make the proxy buffer more than the windows it advertised, whatever the
message size. Writes are gathered per connection and flushed when the read that caused them is handled
(``Writes``), so many streams multiplexed on one connection share each system call.

Only h2c with prior knowledge is spoken (what gRPC clients use for insecure channels); the listener
recognises the client preface and hands the connection over (see ``PREFACE``).

The module is compiled by Cython (``http2.pxd``): the connections and streams are extension types with
typed fields, so the frame loop and the calls between a connection, its streams and their listeners
(``mesh.grpc``) are C code; the wire constants (frame types, flags, error codes, windows) are declared
there as C constants that Python code sees as plain ints. The connections are asyncio protocols by their
methods, not by inheritance: an extension type cannot derive from ``asyncio.Protocol``, a Python class.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
import time
from typing import Callable

import cython
from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_FromStringAndSize  # frames cut without slicing

from mesh.hpack_codec import HeaderDecoder, HeaderEncoder, HeaderError
from mesh.pool import ConnectError, split_address

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types, flags, error codes, settings identifiers and window sizes: ``http2.pxd``.

_SETTING = struct.Struct(">HI")
_UINT32 = struct.Struct(">I")
_RST_OR_GOAWAY = struct.Struct(">II")

Headers = list  # [(name: bytes, value: bytes), ...] in wire order, pseudo-headers first


def _uint32(data: bytes, pos: int) -> int:
    """The big-endian 32-bit number at ``data[pos:pos + 4]`` (the caller checked the length)."""
    return data[pos] << 24 | data[pos + 1] << 16 | data[pos + 2] << 8 | data[pos + 3]


class StreamListener:
    """What the owner of a stream hears (``mesh.grpc``'s calls and attempts derive from it, so a stream
    calls its listener in C). Data listeners must call ``stream.consumed(n)`` once the ``n`` bytes they
    were handed have been passed on (``send_data(..., source=stream)`` does it)."""

    def on_headers(self, headers: Headers, end_stream: bool) -> None:
        raise NotImplementedError

    def on_data(self, data: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def on_reset(self, error_code: int) -> None:
        raise NotImplementedError


class RequestHandler:
    """What a server connection hands every new stream to (``mesh.grpc``'s relay derives from it, so the
    call is a C call): ``on_request`` must set ``stream.listener``."""

    def on_request(self, stream: Stream, headers: Headers, end_stream: bool) -> None:
        raise NotImplementedError


class Stream:
    def __init__(self, conn: "H2Connection", stream_id: int, listener: StreamListener | None):
        self.id = stream_id
        self.conn = conn
        self.listener = listener
        self.send_window = conn.peer_initial_window
        self.recv_window = STREAM_WINDOW
        self.recv_unacked = 0
        # Frames waiting for send window, kept in order: (is_data, payload_or_headers, end_stream, source).
        self.pending: collections.deque | None = None
        self.local_closed = False
        self.remote_closed = False

    def consumed(self, nbytes: int) -> None:
        """``nbytes`` received on this stream were passed on: let the peer send that much more."""
        conn = self.conn
        conn.recv_unacked += nbytes
        if conn.recv_unacked >= CONNECTION_WINDOW // 2:
            conn.recv_window += conn.recv_unacked
            conn.write_frame(WINDOW_UPDATE, 0, 0, _UINT32.pack(conn.recv_unacked))
            conn.recv_unacked = 0
        if not self.remote_closed and conn.streams.get(self.id) is self:
            self.recv_unacked += nbytes
            if self.recv_unacked >= STREAM_WINDOW // 2:
                self.recv_window += self.recv_unacked
                conn.write_frame(WINDOW_UPDATE, 0, self.id, _UINT32.pack(self.recv_unacked))
                self.recv_unacked = 0


class Writes:
    """The connections of one relay with frames waiting to be written. Frames written while one of them
    handles a read (``reading``) go out as that read is done, together with every other frame it caused
    on any of these connections: one write per connection per read, and no loop callback (scheduling a
    flush cost ~2,500 instructions, and a relayed call made two). Frames written at any other time (a
    timer, a connect, a queued admission) are flushed by a callback on the next turn of the loop."""

    def __init__(self) -> None:
        self.reading = False
        self.dirty: list[H2Connection] = []

    def flush(self) -> None:
        dirty = self.dirty
        for conn in dirty:
            conn._flush()
        dirty.clear()


class H2Connection:
    """One HTTP/2 connection, either side; subclasses decide who opens streams. Connections sharing
    ``writes`` (one relay's) flush together (``Writes``)."""

    def __init__(self, client_side: bool, on_close: Callable | None = None, writes: Writes | None = None) -> None:
        self.client_side = client_side
        self.writes = Writes() if writes is None else writes
        self.on_close = on_close  # told once when the connection is gone (or, on a client, leaves the pool)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.streams: dict[int, Stream] = {}
        self.closed = False
        self.going_away = False  # GOAWAY sent or received: no new streams
        self._buffer = b""
        self._awaiting_preface = not client_side
        self._header_block: tuple[int, int, list[bytes]] | None = None  # stream id, flags, fragments
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._blocked: dict[int, Stream] = {}  # streams waiting for connection send window
        self.encoder = HeaderEncoder()
        self.decoder = HeaderDecoder(max_header_list_size=MAX_HEADER_LIST_SIZE)
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_MAX_FRAME
        self.peer_max_streams = MAX_WINDOW
        self.send_window = DEFAULT_WINDOW
        self.recv_window = CONNECTION_WINDOW
        self.recv_unacked = 0

    # ---- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        if self.client_side:
            self._out.append(PREFACE)
        settings = [(SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW), (SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS_ACCEPTED)]
        if self.client_side:
            settings.append((SETTINGS_ENABLE_PUSH, 0))
        self.write_frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(key, value) for key, value in settings))
        self.write_frame(WINDOW_UPDATE, 0, 0, _UINT32.pack(CONNECTION_WINDOW - DEFAULT_WINDOW))

    def eof_received(self) -> None:
        """The peer half-closed: the transport closes, and ``connection_lost`` ends every stream."""

    def pause_writing(self) -> None:
        """Nothing to pause: flow control already bounds what the proxy writes ahead of a peer."""

    def resume_writing(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.going_away = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            self._drop_pending(stream)
            if stream.listener is not None:
                self._tell_reset(stream, CONNECTION_LOST)
        if self.on_close is not None:
            self.on_close(self)

    def data_received(self, data: bytes) -> None:
        writes = self.writes
        writes.reading = True
        try:
            self._read(data)
        finally:
            writes.reading = False
            writes.flush()

    def _read(self, data: bytes) -> None:
        if self._buffer:
            data = self._buffer + data
        if self._awaiting_preface:
            if len(data) < len(PREFACE):
                self._buffer = data
                return
            if not data.startswith(PREFACE):
                self.close_with(PROTOCOL_ERROR)
                return
            data = data[len(PREFACE):]
            self._awaiting_preface = False
        pos = 0
        size = len(data)
        buf = cython.cast(cython.p_uchar, PyBytes_AS_STRING(data))  # data's bytes, read below ``size`` only
        while size - pos >= 9:
            length = buf[pos] << 16 | buf[pos + 1] << 8 | buf[pos + 2]
            frame_type = buf[pos + 3]
            flags = buf[pos + 4]
            stream_id = (buf[pos + 5] & 0x7F) << 24 | buf[pos + 6] << 16 | buf[pos + 7] << 8 | buf[pos + 8]
            if length > DEFAULT_MAX_FRAME:  # we never advertise a larger SETTINGS_MAX_FRAME_SIZE
                self.close_with(FRAME_SIZE_ERROR)
                return
            end = pos + 9 + length
            if end > size:
                break
            payload = PyBytes_FromStringAndSize(PyBytes_AS_STRING(data) + pos + 9, length)
            pos = end
            self._handle_frame(frame_type, flags, stream_id, payload)
            if self.closed:
                return
        self._buffer = data[pos:] if pos < size else b""

    # ---- frames in ------------------------------------------------------------------------

    def _handle_frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        if self._header_block is not None and frame_type != CONTINUATION:
            self.close_with(PROTOCOL_ERROR)
        elif frame_type == DATA:
            self._on_data(flags, stream_id, payload)
        elif frame_type == HEADERS:
            self._on_headers(flags, stream_id, payload)
        elif frame_type == WINDOW_UPDATE:
            if len(payload) != 4:
                self.close_with(FRAME_SIZE_ERROR)
            else:
                self._on_window_update(stream_id, payload)
        elif frame_type == SETTINGS:
            if len(payload) % 6:
                self.close_with(FRAME_SIZE_ERROR)
            elif not flags & FLAG_ACK:
                self._on_settings(payload)
        elif frame_type == PING:
            if len(payload) != 8:
                self.close_with(FRAME_SIZE_ERROR)
            elif not flags & FLAG_ACK:
                self.write_frame(PING, FLAG_ACK, 0, payload)
        elif frame_type == RST_STREAM:
            if len(payload) != 4:
                self.close_with(FRAME_SIZE_ERROR)
                return
            stream = self.streams.pop(stream_id, None)
            if stream is not None:
                self._blocked.pop(stream_id, None)
                self._drop_pending(stream)
                self._tell_reset(stream, _uint32(payload, 0))
                self.close_when_idle()
        elif frame_type == GOAWAY:
            if len(payload) < 8:
                self.close_with(FRAME_SIZE_ERROR)
            else:
                self._on_goaway(payload)
        elif frame_type == CONTINUATION:
            self._on_continuation(flags, stream_id, payload)
        elif frame_type == PUSH_PROMISE:
            self.close_with(PROTOCOL_ERROR)  # push is disabled in our settings
        # PRIORITY and unknown frame types are ignored, as the spec requires.

    def _on_data(self, flags: int, stream_id: int, payload: bytes) -> None:
        flow_length = len(payload)
        self.recv_window -= flow_length
        if self.recv_window < 0:
            self.close_with(FLOW_CONTROL_ERROR)
            return
        if flags & FLAG_PADDED:
            if not flow_length or payload[0] >= flow_length:
                self.close_with(PROTOCOL_ERROR)  # padding as long as the frame (RFC 9113 6.1)
                return
            payload = payload[1:flow_length - payload[0]]
        stream = self.streams.get(stream_id)
        if stream is None or stream.remote_closed:
            # Late data for a stream we already reset: only the connection window needs its credit back.
            self._credit_connection(flow_length)
            return
        stream.recv_window -= flow_length
        listener = stream.listener  # (let go of as the stream closes)
        if stream.recv_window < 0:
            self.reset(stream, FLOW_CONTROL_ERROR)
            listener.on_reset(FLOW_CONTROL_ERROR)
            return
        if flow_length != len(payload):
            stream.consumed(flow_length - len(payload))
        end_stream = bool(flags & FLAG_END_STREAM)
        if end_stream:
            self._remote_closed(stream)
        listener.on_data(payload, end_stream)

    def _credit_connection(self, nbytes: int) -> None:
        self.recv_unacked += nbytes
        if self.recv_unacked >= CONNECTION_WINDOW // 2:
            self.recv_window += self.recv_unacked
            self.write_frame(WINDOW_UPDATE, 0, 0, _UINT32.pack(self.recv_unacked))
            self.recv_unacked = 0

    def _on_headers(self, flags: int, stream_id: int, payload: bytes) -> None:
        start = 0
        end = len(payload)
        if flags & FLAG_PADDED:
            start = 1
            end -= payload[0] if end else 0
        if flags & FLAG_PRIORITY:
            start += 5
        if end < start:
            self.close_with(PROTOCOL_ERROR)  # padding or priority longer than the frame (RFC 9113 6.2)
            return
        fragment = payload[start:end]
        if flags & FLAG_END_HEADERS:
            self._headers_complete(stream_id, flags, fragment)
        else:
            self._header_block = (stream_id, flags, [fragment])

    def _on_continuation(self, flags: int, stream_id: int, payload: bytes) -> None:
        if self._header_block is None or self._header_block[0] != stream_id:
            self.close_with(PROTOCOL_ERROR)
            return
        self._header_block[2].append(payload)
        if flags & FLAG_END_HEADERS:
            block_stream, block_flags, fragments = self._header_block
            self._header_block = None
            self._headers_complete(block_stream, block_flags, b"".join(fragments))

    def _headers_complete(self, stream_id: int, flags: int, block: bytes) -> None:
        try:
            headers = self.decoder.decode(block)
        except HeaderError:
            self.close_with(COMPRESSION_ERROR)  # the shared table is now unusable
            return
        end_stream = bool(flags & FLAG_END_STREAM)
        stream = self.streams.get(stream_id)
        if stream is None:
            self._new_remote_stream(stream_id, headers, end_stream)
            return
        if stream.remote_closed:
            self.reset(stream, STREAM_CLOSED)
            return
        listener = stream.listener  # (let go of as the stream closes)
        if end_stream:
            self._remote_closed(stream)
        listener.on_headers(headers, end_stream)

    def _new_remote_stream(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        """Headers for a stream we don't know: a new request on a server, a stale response on a client."""

    def _on_settings(self, payload: bytes) -> None:
        for offset in range(0, len(payload), 6):
            key = payload[offset] << 8 | payload[offset + 1]
            value = _uint32(payload, offset + 2)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    self.close_with(FLOW_CONTROL_ERROR)
                    return
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.streams.values():
                    stream.send_window += delta
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self.peer_max_frame = value
            elif key == SETTINGS_HEADER_TABLE_SIZE:
                self.encoder.set_peer_table_size(value)
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
        self.write_frame(SETTINGS, FLAG_ACK, 0, b"")
        for stream in list(self.streams.values()):
            if stream.pending:
                self._flush_stream(stream)

    def _on_window_update(self, stream_id: int, payload: bytes) -> None:
        increment = _uint32(payload, 0) & 0x7FFFFFFF
        if stream_id == 0:
            self.send_window += increment
            if not self._blocked:
                return
            blocked, self._blocked = self._blocked, {}
            for stream in blocked.values():
                if self.streams.get(stream.id) is stream:
                    self._flush_stream(stream)
            return
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.send_window += increment
            if stream.pending:
                self._flush_stream(stream)

    def _on_goaway(self, payload: bytes) -> None:
        last_stream_id = _uint32(payload, 0) & 0x7FFFFFFF
        self.going_away = True
        # Streams we opened beyond the peer's last one were never processed: safe to retry elsewhere.
        for stream_id in [sid for sid in self.streams if sid > last_stream_id and self._is_local(sid)]:
            stream = self.streams.pop(stream_id)
            self._drop_pending(stream)
            self._tell_reset(stream, REFUSED_STREAM)
        self.close_when_idle()

    def _is_local(self, stream_id: int) -> bool:
        return (stream_id & 1) == (1 if self.client_side else 0)

    # ---- frames out -----------------------------------------------------------------------

    def write_frame(self, frame_type: int, flags: int, stream_id: int, payload: bytes) -> None:
        length = len(payload)
        # the 9-byte frame head (RFC 9113 4.1), written into ``head``, a C array (http2.pxd)
        head[0] = length >> 16
        head[1] = length >> 8
        head[2] = length
        head[3] = frame_type
        head[4] = flags
        head[5] = stream_id >> 24
        head[6] = stream_id >> 16
        head[7] = stream_id >> 8
        head[8] = stream_id
        self._out.append(head[:9])
        if length:
            self._out.append(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self.writes.reading:
                self.writes.dirty.append(self)
            else:
                self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        transport = self.transport
        if transport is not None and not self.closed and not transport.is_closing():
            transport.write(b"".join(out))

    def send_headers(self, stream: Stream, headers: Headers, end_stream: bool = False) -> None:
        if stream.pending:
            stream.pending.append((False, headers, end_stream, None))
            return
        self._write_headers(stream, headers, end_stream)

    def _write_headers(self, stream: Stream, headers: Headers, end_stream: bool) -> None:
        block = self.encoder.encode(headers)
        flags = FLAG_END_STREAM if end_stream else 0
        max_frame = self.peer_max_frame
        if len(block) <= max_frame:
            self.write_frame(HEADERS, flags | FLAG_END_HEADERS, stream.id, block)
        else:
            self.write_frame(HEADERS, flags, stream.id, block[:max_frame])
            for offset in range(max_frame, len(block), max_frame):
                last = offset + max_frame >= len(block)
                self.write_frame(CONTINUATION, FLAG_END_HEADERS if last else 0, stream.id, block[offset:offset + max_frame])
        if end_stream:
            self._local_closed(stream)

    def send_data(self, stream: Stream, data: bytes, end_stream: bool = False, source: Stream | None = None) -> None:
        """Queue ``data`` on ``stream``; ``source`` (where it was read from) gets credit as it is sent."""
        size = len(data)
        if not stream.pending and 0 < size <= stream.send_window and size <= self.send_window and size <= self.peer_max_frame:
            stream.send_window -= size  # the common case: it fits, send it now
            self.send_window -= size
            self.write_frame(DATA, FLAG_END_STREAM if end_stream else 0, stream.id, data)
            if source is not None:
                source.consumed(size)
            if end_stream:
                self._local_closed(stream)
            return
        if stream.pending is None:
            stream.pending = collections.deque()
        stream.pending.append((True, data, end_stream, source))
        self._flush_stream(stream)

    def _flush_stream(self, stream: Stream) -> None:
        pending = stream.pending
        while pending:
            is_data, payload, end_stream, source = pending[0]
            if not is_data:
                pending.popleft()
                self._write_headers(stream, payload, end_stream)
                continue
            size = len(payload)
            allowed = min(stream.send_window, self.send_window, self.peer_max_frame)
            if size and allowed <= 0:
                if self.send_window <= 0:
                    self._blocked[stream.id] = stream
                return
            if size <= allowed:
                pending.popleft()
                chunk = payload
                last = end_stream
            else:
                chunk = payload[:allowed]
                pending[0] = (True, payload[allowed:], end_stream, source)
                last = False
            sent = len(chunk)
            stream.send_window -= sent
            self.send_window -= sent
            self.write_frame(DATA, FLAG_END_STREAM if last else 0, stream.id, chunk)
            if source is not None and sent:
                source.consumed(sent)
            if last:
                self._local_closed(stream)

    def reset(self, stream: Stream, error_code: int) -> None:
        """Send RST_STREAM and forget the stream (its listener is not told: the caller knows)."""
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self._blocked.pop(stream.id, None)
            self._drop_pending(stream)
            if not self.closed:
                self.write_frame(RST_STREAM, 0, stream.id, _UINT32.pack(error_code))
            self._stream_closed(stream)

    def _drop_pending(self, stream: Stream) -> None:
        """Queued data will never be sent: give its sources their credit back anyway."""
        pending, stream.pending = stream.pending, None
        while pending:
            is_data, payload, _end, source = pending.popleft()
            if is_data and source is not None and payload:
                source.consumed(len(payload))

    def _local_closed(self, stream: Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream)

    def _remote_closed(self, stream: Stream) -> None:
        stream.remote_closed = True
        if stream.local_closed:
            self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self._stream_closed(stream)

    def _stream_closed(self, stream: Stream) -> None:
        """The stream is done and hears nothing more, so it lets go of its listener: a listener (a gRPC
        call) refers back to its stream, and a pair that kept each other would wait for the garbage
        collector."""
        stream.listener = None
        self.close_when_idle()

    def _tell_reset(self, stream: Stream, error_code: int) -> None:
        """A stream ended by the peer or with the connection (already out of ``streams``): its listener
        hears why and is let go of, as in ``_stream_closed``."""
        listener = stream.listener
        stream.listener = None
        listener.on_reset(error_code)

    def close_when_idle(self) -> None:
        if self.going_away and not self.streams and not self.closed and self.transport is not None:
            self._flush()
            self.transport.close()

    def close_with(self, error_code: int) -> None:
        """Connection error: GOAWAY with ``error_code``, then close; every open stream hears CONNECTION_LOST."""
        if self.closed or self.transport is None:
            return
        self.write_frame(GOAWAY, 0, 0, _RST_OR_GOAWAY.pack(self._last_peer_stream_id(), error_code))
        self._flush()
        self.transport.close()
        self.connection_lost(None)

    def _last_peer_stream_id(self) -> int:
        return 0


class H2ServerConnection(H2Connection):
    """The side toward a caller: every new stream is handed to ``requests.on_request``."""

    def __init__(self, requests: RequestHandler, on_close: Callable[["H2ServerConnection"], None] | None = None,
                 writes: Writes | None = None):
        H2Connection.__init__(self, False, on_close, writes)
        self.requests = requests
        self.last_stream_id = 0

    def _new_remote_stream(self, stream_id: int, headers: Headers, end_stream: bool) -> None:
        if stream_id <= self.last_stream_id or not stream_id & 1:
            if stream_id > self.last_stream_id:
                self.close_with(PROTOCOL_ERROR)
            return  # headers for a stream we already closed; decoding kept the HPACK state in sync
        self.last_stream_id = stream_id
        stream = Stream(self, stream_id, None)
        if self.going_away or len(self.streams) >= MAX_STREAMS_ACCEPTED:
            self.write_frame(RST_STREAM, 0, stream_id, _UINT32.pack(REFUSED_STREAM))
            return
        self.streams[stream_id] = stream
        stream.remote_closed = end_stream
        self.requests.on_request(stream, headers, end_stream)

    def _last_peer_stream_id(self) -> int:
        return self.last_stream_id

    def shutdown(self) -> None:
        """Graceful stop: refuse new streams, let open ones finish, then close."""
        if self.closed or self.transport is None:
            return
        self.going_away = True
        self.write_frame(GOAWAY, 0, 0, _RST_OR_GOAWAY.pack(self.last_stream_id, NO_ERROR))
        self.close_when_idle()


class H2ClientConnection(H2Connection):
    """The side toward an upstream: opens streams with ``open_stream(listener)``."""

    def __init__(self, address: str, on_close: Callable[["H2ClientConnection"], None] | None = None,
                 writes: Writes | None = None):
        H2Connection.__init__(self, True, on_close, writes)
        self.address = address
        self.next_stream_id = 1

    @property
    def available(self) -> bool:
        return (not self.going_away and len(self.streams) < self.peer_max_streams
                and self.next_stream_id < LAST_CLIENT_STREAM_ID)

    def open_stream(self, listener: StreamListener) -> Stream:
        stream = Stream(self, self.next_stream_id, listener)
        self.next_stream_id += 2
        self.streams[stream.id] = stream
        return stream

    def _on_goaway(self, payload: bytes) -> None:
        H2Connection._on_goaway(self, payload)
        if self.on_close is not None:
            self.on_close(self)  # out of the pool now; open streams still finish


class H2Pool:
    """Multiplexed upstream connections per endpoint address: one is enough until the peer's
    MAX_CONCURRENT_STREAMS fills it, then another is opened. Its connections flush with ``writes``."""

    def __init__(self, writes: Writes | None = None) -> None:
        self.writes = Writes() if writes is None else writes
        self._connections: dict[str, list[H2ClientConnection]] = {}
        self._connecting: dict[str, asyncio.Future] = {}

    def reusable(self, address: str) -> H2ClientConnection | None:
        for conn in self._connections.get(address, ()):
            if conn.available:
                return conn
        return None

    async def connect(self, address: str, timeout_s: float) -> tuple[H2ClientConnection, int]:
        """A connection to ``address`` and the nanoseconds spent connecting (0 when one was reused)."""
        conn = self.reusable(address)
        if conn is not None:
            return conn, 0
        started = time.monotonic_ns()
        waiting = self._connecting.get(address)
        if waiting is None:
            waiting = asyncio.ensure_future(self._open(address, timeout_s))
            self._connecting[address] = waiting
            waiting.add_done_callback(lambda _f: self._connecting.pop(address, None))
        conn = await asyncio.shield(waiting)
        return conn, time.monotonic_ns() - started

    async def _open(self, address: str, timeout_s: float) -> H2ClientConnection:
        host, port = split_address(address)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout_s):
                _transport, conn = await loop.create_connection(lambda: H2ClientConnection(address, self._discard, self.writes), host, port)
        except TimeoutError:
            raise ConnectError("connect_timeout", f"{address} after {timeout_s:g}s") from None
        except OSError as exc:
            raise ConnectError("connect_refused", f"{address}: {exc.strerror or exc}") from None
        self._connections.setdefault(address, []).append(conn)
        return conn

    def _discard(self, conn: H2ClientConnection) -> None:
        conns = self._connections.get(conn.address)
        if conns and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        """No new streams; each connection closes as soon as its streams in flight are done."""
        for conns in self._connections.values():
            for conn in list(conns):
                conn.going_away = True
                conn.close_when_idle()
        self._connections.clear()
