/* Text columns (list of str, list of lists or tuples of str) to Arrow's large_string / large_list buffers.
 *
 * Why native: pyarrow's converter appends value by value into builders that grow by realloc, so a
 * 50k-row batch of ~800 bytes a span is copied several times and, with mimalloc returning memory
 * between the once-a-second batches, every batch faults in fresh pages (~12% of the collector's CPU
 * on chDB). Here the exact sizes are summed first, each buffer is allocated once by the caller's
 * ``allocate(nbytes)`` (the Python side picks the memory pool) and filled in one pass.
 *
 * A column comes as a list of chunks (one per spooled record of a batch), converted as if they were
 * one list: the writer then never concatenates its records' column lists (that copy, and freeing
 * it, cost ~250 ns a span).
 *
 * The layout is Arrow's: int64 offsets (n + 1 of them, starting at 0) and the UTF-8 bytes back to
 * back; no validity bitmap (no value is null). A value that is not a str raises TypeError naming its
 * position; a str that cannot be UTF-8 (a lone surrogate) raises UnicodeEncodeError.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* A writable buffer of exactly `size` bytes from allocate(size); keeps the object in *owner. */
static char *allocate_bytes(PyObject *allocate, Py_ssize_t size, PyObject **owner, Py_buffer *view)
{
    *owner = PyObject_CallFunction(allocate, "n", size);
    if (!*owner)
        return NULL;
    if (PyObject_GetBuffer(*owner, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_CLEAR(*owner);
        return NULL;
    }
    if (view->len < size) {
        PyBuffer_Release(view);
        Py_CLEAR(*owner);
        PyErr_SetString(PyExc_ValueError, "allocate() returned a buffer smaller than asked for");
        return NULL;
    }
    return view->buf;
}

/* The lists and tuples here are read with the PySequence_Fast macros, which take either. */
#define IS_LIST_OR_TUPLE(o) (PyList_Check(o) || PyTuple_Check(o))

/* A str's UTF-8 bytes: an ASCII str's own data (almost every value here) without a call, others
 * through the UTF-8 form CPython caches on the str. NULL with an exception set if it has none. */
static inline const char *utf8_of(PyObject *value, Py_ssize_t *size)
{
    if (PyUnicode_IS_COMPACT_ASCII(value)) {
        *size = PyUnicode_GET_LENGTH(value);
        return (const char *)PyUnicode_DATA(value);
    }
    return PyUnicode_AsUTF8AndSize(value, size);
}

/* Sum of the UTF-8 sizes of the str items of `list` (each one converted once: for an ASCII str
 * this reads its own data, for others CPython caches the UTF-8 form the fill pass reads again). */
static int utf8_total(PyObject *list, Py_ssize_t *total)
{
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(list); i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(list, i);
        Py_ssize_t size;
        if (!PyUnicode_Check(value)) {
            PyErr_Format(PyExc_TypeError, "item %zd is %.100s, not str", i, Py_TYPE(value)->tp_name);
            return -1;
        }
        if (!utf8_of(value, &size))
            return -1;
        *total += size;
    }
    return 0;
}

/* Copy the str items of `list` to data[*used...], offsets[*next + 1...] one each. Python code may
 * have run since the sizes were summed (allocate() is a Python call), so every item is checked
 * again and nothing is written past the `count` offsets or `total` bytes allocated. */
static int utf8_fill(PyObject *list, char *data, Py_ssize_t total, int64_t *offsets, Py_ssize_t count, Py_ssize_t *next, int64_t *used)
{
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(list); i++) {
        PyObject *value = PySequence_Fast_GET_ITEM(list, i);
        Py_ssize_t size;
        const char *utf8 = PyUnicode_Check(value) ? utf8_of(value, &size) : NULL;
        if (!utf8 || *next >= count || size > total - *used) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_RuntimeError, "a text column changed while it was converted");
            return -1;
        }
        memcpy(data + *used, utf8, (size_t)size);
        *used += size;
        offsets[++*next] = *used;
    }
    return 0;
}

/* (offsets, data) buffers of a large_string array holding the `count` strings (`total` UTF-8
 * bytes) of the lists in `chunks`, or, when row_offsets is given, of the `n_rows` rows (lists or
 * tuples of str) in the lists in `chunks` (each row's end in the flat array is written to
 * row_offsets[row + 1]). */
static PyObject *text_buffers(PyObject *chunks, int64_t *row_offsets, Py_ssize_t n_rows, Py_ssize_t count, Py_ssize_t total, PyObject *allocate)
{
    PyObject *offsets_owner = NULL, *data_owner = NULL, *result = NULL;
    Py_buffer offsets_view, data_view;
    int64_t *offsets = (int64_t *)allocate_bytes(allocate, (count + 1) * (Py_ssize_t)sizeof(int64_t), &offsets_owner, &offsets_view);
    if (!offsets)
        return NULL;
    char *data = allocate_bytes(allocate, total, &data_owner, &data_view);
    if (data) {
        int64_t used = 0;
        Py_ssize_t next = 0;
        int failed = 0;
        Py_ssize_t row = 0;
        offsets[0] = 0;
        for (Py_ssize_t c = 0; !failed && c < PyList_GET_SIZE(chunks); c++) {
            PyObject *chunk = PyList_GET_ITEM(chunks, c);
            if (!PyList_Check(chunk)) {
                failed = -1;
            } else if (!row_offsets) {
                failed = utf8_fill(chunk, data, total, offsets, count, &next, &used);
            } else {
                for (Py_ssize_t i = 0; !failed && i < PyList_GET_SIZE(chunk); i++, row++) {
                    PyObject *items = PyList_GET_ITEM(chunk, i);
                    failed = row < n_rows && IS_LIST_OR_TUPLE(items) ? utf8_fill(items, data, total, offsets, count, &next, &used) : -1;
                    if (!failed)
                        row_offsets[row + 1] = next;
                }
            }
        }
        if (!failed && (next != count || used != total || (row_offsets && row != n_rows)))
            failed = -1;
        if (failed && !PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "a text column changed while it was converted");
        PyBuffer_Release(&data_view);
        if (!failed)
            result = PyTuple_Pack(2, offsets_owner, data_owner);
    }
    PyBuffer_Release(&offsets_view);
    Py_DECREF(offsets_owner);
    Py_XDECREF(data_owner);
    return result;
}

/* Whether `chunks` is a list of lists; sets TypeError naming `signature` if not. */
static int check_chunks(PyObject *chunks, const char *signature)
{
    int ok = PyList_Check(chunks);
    for (Py_ssize_t c = 0; ok && c < PyList_GET_SIZE(chunks); c++)
        ok = PyList_Check(PyList_GET_ITEM(chunks, c));
    if (!ok)
        PyErr_Format(PyExc_TypeError, "%s: chunks must be a list of lists", signature);
    return ok;
}

static PyObject *string_array(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char signature[] = "string_array(chunks: list[list[str]], allocate)";
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, signature);
        return NULL;
    }
    if (!check_chunks(args[0], signature))
        return NULL;
    Py_ssize_t total = 0, count = 0;
    for (Py_ssize_t c = 0; c < PyList_GET_SIZE(args[0]); c++) {
        PyObject *chunk = PyList_GET_ITEM(args[0], c);
        if (utf8_total(chunk, &total) < 0)
            return NULL;
        count += PyList_GET_SIZE(chunk);
    }
    return text_buffers(args[0], NULL, 0, count, total, args[1]);
}

static PyObject *string_list_array(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    static const char signature[] = "string_list_array(chunks: list[list[list[str] | tuple[str, ...]]], allocate)";
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, signature);
        return NULL;
    }
    if (!check_chunks(args[0], signature))
        return NULL;
    PyObject *chunks = args[0], *allocate = args[1];
    Py_ssize_t n = 0, count = 0, total = 0;
    for (Py_ssize_t c = 0; c < PyList_GET_SIZE(chunks); c++) {
        PyObject *chunk = PyList_GET_ITEM(chunks, c);
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(chunk); i++, n++) {
            PyObject *row = PyList_GET_ITEM(chunk, i);
            if (!IS_LIST_OR_TUPLE(row)) {
                PyErr_Format(PyExc_TypeError, "row %zd is %.100s, not a list or tuple of str", n, Py_TYPE(row)->tp_name);
                return NULL;
            }
            if (utf8_total(row, &total) < 0)
                return NULL;
            count += PySequence_Fast_GET_SIZE(row);
        }
    }
    PyObject *row_owner = NULL;
    Py_buffer row_view;
    int64_t *row_offsets = (int64_t *)allocate_bytes(allocate, (n + 1) * (Py_ssize_t)sizeof(int64_t), &row_owner, &row_view);
    if (!row_offsets)
        return NULL;
    row_offsets[0] = 0;
    PyObject *strings = text_buffers(chunks, row_offsets, n, count, total, allocate);
    PyBuffer_Release(&row_view);
    PyObject *result = strings ? PyTuple_Pack(2, row_owner, strings) : NULL;
    Py_DECREF(row_owner);
    Py_XDECREF(strings);
    return result;
}

static PyMethodDef methods[] = {
    {"string_array", (PyCFunction)(void (*)(void))string_array, METH_FASTCALL,
     "string_array(chunks, allocate) -> (offsets, data): a large_string array's buffers from the str\n"
     "items of a list of lists, in order.\n"
     "allocate(nbytes) returns a writable buffer (e.g. pyarrow.allocate_buffer)."},
    {"string_list_array", (PyCFunction)(void (*)(void))string_list_array, METH_FASTCALL,
     "string_list_array(chunks, allocate) -> (row_offsets, (offsets, data)): a large_list(large_string)\n"
     "array's buffers from the rows (lists or tuples of str) of a list of lists, in order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_arrow_text",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__arrow_text(void)
{
    return PyModule_Create(&module);
}
