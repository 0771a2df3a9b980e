# Types for Cython (see setup.py): the span buffer every request records into.
cdef class SpanRecorder:
    cdef public Py_ssize_t capacity, batch_size, dropped, malformed, _spans, _open_spans
    cdef public tuple taps
    cdef public object on_full_batch, _closed
    cdef public bytearray _open
    cpdef record(self, span)
    cpdef record_http(self, tuple fields)
    cdef _appended(self, malformed)
    cpdef _close_batch(self)
