/* Random trace and span ids as lowercase hex text, and the traceparent line naming them: the proxy's
 * per-request trace context.
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
