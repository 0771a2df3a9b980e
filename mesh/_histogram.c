/* A latency histogram cheap enough to update on every proxied request (mesh/metrics.py).
 *
 * Why native: in Python one observation is a bisect over the bucket bounds (a rich comparison of
 * floats per step), a list item increment and a float sum: about 1,000 instructions of the ~4,000 a
 * request's metrics cost. Here it is a binary search over a C array of doubles and two additions.
 *
 * Counts are per bucket (not cumulative; the last one counts values above every bound, Prometheus's
 * +Inf); the scrape (prometheus_client, at most a few times a second) makes them cumulative. A value
 * lands in the first bucket whose bound is >= it, as bisect.bisect_left finds it (a NaN lands in the
 * first bucket, as there).
 *
 * A plain HTTP request's outcome is counted by status class in the same call (observe_http): a second
 * step in Python (index arithmetic and a list item increment) cost about as much as the observation. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* HTTP status classes: index status / 100 for a status in [0, 600), else 0 ("none": no response). */
enum { STATUS_CLASSES = 6 };

typedef struct {
    PyObject_HEAD
    Py_ssize_t bounds_len;
    double *bounds;   /* ascending */
    uint64_t *counts; /* bounds_len + 1 */
    double sum;
    uint64_t status_classes[STATUS_CLASSES]; /* observe_http's outcomes */
} Histogram;

static void histogram_dealloc(Histogram *self) {
    PyMem_Free(self->bounds);
    PyMem_Free(self->counts);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *histogram_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *bounds;
    if (!PyArg_ParseTuple(args, "O!:Histogram", &PyTuple_Type, &bounds)) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(bounds);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "a histogram needs at least one bucket bound");
        return NULL;
    }
    Histogram *self = (Histogram *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->bounds = PyMem_Calloc((size_t)n, sizeof(double));
    self->counts = PyMem_Calloc((size_t)n + 1, sizeof(uint64_t));
    if (self->bounds == NULL || self->counts == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    self->bounds_len = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        double bound = PyFloat_AsDouble(PyTuple_GET_ITEM(bounds, i));
        if (bound == -1.0 && PyErr_Occurred()) {
            Py_DECREF(self);
            return NULL;
        }
        if (i > 0 && !(bound > self->bounds[i - 1])) { /* NaN refused too */
            Py_DECREF(self);
            PyErr_SetString(PyExc_ValueError, "histogram bounds must be strictly ascending numbers");
            return NULL;
        }
        self->bounds[i] = bound;
    }
    return (PyObject *)self;
}

PyDoc_STRVAR(observe_doc, "observe(value, /)\n\nCounts `value` (a float or int) in its bucket and adds it to the sum.");

/* Counts `value` in its bucket and the sum; -1 with an exception when it is not a number. */
static int observe_value(Histogram *self, PyObject *value) {
    double x = PyFloat_CheckExact(value) ? PyFloat_AS_DOUBLE(value) : PyFloat_AsDouble(value);
    if (x == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t low = 0, high = self->bounds_len; /* bisect_left */
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        if (self->bounds[middle] < x) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    self->counts[low]++;
    self->sum += x;
    return 0;
}

static PyObject *histogram_observe(Histogram *self, PyObject *value) {
    if (observe_value(self, value) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(observe_http_doc,
             "observe_http(value, status, /)\n\n"
             "observe(value), and counts the int HTTP `status` in its class (status // 100 in [0, 600), else 0).");

static PyObject *histogram_observe_http(Histogram *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        return PyErr_Format(PyExc_TypeError, "observe_http() takes 2 arguments (%zd given)", nargs);
    }
    if (!PyLong_Check(args[1])) {
        return PyErr_Format(PyExc_TypeError, "observe_http() status must be an int, got %.80s", Py_TYPE(args[1])->tp_name);
    }
    int overflow = 0;
    long long status = PyLong_AsLongLongAndOverflow(args[1], &overflow); /* out of range when it overflows */
    if (status == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (observe_value(self, args[0]) < 0) {
        return NULL;
    }
    self->status_classes[!overflow && status >= 0 && status < 100 * STATUS_CLASSES ? status / 100 : 0]++;
    Py_RETURN_NONE;
}

/* A list of Python ints from `n` C counts. */
static PyObject *count_list(const uint64_t *counts, Py_ssize_t n) {
    PyObject *list = PyList_New(n);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *count = PyLong_FromUnsignedLongLong(counts[i]);
        if (count == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, count);
    }
    return list;
}

PyDoc_STRVAR(counts_doc, "counts() -> list[int]\n\nThe count of each bucket (not cumulative), the last one above every bound.");

static PyObject *histogram_counts(Histogram *self, PyObject *unused) {
    return count_list(self->counts, self->bounds_len + 1);
}

PyDoc_STRVAR(status_classes_doc, "status_classes() -> list[int]\n\nobserve_http's counts by status class (index status // 100; 0: none).");

static PyObject *histogram_status_classes(Histogram *self, PyObject *unused) {
    return count_list(self->status_classes, STATUS_CLASSES);
}

static PyObject *histogram_sum(Histogram *self, void *closure) { return PyFloat_FromDouble(self->sum); }

static PyMethodDef histogram_methods[] = {
    {"observe", (PyCFunction)histogram_observe, METH_O, observe_doc},
    {"observe_http", (PyCFunction)(void (*)(void))histogram_observe_http, METH_FASTCALL, observe_http_doc},
    {"counts", (PyCFunction)histogram_counts, METH_NOARGS, counts_doc},
    {"status_classes", (PyCFunction)histogram_status_classes, METH_NOARGS, status_classes_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef histogram_getset[] = {
    {"sum", (getter)histogram_sum, NULL, "The sum of the observed values.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HistogramType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "mesh._histogram.Histogram",
    .tp_doc = PyDoc_STR("Histogram(bounds: tuple of ascending numbers): counts per bucket and a sum."),
    .tp_basicsize = sizeof(Histogram),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = histogram_new,
    .tp_dealloc = (destructor)histogram_dealloc,
    .tp_methods = histogram_methods,
    .tp_getset = histogram_getset,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mesh._histogram",
    .m_doc = "A latency histogram updated on every proxied request.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__histogram(void) {
    if (PyType_Ready(&HistogramType) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Histogram", (PyObject *)&HistogramType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
