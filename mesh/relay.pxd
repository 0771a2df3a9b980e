# Types for Cython (see setup.py): one proxied HTTP/1.1 request.
cimport cython

from mesh.balance cimport Endpoint
from mesh.destination cimport Destination
from mesh.http1 cimport Http1Client, Http1Server
from mesh.pool cimport EndpointPool
from mesh.shed cimport AdmissionQueue
from mesh.stack cimport Stack

# flags the relay tests on every request: C ints, not Python ints (not visible from Python)
cdef int PAUSE_UNSENT_BODY, PAUSE_UPSTREAM_FULL, HAS_CONTENT_LENGTH, _PAUSED_BY_EXCHANGE, _SLASH

cdef class Exchange:
    cdef public Stack stack
    cdef public Http1Server downstream
    cdef public bytes method, target, forward_head
    cdef public object version, headers, span_id
    cdef public str trace_id, parent_id  # of this hop's span (hex)
    cdef public bint sampled
    cdef public bint keep_alive, upgrade, request_done, reused, replayable, response_started, rechunk, close_after
    cdef public bint finished, admitted, started, chunked, message_complete
    cdef public long long start_ns, t_start, queue_ns, connect_ns, sent_ns, retry_delay_ns, body_bytes
    cdef public long long response_bytes, content_length
    cdef public list body  # request body chunks not sent yet or kept for a replay; None when there are none
    cdef public Destination destination
    cdef public str destination_name, error
    cdef public double deadline, endpoint_load, ewma_t0
    cdef public Endpoint endpoint
    cdef public tuple tried
    cdef public Http1Client conn
    cdef public int retries, status
    @cython.locals(destination=Destination, admission=AdmissionQueue, target=bytes)
    cpdef start(self)
    cpdef join_trace(self, ctx)
    @cython.locals(pool=EndpointPool, conn=Http1Client)
    cpdef attempt(self, now=*)
    cpdef connected(self, task)
    cpdef send(self, Http1Client conn)
    cpdef request_body(self, bytes data)
    cpdef request_complete(self)
    cpdef request_aborted(self, str reason)
    cpdef interim_response(self, bytes head)
    cpdef response_head(self, int status, bytes message, int framing, Py_ssize_t head_len)
    cpdef response_body(self, bytes data)
    cpdef response_complete(self)
    cpdef upstream_failed(self, str kind)
    cpdef bint retry(self, int status, str error)
    cpdef endpoint_failed(self)
    cpdef breaker_failure(self, double now)
    cpdef timed_out(self)
    cpdef respond_locally(self, int status, str proxy_error, bint close=*)
    cpdef fail(self, str proxy_error, int status)
    cpdef abort(self, str proxy_error)
    cpdef downstream_full(self)
    cpdef downstream_drained(self)
    cpdef downstream_lost(self)
    @cython.locals(end=cython.longlong, first_byte_ns=cython.longlong)
    cpdef finish(self, bint reusable)
    @cython.locals(duration=cython.longlong, sent=cython.longlong, status=int)
    cdef record(self, long long end, long long first_byte_ns)

cdef Exchange new_exchange(Stack stack, Http1Server downstream, bytes method, bytes target, version, headers,
                           bint keep_alive, bint upgrade)
