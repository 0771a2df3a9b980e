# Types for Cython (see setup.py): the span buffer every request records into.

# the span encoder's C API (spans/otlp_spans.h): objects are passed borrowed, and checked by the encoder
cdef extern from "spans/otlp_spans.h":
    int otlp_spans_import() except -1
    object otlp_append_http_span(
        object batch, object keys, object trace_id, object span_id, object parent_span_id, long long kind,
        long long start_ns, long long duration_ns, long long status_code, object constant_attributes, object method,
        object target, long long queue_ns, long long connect_ns, bint connection_reused, long long retries,
        long long retry_delay_ns, long long first_byte_ns, long long body_ns, double endpoint_load,
        long long http_status, object proxy_error, object error_type)

cdef class SpanRecorder:
    cdef public Py_ssize_t capacity, batch_size, dropped, malformed, _spans, _open_spans
    cdef public tuple taps
    cdef public object on_full_batch, _closed, _open
    cdef object _spare
    cdef Py_ssize_t _batch_bytes
    cdef tuple _http_keys
    cpdef record(self, span)
    cpdef record_http(
        self, trace_id, span_id, parent_span_id, int kind, long long start_ns, long long duration_ns,
        int status_code, constant_attributes, method, target, long long queue_ns, long long connect_ns,
        bint connection_reused, long long retries, long long retry_delay_ns, long long first_byte_ns,
        long long body_ns, double endpoint_load, int http_status, proxy_error, error_type)
    cdef _appended(self, malformed)
    cpdef _close_batch(self)
    cdef _fresh_batch(self)
    cpdef recycle(self, span_fields)
