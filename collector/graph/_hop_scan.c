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
 *   `HopTracker._add_caller` / `_add_callee` would only store: `own.put(key, deadline, row, None)`;
 * - anything else, including values of an unexpected type, goes to `handle(row)`, which applies the
 *   Python rules (and counts what it cannot read as malformed), in batch order.
 *
 * `row` is the span's fields as edges.py's `_SPAN_FIELDS` lists them; this file reads only the
 * first five (kind, trace id, span id, parent id, attributes). Every list access is bounds-checked
 * each time: `handle` runs Python code between reads.
 *
 * The tables of waiting spans (`PendingTable`, below) live here too: the scan looks up and stores
 * into them directly, without a Python call or a key tuple per span. */

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
 * a cycle, and the rows of waiting half-hops (up to 100k) would otherwise be walked by
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

/* ---- the table of spans waiting for their partner ----------------------------------------------
 *
 * Why native: at the pending cap (100k spans, a long ingest run where spans rarely pair) an
 * OrderedDict entry per waiting span cost a key tuple, a value tuple, a linked-list node, a lookup
 * at a cache miss on insert and again on eviction, and one popitem call per evicted span.
 * Here a waiting span is one ring entry (in arrival order, so the oldest go first) plus one slot in
 * an open-addressing index of ring positions. The key is (trace id, partner's span id); its hash
 * combines the two ids' hashes and equality is Python's, item by item, as for a tuple key. The
 * index is at most half full and linear-probed; a removal shifts the rest of its probe run back
 * (no tombstones, so no periodic re-indexing). A paired or claimed span leaves a hole in the
 * ring; holes are skipped at the head and squeezed out when the ring is full. The table is not tracked by the garbage collector: it holds only span
 * rows and their parsed attributes, which never refer to a table. */

typedef struct {
    PyObject *trace;      /* NULL: a hole */
    PyObject *partner;
    PyObject *deadline;
    PyObject *row;
    PyObject *attributes; /* Py_None when not parsed */
    Py_hash_t hash;
} pending_entry;

typedef struct {
    PyObject_HEAD
    pending_entry *ring;   /* `capacity` entries; the entry of sequence s is ring[s & (capacity - 1)] */
    Py_ssize_t capacity;   /* a power of two */
    size_t head, tail;     /* sequences of the oldest entry (maybe a hole) and of the next one */
    Py_ssize_t live;
    Py_ssize_t *index;     /* `index_size` slots: a ring position or INDEX_EMPTY */
    Py_ssize_t index_size; /* a power of two, twice the ring's capacity */
    size_t version;        /* changes with every insertion or removal */
} PendingTable;

enum { INDEX_EMPTY = -1, FIRST_CAPACITY = 64 };

static Py_hash_t pending_hash(Py_hash_t trace_hash, Py_hash_t partner_hash)
{
    Py_uhash_t hash = (Py_uhash_t)trace_hash * 1000003u ^ (Py_uhash_t)partner_hash;
    return hash == (Py_uhash_t)-1 ? -2 : (Py_hash_t)hash;
}

/* Whether `entry` holds the key: 1 yes, 0 no, -1 error (incl. a table changed by an __eq__). */
static int pending_same(PendingTable *table, const pending_entry *entry, PyObject *trace, PyObject *partner)
{
    size_t version = table->version;
    PyObject *entry_trace = entry->trace, *entry_partner = entry->partner;
    Py_INCREF(entry_trace); /* an __eq__ may remove the entry */
    Py_INCREF(entry_partner);
    int same = PyObject_RichCompareBool(entry_trace, trace, Py_EQ);
    if (same > 0)
        same = PyObject_RichCompareBool(entry_partner, partner, Py_EQ);
    Py_DECREF(entry_trace);
    Py_DECREF(entry_partner);
    if (same >= 0 && table->version != version) {
        PyErr_SetString(PyExc_RuntimeError, "the pending table changed during a key comparison");
        return -1;
    }
    return same;
}

/* The index slot holding the key's ring position, or -1 when absent; -2 with an exception. */
static Py_ssize_t pending_find(PendingTable *table, PyObject *trace, PyObject *partner, Py_hash_t hash)
{
    Py_ssize_t mask = table->index_size - 1;
    for (Py_ssize_t slot = (Py_ssize_t)((size_t)hash & (size_t)mask);; slot = (slot + 1) & mask) {
        Py_ssize_t position = table->index[slot];
        if (position == INDEX_EMPTY)
            return -1;
        const pending_entry *entry = &table->ring[position];
        if (entry->hash != hash)
            continue;
        if (entry->trace == trace && entry->partner == partner)
            return slot;
        int same = pending_same(table, entry, trace, partner);
        if (same != 0)
            return same < 0 ? -2 : slot;
    }
}

/* Put ring position `position` (of hash `hash`, known absent) into the first free index slot. */
static void index_insert(PendingTable *table, Py_hash_t hash, Py_ssize_t position)
{
    Py_ssize_t mask = table->index_size - 1;
    Py_ssize_t slot = (Py_ssize_t)((size_t)hash & (size_t)mask);
    while (table->index[slot] != INDEX_EMPTY)
        slot = (slot + 1) & mask;
    table->index[slot] = position;
}

/* Empty index slot `slot`, moving back each later entry of its probe run whose home slot is not
 * between the gap and the entry (cyclically), so every entry stays reachable from its home. */
static void index_remove(PendingTable *table, Py_ssize_t slot)
{
    Py_ssize_t mask = table->index_size - 1;
    for (Py_ssize_t next = (slot + 1) & mask;; next = (next + 1) & mask) {
        Py_ssize_t position = table->index[next];
        if (position == INDEX_EMPTY)
            break;
        Py_ssize_t home = (Py_ssize_t)((size_t)table->ring[position].hash & (size_t)mask);
        if (((next - home) & mask) >= ((next - slot) & mask)) {
            table->index[slot] = position;
            slot = next;
        }
    }
    table->index[slot] = INDEX_EMPTY;
}

/* Index every live entry again. */
static void index_rebuild(PendingTable *table)
{
    for (Py_ssize_t slot = 0; slot < table->index_size; slot++)
        table->index[slot] = INDEX_EMPTY;
    Py_ssize_t mask = table->capacity - 1;
    for (size_t sequence = table->head; sequence != table->tail; sequence++) {
        Py_ssize_t position = (Py_ssize_t)(sequence & (size_t)mask);
        if (table->ring[position].trace != NULL)
            index_insert(table, table->ring[position].hash, position);
    }
}

/* Make room for one more entry at the tail: squeeze the holes out of a full ring, into a ring
 * twice as large when more than half of it is live. -1 with MemoryError. */
static int pending_make_room(PendingTable *table)
{
    if (table->tail - table->head < (size_t)table->capacity)
        return 0;
    Py_ssize_t capacity = table->live >= table->capacity / 2 ? table->capacity * 2 : table->capacity;
    if (capacity > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(pending_entry)) {
        PyErr_NoMemory();
        return -1;
    }
    pending_entry *ring = PyMem_Calloc((size_t)capacity, sizeof(pending_entry));
    Py_ssize_t *index = capacity == table->capacity ? table->index : PyMem_Malloc((size_t)capacity * 2 * sizeof(Py_ssize_t));
    if (ring == NULL || index == NULL) {
        PyMem_Free(ring);
        if (index != table->index)
            PyMem_Free(index);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t live = 0, mask = table->capacity - 1;
    for (size_t sequence = table->head; sequence != table->tail; sequence++) {
        const pending_entry *entry = &table->ring[sequence & (size_t)mask];
        if (entry->trace != NULL)
            ring[live++] = *entry;
    }
    PyMem_Free(table->ring);
    if (index != table->index)
        PyMem_Free(table->index);
    table->ring = ring;
    table->index = index;
    table->capacity = capacity;
    table->index_size = capacity * 2;
    table->head = 0;
    table->tail = (size_t)live;
    index_rebuild(table);
    return 0;
}

/* Store the key's entry (new references taken) at the tail, or give a present key its new values
 * in place (as an OrderedDict keeps a key's position). -1 with an exception. */
static int pending_put(PendingTable *table, PyObject *trace, PyObject *partner, Py_hash_t hash, PyObject *deadline,
                       PyObject *row, PyObject *attributes)
{
    Py_ssize_t slot = pending_find(table, trace, partner, hash);
    if (slot == -2)
        return -1;
    if (slot >= 0) {
        pending_entry *entry = &table->ring[table->index[slot]];
        PyObject *old_deadline = entry->deadline, *old_row = entry->row, *old_attributes = entry->attributes;
        entry->deadline = Py_NewRef(deadline);
        entry->row = Py_NewRef(row);
        entry->attributes = Py_NewRef(attributes);
        Py_DECREF(old_deadline);
        Py_DECREF(old_row);
        Py_DECREF(old_attributes);
        return 0;
    }
    if (pending_make_room(table) < 0)
        return -1;
    Py_ssize_t position = (Py_ssize_t)(table->tail & (size_t)(table->capacity - 1));
    table->ring[position] = (pending_entry){Py_NewRef(trace), Py_NewRef(partner), Py_NewRef(deadline), Py_NewRef(row),
                                            Py_NewRef(attributes), hash};
    table->tail++;
    table->live++;
    table->version++;
    index_insert(table, hash, position);
    return 0;
}

/* Take the entry at ring `position` (indexed at `slot`) out, leaving a hole in the ring; its
 * references go to `taken`. */
static void pending_take(PendingTable *table, Py_ssize_t slot, Py_ssize_t position, pending_entry *taken)
{
    *taken = table->ring[position];
    table->ring[position].trace = NULL;
    index_remove(table, slot);
    table->live--;
    table->version++;
    Py_ssize_t mask = table->capacity - 1;
    while (table->head != table->tail && table->ring[table->head & (size_t)mask].trace == NULL)
        table->head++;
}

static void pending_release(pending_entry *taken)
{
    Py_DECREF(taken->trace);
    Py_DECREF(taken->partner);
    Py_DECREF(taken->deadline);
    Py_DECREF(taken->row);
    Py_DECREF(taken->attributes);
}

/* Take the oldest entry out (the table must not be empty). */
static void pending_take_oldest(PendingTable *table, pending_entry *taken)
{
    Py_ssize_t position = (Py_ssize_t)(table->head & (size_t)(table->capacity - 1));
    Py_ssize_t mask = table->index_size - 1;
    Py_ssize_t slot = (Py_ssize_t)((size_t)table->ring[position].hash & (size_t)mask);
    while (table->index[slot] != position)
        slot = (slot + 1) & mask;
    pending_take(table, slot, position, taken);
}

static PyObject *pending_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "PendingTable() takes no arguments");
        return NULL;
    }
    PendingTable *table = (PendingTable *)type->tp_alloc(type, 0);
    if (table == NULL)
        return NULL;
    table->capacity = FIRST_CAPACITY;
    table->index_size = FIRST_CAPACITY * 2;
    table->ring = PyMem_Calloc(FIRST_CAPACITY, sizeof(pending_entry));
    table->index = PyMem_Malloc(FIRST_CAPACITY * 2 * sizeof(Py_ssize_t));
    if (table->ring == NULL || table->index == NULL) {
        Py_DECREF(table);
        return PyErr_NoMemory();
    }
    index_rebuild(table);
    return (PyObject *)table;
}

static void pending_dealloc(PendingTable *table)
{
    if (table->ring != NULL) {
        Py_ssize_t mask = table->capacity - 1;
        for (size_t sequence = table->head; sequence != table->tail; sequence++) {
            pending_entry *entry = &table->ring[sequence & (size_t)mask];
            if (entry->trace != NULL)
                pending_release(entry);
        }
    }
    PyMem_Free(table->ring);
    PyMem_Free(table->index);
    Py_TYPE(table)->tp_free((PyObject *)table);
}

static Py_ssize_t pending_length(PendingTable *table) { return table->live; }

/* The two ids of a key tuple and the key's hash; -1 with an exception (TypeError if unhashable). */
static int pending_key(PyObject *key, PyObject **trace, PyObject **partner, Py_hash_t *hash)
{
    if (!PyTuple_Check(key) || PyTuple_GET_SIZE(key) != 2) {
        PyErr_SetString(PyExc_TypeError, "a pending key is a (trace id, span id) tuple");
        return -1;
    }
    *trace = PyTuple_GET_ITEM(key, 0);
    *partner = PyTuple_GET_ITEM(key, 1);
    Py_hash_t trace_hash = PyObject_Hash(*trace);
    Py_hash_t partner_hash = trace_hash == -1 ? -1 : PyObject_Hash(*partner);
    if (partner_hash == -1)
        return -1;
    *hash = pending_hash(trace_hash, partner_hash);
    return 0;
}

/* pop(key): the waiting span's (deadline, row, attributes), taken out, or None. */
static PyObject *pending_pop(PendingTable *table, PyObject *key)
{
    PyObject *trace, *partner;
    Py_hash_t hash;
    if (pending_key(key, &trace, &partner, &hash) < 0)
        return NULL;
    Py_ssize_t slot = pending_find(table, trace, partner, hash);
    if (slot < 0)
        return slot == -1 ? Py_NewRef(Py_None) : NULL;
    pending_entry taken;
    pending_take(table, slot, table->index[slot], &taken);
    PyObject *waiting = PyTuple_Pack(3, taken.deadline, taken.row, taken.attributes);
    pending_release(&taken);
    return waiting;
}

/* put(key, deadline, row, attributes): a span starts waiting (or replaces the key's values). */
static PyObject *pending_put_method(PendingTable *table, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "put(key, deadline, row, attributes)");
        return NULL;
    }
    PyObject *trace, *partner;
    Py_hash_t hash;
    if (pending_key(args[0], &trace, &partner, &hash) < 0)
        return NULL;
    if (pending_put(table, trace, partner, hash, args[1], args[2], args[3]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Whether an expiring caller only counts as dropped: no parsed attributes and an attribute text
 * (the row's fifth item) that names none of `needles`, which Python's `_caller_unpaired` drops
 * whatever the span's kind. */
static int only_dropped(const pending_entry *entry, PyObject *needles)
{
    if (entry->attributes != Py_None || !PyTuple_CheckExact(entry->row) || PyTuple_GET_SIZE(entry->row) <= ATTRIBUTES)
        return 0;
    PyObject *text = PyTuple_GET_ITEM(entry->row, ATTRIBUTES);
    if (!PyUnicode_CheckExact(text) || PyUnicode_READY(text) < 0 || PyUnicode_KIND(text) != PyUnicode_1BYTE_KIND) {
        PyErr_Clear();
        return 0;
    }
    return !mentions((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), needles);
}

/* expire(count, now_ns, needles): take out the `count` oldest spans, then those whose deadline is
 * <= now_ns. Returns (how many only count as dropped, [(row, attributes) of the others, oldest
 * first]); with needles None every span taken only counts as dropped. */
static PyObject *pending_expire(PendingTable *table, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyLong_Check(args[0]) || !(args[2] == Py_None || PyTuple_Check(args[2]))) {
        PyErr_SetString(PyExc_TypeError, "expire(count: int, now_ns, needles: tuple of str or None)");
        return NULL;
    }
    Py_ssize_t count = PyLong_AsSsize_t(args[0]);
    if (count == -1 && PyErr_Occurred())
        return NULL;
    PyObject *now = args[1], *needles = args[2];
    if (needles != Py_None)
        for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(needles); k++) {
            PyObject *needle = PyTuple_GET_ITEM(needles, k);
            if (!PyUnicode_Check(needle) || PyUnicode_READY(needle) < 0 || !PyUnicode_IS_ASCII(needle)) {
                PyErr_SetString(PyExc_ValueError, "needles must be ASCII str");
                return NULL;
            }
        }
    PyObject *others = PyList_New(0);
    if (others == NULL)
        return NULL;
    Py_ssize_t dropped = 0;
    while (table->live > 0) {
        const pending_entry *oldest = &table->ring[table->head & (size_t)(table->capacity - 1)];
        if (count > 0) {
            count--;
        } else {
            PyObject *deadline = Py_NewRef(oldest->deadline); /* the comparison may run Python code */
            size_t version = table->version;
            int due = PyObject_RichCompareBool(deadline, now, Py_LE);
            Py_DECREF(deadline);
            if (due >= 0 && table->version != version) {
                PyErr_SetString(PyExc_RuntimeError, "the pending table changed during a deadline comparison");
                due = -1;
            }
            if (due <= 0) {
                if (due < 0)
                    goto error;
                break;
            }
        }
        pending_entry taken;
        pending_take_oldest(table, &taken);
        int result = 0;
        if (needles == Py_None || only_dropped(&taken, needles)) {
            dropped++;
        } else {
            PyObject *other = PyTuple_Pack(2, taken.row, taken.attributes);
            result = other == NULL ? -1 : PyList_Append(others, other);
            Py_XDECREF(other);
        }
        pending_release(&taken);
        if (result < 0)
            goto error;
    }
    return Py_BuildValue("(nN)", dropped, others);
error:
    Py_DECREF(others);
    return NULL;
}

static PyMethodDef pending_methods[] = {
    {"pop", (PyCFunction)pending_pop, METH_O, "pop(key): the waiting span's (deadline, row, attributes), taken out, or None."},
    {"put", (PyCFunction)(void (*)(void))pending_put_method, METH_FASTCALL,
     "put(key, deadline, row, attributes): a span waits at the tail (a present key keeps its place)."},
    {"expire", (PyCFunction)(void (*)(void))pending_expire, METH_FASTCALL,
     "expire(count, now_ns, needles): take out the count oldest spans, then the due ones; "
     "(dropped, [(row, attributes) naming a needle or parsed]), all dropped when needles is None."},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods pending_as_sequence = {.sq_length = (lenfunc)pending_length};

static PyTypeObject PendingTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "collector.graph._hop_scan.PendingTable",
    .tp_basicsize = sizeof(PendingTable),
    .tp_dealloc = (destructor)pending_dealloc,
    .tp_as_sequence = &pending_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Spans waiting for their partner, by (trace id, partner span id), oldest first.",
    .tp_methods = pending_methods,
    .tp_new = pending_new,
};

/* Store `row` as a plain waiting span if it is one: 1 stored, 0 not plain (nothing changed), -1 error. */
static int store_plain(PyObject *row, const kind_rule *rule, PendingTable *callers, PendingTable *callees,
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
    PyObject *trace_id = PyTuple_GET_ITEM(row, TRACE_ID);
    PyObject *partner_id = PyTuple_GET_ITEM(row, rule->is_caller ? SPAN_ID : PARENT_ID);
    if (!rule->is_caller && (!PyUnicode_CheckExact(partner_id) || PyUnicode_GET_LENGTH(partner_id) == 0))
        return 0; /* a root callee, or an odd parent: Python's rules */
    Py_hash_t trace_hash = PyObject_Hash(trace_id);
    Py_hash_t partner_hash = trace_hash == -1 ? -1 : PyObject_Hash(partner_id);
    if (partner_hash == -1) {
        PyErr_Clear(); /* unhashable ids: Python counts the span as malformed */
        return 0;
    }
    if (PyDict_GET_SIZE(claimed) > 0) { /* claims are by the hash of the key tuple, as Python makes them */
        PyObject *key = PyTuple_Pack(2, trace_id, partner_id);
        if (key == NULL)
            return -1;
        Py_hash_t key_hash = PyObject_Hash(key);
        Py_DECREF(key);
        if (key_hash == -1)
            return -1;
        PyObject *claim = PyLong_FromSsize_t(key_hash);
        if (claim == NULL)
            return -1;
        int is_claimed = PyDict_Contains(claimed, claim);
        Py_DECREF(claim);
        if (is_claimed != 0)
            return is_claimed < 0 ? -1 : 1; /* a claimed half-hop is dropped: nothing to store */
    }
    Py_hash_t hash = pending_hash(trace_hash, partner_hash);
    PendingTable *own = rule->is_caller ? callers : callees;
    PendingTable *other = rule->is_caller ? callees : callers;
    Py_ssize_t waited_for = pending_find(other, trace_id, partner_id, hash);
    if (waited_for != -1)
        return waited_for == -2 ? -1 : 0; /* a partner: Python pairs them */
    untrack_if_atomic(row);
    return pending_put(own, trace_id, partner_id, hash, deadline, row, Py_None) < 0 ? -1 : 1;
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
    if (!PyObject_TypeCheck(callers, &PendingTableType) || !PyObject_TypeCheck(callees, &PendingTableType) ||
        !PyDict_Check(claimed) || !PyCallable_Check(handle)) {
        PyErr_SetString(PyExc_TypeError, "callers and callees must be PendingTables, claimed a dict, handle a callable");
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
        int stored = rule == NULL ? 0 : store_plain(row, rule, (PendingTable *)callers, (PendingTable *)callees, claimed, deadline);
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

PyMODINIT_FUNC PyInit__hop_scan(void)
{
    if (PyType_Ready(&PendingTableType) < 0)
        return NULL;
    PyObject *scan_module = PyModule_Create(&module);
    if (scan_module != NULL && PyModule_AddObjectRef(scan_module, "PendingTable", (PyObject *)&PendingTableType) < 0)
        Py_CLEAR(scan_module);
    return scan_module;
}
