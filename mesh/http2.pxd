# Types for Cython (see setup.py): every frame of every relayed gRPC call.
cimport cython

from mesh.hpack_codec cimport HeaderDecoder, HeaderEncoder

# Wire constants (RFC 9113): C constants here and in the modules that cimport them, plain ints to Python.
cpdef enum:
    # frame types (section 6)
    DATA = 0x0
    HEADERS = 0x1
    PRIORITY = 0x2
    RST_STREAM = 0x3
    SETTINGS = 0x4
    PUSH_PROMISE = 0x5
    PING = 0x6
    GOAWAY = 0x7
    WINDOW_UPDATE = 0x8
    CONTINUATION = 0x9
    # flags
    FLAG_END_STREAM = 0x1
    FLAG_ACK = 0x1
    FLAG_END_HEADERS = 0x4
    FLAG_PADDED = 0x8
    FLAG_PRIORITY = 0x20
    # error codes (section 7)
    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    # not a wire code: what stream listeners are told when the whole connection went away
    CONNECTION_LOST = -1
    # settings identifiers
    SETTINGS_HEADER_TABLE_SIZE = 0x1
    SETTINGS_ENABLE_PUSH = 0x2
    SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
    SETTINGS_INITIAL_WINDOW_SIZE = 0x4
    SETTINGS_MAX_FRAME_SIZE = 0x5
    DEFAULT_WINDOW = 65535
    DEFAULT_MAX_FRAME = 16384
    MAX_WINDOW = 0x7FFFFFFF
    # what we let each peer send ahead of our forwarding it: per stream and per connection
    STREAM_WINDOW = 1 << 20
    CONNECTION_WINDOW = 8 << 20
    MAX_STREAMS_ACCEPTED = 1000
    MAX_HEADER_LIST_SIZE = 256 * 1024
    LAST_CLIENT_STREAM_ID = 0x7FFFFFFF

cdef unsigned long _uint32(bytes data, Py_ssize_t pos) except? 0

cdef class StreamListener:
    cpdef on_headers(self, list headers, bint end_stream)
    cpdef on_data(self, bytes data, bint end_stream)
    cpdef on_reset(self, int error_code)

cdef class RequestHandler:
    cpdef on_request(self, Stream stream, list headers, bint end_stream)

cdef class Stream:
    cdef public long id
    cdef public H2Connection conn
    cdef public StreamListener listener
    cdef public long long send_window, recv_window, recv_unacked
    cdef public object pending
    cdef public bint local_closed, remote_closed
    @cython.locals(conn=H2Connection)
    cpdef consumed(self, Py_ssize_t nbytes)

cdef class Writes:
    cdef public bint reading
    cdef public list dirty
    @cython.locals(conn=H2Connection)
    cpdef flush(self)

cdef class H2Connection:
    cdef public Writes writes
    cdef public bint client_side, closed, going_away, _awaiting_preface, _flush_scheduled
    cdef public object on_close, transport, loop, _header_block
    cdef public dict streams, _blocked
    cdef public bytes _buffer
    cdef public list _out
    cdef public HeaderEncoder encoder
    cdef public HeaderDecoder decoder
    cdef public long long peer_initial_window, peer_max_frame, peer_max_streams, send_window, recv_window, recv_unacked
    @cython.locals(stream=Stream)
    cpdef connection_lost(self, exc)
    @cython.locals(writes=Writes)
    cpdef data_received(self, bytes data)
    @cython.locals(pos=Py_ssize_t, size=Py_ssize_t, length=Py_ssize_t, end=Py_ssize_t, frame_type=int, flags=int, stream_id=long,
                   buf=cython.p_uchar, payload=bytes)
    cdef _read(self, bytes data)
    @cython.locals(stream=Stream)
    cdef _handle_frame(self, int frame_type, int flags, long stream_id, bytes payload)
    @cython.locals(flow_length=Py_ssize_t, stream=Stream, end_stream=bint, listener=StreamListener)
    cdef _on_data(self, int flags, long stream_id, bytes payload)
    cdef _credit_connection(self, Py_ssize_t nbytes)
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t)
    cdef _on_headers(self, int flags, long stream_id, bytes payload)
    cdef _on_continuation(self, int flags, long stream_id, bytes payload)
    @cython.locals(stream=Stream, end_stream=bint, headers=list, listener=StreamListener)
    cdef _headers_complete(self, long stream_id, int flags, bytes block)
    cdef _new_remote_stream(self, long stream_id, list headers, bint end_stream)
    @cython.locals(stream=Stream, offset=Py_ssize_t, key=int, value=cython.ulong, delta=cython.longlong)
    cdef _on_settings(self, bytes payload)
    @cython.locals(stream=Stream, increment=cython.longlong)
    cdef _on_window_update(self, long stream_id, bytes payload)
    @cython.locals(stream=Stream, last_stream_id=long)
    cdef _on_goaway(self, bytes payload)
    cdef bint _is_local(self, long stream_id)
    @cython.locals(length=Py_ssize_t, head=cython.uchar[9])
    cpdef write_frame(self, int frame_type, int flags, long stream_id, bytes payload)
    cpdef _flush(self)
    cpdef send_headers(self, Stream stream, list headers, bint end_stream=*)
    @cython.locals(block=bytes, flags=int, max_frame=Py_ssize_t, offset=Py_ssize_t)
    cdef _write_headers(self, Stream stream, list headers, bint end_stream)
    @cython.locals(size=Py_ssize_t)
    cpdef send_data(self, Stream stream, bytes data, bint end_stream=*, Stream source=*)
    @cython.locals(size=Py_ssize_t, allowed=cython.longlong, sent=Py_ssize_t, source=Stream, last=bint)
    cdef _flush_stream(self, Stream stream)
    cpdef reset(self, Stream stream, int error_code)
    @cython.locals(source=Stream)
    cdef _drop_pending(self, Stream stream)
    cdef _local_closed(self, Stream stream)
    cdef _remote_closed(self, Stream stream)
    cdef _forget(self, Stream stream)
    cdef _stream_closed(self, Stream stream)
    @cython.locals(listener=StreamListener)
    cdef _tell_reset(self, Stream stream, int error_code)
    cpdef close_when_idle(self)
    cpdef close_with(self, int error_code)
    cdef long _last_peer_stream_id(self)

cdef class H2ServerConnection(H2Connection):
    cdef public RequestHandler requests
    cdef public long last_stream_id
    @cython.locals(stream=Stream)
    cdef _new_remote_stream(self, long stream_id, list headers, bint end_stream)
    cdef long _last_peer_stream_id(self)

cdef class H2ClientConnection(H2Connection):
    cdef public str address
    cdef public long next_stream_id
    cpdef Stream open_stream(self, StreamListener listener)
    cdef _on_goaway(self, bytes payload)

cdef class H2Pool:
    cdef public Writes writes
    cdef public dict _connections, _connecting
    @cython.locals(conn=H2ClientConnection)
    cpdef H2ClientConnection reusable(self, str address)
