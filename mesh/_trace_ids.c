/* Random trace and span ids as lowercase hex text, the traceparent line naming them, and the context
 * an incoming traceparent names: the proxy's per-request trace context.
 *
 * Why native: every request through a proxy gets a span id, and one that starts a trace also a trace
 * id. In Python, `"%048x" % random.getrandbits(192)` and two slices measured ~5,600 instructions, about
 * 5% of a proxied request; here it is a few hundred.
 *
 * The bytes come from the kernel (getrandom(2)), read 4 KiB at a time so one system call serves
 * ~170 requests. A forked child drops what its parent had buffered (pthread_atfork), so two processes
 * never hand out the same ids. An all-zero id is invalid in W3C Trace Context and B3: it is drawn
 * again. Called with the GIL held, which serialises access to the buffer. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

enum { TRACE_ID_BYTES = 16, SPAN_ID_BYTES = 8, POOL_BYTES = 4096 };

static unsigned char pool[POOL_BYTES];
static size_t pool_used = POOL_BYTES; /* bytes of `pool` already handed out; all of it = empty */

static void forget_pool(void) { pool_used = POOL_BYTES; }

/* Copies `size` random bytes to `out`; -1 with OSError set when the kernel gives none. */
static int random_bytes(unsigned char *out, size_t size) {
    if (POOL_BYTES - pool_used < size) {
        size_t filled = 0;
        while (filled < POOL_BYTES) {
            ssize_t got = getrandom(pool + filled, POOL_BYTES - filled, 0);
            if (got < 0) {
                if (errno == EINTR) {
                    continue;
                }
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            filled += (size_t)got;
        }
        pool_used = 0;
    }
    memcpy(out, pool + pool_used, size);
    pool_used += size;
    return 0;
}

/* A random, not-all-zero id of `size` bytes as 2 * size lowercase hex digits (a str). */
static PyObject *new_hex_id(size_t size) {
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[TRACE_ID_BYTES];
    int zero;
    do {
        if (random_bytes(raw, size) < 0) {
            return NULL;
        }
        zero = 1;
        for (size_t i = 0; i < size; i++) {
            zero &= raw[i] == 0;
        }
    } while (zero);
    PyObject *text = PyUnicode_New((Py_ssize_t)(2 * size), 127);
    if (text == NULL) {
        return NULL;
    }
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    for (size_t i = 0; i < size; i++) {
        out[2 * i] = (Py_UCS1)digits[raw[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)digits[raw[i] & 15];
    }
    return text;
}

static PyObject *new_trace_id(PyObject *module, PyObject *unused) { return new_hex_id(TRACE_ID_BYTES); }

static PyObject *new_span_id(PyObject *module, PyObject *unused) { return new_hex_id(SPAN_ID_BYTES); }

/* new_root(context_type, formats) -> (context_type(trace_id, "", True, "", formats), span_id)
 * The trace context of a request that starts a trace, and this hop's span id, in one call: building
 * the NamedTuple in Python around a draw of the two ids measured ~4,000 instructions per request.
 * `context_type` must be a tuple subclass without fields of its own (a NamedTuple of five fields);
 * it is filled the way tuple.__new__ fills a subclass, without calling the Python-level __new__. */
static PyObject *new_root(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type) ||
        ((PyTypeObject *)args[0])->tp_basicsize != PyTuple_Type.tp_basicsize || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "new_root(context_type: a tuple subclass without fields, formats: int)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *trace_id = NULL, *span_id = NULL, *no_text = NULL, *context = NULL, *pair = NULL;
    if ((trace_id = new_hex_id(TRACE_ID_BYTES)) == NULL || (span_id = new_hex_id(SPAN_ID_BYTES)) == NULL ||
        (no_text = PyUnicode_New(0, 0)) == NULL || (context = type->tp_alloc(type, 5)) == NULL ||
        (pair = PyTuple_New(2)) == NULL) {
        Py_XDECREF(trace_id);
        Py_XDECREF(span_id);
        Py_XDECREF(no_text);
        Py_XDECREF(context);
        return NULL;
    }
    /* trace_id, parent_id, sampled, trace_state, formats; the pair takes the references made above */
    PyTuple_SET_ITEM(context, 0, trace_id);
    PyTuple_SET_ITEM(context, 1, Py_NewRef(no_text));
    PyTuple_SET_ITEM(context, 2, Py_NewRef(Py_True));
    PyTuple_SET_ITEM(context, 3, no_text);
    PyTuple_SET_ITEM(context, 4, Py_NewRef(args[1]));
    PyTuple_SET_ITEM(pair, 0, context);
    PyTuple_SET_ITEM(pair, 1, span_id);
    return pair;
}

/* A lowercase hex digit's value, -1 for anything else (W3C ids and flags are lowercase hex only). */
static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 1 when text[0..len) is lowercase hex, 0 otherwise. */
static int all_hex(const unsigned char *text, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (hex_value(text[i]) < 0) {
            return 0;
        }
    }
    return 1;
}

static int all_zero(const unsigned char *text, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (text[i] != '0') {
            return 0;
        }
    }
    return 1;
}

static int is_strip_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); } /* bytes.strip() */

/* traceparent_context(context_type, formats, trace_state, value) -> context_type(trace_id, parent_id,
 * sampled, trace_state, formats) | None
 * The W3C traceparent rules (https://www.w3.org/TR/trace-context/#traceparent-header) for a header
 * value: surrounding whitespace ignored; "{version}-{trace-id}-{parent-id}-{flags}" in lowercase hex of
 * 2, 32, 16 and 2 digits; version ff invalid; more after the flags only as "-..." of a version above
 * 00; all-zero ids invalid; sampled when the flags' low bit is set. None when the value breaks a rule
 * (the caller then starts a new trace). Why native: the regular expression, decode and slices in
 * Python cost ~15,000 instructions per traced request; every traced request through a proxy pays it.
 * `context_type` as for new_root. */
static PyObject *traceparent_context(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    enum { VERSION = 0, TRACE_ID = 3, PARENT_ID = 36, FLAGS = 53, LENGTH = 55 };
    if (nargs != 4 || !PyType_Check(args[0]) || !PyType_IsSubtype((PyTypeObject *)args[0], &PyTuple_Type) ||
        ((PyTypeObject *)args[0])->tp_basicsize != PyTuple_Type.tp_basicsize || !PyLong_Check(args[1]) ||
        !PyUnicode_Check(args[2]) || !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "traceparent_context(context_type: a tuple subclass without fields, formats: int, "
                        "trace_state: str, value: bytes)");
        return NULL;
    }
    const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(args[3]);
    size_t len = (size_t)PyBytes_GET_SIZE(args[3]);
    while (len > 0 && is_strip_space(text[0])) {
        text++;
        len--;
    }
    while (len > 0 && is_strip_space(text[len - 1])) {
        len--;
    }
    if (len < LENGTH || !all_hex(text + VERSION, 2) || text[2] != '-' || !all_hex(text + TRACE_ID, 32) ||
        text[35] != '-' || !all_hex(text + PARENT_ID, 16) || text[52] != '-' || !all_hex(text + FLAGS, 2) ||
        (len > LENGTH && (text[LENGTH] != '-' || (text[0] == '0' && text[1] == '0'))) ||
        (text[0] == 'f' && text[1] == 'f') || all_zero(text + TRACE_ID, 32) || all_zero(text + PARENT_ID, 16)) {
        Py_RETURN_NONE;
    }
    PyTypeObject *type = (PyTypeObject *)args[0];
    PyObject *trace_id = PyUnicode_New(32, 127), *parent_id = PyUnicode_New(16, 127), *context = NULL;
    if (trace_id == NULL || parent_id == NULL || (context = type->tp_alloc(type, 5)) == NULL) {
        Py_XDECREF(trace_id);
        Py_XDECREF(parent_id);
        return NULL;
    }
    memcpy(PyUnicode_1BYTE_DATA(trace_id), text + TRACE_ID, 32);
    memcpy(PyUnicode_1BYTE_DATA(parent_id), text + PARENT_ID, 16);
    PyTuple_SET_ITEM(context, 0, trace_id);
    PyTuple_SET_ITEM(context, 1, parent_id);
    PyTuple_SET_ITEM(context, 2, Py_NewRef(hex_value(text[FLAGS + 1]) & 1 ? Py_True : Py_False));
    PyTuple_SET_ITEM(context, 3, Py_NewRef(args[2]));
    PyTuple_SET_ITEM(context, 4, Py_NewRef(args[1]));
    return context;
}

/* traceparent_line(trace_id, span_id, sampled) -> b"traceparent: 00-{trace_id}-{span_id}-0{1|0}\r\n"
 * The W3C header line a proxy hop writes for the next hop (an f-string and an encode measured ~2,600
 * instructions). The ids must be 32 and 16 ASCII characters; they are written as they are. */
static PyObject *traceparent_line(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    static const char prefix[] = "traceparent: 00-";
    enum { PREFIX = sizeof(prefix) - 1, LINE = PREFIX + 2 * TRACE_ID_BYTES + 1 + 2 * SPAN_ID_BYTES + 5 };
    if (nargs != 3 || !PyUnicode_Check(args[0]) || !PyUnicode_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "traceparent_line(trace_id: str, span_id: str, sampled: bool)");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(args[0]) || PyUnicode_GET_LENGTH(args[0]) != 2 * TRACE_ID_BYTES ||
        !PyUnicode_IS_ASCII(args[1]) || PyUnicode_GET_LENGTH(args[1]) != 2 * SPAN_ID_BYTES) {
        PyErr_SetString(PyExc_ValueError, "trace id must be 32 and span id 16 ASCII characters");
        return NULL;
    }
    int sampled = PyObject_IsTrue(args[2]);
    if (sampled < 0) {
        return NULL;
    }
    PyObject *line = PyBytes_FromStringAndSize(NULL, LINE);
    if (line == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(line);
    memcpy(out, prefix, PREFIX);
    out += PREFIX;
    memcpy(out, PyUnicode_1BYTE_DATA(args[0]), 2 * TRACE_ID_BYTES);
    out += 2 * TRACE_ID_BYTES;
    *out++ = '-';
    memcpy(out, PyUnicode_1BYTE_DATA(args[1]), 2 * SPAN_ID_BYTES);
    out += 2 * SPAN_ID_BYTES;
    memcpy(out, sampled ? "-01\r\n" : "-00\r\n", 5);
    return line;
}

static PyMethodDef methods[] = {
    {"new_trace_id", new_trace_id, METH_NOARGS, "A random trace id: 32 lowercase hex digits, not all zero."},
    {"new_span_id", new_span_id, METH_NOARGS, "A random span id: 16 lowercase hex digits, not all zero."},
    {"new_root", (PyCFunction)(void (*)(void))new_root, METH_FASTCALL,
     "new_root(context_type, formats) -> (a sampled root context of that type, this hop's span id)."},
    {"traceparent_line", (PyCFunction)(void (*)(void))traceparent_line, METH_FASTCALL,
     "traceparent_line(trace_id, span_id, sampled) -> the W3C traceparent header line (bytes)."},
    {"traceparent_context", (PyCFunction)(void (*)(void))traceparent_context, METH_FASTCALL,
     "traceparent_context(context_type, formats, trace_state, value) -> the context a traceparent value names, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mesh._trace_ids",
    .m_doc = "Random trace and span ids as hex text (a per-request cost of the proxy).",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__trace_ids(void) {
    static int registered = 0;
    if (!registered) {
        if (pthread_atfork(NULL, NULL, forget_pool) != 0) {
            PyErr_SetString(PyExc_OSError, "pthread_atfork failed");
            return NULL;
        }
        registered = 1;
    }
    return PyModuleDef_Init(&module_def);
}
