/* The span encoder's C API (spans/_otlp_spans.c) for compiled callers.
 *
 * Why: the proxy records an HTTP exchange's span on its event loop, once per request. Through the
 * module's Python function that meant a tuple of 21 fields (a dozen new ints and a float) and a Python
 * call, about as many instructions as the encoding itself. A Cython module (mesh/export.py, declared
 * in mesh/export.pxd) includes this header and passes C numbers and borrowed object pointers
 * straight to the encoder, which it finds through a capsule imported once (otlp_spans_import).
 *
 * The module defines OTLP_SPANS_MODULE before including this header, which leaves out the caller's
 * half (the imported table and the inline call). */
#ifndef TRACEMESH_OTLP_SPANS_H
#define TRACEMESH_OTLP_SPANS_H

#include <Python.h>

#define OTLP_SPANS_CAPSULE "spans._otlp_spans._C_API"

/* One HTTP exchange's span, as append_http_span's fields (see its docstring). The objects are
 * borrowed and checked by the encoder like the fields of a tuple: ids are str of hex digits,
 * `method` and `target` latin-1 bytes, `proxy_error` (also the status message) and `error_type` str;
 * the numbers are typed already, and refused when out of their range (kind, status_code: 0..2**31-1;
 * start_ns, duration_ns: >= 0). */
typedef struct {
    PyObject *trace_id, *span_id, *parent_span_id;
    PyObject *constant_attributes;
    PyObject *method, *target;
    PyObject *proxy_error, *error_type;
    long long kind, start_ns, duration_ns, status_code;
    long long queue_ns, connect_ns, retries, retry_delay_ns, first_byte_ns, body_ns, http_status;
    double endpoint_load;
    int connection_reused;
} OtlpHttpSpan;

typedef struct {
    /* append_http_span(batch, keys, fields) from a struct: None, the reason the span is malformed
     * (nothing appended), or NULL with an exception. `batch` must be a SpanBatch. */
    PyObject *(*append_http_span)(PyObject *batch, PyObject *keys, const OtlpHttpSpan *span);
} OtlpSpansApi;

#ifndef OTLP_SPANS_MODULE

static const OtlpSpansApi *otlp_spans_api;

/* Imports spans._otlp_spans' table: 0, or -1 with an exception. Once, at the caller's module init
 * (modules that cimport the caller's .pxd include this header too, and call nothing of it). */
static inline int otlp_spans_import(void) {
    otlp_spans_api = (const OtlpSpansApi *)PyCapsule_Import(OTLP_SPANS_CAPSULE, 0);
    return otlp_spans_api == NULL ? -1 : 0;
}

/* The struct filled from arguments, for callers (Cython) that cannot hold object pointers in one. */
static inline PyObject *otlp_append_http_span(PyObject *batch, PyObject *keys, PyObject *trace_id, PyObject *span_id,
                                              PyObject *parent_span_id, long long kind, long long start_ns,
                                              long long duration_ns, long long status_code,
                                              PyObject *constant_attributes, PyObject *method, PyObject *target,
                                              long long queue_ns, long long connect_ns, int connection_reused,
                                              long long retries, long long retry_delay_ns, long long first_byte_ns,
                                              long long body_ns, double endpoint_load, long long http_status,
                                              PyObject *proxy_error, PyObject *error_type) {
    const OtlpHttpSpan span = {
        .trace_id = trace_id, .span_id = span_id, .parent_span_id = parent_span_id,
        .constant_attributes = constant_attributes, .method = method, .target = target,
        .proxy_error = proxy_error, .error_type = error_type,
        .kind = kind, .start_ns = start_ns, .duration_ns = duration_ns, .status_code = status_code,
        .queue_ns = queue_ns, .connect_ns = connect_ns, .retries = retries, .retry_delay_ns = retry_delay_ns,
        .first_byte_ns = first_byte_ns, .body_ns = body_ns, .http_status = http_status,
        .endpoint_load = endpoint_load, .connection_reused = connection_reused,
    };
    return otlp_spans_api->append_http_span(batch, keys, &span);
}

#endif /* OTLP_SPANS_MODULE */
#endif /* TRACEMESH_OTLP_SPANS_H */
