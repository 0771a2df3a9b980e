/* HTTP/1.1 message heads as a proxy forwards them: hop-by-hop fields removed, framing facts found.
 *
 * Why native: every proxied request walks its request header list (what to forward, Host, framing,
 * trace headers) and every response head is copied without its hop-by-hop lines. In Python (a loop
 * over the fields, a lower-cased copy of the head and a regular expression) that was ~9,000
 * instructions per request, nearly a tenth of a proxied request; here one pass each.
 *
 * llhttp (httptools) has validated the messages before these functions see them, but nothing here
 * relies on that: every read is bounds-checked and odd input is forwarded or rejected, never
 * overrun. Field names are compared without regard to case (RFC 9110 5.1).
 *
 * Hop-by-hop fields (RFC 9110 7.6.1): Connection and every field it names, Keep-Alive,
 * Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade. The proxy re-frames bodies per hop and
 * writes its own trace context, so the trace headers of the request are dropped as well. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Fields that Connection names are hop-by-hop too; a longer list than this is refused (400/502). */
enum { MAX_CONNECTION_TOKENS = 32 };

/* What a request field is to the proxy. */
enum field_kind { FORWARD, HOST, CONTENT_LENGTH, HOP_BY_HOP, TRANSFER_ENCODING, CONNECTION, TRACEPARENT, TRACE };

typedef struct {
    const char *name;
    size_t len;
    enum field_kind kind;
} known_field;

static const known_field KNOWN_FIELDS[] = {
    {"host", 4, HOST},
    {"content-length", 14, CONTENT_LENGTH},
    {"connection", 10, CONNECTION},
    {"keep-alive", 10, HOP_BY_HOP},
    {"proxy-connection", 16, HOP_BY_HOP},
    {"te", 2, HOP_BY_HOP},
    {"trailer", 7, HOP_BY_HOP},
    {"transfer-encoding", 17, TRANSFER_ENCODING},
    {"upgrade", 7, HOP_BY_HOP},
    {"traceparent", 11, TRACEPARENT},
    {"tracestate", 10, TRACE},
    {"b3", 2, TRACE},
    {"x-b3-traceid", 12, TRACE},
    {"x-b3-spanid", 11, TRACE},
    {"x-b3-parentspanid", 17, TRACE},
    {"x-b3-sampled", 12, TRACE},
    {"x-b3-flags", 10, TRACE},
};
#define KNOWN_COUNT (sizeof(KNOWN_FIELDS) / sizeof(KNOWN_FIELDS[0]))

typedef struct {
    const char *start;
    size_t len;
} span;

/* The tokens of Connection values (lower-case compared later), "close"/"keep-alive" excluded. */
typedef struct {
    span tokens[MAX_CONNECTION_TOKENS];
    int count;
} token_list;

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int same_name(const char *a, size_t a_len, const char *b, size_t b_len) {
    if (a_len != b_len) {
        return 0;
    }
    for (size_t i = 0; i < a_len; i++) {
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) {
            return 0;
        }
    }
    return 1;
}

/* KNOWN_FIELDS indexes by name length (-1 ends a list), filled at import: a name is compared with
 * the few known names of its length only. */
enum { MAX_KNOWN_NAME = 17, MAX_SAME_LENGTH = 4 };
static signed char known_by_length[MAX_KNOWN_NAME + 1][MAX_SAME_LENGTH + 1];

/* Every byte lower-cased (ASCII letters only), and the RFC 9110 tchar bytes: tables filled at import,
 * because each field name of every message goes through both (a strchr per punctuation character and
 * a lower-casing of both names per compared character cost ~5,000 instructions per proxied request). */
static unsigned char ascii_lower[256];
static unsigned char tchar[256];

static void fill_tables(void) {
    memset(known_by_length, -1, sizeof(known_by_length));
    for (size_t i = 0; i < KNOWN_COUNT; i++) {
        signed char *slot = known_by_length[KNOWN_FIELDS[i].len];
        while (*slot >= 0) {
            slot++;
        }
        *slot = (signed char)i;
    }
    for (int c = 0; c < 256; c++) {
        ascii_lower[c] = (unsigned char)lower(c);
        tchar[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                   (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
    }
}

/* KNOWN_FIELDS names are lower case: only the name read is lower-cased, and only until it differs. */
static enum field_kind field_kind(const char *name, size_t len) {
    if (len > MAX_KNOWN_NAME) {
        return FORWARD;
    }
    for (const signed char *index = known_by_length[len]; *index >= 0; index++) {
        const char *known = KNOWN_FIELDS[*index].name;
        size_t i = 0;
        while (i < len && ascii_lower[(unsigned char)name[i]] == (unsigned char)known[i]) {
            i++;
        }
        if (i == len) {
            return KNOWN_FIELDS[*index].kind;
        }
    }
    return FORWARD;
}

/* (first, second) as a new tuple, taking both references (also on failure). */
static PyObject *pair(PyObject *first, PyObject *second) {
    PyObject *result = NULL;
    if (first != NULL && second != NULL) {
        result = PyTuple_Pack(2, first, second);
    }
    Py_XDECREF(first);
    Py_XDECREF(second);
    return result;
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

/* Adds the comma-separated tokens of one Connection value; -1 (ValueError set) past the limit. */
static int add_connection_tokens(token_list *list, const char *value, size_t len) {
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_space(value[i]) || value[i] == ',')) {
            i++;
        }
        size_t start = i;
        while (i < len && value[i] != ',') {
            i++;
        }
        size_t end = i;
        while (end > start && is_space(value[end - 1])) {
            end--;
        }
        if (end == start || same_name(value + start, end - start, "close", 5) ||
            same_name(value + start, end - start, "keep-alive", 10)) {
            continue;
        }
        if (list->count == MAX_CONNECTION_TOKENS) {
            PyErr_SetString(PyExc_ValueError, "too many fields named in Connection");
            return -1;
        }
        list->tokens[list->count].start = value + start;
        list->tokens[list->count].len = end - start;
        list->count++;
    }
    return 0;
}

static int named_by_connection(const token_list *list, const char *name, size_t len) {
    for (int i = 0; i < list->count; i++) {
        if (same_name(name, len, list->tokens[i].start, list->tokens[i].len)) {
            return 1;
        }
    }
    return 0;
}

/* A decimal Content-Length; -1 (ValueError set) when it is not one or does not fit. */
static long long parse_length(const char *text, size_t len) {
    size_t i = 0, end = len;
    while (i < end && is_space(text[i])) {
        i++;
    }
    while (end > i && is_space(text[end - 1])) {
        end--;
    }
    if (i == end) {
        PyErr_SetString(PyExc_ValueError, "empty Content-Length");
        return -1;
    }
    long long value = 0;
    for (; i < end; i++) {
        if (text[i] < '0' || text[i] > '9' || value > (LLONG_MAX - 9) / 10) {
            PyErr_SetString(PyExc_ValueError, "bad Content-Length");
            return -1;
        }
        value = value * 10 + (text[i] - '0');
    }
    return value;
}

/* A tuple of `count` new references (all consumed, also on failure); NULL with an error set. */
static PyObject *tuple_of(Py_ssize_t count, PyObject **items) {
    PyObject *result = PyTuple_New(count);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (items[i] == NULL || result == NULL) {
            Py_CLEAR(result);
            for (Py_ssize_t j = i; j < count; j++) {
                Py_XDECREF(items[j]);
            }
            return NULL;
        }
        PyTuple_SET_ITEM(result, i, items[i]);
    }
    return result;
}

static PyObject *new_bool(int value) {
    PyObject *result = value ? Py_True : Py_False;
    Py_INCREF(result);
    return result;
}

/* A request's fields come either as llhttp's callbacks give them, a [(name, value)] list of bytes, or
 * as whole_request() keeps them: the field lines of the head as one bytes object ("name: value\r\n"
 * each), which spares a tuple and two bytes objects per field on the fast path. */
typedef struct {
    const char *name, *value;
    size_t name_len, value_len;
    PyObject *value_object; /* borrowed: the value's bytes object when the fields are a list, else NULL */
} field;

typedef struct {
    PyObject *list; /* the fields as a list, or NULL when they are lines */
    Py_ssize_t index;
    const char *at, *end; /* the lines not read yet */
} field_reader;

/* 0 with a reader of `fields` (a list or bytes), -1 with TypeError for anything else. */
static int read_fields(field_reader *reader, PyObject *fields) {
    if (PyList_Check(fields)) {
        *reader = (field_reader){.list = fields};
        return 0;
    }
    if (PyBytes_Check(fields)) {
        *reader = (field_reader){.at = PyBytes_AS_STRING(fields), .end = PyBytes_AS_STRING(fields) + PyBytes_GET_SIZE(fields)};
        return 0;
    }
    PyErr_SetString(PyExc_TypeError, "headers must be a list of (bytes, bytes) pairs or field lines (bytes)");
    return -1;
}

static const char *line_end(const char *at, const char *end);

/* 1 with the next field in *out, 0 after the last, -1 with an error set (a list item that is not a
 * pair of bytes, a line without a colon). A line's value is what follows the colon and its spaces, up
 * to the line's CRLF (or LF, or the end), as llhttp reports it. */
static int next_field(field_reader *reader, field *out) {
    if (reader->list != NULL) {
        if (reader->index >= PyList_GET_SIZE(reader->list)) {
            return 0;
        }
        PyObject *item = PyList_GET_ITEM(reader->list, reader->index++);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(item, 0)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(item, 1))) {
            PyErr_SetString(PyExc_TypeError, "headers must be (bytes, bytes) pairs");
            return -1;
        }
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        *out = (field){PyBytes_AS_STRING(name), PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(name),
                       (size_t)PyBytes_GET_SIZE(value), value};
        return 1;
    }
    if (reader->at >= reader->end) {
        return 0;
    }
    const char *line = reader->at, *stop = line_end(line, reader->end);
    const char *colon = memchr(line, ':', (size_t)(stop - line));
    if (colon == NULL) {
        PyErr_SetString(PyExc_ValueError, "a field line without a colon");
        return -1;
    }
    const char *value = colon + 1, *value_end = stop;
    while (value < stop && is_space(*value)) {
        value++;
    }
    if (value_end > value && value_end[-1] == '\n') {
        value_end--;
    }
    if (value_end > value && value_end[-1] == '\r') {
        value_end--;
    }
    *out = (field){line, value, (size_t)(colon - line), (size_t)(value_end - value), NULL};
    reader->at = stop;
    return 1;
}

/* A field's value as a new bytes object. */
static PyObject *value_bytes(const field *f) {
    if (f->value_object != NULL) {
        Py_INCREF(f->value_object);
        return f->value_object;
    }
    return PyBytes_FromStringAndSize(f->value, (Py_ssize_t)f->value_len);
}

/* field_pairs(headers) -> [(name, value)]: the fields as llhttp's callbacks give them (a list is
 * returned as it is), for the full trace-context rules, which walk them. */
static PyObject *field_pairs(PyObject *module, PyObject *headers) {
    field_reader reader;
    if (read_fields(&reader, headers) < 0) {
        return NULL;
    }
    if (reader.list != NULL) {
        Py_INCREF(headers);
        return headers;
    }
    PyObject *pairs = PyList_New(0);
    field f;
    int got;
    while (pairs != NULL && (got = next_field(&reader, &f)) != 0) {
        PyObject *item = got < 0 ? NULL : pair(PyBytes_FromStringAndSize(f.name, (Py_ssize_t)f.name_len), value_bytes(&f));
        if (item == NULL || PyList_Append(pairs, item) < 0) {
            Py_CLEAR(pairs);
        }
        Py_XDECREF(item);
    }
    return pairs;
}

/* request_fields(headers, drop_host) -> (lines, host, content_length, chunked, traced)
 *
 * `headers` are the request's fields, a list or lines (see field_reader). `lines` are the fields to forward as
 * "name: value\r\n" lines (hop-by-hop fields, the fields Connection names, trace headers and, with
 * `drop_host`, Host left out); `host` the first Host value (b"" if none); `content_length` -1 when
 * absent; `chunked` whether Transfer-Encoding is present (llhttp accepts no coding but a final
 * "chunked" on a request); `traced` False without trace headers, the traceparent value (bytes) when
 * that is the only trace header (the usual traced request: the relay parses it without walking the
 * headers again), else True. */
static PyObject *request_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "request_fields(headers: list | bytes, drop_host: bool)");
        return NULL;
    }
    field_reader reader;
    if (read_fields(&reader, args[0]) < 0) {
        return NULL;
    }
    int drop_host = PyObject_IsTrue(args[1]);
    if (drop_host < 0) {
        return NULL;
    }
    token_list connection = {.count = 0};
    field host = {.name = NULL}, traceparent = {.name = NULL}; /* the first Host, the last traceparent */
    long long content_length = -1;
    int chunked = 0, trace_fields = 0, got;
    size_t size = 0; /* of the forwarded lines */
    field f;
    /* First pass: check the fields, find Connection's tokens and the framing facts. */
    while ((got = next_field(&reader, &f)) != 0) {
        if (got < 0) {
            return NULL;
        }
        const char *value_text = f.value;
        size_t value_len = f.value_len;
        switch (field_kind(f.name, f.name_len)) {
        case HOST:
            if (host.name == NULL) {
                host = f;
            }
            if (!drop_host) {
                size += f.name_len + value_len + 4;
            }
            break;
        case CONTENT_LENGTH: {
            long long length = parse_length(value_text, value_len);
            if (length < 0) {
                return NULL;
            }
            if (content_length >= 0 && length != content_length) {
                PyErr_SetString(PyExc_ValueError, "conflicting Content-Length values");
                return NULL;
            }
            content_length = length;
            size += f.name_len + value_len + 4;
            break;
        }
        case CONNECTION:
            if (add_connection_tokens(&connection, value_text, value_len) < 0) {
                return NULL;
            }
            break;
        case TRANSFER_ENCODING:
            chunked = 1;
            break;
        case TRACEPARENT:
            traceparent = f;
            trace_fields++;
            break;
        case TRACE:
            trace_fields++;
            break;
        case HOP_BY_HOP:
            break;
        case FORWARD:
            size += f.name_len + value_len + 4;
            break;
        }
    }
    /* Second pass: write the forwarded lines (a field Connection names is dropped whatever it is). */
    PyObject *lines = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (lines == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(lines);
    char *const out_end = out + size;
    read_fields(&reader, args[0]);
    while (next_field(&reader, &f) > 0) {
        const char *name_text = f.name;
        size_t name_len = f.name_len, value_len = f.value_len;
        enum field_kind kind = field_kind(name_text, name_len);
        int forwarded = kind == FORWARD || kind == CONTENT_LENGTH || (kind == HOST && !drop_host);
        if (!forwarded) {
            continue;
        }
        if (connection.count && named_by_connection(&connection, name_text, name_len)) {
            continue;
        }
        /* The fields are ours alone (the GIL is held), so the sizes cannot have changed since pass one. */
        if ((size_t)(out_end - out) < name_len + value_len + 4) {
            Py_DECREF(lines);
            PyErr_SetString(PyExc_RuntimeError, "headers changed while being read");
            return NULL;
        }
        memcpy(out, name_text, name_len);
        out += name_len;
        *out++ = ':';
        *out++ = ' ';
        memcpy(out, f.value, value_len);
        out += value_len;
        *out++ = '\r';
        *out++ = '\n';
    }
    if (out != out_end && _PyBytes_Resize(&lines, (Py_ssize_t)(out - PyBytes_AS_STRING(lines))) < 0) {
        return NULL;
    }
    PyObject *traced;
    if (trace_fields == 1 && traceparent.name != NULL) {
        traced = value_bytes(&traceparent);
    } else {
        traced = trace_fields ? Py_True : Py_False;
        Py_INCREF(traced);
    }
    PyObject *items[5] = {
        lines, host.name != NULL ? value_bytes(&host) : PyBytes_FromStringAndSize("", 0),
        PyLong_FromLongLong(content_length), new_bool(chunked), traced,
    };
    return tuple_of(5, items); /* not Py_BuildValue: its format parsing cost ~450 instructions a call */
}

/* Framing facts of a response head, for the relay (bit flags). */
enum { HAS_CONTENT_LENGTH = 1, HAS_TRANSFER_ENCODING = 2 };

/* The line starting at `at` (up to and including its "\n", or to `end`). */
static const char *line_end(const char *at, const char *end) {
    const char *newline = memchr(at, '\n', (size_t)(end - at));
    return newline == NULL ? end : newline + 1;
}

/* The field name of a header line (up to ':'); its length is 0 when the line has none. */
static size_t line_name(const char *line, const char *end) {
    const char *colon = memchr(line, ':', (size_t)(end - line));
    return colon == NULL ? 0 : (size_t)(colon - line);
}

/* The value of a header line: after ':' and spaces, before spaces and the line break. */
static span line_value(const char *line, size_t name_len, const char *end) {
    const char *start = line + name_len + 1, *stop = end;
    while (start < stop && is_space(*start)) {
        start++;
    }
    while (stop > start && (is_space(stop[-1]) || stop[-1] == '\r' || stop[-1] == '\n')) {
        stop--;
    }
    return (span){start, (size_t)(stop - start)};
}

/* The head text..end (start line, fields, empty line) without its hop-by-hop lines, a new reference;
 * `source` itself when it is exactly that text and nothing is dropped. Sets *framing to the
 * HAS_CONTENT_LENGTH / HAS_TRANSFER_ENCODING flags the head declared. A continuation line (obs-fold)
 * goes with the field before it. */
static PyObject *end_to_end_head(PyObject *source, const char *text, const char *end, int *framing) {
    const char *fields = line_end(text, end); /* after the start line */
    token_list connection = {.count = 0};
    int drops = 0;
    *framing = 0;
    for (const char *line = fields; line < end;) {
        const char *next = line_end(line, end);
        size_t name_len = line_name(line, next);
        if (name_len) {
            enum field_kind kind = field_kind(line, name_len);
            if (kind == CONTENT_LENGTH) {
                *framing |= HAS_CONTENT_LENGTH;
            } else if (kind == TRANSFER_ENCODING) {
                *framing |= HAS_TRANSFER_ENCODING;
                drops = 1;
            } else if (kind == CONNECTION) {
                span value = line_value(line, name_len, next);
                if (add_connection_tokens(&connection, value.start, value.len) < 0) {
                    return NULL;
                }
                drops = 1;
            } else if (kind == HOP_BY_HOP) {
                drops = 1;
            }
        }
        line = next;
    }
    if (!drops && connection.count == 0) {
        if (PyBytes_AS_STRING(source) == text && PyBytes_GET_SIZE(source) == end - text) {
            Py_INCREF(source);
            return source;
        }
        return PyBytes_FromStringAndSize(text, end - text);
    }
    PyObject *kept = PyBytes_FromStringAndSize(NULL, end - text);
    if (kept == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(kept);
    memcpy(out, text, (size_t)(fields - text));
    out += fields - text;
    int dropping = 0;
    for (const char *line = fields; line < end;) {
        const char *next = line_end(line, end);
        if (!is_space(*line)) { /* else: a continuation, kept or dropped with its field */
            size_t name_len = line_name(line, next);
            enum field_kind kind = name_len ? field_kind(line, name_len) : FORWARD;
            dropping = kind == HOP_BY_HOP || kind == CONNECTION || kind == TRANSFER_ENCODING ||
                       (name_len && named_by_connection(&connection, line, name_len));
        }
        if (!dropping) {
            memcpy(out, line, (size_t)(next - line));
            out += next - line;
        }
        line = next;
    }
    if (_PyBytes_Resize(&kept, out - PyBytes_AS_STRING(kept)) < 0) {
        return NULL;
    }
    return kept;
}

/* The proxy answers in HTTP/1.1 whatever version the upstream spoke (it re-frames the body for an
 * HTTP/1.1 hop): `head` (a new reference, consumed) with "HTTP/1.1" in place of its first 8 bytes
 * when the start line names another version, in a copy (`head` may be the caller's own bytes). */
static PyObject *as_http11(PyObject *head) {
    if (head == NULL || PyBytes_GET_SIZE(head) < 8 || memcmp(PyBytes_AS_STRING(head) + 5, "1.1", 3) == 0) {
        return head;
    }
    PyObject *copy = PyBytes_FromStringAndSize(PyBytes_AS_STRING(head), PyBytes_GET_SIZE(head));
    Py_DECREF(head);
    if (copy != NULL) {
        memcpy(PyBytes_AS_STRING(copy), "HTTP/1.1", 8);
    }
    return copy;
}

/* response_head(head) -> (end_to_end_head, framing)
 *
 * `head` is a raw message head as received (start line, fields, empty line). Returns it as the proxy
 * forwards it: without its hop-by-hop lines (the very object when there are none and it is HTTP/1.1
 * already), labelled HTTP/1.1; and the framing flags HAS_CONTENT_LENGTH / HAS_TRANSFER_ENCODING it
 * declared. */
static PyObject *response_head(PyObject *module, PyObject *head) {
    if (!PyBytes_Check(head)) {
        PyErr_SetString(PyExc_TypeError, "response_head(head: bytes)");
        return NULL;
    }
    int framing;
    const char *text = PyBytes_AS_STRING(head);
    PyObject *kept = as_http11(end_to_end_head(head, text, text + PyBytes_GET_SIZE(head), &framing));
    return kept == NULL ? NULL : pair(kept, PyLong_FromLong(framing));
}

/* whole_request / whole_response: the common message taken in one step instead of llhttp's callbacks.
 *
 * Most messages arrive in one read: a start line, a few fields and a Content-Length body, whole. For
 * exactly that shape, checked more strictly than llhttp checks it, the proxy needs no parser callbacks
 * at all (each costs a Python call). Anything else (1xx, chunked or close-delimited bodies, several
 * reads, extra bytes, obs-fold, an odd character anywhere, Connection other than one close/keep-alive
 * token, Upgrade, Proxy-Connection, a repeated Content-Length, an unusual method or request target)
 * is left to llhttp, which then sees the same bytes it would have: the fast path never consumes
 * anything it refuses, and what it takes it reports as llhttp would (tested against httptools). */

enum { MAX_FAST_HEAD = 64 * 1024, MAX_FAST_FIELDS = 128, MAX_LENGTH_DIGITS = 15 };

/* A field value or reason phrase character (VCHAR, SP, HTAB, obs-text). */
static int is_text(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* The first character from `at` that is not is_text (or `end`). Eight characters at a time while none
 * of them is a control character or DEL (word tests exact for "some byte is below 0x20" and "some byte
 * is 0x7f"), then one at a time: field values are most of a head's bytes, and a byte loop over them
 * was the largest single cost of the fast path. */
static const unsigned char *skip_text(const unsigned char *at, const unsigned char *end) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    while (end - at >= 8) {
        uint64_t word, del;
        memcpy(&word, at, 8);
        del = word ^ (0x7f * ones);
        if (((word - 0x20 * ones) & ~word & highs) | ((del - ones) & ~del & highs)) {
            break;
        }
        at += 8;
    }
    while (at < end && is_text(*at)) {
        at++;
    }
    return at;
}

enum { MAX_DROPPED_LINES = 8 };

/* What the fields of a message said about its framing and connection. */
typedef struct {
    long long content_length; /* -1 when absent */
    int close, keep_alive;    /* the Connection token seen, if any */
    span dropped[MAX_DROPPED_LINES]; /* the hop-by-hop lines, in order (Connection names no others) */
    int dropped_count;        /* MAX_DROPPED_LINES + 1 when there were more */
} field_facts;

enum { REFUSED = 0, TAKEN = 1 };

/* Scans the fields from *at to the empty line (which *at is moved past). REFUSED for anything the
 * fast path leaves to llhttp. */
static int scan_fields(const unsigned char **at_io, const unsigned char *end, int request, field_facts *facts) {
    const unsigned char *at = *at_io;
    int fields = 0;
    facts->content_length = -1;
    facts->close = facts->keep_alive = 0;
    facts->dropped_count = 0;
    for (;;) {
        if (end - at < 2) {
            return REFUSED; /* the head is not complete in this read */
        }
        if (at[0] == '\r' && at[1] == '\n') {
            *at_io = at + 2;
            return TAKEN;
        }
        if (++fields > MAX_FAST_FIELDS) {
            return REFUSED;
        }
        const unsigned char *name = at;
        while (at < end && tchar[*at]) {
            at++;
        }
        size_t name_len = (size_t)(at - name);
        if (name_len == 0 || at == end || *at != ':') {
            return REFUSED;
        }
        at++;
        while (at < end && is_space((char)*at)) {
            at++;
        }
        const unsigned char *value = at;
        at = skip_text(at, end);
        if (end - at < 2 || at[0] != '\r' || at[1] != '\n') {
            return REFUSED;
        }
        size_t value_len = (size_t)(at - value);
        at += 2;
        enum field_kind kind = field_kind((const char *)name, name_len);
        if (kind == CONNECTION || kind == HOP_BY_HOP) {
            if (facts->dropped_count < MAX_DROPPED_LINES) {
                facts->dropped[facts->dropped_count] = (span){(const char *)name, (size_t)(at - name)};
            }
            if (facts->dropped_count <= MAX_DROPPED_LINES) {
                facts->dropped_count++;
            }
        }
        if (kind == CONTENT_LENGTH) {
            if (facts->content_length >= 0 || value_len == 0 || value_len > MAX_LENGTH_DIGITS) {
                return REFUSED;
            }
            long long length = 0;
            for (size_t i = 0; i < value_len; i++) {
                if (value[i] < '0' || value[i] > '9') {
                    return REFUSED;
                }
                length = length * 10 + (value[i] - '0');
            }
            facts->content_length = length;
        } else if (kind == TRANSFER_ENCODING) {
            return REFUSED;
        } else if (kind == CONNECTION) {
            if (same_name((const char *)value, value_len, "close", 5)) {
                facts->close = 1;
            } else if (same_name((const char *)value, value_len, "keep-alive", 10)) {
                facts->keep_alive = 1;
            } else {
                return REFUSED;
            }
        } else if (kind == HOP_BY_HOP && (same_name((const char *)name, name_len, "proxy-connection", 16) ||
                                          (request && same_name((const char *)name, name_len, "upgrade", 7)))) {
            return REFUSED; /* llhttp reads Proxy-Connection as Connection; a request Upgrade is refused upstream */
        }
    }
}

/* whole_response(data, head_only) -> (status, message, framing, keep_alive, head_len) | None
 * `data` is one read starting at a response; `head_only` when the request was HEAD (no body).
 * `message` is the response as the proxy forwards it: its first `head_len` bytes the head as
 * response_head() returns it, then the body; `data` itself when that is the same bytes (an HTTP/1.1
 * response without hop-by-hop lines), else one copy (the head and body apart, then joined to be
 * written, took three). */
static PyObject *whole_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "whole_response(data: bytes, head_only: bool)");
        return NULL;
    }
    int head_only = PyObject_IsTrue(args[1]);
    if (head_only < 0) {
        return NULL;
    }
    const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    const Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    const unsigned char *const end = text + (size < MAX_FAST_HEAD ? size : MAX_FAST_HEAD);
    /* Status line: "HTTP/1.x NNN reason\r\n", a final status (>= 200). */
    if (end - text < 14 || memcmp(text, "HTTP/1.", 7) != 0 || (text[7] != '1' && text[7] != '0') || text[8] != ' ' ||
        text[9] < '2' || text[9] > '5' || text[10] < '0' || text[10] > '9' || text[11] < '0' || text[11] > '9' ||
        text[12] != ' ') {
        Py_RETURN_NONE;
    }
    int http11 = text[7] == '1';
    int status = (text[9] - '0') * 100 + (text[10] - '0') * 10 + (text[11] - '0');
    const unsigned char *at = skip_text(text + 13, end);
    if (end - at < 2 || at[0] != '\r' || at[1] != '\n') {
        Py_RETURN_NONE;
    }
    at += 2;
    field_facts facts;
    if (scan_fields(&at, end, 0, &facts) != TAKEN) {
        Py_RETURN_NONE;
    }
    const unsigned char *head_end = at;
    Py_ssize_t body_len = 0;
    if (!head_only) {
        if (facts.content_length < 0 || status == 204 || status == 304) {
            Py_RETURN_NONE;
        }
        body_len = (Py_ssize_t)facts.content_length;
    }
    if (size - (head_end - text) != body_len) {
        Py_RETURN_NONE; /* the body is not all here, or more follows */
    }
    int framing = facts.content_length >= 0 ? HAS_CONTENT_LENGTH : 0;
    Py_ssize_t head_len = head_end - text;
    PyObject *message;
    if (facts.dropped_count == 0) {
        Py_INCREF(args[0]); /* the read is the message, forwarded as it came */
        message = args[0];
    } else if (facts.dropped_count <= MAX_DROPPED_LINES) {
        /* The head without the hop-by-hop lines the scan found (the lines between them), then the body. */
        size_t dropped_size = 0;
        for (int i = 0; i < facts.dropped_count; i++) {
            dropped_size += facts.dropped[i].len;
        }
        head_len -= (Py_ssize_t)dropped_size;
        message = PyBytes_FromStringAndSize(NULL, head_len + body_len);
        if (message == NULL) {
            return NULL;
        }
        char *out = PyBytes_AS_STRING(message);
        const char *from = (const char *)text;
        for (int i = 0; i < facts.dropped_count; i++) {
            memcpy(out, from, (size_t)(facts.dropped[i].start - from));
            out += facts.dropped[i].start - from;
            from = facts.dropped[i].start + facts.dropped[i].len;
        }
        memcpy(out, from, (size_t)((const char *)head_end - from) + (size_t)body_len);
    } else {
        message = end_to_end_head(args[0], (const char *)text, (const char *)head_end, &framing);
        if (message == NULL) {
            return NULL;
        }
        head_len = PyBytes_GET_SIZE(message);
        PyObject *body = PyBytes_FromStringAndSize((const char *)head_end, body_len);
        PyBytes_ConcatAndDel(&message, body);
        if (message == NULL) {
            return NULL;
        }
    }
    PyObject *items[5] = {
        PyLong_FromLong(status), as_http11(message), PyLong_FromLong(framing),
        new_bool(http11 ? !facts.close : facts.keep_alive), PyLong_FromSsize_t(head_len),
    };
    return tuple_of(5, items);
}

/* The methods the fast path takes (llhttp knows more; CONNECT is an upgrade), as shared objects. */
static const char *const FAST_METHODS[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"};
#define FAST_METHOD_COUNT (sizeof(FAST_METHODS) / sizeof(FAST_METHODS[0]))
static PyObject *method_objects[FAST_METHOD_COUNT];
static PyObject *version_objects[2]; /* "1.0", "1.1", as httptools' get_http_version() says them */

/* whole_request(data) -> (method, target, version, headers, body) | None
 * `data` is one read starting at a keep-alive request with an origin-form target ("/..."); `headers`
 * its field lines (see field_reader), the fields llhttp's on_header calls would have given. */
static PyObject *whole_request(PyObject *module, PyObject *data) {
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "whole_request(data: bytes)");
        return NULL;
    }
    const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(data);
    const Py_ssize_t size = PyBytes_GET_SIZE(data);
    const unsigned char *const end = text + (size < MAX_FAST_HEAD ? size : MAX_FAST_HEAD);
    const unsigned char *space = memchr(text, ' ', (size_t)(end - text) < 8 ? (size_t)(end - text) : 8);
    if (space == NULL) {
        Py_RETURN_NONE;
    }
    size_t method_len = (size_t)(space - text);
    Py_ssize_t method = -1;
    for (size_t i = 0; i < FAST_METHOD_COUNT; i++) {
        if (strlen(FAST_METHODS[i]) == method_len && memcmp(FAST_METHODS[i], text, method_len) == 0) {
            method = (Py_ssize_t)i;
            break;
        }
    }
    const unsigned char *target = space + 1, *at = target;
    if (method < 0 || at == end || *at != '/') {
        Py_RETURN_NONE;
    }
    while (at < end && *at > 0x20 && *at < 0x7f) {
        at++;
    }
    const unsigned char *target_end = at;
    if (end - at < 11 || memcmp(at, " HTTP/1.", 8) != 0 || (at[8] != '1' && at[8] != '0') || at[9] != '\r' ||
        at[10] != '\n') {
        Py_RETURN_NONE;
    }
    int http11 = at[8] == '1';
    at += 11;
    const unsigned char *fields = at;
    field_facts facts;
    if (scan_fields(&at, end, 1, &facts) != TAKEN) {
        Py_RETURN_NONE;
    }
    Py_ssize_t body_len = facts.content_length > 0 ? (Py_ssize_t)facts.content_length : 0;
    /* Not when the body is not all here or more follows, nor for a last request (keep-alive off):
     * llhttp must know the connection is done, it refuses whatever the client sends after that. */
    if (size - (at - text) != body_len || (http11 ? facts.close : !facts.keep_alive)) {
        Py_RETURN_NONE;
    }
    Py_INCREF(method_objects[method]);
    Py_INCREF(version_objects[http11]);
    PyObject *items[6] = {
        method_objects[method],
        PyBytes_FromStringAndSize((const char *)target, target_end - target),
        version_objects[http11],
        PyBytes_FromStringAndSize((const char *)fields, at - 2 - fields), /* without the empty line */
        PyBytes_FromStringAndSize((const char *)at, body_len),
    };
    return tuple_of(5, items);
}

/* request_head(method, target, lines, trace_lines, chunked) -> the head the proxy sends upstream:
 * b"{method} {target} HTTP/1.1\r\n{lines}{trace_lines}" + b"transfer-encoding: chunked\r\n" when
 * `chunked` + b"\r\n", in one allocation (a b"".join of its parts cost ~800 instructions per request).
 * All but `chunked` are bytes; `lines` and `trace_lines` are whole "name: value\r\n" lines. */
static PyObject *request_head(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    static const char version[] = " HTTP/1.1\r\n", chunked_line[] = "transfer-encoding: chunked\r\n";
    enum { VERSION = sizeof(version) - 1, CHUNKED = sizeof(chunked_line) - 1 };
    if (nargs != 5 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1]) || !PyBytes_Check(args[2]) ||
        !PyBytes_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "request_head(method: bytes, target: bytes, lines: bytes, trace_lines: bytes, chunked: bool)");
        return NULL;
    }
    int chunked = PyObject_IsTrue(args[4]);
    if (chunked < 0) {
        return NULL;
    }
    Py_ssize_t size = 1 + VERSION + 2 + (chunked ? CHUNKED : 0);
    for (int i = 0; i < 4; i++) {
        if (PyBytes_GET_SIZE(args[i]) > PY_SSIZE_T_MAX / 4 - size) {
            return PyErr_NoMemory();
        }
        size += PyBytes_GET_SIZE(args[i]);
    }
    PyObject *head = PyBytes_FromStringAndSize(NULL, size);
    if (head == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(head);
#define PUT(text, len) (memcpy(out, (text), (size_t)(len)), out += (len))
    PUT(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]));
    *out++ = ' ';
    PUT(PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]));
    PUT(version, VERSION);
    PUT(PyBytes_AS_STRING(args[2]), PyBytes_GET_SIZE(args[2]));
    PUT(PyBytes_AS_STRING(args[3]), PyBytes_GET_SIZE(args[3]));
    if (chunked) {
        PUT(chunked_line, CHUNKED);
    }
    PUT("\r\n", 2);
#undef PUT
    return head;
}

static PyMethodDef methods[] = {
    {"request_fields", (PyCFunction)(void (*)(void))request_fields, METH_FASTCALL,
     "request_fields(headers, drop_host) -> (lines, host, content_length, chunked, traced)"},
    {"field_pairs", field_pairs, METH_O, "field_pairs(headers) -> [(name, value)]"},
    {"request_head", (PyCFunction)(void (*)(void))request_head, METH_FASTCALL,
     "request_head(method, target, lines, trace_lines, chunked) -> the head sent upstream"},
    {"response_head", response_head, METH_O, "response_head(head) -> (end_to_end_head, framing flags)"},
    {"whole_request", whole_request, METH_O,
     "whole_request(data) -> (method, target, version, headers, body) or None"},
    {"whole_response", (PyCFunction)(void (*)(void))whole_response, METH_FASTCALL,
     "whole_response(data, head_only) -> (status, message, framing, keep_alive, head_len) or None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mesh._http1_heads",
    .m_doc = "HTTP/1.1 heads as the proxy forwards them: hop-by-hop fields out, framing facts found.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__http1_heads(void) {
    fill_tables();
    for (size_t i = 0; i < FAST_METHOD_COUNT; i++) {
        if (method_objects[i] == NULL && (method_objects[i] = PyBytes_FromString(FAST_METHODS[i])) == NULL) {
            return NULL;
        }
    }
    for (int i = 0; i < 2; i++) {
        if (version_objects[i] == NULL && (version_objects[i] = PyUnicode_InternFromString(i ? "1.1" : "1.0")) == NULL) {
            return NULL;
        }
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "HAS_CONTENT_LENGTH", HAS_CONTENT_LENGTH) < 0 ||
        PyModule_AddIntConstant(module, "HAS_TRANSFER_ENCODING", HAS_TRANSFER_ENCODING) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
