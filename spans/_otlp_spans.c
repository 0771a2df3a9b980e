/* Span records -> the OTLP protobuf bytes of `ScopeSpans.spans` fields (and of a `Resource`).
 *
 * Why native: a proxy records one span per request, so encoding them is a per-request cost. Written
 * in Python (even with caches of encoded attribute pairs) it took 5-9 us per proxy span, about a
 * quarter of the proxy's CPU per request; here it is about 0.3 us. That is cheap enough to encode
 * each span as it is recorded (mesh/export.py), so nothing of a request outlives it: a buffered span
 * is ~0.5 KB of bytes instead of ~1.6 KB of tuples that the garbage collector keeps walking.
 *
 * The record format is the mesh contract's SpanRecord (see spans/otlp_encode.py). The records come
 * from our own data path, but a bug there must never crash the proxy or corrupt a whole request: every
 * record is checked (types, id lengths and digits, int ranges) before a byte of it is written, and a
 * malformed one is refused with the reason while nothing is appended.
 *
 * Protobuf puts a message's length before the message: a span's attributes are encoded first, each
 * one as soon as its value is measured, then the span's exact size is known and it is written to
 * reserved space without further checks. The parts every span of a proxy shares (the keys of an HTTP
 * span, an endpoint's constant attributes) are read or encoded once and cached (see read_keys). Attribute
 * values are typed as in the OTLP AnyValue: str, bool, int (int64), float; anything else (an int
 * beyond int64, a subclass, another object) travels as its str() text.
 *
 * Spans are appended to a SpanBatch (below), whose memory is kept for the next batch. An HTTP
 * exchange's span can also be appended from C values through the C API of otlp_spans.h. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <structmember.h>

#define OTLP_SPANS_MODULE /* the API's provider: no imported table here */
#include "otlp_spans.h"

/* Protobuf refuses messages of 2 GiB or more; a span that large is a bug, not data. Holding every
 * string and running total to this also keeps the size arithmetic far from overflowing. */
#define MAX_MESSAGE ((size_t)INT32_MAX)

/* Field tags: (field number << 3) | wire type (0 varint, 1 fixed64, 2 length-delimited). */
#define TAG_SPANS 0x12          /* ScopeSpans.spans = 2 */
#define TAG_TRACE_ID 0x0a       /* Span.trace_id = 1 */
#define TAG_SPAN_ID 0x12        /* Span.span_id = 2 */
#define TAG_PARENT_ID 0x22      /* Span.parent_span_id = 4 */
#define TAG_NAME 0x2a           /* Span.name = 5 */
#define TAG_KIND 0x30           /* Span.kind = 6 */
#define TAG_START 0x39          /* Span.start_time_unix_nano = 7, fixed64 */
#define TAG_END 0x41            /* Span.end_time_unix_nano = 8, fixed64 */
#define TAG_SPAN_ATTRIBUTE 0x4a /* Span.attributes = 9 */
#define TAG_STATUS 0x7a         /* Span.status = 15 */
#define TAG_STATUS_MESSAGE 0x12 /* Status.message = 2 */
#define TAG_STATUS_CODE 0x18    /* Status.code = 3 */
#define TAG_RESOURCE_ATTRIBUTE 0x0a /* Resource.attributes = 1 */
#define TAG_KEY 0x0a            /* KeyValue.key = 1 */
#define TAG_VALUE 0x12          /* KeyValue.value = 2 */
#define TAG_STRING 0x0a         /* AnyValue.string_value = 1 */
#define TAG_BOOL 0x10           /* AnyValue.bool_value = 2 */
#define TAG_INT 0x18            /* AnyValue.int_value = 3 */
#define TAG_DOUBLE 0x21         /* AnyValue.double_value = 4, fixed64 */

enum { RECORD_FIELDS = 10, TRACE_ID_BYTES = 16, SPAN_ID_BYTES = 8 };
enum value_type { VALUE_STRING, VALUE_BOOL, VALUE_INT, VALUE_DOUBLE };
/* What encoding one record came to. */
enum outcome { ENCODED = 0, MALFORMED = 1, FAILED = -1 /* a Python exception to propagate */ };

/* One attribute value, checked and measured, about to be written. */
typedef struct {
    enum value_type type;
    const char *text; /* VALUE_STRING */
    Py_ssize_t text_len;
    uint64_t bits; /* VALUE_BOOL 0/1, VALUE_INT two's complement, VALUE_DOUBLE IEEE bits */
    size_t len; /* the AnyValue message */
} Value;

/* An attribute key: its UTF-8, or NULL text when it is not a str; for a cached key of an HTTP span
 * also its KeyValue.key field (tag, length, UTF-8) encoded once (else NULL `field`). */
typedef struct {
    const char *text;
    Py_ssize_t len;
    const char *field;
    size_t field_len;
} Key;

/* Per-call working memory: the span's attribute fields, encoded one by one as they are checked (an
 * attribute's size is known once its value is measured, so each is written at once rather than
 * measured into a list and walked again), and the temporary objects (str() of odd values,
 * "replace"-encoded text) whose bytes the span's name and message point into until it is written.
 * `may_cache` is set for the outermost call only: it alone changes the caches (see append_with). */
typedef struct {
    char *bytes;
    size_t len, cap;
    PyObject **temps;
    Py_ssize_t temps_len, temps_cap;
    int may_cache;
} Scratch;

static void scratch_release_temps(Scratch *scratch) {
    for (Py_ssize_t i = 0; i < scratch->temps_len; i++) {
        Py_DECREF(scratch->temps[i]);
    }
    scratch->temps_len = 0;
}

static void scratch_free(Scratch *scratch) {
    scratch_release_temps(scratch);
    PyMem_Free(scratch->temps);
    PyMem_Free(scratch->bytes);
}

/* Keeps `object` (a new reference, stolen) alive until the current span is written. */
static int scratch_keep(Scratch *scratch, PyObject *object) {
    if (scratch->temps_len == scratch->temps_cap) {
        Py_ssize_t cap = scratch->temps_cap ? scratch->temps_cap * 2 : 8;
        PyObject **temps = PyMem_Realloc(scratch->temps, (size_t)cap * sizeof(PyObject *));
        if (temps == NULL) {
            Py_DECREF(object);
            PyErr_NoMemory();
            return -1;
        }
        scratch->temps = temps;
        scratch->temps_cap = cap;
    }
    scratch->temps[scratch->temps_len++] = object;
    return 0;
}

/* Sets `*reason` to a new message; MALFORMED, or FAILED when even that fails. */
static enum outcome malformed(PyObject **reason, const char *format, ...) {
    va_list args;
    va_start(args, format);
    *reason = PyUnicode_FromFormatV(format, args);
    va_end(args);
    return *reason == NULL ? FAILED : MALFORMED;
}

/* scratch_reserve when the room is short: the attributes must stay within MAX_MESSAGE, and the room
 * grows (to at most MAX_MESSAGE, so that whatever fits in it is within the limit). */
static enum outcome scratch_grow(Scratch *scratch, size_t more, PyObject **reason) {
    if (more > MAX_MESSAGE - scratch->len) { /* len never exceeds MAX_MESSAGE */
        return malformed(reason, "attributes too large");
    }
    size_t needed = scratch->len + more;
    size_t cap = scratch->cap < 256 ? 256 : scratch->cap < MAX_MESSAGE / 2 ? 2 * scratch->cap : MAX_MESSAGE;
    cap = cap < needed ? needed : cap;
    char *bytes = PyMem_Realloc(scratch->bytes, cap);
    if (bytes == NULL) {
        PyErr_NoMemory();
        return FAILED;
    }
    scratch->bytes = bytes;
    scratch->cap = cap;
    return ENCODED;
}

/* Room for `more` bytes after the encoded attributes, at scratch->bytes + scratch->len. */
static inline enum outcome scratch_reserve(Scratch *scratch, size_t more, PyObject **reason) {
    return more <= scratch->cap - scratch->len ? ENCODED : scratch_grow(scratch, more, reason);
}

static inline size_t varint_size(uint64_t value) {
    size_t size = 1;
    while (value >= 0x80) {
        value >>= 7;
        size++;
    }
    return size;
}

static inline char *put_varint(char *out, uint64_t value) {
    while (value >= 0x80) {
        *out++ = (char)(value | 0x80);
        value >>= 7;
    }
    *out++ = (char)value;
    return out;
}

static char *put_fixed64(char *out, uint64_t value) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(out, &value, 8); /* the wire's byte order already */
    return out + 8;
#else
    for (int i = 0; i < 8; i++) {
        *out++ = (char)(value >> (8 * i));
    }
    return out;
#endif
}

/* A length-delimited field of `len` payload bytes, tag included. */
static inline size_t field_size(size_t len) { return 1 + varint_size(len) + len; }

/* memcpy for the short keys and values a span is made of: fixed-size (the last one overlapping)
 * copies instead of a call into the C library (which was a sixth of the encoder's instructions). */
static inline char *put_raw(char *out, const char *data, size_t len) {
    if (len < 4) { /* methods, short paths and values */
        for (size_t i = 0; i < len; i++) {
            out[i] = data[i];
        }
    } else if (len < 8) {
        memcpy(out, data, 4);
        memcpy(out + len - 4, data + len - 4, 4);
    } else if (len < 16) {
        memcpy(out, data, 8);
        memcpy(out + len - 8, data + len - 8, 8);
    } else if (len <= 32) { /* most attribute keys; ids */
        memcpy(out, data, 16);
        memcpy(out + len - 16, data + len - 16, 16);
    } else if (len <= 64) {
        for (size_t i = 0; i + 16 < len; i += 16) {
            memcpy(out + i, data + i, 16);
        }
        memcpy(out + len - 16, data + len - 16, 16);
    } else {
        memcpy(out, data, len);
    }
    return out + len;
}

static inline char *put_bytes_field(char *out, char tag, const char *data, size_t len) {
    *out++ = tag;
    out = put_varint(out, len);
    return put_raw(out, data, len);
}

/* How a bad value appears in a reason. Only a plain str's repr is shown (it runs no code and
 * cannot fail but for memory) and a plain int's value; any other object could run code or raise
 * from its repr, so it is named by its type. */
static PyObject *shown(PyObject *value) {
    if (PyUnicode_CheckExact(value)) {
        return PyUnicode_FromFormat("%.80R", value);
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        return overflow ? PyUnicode_FromString("an int beyond 64 bits") : PyUnicode_FromFormat("%lld", number);
    }
    return PyUnicode_FromFormat("a %.80s", Py_TYPE(value)->tp_name);
}

/* "[attribute N ]WHAT must be EXPECTED, got VALUE" as the reason. */
static enum outcome bad_value(PyObject **reason, Py_ssize_t attribute, const char *what, const char *expected,
                              PyObject *value) {
    PyObject *value_shown = shown(value);
    if (value_shown == NULL) {
        return FAILED;
    }
    if (attribute >= 0) {
        *reason = PyUnicode_FromFormat("attribute %zd%s%s must be %s, got %U", attribute, *what ? " " : "", what, expected,
                                       value_shown);
    } else {
        *reason = PyUnicode_FromFormat("%s must be %s, got %U", what, expected, value_shown);
    }
    Py_DECREF(value_shown);
    return *reason == NULL ? FAILED : MALFORMED;
}

/* Turns the exception that str() of an odd attribute value raised into the reason. Out of memory
 * and non-Exception errors (KeyboardInterrupt, SystemExit) are not the record's fault: FAILED. */
static enum outcome unprintable_value(PyObject **reason, Py_ssize_t attribute, PyObject *value) {
    if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError)) {
        return FAILED;
    }
    PyErr_Clear();
    return malformed(reason, "attribute %zd value (a %.80s) could not be made text: its str() raised", attribute,
                     Py_TYPE(value)->tp_name);
}

/* UTF-8 of a str that is not plain ASCII (see utf8_of). Lone surrogates, which strict UTF-8 refuses,
 * become '?' (as str.encode(errors="replace") does): a span keeps its text rather than being lost
 * for one odd character. */
static int utf8_of_non_ascii(PyObject *text, const char **out, Py_ssize_t *len, Scratch *scratch) {
    *out = PyUnicode_AsUTF8AndSize(text, len);
    if (*out != NULL) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        return -1;
    }
    PyErr_Clear();
    PyObject *encoded = PyUnicode_AsEncodedString(text, "utf-8", "replace");
    if (encoded == NULL || scratch_keep(scratch, encoded) < 0) {
        return -1;
    }
    *out = PyBytes_AS_STRING(encoded);
    *len = PyBytes_GET_SIZE(encoded);
    return 0;
}

/* UTF-8 of a str, without a call for ASCII (most of a proxy's text), whose characters are the UTF-8. */
static inline int utf8_of(PyObject *text, const char **out, Py_ssize_t *len, Scratch *scratch) {
    if (PyUnicode_IS_COMPACT_ASCII(text)) {
        *out = (const char *)PyUnicode_1BYTE_DATA(text);
        *len = PyUnicode_GET_LENGTH(text);
        return 0;
    }
    return utf8_of_non_ascii(text, out, len, scratch);
}

/* Hex digit values by character as the high and the low half of a byte, NOT_HEX for "not a hex digit"
 * (tables: ids are 64 digits per span; one per half spares a shift per byte). */
enum { NOT_HEX = 0x100 };
static uint16_t hex_highs[256], hex_lows[256];

static void init_hex_values(void) {
    for (int c = 0; c < 256; c++) {
        hex_highs[c] = hex_lows[c] = NOT_HEX;
    }
    for (int i = 0; i < 16; i++) {
        const char *digits = "0123456789abcdef";
        int lower = digits[i], upper = i < 10 ? lower : lower - 'a' + 'A';
        hex_highs[lower] = hex_highs[upper] = (uint16_t)(i << 4);
        hex_lows[lower] = hex_lows[upper] = (uint16_t)i;
    }
}

/* A hex id of exactly 2 * `size` digits into `out`; `optional` also accepts '' (size 0 written). */
static Py_ALWAYS_INLINE inline enum outcome parse_id(PyObject *id, const char *what, size_t size, int optional,
                                                     unsigned char *out, size_t *written, PyObject **reason) {
    const unsigned char *digits = NULL;
    Py_ssize_t len = -1;
    if (PyUnicode_Check(id) && PyUnicode_IS_COMPACT_ASCII(id)) { /* else not hex digits (or a rare str form: refused) */
        digits = PyUnicode_1BYTE_DATA(id);
        len = PyUnicode_GET_LENGTH(id);
    }
    if (optional && len == 0) {
        *written = 0;
        return ENCODED;
    }
    const char *expected = size == TRACE_ID_BYTES ? "32 hex digits" : optional ? "16 hex digits or ''" : "16 hex digits";
    if (len != (Py_ssize_t)(2 * size)) {
        return bad_value(reason, -1, what, expected, id);
    }
    unsigned invalid = 0;
    for (size_t i = 0; i < size; i += 2) { /* size is even: two bytes a turn halve the loop's own cost */
        unsigned first = hex_highs[digits[2 * i]] | hex_lows[digits[2 * i + 1]];
        unsigned second = hex_highs[digits[2 * i + 2]] | hex_lows[digits[2 * i + 3]];
        invalid |= first | second;
        out[i] = (unsigned char)first;
        out[i + 1] = (unsigned char)second;
    }
    if (invalid & NOT_HEX) {
        return bad_value(reason, -1, what, expected, id);
    }
    *written = size;
    return ENCODED;
}

/* parse_uint for all but an exact int within long long. */
static enum outcome parse_other_uint(PyObject *number, const char *what, const char *expected, uint64_t max,
                                     uint64_t *out, PyObject **reason) {
    if (PyLong_Check(number)) {
        unsigned long long value = PyLong_AsUnsignedLongLong(number);
        if (!(value == (unsigned long long)-1 && PyErr_Occurred())) {
            if (value <= max) {
                *out = value;
                return ENCODED;
            }
        } else if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear(); /* negative or beyond 64 bits */
        } else {
            return FAILED;
        }
    }
    return bad_value(reason, -1, what, expected, number);
}

/* An int field of the record in [0, max] (`expected` says so in words). */
static Py_ALWAYS_INLINE inline enum outcome parse_uint(PyObject *number, const char *what, const char *expected,
                                                       uint64_t max, uint64_t *out, PyObject **reason) {
    if (PyLong_CheckExact(number)) { /* the usual case, without PyLong_AsUnsignedLongLong's byte-array path */
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
        if (!overflow && value >= 0 && (uint64_t)value <= max) {
            *out = (uint64_t)value;
            return ENCODED;
        }
    }
    return parse_other_uint(number, what, expected, max, out, reason);
}

/* Measures `value` typed as in the OTLP AnyValue. Clears `*plain` when its encoding could differ
 * another time or depend on code of its own (str() of anything but a str, an int, a float or a bool). */
static Py_ALWAYS_INLINE inline enum outcome measure_value(PyObject *value, Py_ssize_t index, Value *measured,
                                                          int *plain, Scratch *scratch, PyObject **reason) {
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow); /* cannot fail on an exact int */
        if (!overflow) {
            measured->type = VALUE_INT;
            measured->bits = (uint64_t)number; /* protobuf int64: a negative number is a 10-byte two's complement */
            measured->len = 1 + varint_size(measured->bits);
            return ENCODED;
        }
    } else if (PyBool_Check(value)) {
        measured->type = VALUE_BOOL;
        measured->bits = value == Py_True;
        measured->len = 2;
        return ENCODED;
    } else if (PyFloat_CheckExact(value)) {
        double real = PyFloat_AS_DOUBLE(value);
        measured->type = VALUE_DOUBLE;
        memcpy(&measured->bits, &real, sizeof measured->bits);
        measured->len = 9;
        return ENCODED;
    }
    /* a str; an int beyond int64, a subclass or any other object as its text */
    PyObject *text = value;
    if (!PyUnicode_CheckExact(value)) {
        *plain = 0;
        text = PyObject_Str(value);
        if (text == NULL) {
            return unprintable_value(reason, index, value);
        }
        if (scratch_keep(scratch, text) < 0) {
            return FAILED;
        }
    }
    if (utf8_of(text, &measured->text, &measured->text_len, scratch) < 0) {
        return FAILED;
    }
    measured->type = VALUE_STRING;
    if ((size_t)measured->text_len > MAX_MESSAGE) {
        return malformed(reason, "attribute %zd value too large", index);
    }
    measured->len = field_size((size_t)measured->text_len);
    return ENCODED;
}

/* Appends the KeyValue field `tag` of a str `key` and a measured value, attribute `index`, to the
 * encoded attributes. */
static Py_ALWAYS_INLINE inline enum outcome append_attribute(Scratch *scratch, char tag, const Key *key,
                                                             const Value *value, Py_ssize_t index, PyObject **reason) {
    if ((size_t)key->len > MAX_MESSAGE) {
        return malformed(reason, "attribute %zd key too large", index);
    }
    size_t key_field_len = key->field ? key->field_len : field_size((size_t)key->len);
    size_t pair_len = key_field_len + field_size(value->len);
    size_t total = field_size(pair_len);
    enum outcome outcome = scratch_reserve(scratch, total, reason);
    if (outcome != ENCODED) {
        return outcome;
    }
    char *start = scratch->bytes + scratch->len, *out = start;
    *out++ = tag;
    out = put_varint(out, pair_len);
    out = key->field ? put_raw(out, key->field, key_field_len)
                     : put_bytes_field(out, TAG_KEY, key->text, (size_t)key->len);
    *out++ = TAG_VALUE;
    out = put_varint(out, value->len);
    switch (value->type) {
    case VALUE_STRING:
        out = put_bytes_field(out, TAG_STRING, value->text, (size_t)value->text_len);
        break;
    case VALUE_BOOL:
        *out++ = TAG_BOOL;
        *out++ = (char)value->bits;
        break;
    case VALUE_INT:
        *out++ = TAG_INT;
        out = put_varint(out, value->bits);
        break;
    case VALUE_DOUBLE:
        *out++ = TAG_DOUBLE;
        out = put_fixed64(out, value->bits);
        break;
    }
    if ((size_t)(out - start) != total) { /* measuring and writing disagree: a bug here, never data */
        PyErr_SetString(PyExc_SystemError, "span encoder wrote a different size than it measured");
        return FAILED;
    }
    scratch->len += total;
    return ENCODED;
}

/* Checks one (key, value) pair and appends it as attribute `index`. */
static enum outcome encode_attribute(PyObject *pair, Py_ssize_t index, char tag, Scratch *scratch, int *plain,
                                     PyObject **reason) {
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        return bad_value(reason, index, "", "a (key, value) tuple", pair);
    }
    PyObject *key = PyTuple_GET_ITEM(pair, 0), *value = PyTuple_GET_ITEM(pair, 1);
    if (!PyUnicode_Check(key)) {
        return bad_value(reason, index, "key", "a str", key);
    }
    if (!PyTuple_CheckExact(pair) || !PyUnicode_CheckExact(key)) {
        *plain = 0;
    }
    Key text = {.field = NULL};
    if (utf8_of(key, &text.text, &text.len, scratch) < 0) {
        return FAILED;
    }
    Value measured;
    enum outcome outcome = measure_value(value, index, &measured, plain, scratch, reason);
    return outcome != ENCODED ? outcome : append_attribute(scratch, tag, &text, &measured, index, reason);
}

/* Checks a tuple or list of pairs and appends each as a field `tag`; `*count` out. Clears `*plain`
 * unless the encoding is fixed by the tuple's identity (see encode_constant_attributes). */
static enum outcome encode_attributes(PyObject *attributes, char tag, Scratch *scratch, Py_ssize_t *count, int *plain,
                                      PyObject **reason) {
    if (PyList_Check(attributes)) {
        /* a private copy: a str() of an odd value could run code that changes the list */
        attributes = PyList_AsTuple(attributes);
        if (attributes == NULL || scratch_keep(scratch, attributes) < 0) {
            return FAILED;
        }
        *plain = 0;
    } else if (!PyTuple_Check(attributes)) {
        return bad_value(reason, -1, "attributes", "a tuple of (key, value) pairs", attributes);
    } else if (!PyTuple_CheckExact(attributes)) {
        *plain = 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(attributes);
    for (Py_ssize_t i = 0; i < n; i++) {
        enum outcome outcome = encode_attribute(PyTuple_GET_ITEM(attributes, i), i, tag, scratch, plain, reason);
        if (outcome != ENCODED) {
            return outcome;
        }
    }
    *count = n;
    return ENCODED;
}

/* A span's fields other than its attributes, checked, in wire form (ids as bytes, text as UTF-8). */
typedef struct {
    unsigned char trace_id[TRACE_ID_BYTES], span_id[SPAN_ID_BYTES], parent_id[SPAN_ID_BYTES];
    size_t trace_len, span_len, parent_len;
    uint64_t kind, start, duration, status_code;
    const char *name, *message;
    Py_ssize_t name_len, message_len;
} SpanHead;

/* Checks a span's ids and numbers into `head`; its name and status message are set by the caller. */
static enum outcome parse_head(PyObject *trace_id, PyObject *span_id, PyObject *parent_id, PyObject *kind, PyObject *start,
                               PyObject *duration, PyObject *status_code, SpanHead *head, PyObject **reason) {
    enum outcome outcome;
    if ((outcome = parse_id(trace_id, "trace_id", TRACE_ID_BYTES, 0, head->trace_id, &head->trace_len, reason)) ||
        (outcome = parse_id(span_id, "span_id", SPAN_ID_BYTES, 0, head->span_id, &head->span_len, reason)) ||
        (outcome = parse_id(parent_id, "parent_span_id", SPAN_ID_BYTES, 1, head->parent_id, &head->parent_len, reason)) ||
        (outcome = parse_uint(kind, "kind", "an int from 0 to 2**31-1", INT32_MAX, &head->kind, reason)) ||
        (outcome = parse_uint(start, "start_ns", "an int from 0 to 2**64-1", UINT64_MAX, &head->start, reason)) ||
        (outcome = parse_uint(duration, "duration_ns", "an int from 0 to 2**64-1-start_ns", UINT64_MAX - head->start,
                              &head->duration, reason)) ||
        (outcome = parse_uint(status_code, "status_code", "an int from 0 to 2**31-1", INT32_MAX, &head->status_code,
                              reason))) {
        return outcome;
    }
    return ENCODED;
}

/* The status message of a span (a str) into `head`. */
static enum outcome parse_message(PyObject *message, SpanHead *head, Scratch *scratch, PyObject **reason) {
    if (!PyUnicode_Check(message)) {
        return bad_value(reason, -1, "status_message", "a str", message);
    }
    return utf8_of(message, &head->message, &head->message_len, scratch) < 0 ? FAILED : ENCODED;
}

/* The span fields of one export batch (`ScopeSpans.spans`, what ExportRequestFramer wraps), appended span
 * by span into memory the batch keeps when it is cleared for the next one. Why not a bytearray: one
 * cannot keep room beyond its size (shrinking it below half its allocation reallocates), so every batch
 * started empty and regrew, and once glibc had raised its mmap threshold each regrowth was a realloc
 * copying the batch so far: 300-840 instructions a span at 512 spans a batch. A batch made at the size
 * batches reach, and reused once its bytes are framed, grows only when a batch outgrows it. Its bytes are
 * read through the buffer protocol (bytes(batch), b"".join(...)); while read, the batch cannot change. */
typedef struct {
    PyObject_HEAD
    char *bytes;
    Py_ssize_t len, capacity;
    Py_ssize_t exports; /* buffer views open on the bytes */
} SpanBatch;

static PyTypeObject SpanBatch_Type;

/* Where `more` bytes can be written after the batch's bytes (it grows when short); NULL with an
 * exception. The caller adds what it wrote to `len`. */
static char *batch_room(SpanBatch *batch, size_t more) {
    if (batch->exports) {
        PyErr_SetString(PyExc_BufferError, "a SpanBatch cannot change while its bytes are being read");
        return NULL;
    }
    if (more > (size_t)(batch->capacity - batch->len)) {
        if (more > (size_t)(PY_SSIZE_T_MAX - batch->len)) {
            PyErr_NoMemory();
            return NULL;
        }
        Py_ssize_t needed = batch->len + (Py_ssize_t)more;
        Py_ssize_t capacity = batch->capacity < PY_SSIZE_T_MAX / 2 ? 2 * batch->capacity : PY_SSIZE_T_MAX;
        capacity = capacity < needed ? needed : capacity < 4096 ? 4096 : capacity;
        char *bytes = PyMem_Realloc(batch->bytes, (size_t)capacity);
        if (bytes == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        batch->bytes = bytes;
        batch->capacity = capacity;
    }
    return batch->bytes + batch->len;
}

static PyObject *batch_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *keywords[] = {"capacity", NULL};
    Py_ssize_t capacity = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|n:SpanBatch", keywords, &capacity)) {
        return NULL;
    }
    if (capacity < 0) {
        return PyErr_Format(PyExc_ValueError, "SpanBatch capacity must be >= 0, got %zd", capacity);
    }
    SpanBatch *batch = (SpanBatch *)type->tp_alloc(type, 0);
    if (batch != NULL && capacity && (batch->bytes = PyMem_Malloc((size_t)capacity)) == NULL) {
        Py_DECREF(batch);
        return PyErr_NoMemory();
    }
    if (batch != NULL) {
        batch->capacity = capacity;
    }
    return (PyObject *)batch;
}

static void batch_dealloc(SpanBatch *batch) {
    PyMem_Free(batch->bytes);
    Py_TYPE(batch)->tp_free((PyObject *)batch);
}

static Py_ssize_t batch_length(SpanBatch *batch) { return batch->len; }

static int batch_getbuffer(SpanBatch *batch, Py_buffer *view, int flags) {
    if (PyBuffer_FillInfo(view, (PyObject *)batch, batch->bytes ? batch->bytes : "", batch->len, 1, flags) < 0) {
        return -1;
    }
    batch->exports++;
    return 0;
}

static void batch_releasebuffer(SpanBatch *batch, Py_buffer *view) { batch->exports--; }

static PyObject *batch_clear(SpanBatch *batch, PyObject *unused) {
    if (batch->exports) {
        PyErr_SetString(PyExc_BufferError, "a SpanBatch cannot change while its bytes are being read");
        return NULL;
    }
    batch->len = 0;
    Py_RETURN_NONE;
}

static PyMethodDef batch_methods[] = {
    {"clear", (PyCFunction)batch_clear, METH_NOARGS, "Empties the batch and keeps its memory for the next spans."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef batch_members[] = {
    {"capacity", T_PYSSIZET, offsetof(SpanBatch, capacity), READONLY, "bytes the batch holds room for"},
    {NULL, 0, 0, 0, NULL},
};

static PySequenceMethods batch_as_sequence = {.sq_length = (lenfunc)batch_length};
static PyBufferProcs batch_as_buffer = {
    .bf_getbuffer = (getbufferproc)batch_getbuffer,
    .bf_releasebuffer = (releasebufferproc)batch_releasebuffer,
};

static PyTypeObject SpanBatch_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spans._otlp_spans.SpanBatch",
    .tp_doc = PyDoc_STR("SpanBatch(capacity=0)\n\n"
                        "The encoded spans of one export batch, with room for `capacity` bytes to start with.\n"
                        "len() is its size in bytes; its bytes are read through the buffer protocol;\n"
                        "clear() empties it for reuse, keeping its memory."),
    .tp_basicsize = sizeof(SpanBatch),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = batch_new,
    .tp_dealloc = (destructor)batch_dealloc,
    .tp_as_sequence = &batch_as_sequence,
    .tp_as_buffer = &batch_as_buffer,
    .tp_methods = batch_methods,
    .tp_members = batch_members,
};

/* Appends one `ScopeSpans.spans` field of `head` and the encoded attribute fields in `scratch` to
 * `batch`. */
static enum outcome write_span(SpanBatch *batch, const SpanHead *head, const Scratch *scratch, PyObject **reason) {
    size_t attributes_size = scratch->len;
    size_t status_size = 0;
    if (head->message_len) {
        status_size += field_size((size_t)head->message_len);
    }
    if (head->status_code) {
        status_size += 1 + varint_size(head->status_code);
    }
    if ((size_t)head->name_len > MAX_MESSAGE || (size_t)head->message_len > MAX_MESSAGE) {
        return malformed(reason, "span too large to encode");
    }
    size_t body = field_size(head->trace_len) + field_size(head->span_len) +
                  (head->parent_len ? field_size(head->parent_len) : 0) + 18 /* times */ +
                  (head->kind ? 1 + varint_size(head->kind) : 0) + field_size((size_t)head->name_len) + attributes_size +
                  (status_size ? field_size(status_size) : 0);
    if (body > MAX_MESSAGE) {
        return malformed(reason, "span too large to encode");
    }
    size_t total = field_size(body);
    char *start_of_field = batch_room(batch, total), *out = start_of_field;
    if (start_of_field == NULL) {
        return FAILED;
    }
    *out++ = TAG_SPANS;
    out = put_varint(out, body);
    out = put_bytes_field(out, TAG_TRACE_ID, (const char *)head->trace_id, head->trace_len);
    out = put_bytes_field(out, TAG_SPAN_ID, (const char *)head->span_id, head->span_len);
    if (head->parent_len) {
        out = put_bytes_field(out, TAG_PARENT_ID, (const char *)head->parent_id, head->parent_len);
    }
    out = put_bytes_field(out, TAG_NAME, head->name, (size_t)head->name_len);
    if (head->kind) {
        *out++ = TAG_KIND;
        out = put_varint(out, head->kind);
    }
    *out++ = TAG_START;
    out = put_fixed64(out, head->start);
    *out++ = TAG_END;
    out = put_fixed64(out, head->start + head->duration);
    if (attributes_size) {
        memcpy(out, scratch->bytes, attributes_size);
        out += attributes_size;
    }
    if (status_size) {
        *out++ = TAG_STATUS;
        out = put_varint(out, status_size);
        if (head->message_len) {
            out = put_bytes_field(out, TAG_STATUS_MESSAGE, head->message, (size_t)head->message_len);
        }
        if (head->status_code) {
            *out++ = TAG_STATUS_CODE;
            out = put_varint(out, head->status_code);
        }
    }
    if ((size_t)(out - start_of_field) != total) { /* measuring and writing disagree: a bug here, never data */
        PyErr_SetString(PyExc_SystemError, "span encoder wrote a different size than it measured");
        return FAILED;
    }
    batch->len += (Py_ssize_t)total;
    return ENCODED;
}

/* Appends one `ScopeSpans.spans` field for `record` to `batch`, or reports why it cannot (and appends
 * nothing). */
static enum outcome encode_span(PyObject *record, Scratch *scratch, SpanBatch *batch, PyObject **reason) {
    if (!PyTuple_Check(record) || PyTuple_GET_SIZE(record) != RECORD_FIELDS) {
        return bad_value(reason, -1, "a span record", "a tuple of 10 fields", record);
    }
    PyObject *const *fields = &PyTuple_GET_ITEM(record, 0);
    SpanHead head;
    enum outcome outcome;
    if ((outcome = parse_head(fields[0], fields[1], fields[2], fields[4], fields[5], fields[6], fields[7], &head, reason))) {
        return outcome;
    }
    if (!PyUnicode_Check(fields[3])) {
        return bad_value(reason, -1, "name", "a str", fields[3]);
    }
    if ((outcome = parse_message(fields[8], &head, scratch, reason))) {
        return outcome;
    }
    if (utf8_of(fields[3], &head.name, &head.name_len, scratch) < 0) {
        return FAILED;
    }
    Py_ssize_t count;
    int plain = 1;
    if ((outcome = encode_attributes(fields[9], TAG_SPAN_ATTRIBUTE, scratch, &count, &plain, reason))) {
        return outcome;
    }
    return write_span(batch, &head, scratch, reason);
}

/* The fields of an HTTP exchange's span (append_http_span's tuple, an OtlpHttpSpan), by position; from
 * the method on, keys[i] names fields[HTTP_METHOD + i]. */
enum {
    HTTP_TRACE_ID, HTTP_SPAN_ID, HTTP_PARENT_ID, HTTP_KIND, HTTP_START, HTTP_DURATION, HTTP_STATUS_CODE,
    HTTP_CONSTANT_ATTRIBUTES, HTTP_METHOD, HTTP_TARGET, HTTP_QUEUE, HTTP_CONNECT, HTTP_REUSED, HTTP_RETRIES,
    HTTP_RETRY_DELAY, HTTP_FIRST_BYTE, HTTP_BODY, HTTP_ENDPOINT_LOAD, HTTP_STATUS, HTTP_PROXY_ERROR, HTTP_ERROR_TYPE,
    HTTP_FIELDS,
    HTTP_KEYED = HTTP_FIELDS - HTTP_METHOD,
};

/* Text from latin-1 bytes (HTTP's method and target) as UTF-8: the bytes themselves when ASCII (as in
 * any well-formed request), else through a decoded str kept in scratch. */
static int latin1_text(const char *data, Py_ssize_t len, const char **out, Py_ssize_t *out_len, Scratch *scratch) {
    for (Py_ssize_t i = 0; i < len; i++) {
        if ((unsigned char)data[i] >= 0x80) {
            PyObject *text = PyUnicode_DecodeLatin1(data, len, NULL);
            if (text == NULL || scratch_keep(scratch, text) < 0) {
                return -1;
            }
            return utf8_of(text, out, out_len, scratch);
        }
    }
    *out = data;
    *out_len = len;
    return 0;
}

/* A string value from latin-1 `bytes`, up to the first `stop` character (-1: all of it). */
static enum outcome measure_latin1_value(PyObject *bytes, int stop, Py_ssize_t index, Value *measured,
                                         Scratch *scratch, PyObject **reason) {
    if (!PyBytes_Check(bytes)) {
        return bad_value(reason, index, "value", "bytes", bytes);
    }
    const char *data = PyBytes_AS_STRING(bytes);
    Py_ssize_t len = PyBytes_GET_SIZE(bytes);
    const char *end = stop < 0 ? NULL : memchr(data, stop, (size_t)len);
    if (latin1_text(data, end ? end - data : len, &measured->text, &measured->text_len, scratch) < 0) {
        return FAILED;
    }
    if ((size_t)measured->text_len > MAX_MESSAGE) {
        return malformed(reason, "attribute %zd value too large", index);
    }
    measured->type = VALUE_STRING;
    measured->len = field_size((size_t)measured->text_len);
    return ENCODED;
}

/* Two caches spare a proxy re-reading what is the same for each of its spans; each is keyed by a
 * tuple's identity and holds a strong reference to it, so that no other object can take its address
 * while an entry stands for it, and a tuple's items cannot change. They cache only tuples whose
 * encoding is fixed by their items (exact str, int, float, bool: no str() that could run code or
 * answer otherwise another time) and whose release runs no code. Only the outermost call changes
 * them (Scratch.may_cache): a nested call (from a str() the outermost one runs) only reads them, so
 * nothing the outermost call read from an entry is released under it. */

/* The keys tuple (HTTP_SPAN_KEYS: one per process) last read by an outermost call, and its keys,
 * whose UTF-8 lives in the cached tuple's str objects, with their key fields encoded in
 * cached_key_fields. Reading and writing each key afresh cost ~30 instructions a key. */
static PyObject *cached_keys;
static Key cached_key_texts[HTTP_KEYED];
static char *cached_key_fields;
enum { MAX_CACHED_KEY = 1024 };

/* The keys of `keys` (a tuple of HTTP_KEYED): the cached ones, or read into `local` (and cached when
 * they may be); NULL with an exception. A key that is not a str is refused only when its value is
 * written, as attribute N of the span. */
static const Key *read_keys(PyObject *keys, Key *local, Scratch *scratch) {
    if (keys == cached_keys) {
        return cached_key_texts;
    }
    int plain = 1;
    for (Py_ssize_t i = 0; i < HTTP_KEYED; i++) {
        PyObject *key = PyTuple_GET_ITEM(keys, i);
        local[i].text = NULL;
        if (!PyUnicode_Check(key)) {
            plain = 0;
            continue;
        }
        Py_ssize_t temps = scratch->temps_len;
        if (utf8_of(key, &local[i].text, &local[i].len, scratch) < 0) {
            return NULL;
        }
        local[i].field = NULL;
        /* not a plain str, its text a temporary, or too long to be a key worth a copy (and to add up) */
        if (!PyUnicode_CheckExact(key) || scratch->temps_len != temps || local[i].len > MAX_CACHED_KEY) {
            plain = 0;
        }
    }
    if (!plain || !scratch->may_cache) {
        return local;
    }
    size_t fields_len = 0;
    for (Py_ssize_t i = 0; i < HTTP_KEYED; i++) {
        fields_len += field_size((size_t)local[i].len);
    }
    char *fields = PyMem_Malloc(fields_len), *out = fields;
    if (fields == NULL) { /* then read them afresh */
        return local;
    }
    for (Py_ssize_t i = 0; i < HTTP_KEYED; i++) {
        cached_key_texts[i] = local[i];
        cached_key_texts[i].field = out;
        cached_key_texts[i].field_len = field_size((size_t)local[i].len);
        out = put_bytes_field(out, TAG_KEY, local[i].text, (size_t)local[i].len);
    }
    PyMem_Free(cached_key_fields);
    cached_key_fields = fields;
    PyObject *replaced = cached_keys;
    cached_keys = Py_NewRef(keys);
    Py_XDECREF(replaced); /* a tuple of str: releasing it runs no code */
    return cached_key_texts;
}

/* The encoded attribute fields of constant-attributes tuples (a proxy has one per endpoint), in a table
 * of sets by address, two tuples a set: a miss costs what no cache would and a bytes object, and at most
 * CONSTANT_SETS * 2 tuples are held. Encoding a proxy's 3-4 constant pairs cost ~500 instructions a
 * span; copying them, ~30. Two ways, because a proxy's few endpoints' tuples can land in one set by
 * their addresses: with one tuple a slot, two of four endpoints did, and every other span missed. */
enum { CONSTANT_SETS = 128 };
static struct {
    PyObject *attributes, *encoded;
} constant_cache[CONSTANT_SETS][2]; /* [set][0] the most recently encoded */

/* Appends the fields of the constant attributes (see encode_attributes); `*count` out. */
static enum outcome encode_constant_attributes(PyObject *attributes, Scratch *scratch, Py_ssize_t *count,
                                               PyObject **reason) {
    uintptr_t address = (uintptr_t)attributes;
    size_t set = (size_t)(address >> 4 ^ address >> 12) % CONSTANT_SETS; /* objects are 16-byte aligned */
    int way = constant_cache[set][0].attributes == attributes   ? 0
              : constant_cache[set][1].attributes == attributes ? 1
                                                                : -1;
    if (way >= 0) {
        PyObject *encoded = constant_cache[set][way].encoded;
        size_t len = (size_t)PyBytes_GET_SIZE(encoded); /* at most MAX_MESSAGE: it was appended once */
        if (len) {
            enum outcome outcome = scratch_reserve(scratch, len, reason);
            if (outcome != ENCODED) {
                return outcome;
            }
            memcpy(scratch->bytes + scratch->len, PyBytes_AS_STRING(encoded), len);
            scratch->len += len;
        }
        *count = PyTuple_GET_SIZE(attributes);
        return ENCODED;
    }
    int plain = 1;
    size_t start = scratch->len;
    enum outcome outcome = encode_attributes(attributes, TAG_SPAN_ATTRIBUTE, scratch, count, &plain, reason);
    if (outcome != ENCODED || !plain || !scratch->may_cache) {
        return outcome;
    }
    size_t len = scratch->len - start; /* (no arithmetic on scratch->bytes while it may still be NULL) */
    PyObject *encoded = PyBytes_FromStringAndSize(len ? scratch->bytes + start : "", (Py_ssize_t)len);
    if (encoded == NULL) {
        return FAILED;
    }
    /* the older of the two leaves the set */
    PyObject *replaced_attributes = constant_cache[set][1].attributes, *replaced_encoded = constant_cache[set][1].encoded;
    constant_cache[set][1] = constant_cache[set][0];
    constant_cache[set][0].attributes = Py_NewRef(attributes);
    constant_cache[set][0].encoded = encoded;
    Py_XDECREF(replaced_attributes); /* plain pairs: releasing them runs no code */
    Py_XDECREF(replaced_encoded);
    return ENCODED;
}

/* A number of an HTTP span's head in [0, max] (`expected` says so in words). */
static inline enum outcome head_number(long long value, long long max, const char *what, const char *expected,
                                       uint64_t *out, PyObject **reason) {
    if (value < 0 || value > max) {
        return malformed(reason, "%s must be %s, got %lld", what, expected, value);
    }
    *out = (uint64_t)value;
    return ENCODED;
}

static inline Value int_value(long long number) {
    /* protobuf int64: a negative number is a 10-byte two's complement */
    return (Value){.type = VALUE_INT, .bits = (uint64_t)number, .len = 1 + varint_size((uint64_t)number)};
}

static inline Value bool_value(int truth) { return (Value){.type = VALUE_BOOL, .bits = truth != 0, .len = 2}; }

static inline Value double_value(double real) {
    Value value = {.type = VALUE_DOUBLE, .len = 9};
    memcpy(&value.bits, &real, sizeof value.bits);
    return value;
}

/* Text already UTF-8 (checked to be within MAX_MESSAGE). */
static inline Value string_value(const char *text, Py_ssize_t len) {
    return (Value){.type = VALUE_STRING, .text = text, .text_len = len, .len = field_size((size_t)len)};
}

/* Appends the value of field `field` (from HTTP_METHOD on), named by its key, as the span's attribute
 * `*count`. */
static Py_ALWAYS_INLINE inline enum outcome append_keyed(Scratch *scratch, PyObject *keys, const Key *key_texts,
                                                         Py_ssize_t field, Value value, Py_ssize_t *count,
                                                         PyObject **reason) {
    const Key *key = &key_texts[field - HTTP_METHOD];
    if (key->text == NULL) {
        return bad_value(reason, *count, "key", "a str", PyTuple_GET_ITEM(keys, field - HTTP_METHOD));
    }
    enum outcome outcome = append_attribute(scratch, TAG_SPAN_ATTRIBUTE, key, &value, *count, reason);
    *count += outcome == ENCODED;
    return outcome;
}

/* What append_http_span encodes: the fields and the keys naming them. */
typedef struct {
    PyObject *keys;
    const OtlpHttpSpan *span;
} HttpSpanInput;

/* append_http_span's work: the span of one HTTP exchange from its fields, without a record tuple. */
static enum outcome encode_http_span(const void *input, Scratch *scratch, SpanBatch *batch, PyObject **reason) {
    PyObject *keys = ((const HttpSpanInput *)input)->keys;
    const OtlpHttpSpan *span = ((const HttpSpanInput *)input)->span;
    if (!PyTuple_CheckExact(keys) || PyTuple_GET_SIZE(keys) != HTTP_KEYED) {
        return bad_value(reason, -1, "keys", "a tuple of 13 str", keys);
    }
    Key local_keys[HTTP_KEYED];
    const Key *key_texts = read_keys(keys, local_keys, scratch);
    if (key_texts == NULL) {
        return FAILED;
    }
    SpanHead head;
    enum outcome outcome;
    if ((outcome = parse_id(span->trace_id, "trace_id", TRACE_ID_BYTES, 0, head.trace_id, &head.trace_len, reason)) ||
        (outcome = parse_id(span->span_id, "span_id", SPAN_ID_BYTES, 0, head.span_id, &head.span_len, reason)) ||
        (outcome = parse_id(span->parent_span_id, "parent_span_id", SPAN_ID_BYTES, 1, head.parent_id, &head.parent_len,
                            reason)) ||
        (outcome = head_number(span->kind, INT32_MAX, "kind", "an int from 0 to 2**31-1", &head.kind, reason)) ||
        (outcome = head_number(span->start_ns, INT64_MAX, "start_ns", "an int from 0 to 2**63-1", &head.start, reason)) ||
        (outcome = head_number(span->duration_ns, INT64_MAX, "duration_ns", "an int from 0 to 2**63-1", &head.duration,
                               reason)) ||
        (outcome = head_number(span->status_code, INT32_MAX, "status_code", "an int from 0 to 2**31-1",
                               &head.status_code, reason)) ||
        (outcome = parse_message(span->proxy_error, &head, scratch, reason))) {
        return outcome;
    }
    if (!PyBytes_Check(span->method)) {
        return bad_value(reason, -1, "method", "bytes", span->method);
    }
    if (!PyUnicode_Check(span->error_type)) {
        return bad_value(reason, -1, "error_type", "a str", span->error_type);
    }
    if (latin1_text(PyBytes_AS_STRING(span->method), PyBytes_GET_SIZE(span->method), &head.name, &head.name_len,
                    scratch) < 0) {
        return FAILED;
    }
    Py_ssize_t count;
    if ((outcome = encode_constant_attributes(span->constant_attributes, scratch, &count, reason))) {
        return outcome;
    }
    Value target, error_type;
    if ((outcome = measure_latin1_value(span->target, '?', count + 1, &target, scratch, reason))) {
        return outcome;
    }
    if (utf8_of(span->error_type, &error_type.text, &error_type.text_len, scratch) < 0) {
        return FAILED;
    }
    if ((size_t)error_type.text_len > MAX_MESSAGE) {
        return malformed(reason, "error_type too large");
    }
    error_type = string_value(error_type.text, error_type.text_len);
    /* the keyed values in keys' order, one call each (inlined with its value's type known, no loop over
     * a table of values); the method is the span's name again, the proxy error its message; the last
     * three only when not 0 or '' */
    if ((outcome = append_keyed(scratch, keys, key_texts, HTTP_METHOD, string_value(head.name, head.name_len), &count,
                                reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_TARGET, target, &count, reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_QUEUE, int_value(span->queue_ns), &count, reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_CONNECT, int_value(span->connect_ns), &count, reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_REUSED, bool_value(span->connection_reused), &count,
                                reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_RETRIES, int_value(span->retries), &count, reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_RETRY_DELAY, int_value(span->retry_delay_ns), &count,
                                reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_FIRST_BYTE, int_value(span->first_byte_ns), &count,
                                reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_BODY, int_value(span->body_ns), &count, reason)) ||
        (outcome = append_keyed(scratch, keys, key_texts, HTTP_ENDPOINT_LOAD, double_value(span->endpoint_load), &count,
                                reason)) ||
        (span->http_status &&
         (outcome = append_keyed(scratch, keys, key_texts, HTTP_STATUS, int_value(span->http_status), &count, reason))) ||
        (head.message_len && (outcome = append_keyed(scratch, keys, key_texts, HTTP_PROXY_ERROR,
                                                     string_value(head.message, head.message_len), &count, reason))) ||
        (error_type.text_len &&
         (outcome = append_keyed(scratch, keys, key_texts, HTTP_ERROR_TYPE, error_type, &count, reason)))) {
        return outcome;
    }
    return write_span(batch, &head, scratch, reason);
}

/* Working memory kept from one call to the next (a call per span: allocating it each time would cost
 * as much as the encoding). A str() of an odd value may run Python code that records a span itself;
 * such a nested call gets working memory of its own, and leaves the caches alone. */
static Scratch shared_scratch = {.may_cache = 1};
static int shared_scratch_busy;
enum { KEPT_BYTES = 64 * 1024 }; /* a hostile record's huge attributes are not kept */

/* Runs one span's encoder with working memory: the shared one, or (nested) its own. Returns what
 * append_span and append_http_span return: None, the reason a span is malformed, or NULL. */
static PyObject *append_with(enum outcome (*encode)(const void *, Scratch *, SpanBatch *, PyObject **),
                             const void *input, SpanBatch *batch) {
    Scratch nested = {0};
    Scratch *scratch = shared_scratch_busy ? &nested : &shared_scratch;
    int owns_shared = scratch == &shared_scratch;
    shared_scratch_busy = 1;
    PyObject *reason = NULL;
    enum outcome outcome = encode(input, scratch, batch, &reason);
    if (owns_shared) {
        scratch_release_temps(scratch);
        scratch->len = 0;
        if (scratch->cap > KEPT_BYTES) {
            PyMem_Free(scratch->bytes);
            scratch->bytes = NULL;
            scratch->cap = 0;
        }
        shared_scratch_busy = 0;
    } else {
        scratch_free(scratch);
    }
    if (outcome == FAILED) {
        return NULL;
    }
    return outcome == MALFORMED ? reason : Py_NewRef(Py_None);
}

static enum outcome encode_record(const void *record, Scratch *scratch, SpanBatch *batch, PyObject **reason) {
    return encode_span((PyObject *)record, scratch, batch, reason);
}

/* The SpanBatch a span is appended to, or NULL with TypeError. */
static SpanBatch *batch_arg(const char *function, PyObject *batch) {
    if (!Py_IS_TYPE(batch, &SpanBatch_Type)) {
        PyErr_Format(PyExc_TypeError, "%s() batch must be a SpanBatch, got %.80s", function, Py_TYPE(batch)->tp_name);
        return NULL;
    }
    return (SpanBatch *)batch;
}

PyDoc_STRVAR(append_span_doc,
             "append_span(batch, record, /) -> None | str\n\n"
             "Appends the ScopeSpans `spans` field (tag, length, Span message) of a SpanRecord to the\n"
             "SpanBatch `batch`. Returns None, or why the record is malformed (nothing is appended then).");

static PyObject *append_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        return PyErr_Format(PyExc_TypeError, "append_span() takes 2 arguments (%zd given)", nargs);
    }
    SpanBatch *batch = batch_arg("append_span", args[0]);
    return batch == NULL ? NULL : append_with(encode_record, args[1], batch);
}

/* The C API's append_http_span (otlp_spans.h). */
static PyObject *append_http_span_struct(PyObject *batch, PyObject *keys, const OtlpHttpSpan *span) {
    SpanBatch *checked = batch_arg("append_http_span", batch);
    HttpSpanInput input = {.keys = keys, .span = span};
    return checked == NULL ? NULL : append_with(encode_http_span, &input, checked);
}

static const OtlpSpansApi c_api = {.append_http_span = append_http_span_struct};

/* A number field of append_http_span's tuple as a C long long; MALFORMED unless an int within 64 bits
 * (a bool is not taken for an int). */
static enum outcome int64_field(PyObject *fields, Py_ssize_t position, const char *what, long long *out,
                                PyObject **reason) {
    PyObject *number = PyTuple_GET_ITEM(fields, position);
    if (PyLong_Check(number) && !PyBool_Check(number)) {
        int overflow = 0;
        *out = PyLong_AsLongLongAndOverflow(number, &overflow);
        if (!overflow) {
            return ENCODED;
        }
    }
    return bad_value(reason, -1, what, "an int of 64 bits", number);
}

/* The OtlpHttpSpan of append_http_span's tuple: its objects as they are (the encoder checks them),
 * its numbers converted. */
static enum outcome http_span_of(PyObject *fields, OtlpHttpSpan *span, PyObject **reason) {
    if (!PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != HTTP_FIELDS) {
        return bad_value(reason, -1, "fields", "a tuple of 21", fields);
    }
    PyObject *const *items = &PyTuple_GET_ITEM(fields, 0);
    *span = (OtlpHttpSpan){
        .trace_id = items[HTTP_TRACE_ID], .span_id = items[HTTP_SPAN_ID], .parent_span_id = items[HTTP_PARENT_ID],
        .constant_attributes = items[HTTP_CONSTANT_ATTRIBUTES], .method = items[HTTP_METHOD],
        .target = items[HTTP_TARGET], .proxy_error = items[HTTP_PROXY_ERROR], .error_type = items[HTTP_ERROR_TYPE],
    };
    if (!PyBool_Check(items[HTTP_REUSED])) {
        return bad_value(reason, -1, "connection_reused", "a bool", items[HTTP_REUSED]);
    }
    span->connection_reused = items[HTTP_REUSED] == Py_True;
    if (!PyFloat_Check(items[HTTP_ENDPOINT_LOAD])) {
        return bad_value(reason, -1, "endpoint_load", "a float", items[HTTP_ENDPOINT_LOAD]);
    }
    span->endpoint_load = PyFloat_AS_DOUBLE(items[HTTP_ENDPOINT_LOAD]);
    enum outcome outcome;
    if ((outcome = int64_field(fields, HTTP_KIND, "kind", &span->kind, reason)) ||
        (outcome = int64_field(fields, HTTP_START, "start_ns", &span->start_ns, reason)) ||
        (outcome = int64_field(fields, HTTP_DURATION, "duration_ns", &span->duration_ns, reason)) ||
        (outcome = int64_field(fields, HTTP_STATUS_CODE, "status_code", &span->status_code, reason)) ||
        (outcome = int64_field(fields, HTTP_QUEUE, "queue_ns", &span->queue_ns, reason)) ||
        (outcome = int64_field(fields, HTTP_CONNECT, "connect_ns", &span->connect_ns, reason)) ||
        (outcome = int64_field(fields, HTTP_RETRIES, "retries", &span->retries, reason)) ||
        (outcome = int64_field(fields, HTTP_RETRY_DELAY, "retry_delay_ns", &span->retry_delay_ns, reason)) ||
        (outcome = int64_field(fields, HTTP_FIRST_BYTE, "first_byte_ns", &span->first_byte_ns, reason)) ||
        (outcome = int64_field(fields, HTTP_BODY, "body_ns", &span->body_ns, reason)) ||
        (outcome = int64_field(fields, HTTP_STATUS, "http_status", &span->http_status, reason))) {
        return outcome;
    }
    return ENCODED;
}

PyDoc_STRVAR(append_http_span_doc,
             "append_http_span(batch, keys, fields, /) -> None | str\n\n"
             "append_span for the span of one HTTP exchange, from its fields rather than a record tuple:\n"
             "(trace_id, span_id, parent_span_id, kind, start_ns, duration_ns, status_code, constant_attributes,\n"
             " method, target, queue_ns, connect_ns, connection_reused, retries, retry_delay_ns, first_byte_ns,\n"
             " body_ns, endpoint_load, http_status, proxy_error, error_type).\n"
             "Its name is `method` (latin-1 bytes); `proxy_error` (a str) is also its status message. Its\n"
             "attributes: the (key, value) pairs of `constant_attributes`, then `keys[i]` with the i-th field\n"
             "from `method` on: the method, the path of `target` (latin-1 bytes, up to '?'), then ints of 64\n"
             "bits, `connection_reused` a bool, `endpoint_load` a float, `error_type` a str;\n"
             "`http_status`, `proxy_error` and `error_type` only when not 0 or ''.\n"
             "Pass the same `keys` tuple, and the same `constant_attributes` tuple for the same attributes:\n"
             "both are read once and kept (with a reference to the tuple) while they come again.\n"
             "Compiled callers pass the fields as C values instead (spans/otlp_spans.h).");

static PyObject *append_http_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        return PyErr_Format(PyExc_TypeError, "append_http_span() takes 3 arguments (%zd given)", nargs);
    }
    if (batch_arg("append_http_span", args[0]) == NULL) {
        return NULL;
    }
    OtlpHttpSpan span;
    PyObject *reason = NULL;
    enum outcome outcome = http_span_of(args[2], &span, &reason);
    if (outcome != ENCODED) {
        return outcome == MALFORMED ? reason : NULL;
    }
    return append_http_span_struct(args[0], args[1], &span);
}

PyDoc_STRVAR(encode_resource_doc,
             "encode_resource(attributes, /) -> bytes\n\n"
             "A Resource message: its `attributes` from (key, value) pairs, typed as span attributes are.\n"
             "Raises ValueError naming what is wrong with a malformed pair.");

static PyObject *encode_resource(PyObject *module, PyObject *attributes) {
    Scratch scratch = {0};
    PyObject *reason = NULL, *result = NULL;
    Py_ssize_t count;
    int plain = 1;
    enum outcome outcome = encode_attributes(attributes, TAG_RESOURCE_ATTRIBUTE, &scratch, &count, &plain, &reason);
    if (outcome == MALFORMED) {
        PyErr_SetObject(PyExc_ValueError, reason);
        Py_DECREF(reason);
    } else if (outcome == ENCODED) {
        result = PyBytes_FromStringAndSize(scratch.bytes, (Py_ssize_t)scratch.len);
    }
    scratch_free(&scratch);
    return result;
}

static PyMethodDef methods[] = {
    {"append_span", (PyCFunction)(void (*)(void))append_span, METH_FASTCALL, append_span_doc},
    {"append_http_span", (PyCFunction)(void (*)(void))append_http_span, METH_FASTCALL, append_http_span_doc},
    {"encode_resource", encode_resource, METH_O, encode_resource_doc},
    {NULL, NULL, 0, NULL},
};

/* The SpanBatch type, and the C API's table as a capsule (otlp_spans.h). */
static int module_exec(PyObject *module) {
    if (PyType_Ready(&SpanBatch_Type) < 0 || PyModule_AddObjectRef(module, "SpanBatch", (PyObject *)&SpanBatch_Type) < 0) {
        return -1;
    }
    PyObject *capsule = PyCapsule_New((void *)&c_api, OTLP_SPANS_CAPSULE, NULL);
    if (capsule == NULL) {
        return -1;
    }
    int added = PyModule_AddObjectRef(module, "_C_API", capsule);
    Py_DECREF(capsule);
    return added;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "spans._otlp_spans",
    .m_doc = "Span records -> OTLP protobuf span fields (the proxy's per-request export cost).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC PyInit__otlp_spans(void) {
    init_hex_values();
    return PyModuleDef_Init(&module_def);
}
