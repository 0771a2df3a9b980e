# Types for Cython (see setup.py): one relayed gRPC call and its attempts.
cimport cython

from mesh.balance cimport Endpoint, _EndpointSet
from mesh.breaker cimport FailureAccrual
from mesh.destination cimport Destination
from mesh.http2 cimport (
    CANCEL, CONNECTION_LOST, INTERNAL_ERROR, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM,
    H2ClientConnection, H2Connection, H2Pool, RequestHandler, Stream, StreamListener, Writes,
)
from mesh.stack cimport Stack

# The status codes the proxy itself reports (grpc/doc/statuscodes.md): C constants, plain ints to Python.
cpdef enum:
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    DEADLINE_EXCEEDED = 4
    INTERNAL = 13
    UNAVAILABLE = 14

cdef enum:
    FULL_RULES = -2  # GrpcCall._join_trace: the request's trace headers need extract() and inject()

cdef frozenset TRACE_HEADER_NAMES
@cython.locals(byte=cython.uchar)
cdef bint _lowercase(bytes name)
cpdef str decode_message(bytes value)
@cython.locals(status=object, message=bytes, name=bytes, value=bytes)
cpdef tuple status_of(list headers)

cdef class GrpcRelay(RequestHandler):
    cdef public Stack stack
    cdef public bint retries  # outbound: retryable statuses are retried (inbound would retry the app's answer)
    cdef public Writes writes
    cdef public H2Pool pool
    cdef public set connections
    cpdef on_request(self, Stream stream, list headers, bint end_stream)

cdef class _Attempt(StreamListener):
    cdef public GrpcCall call
    cdef public Endpoint endpoint
    cdef public Stream stream
    cdef public double ewma_t0
    cdef public bint answered  # the upstream answered, failed, or the attempt was given up
    @cython.locals(call=GrpcCall, down=Stream)
    cpdef on_headers(self, list headers, bint end_stream)
    @cython.locals(call=GrpcCall, down=Stream)
    cpdef on_data(self, bytes data, bint end_stream)
    @cython.locals(call=GrpcCall)
    cpdef on_reset(self, int error_code)
    @cython.locals(stream=Stream)
    cpdef timed_out(self)
    cpdef settle(self)

cdef class GrpcCall(StreamListener):
    cdef public GrpcRelay relay
    cdef public Stack stack
    cdef public Stream down  # the caller's stream
    cdef public _Attempt attempt  # the current upstream try (None before the first)
    cdef public object waiting  # task or timer: queue wait, connect or backoff
    cdef public double deadline  # monotonic time the destination's timeout runs out (stack.deadlines sweeps)
    cdef public Destination destination
    cdef public Endpoint endpoint
    cdef public double endpoint_load
    cdef public bint admitted, headers_sent, done, reused, request_ended, sampled
    cdef public bint forwarded  # the request went to an upstream once (later attempts replay it)
    cdef public int status, retries
    cdef public str message, proxy_error, span_id
    cdef public long long start_ns, started, queue_ns, connect_ns, sent_ns, first_byte_ns, retry_delay_ns
    cdef public Py_ssize_t replay_size
    cdef public bytes path, authority
    cdef public object ctx
    cdef public list upstream_headers
    cdef public list backlog  # request frames that arrived before an upstream stream existed (None: none did)
    cdef public list replay  # every request DATA payload while they fit MAX_REPLAY_BODY (None after)
    cdef public list tried
    cpdef begin(self, GrpcRelay relay, Stream down, list headers, bint end_stream)
    @cython.locals(name=bytes, value=bytes)
    cdef _read_pseudo_headers(self, list headers)
    @cython.locals(lone=Py_ssize_t, index=Py_ssize_t, name=bytes, upstream=list)
    cdef _join_trace(self, list headers)
    @cython.locals(stack=Stack, destination=Destination)
    cpdef _start(self)
    @cython.locals(destination=Destination, now=double)
    cpdef _admitted(self)
    @cython.locals(balancer=_EndpointSet, endpoint=Endpoint, now=double, conn=H2ClientConnection)
    cpdef _next_attempt(self)
    @cython.locals(attempt=_Attempt, stream=Stream, down=Stream, backlog=list)
    cpdef _send(self, H2ClientConnection conn, Endpoint endpoint)
    @cython.locals(breaker=FailureAccrual, ejections=long)
    cpdef endpoint_failed(self, Endpoint endpoint, sent_at)
    @cython.locals(attempt=_Attempt, delay=double)
    cpdef attempt_failed(self, tuple outcome)
    @cython.locals(attempt=_Attempt)
    cpdef timed_out(self)
    cpdef response_started(self)
    cpdef bint may_retry_status(self, status)
    @cython.locals(replayable=bint, safe=bint)
    cpdef bint _may_retry(self, tuple outcome)
    cpdef _give_up(self, tuple outcome)
    @cython.locals(attempt=_Attempt, stream=Stream)
    cpdef on_data(self, bytes data, bint end_stream)
    @cython.locals(attempt=_Attempt)
    cpdef on_headers(self, list headers, bint end_stream)
    cdef _hold(self, tuple frame)
    @cython.locals(attempt=_Attempt, stream=Stream)
    cpdef on_reset(self, int error_code)
    @cython.locals(down=Stream)
    cpdef response_headers(self, list headers, bint end_stream)
    cpdef upstream_reset(self, int error_code)
    @cython.locals(down=Stream)
    cpdef fail(self, int status, str message, str proxy_error)
    @cython.locals(down=Stream)
    cpdef _reset_caller(self, int error_code)
    @cython.locals(down=Stream, attempt=_Attempt, destination=Destination, up=Stream, stack=Stack, ended=cython.longlong)
    cpdef finish(self, int status, str message)
    @cython.locals(stack=Stack, failed=bint)
    cdef tuple _span(self, long long ended)
