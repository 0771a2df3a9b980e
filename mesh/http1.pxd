# Types for Cython (see setup.py): both ends of every proxied HTTP/1.1 request.
cimport cython

from mesh.pool cimport EndpointPool
from mesh.relay cimport Exchange
from mesh.stack cimport Stack

# limits and flags tested on every read: C ints, not Python ints (not visible from Python)
cdef Py_ssize_t MAX_HEAD_BYTES, MAX_HEADERS
cdef int PAUSE_PIPELINE, PAUSE_UPSTREAM_FULL

cdef class Http1Server:
    cdef public Stack stack
    cdef public object on_close, transport, parser, waiting, write_buffer
    cdef public Exchange receiving, answering
    cdef public list _headers
    cdef public int paused
    cdef public Py_ssize_t head_bytes
    cdef public bint closed, eof, lingering
    cdef public bytes _url
    cpdef write(self, data)
    cpdef flush(self)
    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef exchange_finished(self, Exchange exchange, bint keep_alive)
    @cython.locals(exchange=Exchange)
    cpdef _request(self, method, target, version, headers, bint keep_alive, bint upgrade)
    cpdef _answer_next(self)
    cpdef close(self)
    cpdef on_body(self, bytes body)
    cpdef on_message_complete(self)

cdef class Http1Client:
    cdef public EndpointPool pool
    cdef public object transport, parser
    cdef public Exchange exchange
    cdef public bint closed, reusable, _in_body, _expect_head_only, _parser_spent
    cdef public double idle_since
    cdef public long long first_byte_ns
    cdef public Py_ssize_t head_bytes, data_offset
    cdef public int response_framing
    cdef public bytes head_buffer, data
    cpdef send(self, Exchange exchange, bytes data, bint head_only_response)
    cpdef write(self, data)
    cpdef release(self, bint reusable)
    cpdef close(self)
    cpdef pause_reading(self)
    cpdef resume_reading(self)
