/* One pass over a span batch for the service graph's pairing (collector/graph/edges.py).
 *
 * Why native: the graph sees every ingested span, and in Python the pass cost ~12-20k instructions
 * per span (a row tuple per span, three substring scans of its attribute JSON, the key and table
 * work), the larger part of the collector's whole per-span budget. Most spans either describe no
 * hop (INTERNAL) or are a plain half-hop that only waits for its partner; this file does those
 * spans' work and hands every other span to Python, so the rules stay in edges.py:
 *
 * - a span whose kind has no entry in `kinds` is skipped (what `_PAIRING_KEYS.get` gives None);
 * - a span is *plain* when its attribute text is a str of one byte per character holding neither a
 *   backslash nor any of its kind's quoted pairing keys (the test `_mentions` makes), it is a caller
 *   or has a parent id (str), and its pairing key (trace id, span id or parent id) is neither
 *   claimed (its hash in `claimed`) nor waited for in the other table. Such a span is what
 *   `HopTracker._add_caller` / `_add_callee` would only store: `own[key] = (deadline, row, None)`;
 * - anything else, including values of an unexpected type, goes to `handle(row)`, which applies the
 *   Python rules (and counts what it cannot read as malformed), in batch order.
 *
 * `row` is the span's fields as edges.py's `_SPAN_FIELDS` lists them; this file reads only the
 * first five (kind, trace id, span id, parent id, attributes). Every list access is bounds-checked
 * each time: `handle` runs Python code between reads. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

enum { KIND, TRACE_ID, SPAN_ID, PARENT_ID, ATTRIBUTES, MIN_FIELDS };

/* What a kind's entry in `kinds` says: whether it is a caller, and the keys that make it not plain. */
typedef struct {
    int is_caller;
    PyObject *needles; /* tuple of str (borrowed from `kinds`) */
} kind_rule;

enum { MAX_KINDS = 16 };

/* Whether `text` (one byte per character) may hold one of `needles` or an escape. 1 yes, 0 no. */
static int mentions(const char *text, Py_ssize_t len, PyObject *needles)
{
    if (memchr(text, '\\', (size_t)len) != NULL)
        return 1;
    Py_ssize_t count = PyTuple_GET_SIZE(needles);
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *needle = PyTuple_GET_ITEM(needles, k);
        if (memmem(text, (size_t)len, PyUnicode_DATA(needle), (size_t)PyUnicode_GET_LENGTH(needle)) != NULL)
            return 1;
    }
    return 0;
}

/* mentions(text, needles): the same test for Python (a caller's peer keys when it expires). Exact for
 * every str: a text of wider characters takes str's own search. */
static PyObject *mentions_text(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyTuple_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "mentions(text: str, needles: tuple of str)");
        return NULL;
    }
    PyObject *text = args[0], *needles = args[1];
    if (PyUnicode_READY(text) < 0)
        return NULL;
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(needles); k++) {
        PyObject *needle = PyTuple_GET_ITEM(needles, k);
        if (!PyUnicode_Check(needle)) {
            PyErr_SetString(PyExc_TypeError, "needles must be str");
            return NULL;
        }
        if (PyUnicode_READY(needle) < 0)
            return NULL;
    }
    if (PyUnicode_KIND(text) == PyUnicode_1BYTE_KIND) {
        int found = 0;
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(needles) && !found; k++)
            found = !PyUnicode_IS_ASCII(PyTuple_GET_ITEM(needles, k));
        if (!found) /* every needle ASCII: a byte search is exact */
            return PyBool_FromLong(mentions((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), needles));
    }
    Py_ssize_t backslash = PyUnicode_FindChar(text, '\\', 0, PyUnicode_GET_LENGTH(text), 1);
    if (backslash != -1)
        return backslash == -2 ? NULL : Py_NewRef(Py_True);
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(needles); k++) {
        int found = PyUnicode_Contains(text, PyTuple_GET_ITEM(needles, k));
        if (found != 0)
            return found < 0 ? NULL : Py_NewRef(Py_True);
    }
    Py_RETURN_FALSE;
}

/* Read `kinds` (a tuple indexed by span kind: None or (is_caller: bool, needles: tuple of ASCII str)). */
static int read_kinds(PyObject *kinds, kind_rule *rules, Py_ssize_t *count)
{
    if (!PyTuple_Check(kinds) || PyTuple_GET_SIZE(kinds) > MAX_KINDS) {
        PyErr_SetString(PyExc_ValueError, "kinds must be a tuple of at most 16 entries");
        return -1;
    }
    *count = PyTuple_GET_SIZE(kinds);
    for (Py_ssize_t kind = 0; kind < *count; kind++) {
        PyObject *entry = PyTuple_GET_ITEM(kinds, kind);
        rules[kind].needles = NULL;
        if (entry == Py_None)
            continue;
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(entry, 1))) {
            PyErr_SetString(PyExc_ValueError, "a kinds entry must be None or (is_caller, needles)");
            return -1;
        }
        PyObject *needles = PyTuple_GET_ITEM(entry, 1);
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(needles); k++) {
            PyObject *needle = PyTuple_GET_ITEM(needles, k);
            if (!PyUnicode_Check(needle) || PyUnicode_READY(needle) < 0 || !PyUnicode_IS_ASCII(needle)) {
                PyErr_SetString(PyExc_ValueError, "pairing keys must be ASCII str");
                return -1;
            }
        }
        int is_caller = PyObject_IsTrue(PyTuple_GET_ITEM(entry, 0));
        if (is_caller < 0)
            return -1;
        rules[kind].is_caller = is_caller;
        rules[kind].needles = needles;
    }
    return 0;
}

/* The row of span `i`: a new tuple of every field's item, or NULL with ValueError when a list
 * became shorter than `i`. */
static PyObject *row_of(PyObject *fields, Py_ssize_t i)
{
    Py_ssize_t count = PyTuple_GET_SIZE(fields);
    PyObject *row = PyTuple_New(count);
    if (row == NULL)
        return NULL;
    for (Py_ssize_t f = 0; f < count; f++) {
        PyObject *column = PyTuple_GET_ITEM(fields, f);
        if (i >= PyList_GET_SIZE(column)) {
            Py_DECREF(row);
            PyErr_SetString(PyExc_ValueError, "a span column changed length during the scan");
            return NULL;
        }
        PyObject *value = PyList_GET_ITEM(column, i);
        Py_INCREF(value);
        PyTuple_SET_ITEM(row, f, value);
    }
    return row;
}

/* Stop the garbage collector from tracking a tuple of strs, ints and untracked tuples: it cannot be in
 * a cycle, and the waiting half-hops (up to 100k rows, keys and entries) would otherwise be walked by
 * every young collection until the collector untracks them itself (it does the same test). */
static void untrack_if_atomic(PyObject *tuple)
{
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(tuple); k++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, k);
        if (!(PyUnicode_CheckExact(item) || PyLong_CheckExact(item) || item == Py_None ||
              (PyTuple_CheckExact(item) && !PyObject_GC_IsTracked(item))))
            return;
    }
    PyObject_GC_UnTrack(tuple);
}

/* Store `row` as a plain waiting span if it is one: 1 stored, 0 not plain (nothing changed), -1 error. */
static int store_plain(PyObject *row, const kind_rule *rule, PyObject *callers, PyObject *callees,
                       PyObject *claimed, PyObject *deadline)
{
    PyObject *text = PyTuple_GET_ITEM(row, ATTRIBUTES);
    if (!PyUnicode_CheckExact(text))
        return 0;
    if (PyUnicode_READY(text) < 0)
        return -1;
    if (PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND)
        return 0;
    if (mentions((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), rule->needles))
        return 0;
    PyObject *partner_id = PyTuple_GET_ITEM(row, rule->is_caller ? SPAN_ID : PARENT_ID);
    if (!rule->is_caller && (!PyUnicode_CheckExact(partner_id) || PyUnicode_GET_LENGTH(partner_id) == 0))
        return 0; /* a root callee, or an odd parent: Python's rules */
    PyObject *key = PyTuple_Pack(2, PyTuple_GET_ITEM(row, TRACE_ID), partner_id);
    if (key == NULL)
        return -1;
    int result = 0;
    Py_hash_t hash = PyObject_Hash(key);
    if (hash == -1) {
        PyErr_Clear(); /* unhashable ids: Python counts the span as malformed */
        goto done;
    }
    if (PyDict_GET_SIZE(claimed) > 0) {
        PyObject *claim = PyLong_FromSsize_t(hash);
        if (claim == NULL) {
            result = -1;
            goto done;
        }
        int is_claimed = PyDict_Contains(claimed, claim);
        Py_DECREF(claim);
        if (is_claimed != 0) {
            result = is_claimed < 0 ? -1 : 1; /* a claimed half-hop is dropped: nothing to store */
            goto done;
        }
    }
    PyObject *own = rule->is_caller ? callers : callees;
    PyObject *other = rule->is_caller ? callees : callers;
    int waited_for = PyDict_Contains(other, key);
    if (waited_for != 0) {
        result = waited_for < 0 ? -1 : 0; /* a partner: Python pairs them */
        goto done;
    }
    PyObject *waiting = PyTuple_Pack(3, deadline, row, Py_None);
    if (waiting == NULL) {
        result = -1;
        goto done;
    }
    untrack_if_atomic(key);
    untrack_if_atomic(row);
    untrack_if_atomic(waiting);
    /* PyObject_SetItem, not PyDict_SetItem: the tables are OrderedDicts, whose order must follow. */
    result = PyObject_SetItem(own, key, waiting) < 0 ? -1 : 1;
    Py_DECREF(waiting);
done:
    Py_DECREF(key);
    return result;
}

static PyObject *scan(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "scan(fields, kinds, callers, callees, claimed, deadline, handle)");
        return NULL;
    }
    PyObject *fields = args[0], *callers = args[2], *callees = args[3], *claimed = args[4];
    PyObject *deadline = args[5], *handle = args[6];
    kind_rule rules[MAX_KINDS];
    Py_ssize_t kind_count;
    if (read_kinds(args[1], rules, &kind_count) < 0)
        return NULL;
    if (!PyTuple_Check(fields) || PyTuple_GET_SIZE(fields) < MIN_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "fields must be a tuple of at least 5 lists");
        return NULL;
    }
    if (!PyDict_Check(callers) || !PyDict_Check(callees) || !PyDict_Check(claimed) || !PyCallable_Check(handle)) {
        PyErr_SetString(PyExc_TypeError, "callers, callees and claimed must be dicts and handle a callable");
        return NULL;
    }
    /* As zip() over the columns: as many spans as the shortest column has. */
    Py_ssize_t spans = PY_SSIZE_T_MAX;
    for (Py_ssize_t f = 0; f < PyTuple_GET_SIZE(fields); f++) {
        PyObject *column = PyTuple_GET_ITEM(fields, f);
        if (!PyList_Check(column)) {
            PyErr_SetString(PyExc_ValueError, "every span column must be a list");
            return NULL;
        }
        if (PyList_GET_SIZE(column) < spans)
            spans = PyList_GET_SIZE(column);
    }
    PyObject *kinds = PyTuple_GET_ITEM(fields, KIND);
    for (Py_ssize_t i = 0; i < spans; i++) {
        if (i >= PyList_GET_SIZE(kinds)) {
            PyErr_SetString(PyExc_ValueError, "a span column changed length during the scan");
            return NULL;
        }
        PyObject *kind_value = PyList_GET_ITEM(kinds, i);
        const kind_rule *rule = NULL;
        if (PyLong_CheckExact(kind_value)) {
            int overflow;
            long kind = PyLong_AsLongAndOverflow(kind_value, &overflow);
            if (overflow || kind < 0 || kind >= kind_count || rules[kind].needles == NULL)
                continue; /* not a kind that describes a hop */
            rule = &rules[kind];
        }
        PyObject *row = row_of(fields, i);
        if (row == NULL)
            return NULL;
        int stored = rule == NULL ? 0 : store_plain(row, rule, callers, callees, claimed, deadline);
        if (stored == 0) {
            PyObject *handled = PyObject_CallOneArg(handle, row);
            stored = handled == NULL ? -1 : 1;
            Py_XDECREF(handled);
        }
        Py_DECREF(row);
        if (stored < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"scan", (PyCFunction)(void (*)(void))scan, METH_FASTCALL,
     "scan(fields, kinds, callers, callees, claimed, deadline, handle): store a batch's plain half-hops, "
     "hand every other span of a pairing kind (or of an unexpected kind value) to handle(row), in order."},
    {"mentions", (PyCFunction)(void (*)(void))mentions_text, METH_FASTCALL,
     "mentions(text, needles): whether JSON text may hold one of the quoted keys (False is exact)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, .m_name = "_hop_scan", .m_size = -1, .m_methods = methods};

PyMODINIT_FUNC PyInit__hop_scan(void) { return PyModule_Create(&module); }
