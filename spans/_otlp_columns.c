/* OTLP ExportTraceServiceRequest protobuf bytes -> span columns, parsed straight from the wire.
 *
 * Why native: building one Python object per protobuf message (or per attribute) costs ~10 us per
 * realistic span; reading the wire format here and creating only the column values (hex ids, a few
 * ints, one JSON text per typed column, one str per tag) keeps ingest near 1 us per span.
 *
 * Policy stays in Python (spans/otlp_decode.py): the resource part (service name rule, JSON and tags
 * of resource attributes) and the scope part are computed there from a dict of plain values built
 * here; rare attribute values (arrays, maps, bytes) are turned into text by spans.model's
 * ``value_text`` / ``dumps`` so their text forms are the model's, not a second implementation.
 *
 * Protobuf rules followed (as upb applies them): fields may come in any order; a field with an
 * unexpected wire type is an unknown field and is skipped, like every unknown field; the last
 * occurrence of a scalar wins; repeated occurrences of a singular message merge (parsing the
 * concatenation of two encodings equals parsing one after the other into the same state, so merge
 * = "feed" every occurrence to the same state); string fields must be valid UTF-8; groups,
 * truncation, overlong varints and field number 0 make the whole request invalid.
 *
 * Attributes repeat (the same method, route, peer and agent in most spans), so the JSON member and
 * tag of a KeyValue encoding are kept in a small direct-mapped cache and reused for the same bytes;
 * span names too.
 *
 * Every read is bounds-checked against the enclosing message; nesting of attribute values is
 * limited so hostile input cannot exhaust the C stack. Errors are ValueError with a message naming
 * the problem; spans/otlp_decode.py turns them into PayloadError.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ---- wire reading ------------------------------------------------------------------------- */

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_SGROUP = 3, WIRE_EGROUP = 4, WIRE_I32 = 5 };
enum { MAX_VALUE_DEPTH = 90 };  /* upb's limit is 100 levels counted from the request */

typedef struct {
    const uint8_t *p, *end;
    int in_attribute;  /* errors inside KeyValue/AnyValue get the attribute prefix */
    const char *where; /* the message type being read, for error messages */
} Reader;

typedef struct {
    uint32_t number;
    int wire;
    uint64_t scalar;          /* VARINT, I64, I32 */
    const uint8_t *data;      /* LEN */
    Py_ssize_t size;
} Field;

static int fail(int in_attribute, const char *problem, const char *where)
{
    if (in_attribute)
        PyErr_Format(PyExc_ValueError, "an attribute is not a valid OTLP KeyValue: %s in %s", problem, where);
    else
        PyErr_Format(PyExc_ValueError, "not a valid OTLP ExportTraceServiceRequest protobuf: %s in %s",
                     problem, where);
    return -1;
}

static Reader reader(const uint8_t *data, Py_ssize_t size, int in_attribute, const char *where)
{
    Reader r = {data, data + size, in_attribute, where};
    return r;
}

static int read_varint_slow(Reader *r, uint64_t *out)
{
    uint64_t value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end)
            return fail(r->in_attribute, "truncated varint", r->where);
        uint8_t byte = *r->p++;
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *out = value;
            return 0;
        }
    }
    return fail(r->in_attribute, "varint longer than 10 bytes", r->where);
}

/* Most varints (tags, lengths, small ints) are one byte: that case inline. */
static inline int read_varint(Reader *r, uint64_t *out)
{
    if (r->p < r->end && *r->p < 0x80) {
        *out = *r->p++;
        return 0;
    }
    return read_varint_slow(r, out);
}

/* The next field of the message, whatever its wire type: 1 = got one, 0 = end of message, -1 = error. */
static inline Py_ALWAYS_INLINE int next_field(Reader *r, Field *f)
{
    if (r->p >= r->end)
        return 0;
    uint64_t key;
    if (read_varint(r, &key) < 0)
        return -1;
    if (key >> 32 || (key >> 3) == 0)
        return fail(r->in_attribute, "invalid field number", r->where);
    f->number = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    switch (f->wire) {
    case WIRE_VARINT:
        return read_varint(r, &f->scalar) < 0 ? -1 : 1;
    case WIRE_I64:
    case WIRE_I32: {
        int width = f->wire == WIRE_I64 ? 8 : 4;
        if (r->end - r->p < width)
            return fail(r->in_attribute, "truncated fixed-width field", r->where);
        uint64_t value = 0;
        for (int i = width - 1; i >= 0; i--)  /* little-endian, whatever the host */
            value = (value << 8) | r->p[i];
        r->p += width;
        f->scalar = value;
        return 1;
    }
    case WIRE_LEN: {
        uint64_t size;
        if (read_varint(r, &size) < 0)
            return -1;
        if (size > (uint64_t)(r->end - r->p))
            return fail(r->in_attribute, "truncated length-delimited field", r->where);
        f->data = r->p;
        f->size = (Py_ssize_t)size;
        r->p += size;
        return 1;
    }
    case WIRE_SGROUP:
    case WIRE_EGROUP:
        return fail(r->in_attribute, "groups are not supported", r->where);
    default:
        return fail(r->in_attribute, "invalid wire type", r->where);
    }
}

static int is_len(const Field *f, uint32_t number) { return f->number == number && f->wire == WIRE_LEN; }
static int is_varint(const Field *f, uint32_t number) { return f->number == number && f->wire == WIRE_VARINT; }
static int is_i64(const Field *f, uint32_t number) { return f->number == number && f->wire == WIRE_I64; }

/* Strict UTF-8 (no overlongs, no surrogates, <= U+10FFFF), as proto3 requires of string fields.
 * Sets *ascii so ASCII text can be copied into a str without decoding. */
static int utf8_valid(const uint8_t *s, Py_ssize_t n, int *ascii)
{
    Py_ssize_t i = 0;
    *ascii = 1;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t chunk;
            memcpy(&chunk, s + i, 8);
            if (!(chunk & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        *ascii = 0;
        int extra;
        uint8_t low = 0x80, high = 0xbf;  /* allowed range of the second byte */
        if (c >= 0xc2 && c <= 0xdf)
            extra = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            extra = 2;
            if (c == 0xe0) low = 0xa0;
            if (c == 0xed) high = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            extra = 3;
            if (c == 0xf0) low = 0x90;
            if (c == 0xf4) high = 0x8f;
        } else
            return 0;
        if (n - i <= extra)
            return 0;
        if (s[i + 1] < low || s[i + 1] > high)
            return 0;
        for (int k = 2; k <= extra; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
        i += extra + 1;
    }
    return 1;
}

/* A validated string field. */
typedef struct {
    const uint8_t *data;
    Py_ssize_t size;
    int ascii;
} Text;

static int read_text(const Reader *r, const Field *f, const char *name, Text *out)
{
    if (!utf8_valid(f->data, f->size, &out->ascii)) {
        char problem[80];
        snprintf(problem, sizeof problem, "%s is not valid UTF-8", name);
        return fail(r->in_attribute, problem, r->where);
    }
    out->data = f->data;
    out->size = f->size;
    return 0;
}

static PyObject *text_str(const uint8_t *data, Py_ssize_t size, int ascii)
{
    if (!ascii)
        return PyUnicode_DecodeUTF8((const char *)data, size, "strict");
    PyObject *str = PyUnicode_New(size, 127);
    if (str && size)
        memcpy(PyUnicode_1BYTE_DATA(str), data, (size_t)size);
    return str;
}

/* ---- output buffers ----------------------------------------------------------------------- */

typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int ascii;
} Buf;

/* Growing is rare (the buffers are reused for every span), so only the capacity test is inline. */
static int buf_grow(Buf *b, Py_ssize_t more)
{
    Py_ssize_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(b->data, (size_t)cap);
    if (!data) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(Buf *b, Py_ssize_t more)
{
    return b->len + more <= b->cap ? 0 : buf_grow(b, more);
}

static void buf_clear(Buf *b)
{
    b->len = 0;
    b->ascii = 1;
}

static int buf_put(Buf *b, const void *data, Py_ssize_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, data, (size_t)n);
    b->len += n;
    return 0;
}

static int buf_putc(Buf *b, char c)
{
    if (buf_reserve(b, 1) < 0)
        return -1;
    b->data[b->len++] = c;
    return 0;
}
static int buf_puts(Buf *b, const char *s) { return buf_put(b, s, (Py_ssize_t)strlen(s)); }

static int buf_put_text(Buf *b, const Text *t)
{
    b->ascii &= t->ascii;
    return buf_put(b, t->data, t->size);
}

/* Whether 8 bytes need no JSON escape (no control character, '"' or '\\'): whole words are copied,
 * as almost all text needs no escape. Bit tricks that test every byte of a word at once. */
static inline int json_plain_word(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t below_space = (x - ones * 0x20) & ~x & highs;
    uint64_t has_quote = (quote - ones) & ~quote & highs;
    uint64_t has_backslash = (backslash - ones) & ~backslash & highs;
    return !(below_space | has_quote | has_backslash);
}

/* A JSON string literal of validated UTF-8: escapes what JSON requires, copies the rest. */
static int buf_put_json_string(Buf *b, const Text *t)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, t->size * 6 + 2) < 0)  /* worst case: every byte as \u00XX */
        return -1;
    b->ascii &= t->ascii;
    char *out = b->data + b->len;
    *out++ = '"';
    Py_ssize_t i = 0;
    for (; t->size - i >= 8; i += 8, out += 8) {
        uint64_t word;
        memcpy(&word, t->data + i, 8);
        if (!json_plain_word(word))
            break;
        memcpy(out, &word, 8);
    }
    for (; i < t->size; i++) {
        uint8_t c = t->data[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
        case '"': *out++ = '"'; break;
        case '\\': *out++ = '\\'; break;
        case '\n': *out++ = 'n'; break;
        case '\r': *out++ = 'r'; break;
        case '\t': *out++ = 't'; break;
        case '\b': *out++ = 'b'; break;
        case '\f': *out++ = 'f'; break;
        default:
            *out++ = 'u'; *out++ = '0'; *out++ = '0';
            *out++ = hex[c >> 4]; *out++ = hex[c & 15];
        }
    }
    *out++ = '"';
    b->len = out - b->data;
    return 0;
}

/* Decimal digits without snprintf, which costs more than the rest of an attribute. */
static int buf_put_u64(Buf *b, uint64_t value)
{
    char digits[20];
    int n = 0;
    do {
        digits[sizeof digits - 1 - n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    return buf_put(b, digits + sizeof digits - n, n);
}

static int buf_put_i64(Buf *b, int64_t value)
{
    if (value >= 0)
        return buf_put_u64(b, (uint64_t)value);
    return buf_putc(b, '-') < 0 ? -1 : buf_put_u64(b, -(uint64_t)value);
}

#ifdef __SIZEOF_INT128__
/* Python's repr of a double in [1e-4, 2**52), written into out (>= 32 bytes); 0 outside that range.
 *
 * Why: CPython's repr (David Gay's dtoa with big numbers) costs ~7k instructions for a double
 * with 17 significant digits, as much as the rest of a span. In this range the exact arithmetic of
 * "shortest digits that read back as the same double" fits 128-bit integers:
 *   x = m * 2**e, and every real number in the interval around x (half-way to its neighbours,
 *   the ends included when m is even, as round-half-even reading does) reads back as x.
 *   Scaled by 10**q so that x lands in [1e16, 1e17), the interval holds at least two integers; the
 *   digits are then the multiples of the largest power of ten 10**j found in it (the fewest digits),
 *   the one nearest x (ties to an even last digit), as dtoa's mode 0 chooses.
 * The range is also where repr writes plain notation ("0.0001" .. "4503599627370495.5"). */
static int short_repr(double value, char *out)
{
    static const uint64_t pow10[18] = {
        1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL, 1000000ULL, 10000000ULL, 100000000ULL,
        1000000000ULL, 10000000000ULL, 100000000000ULL, 1000000000000ULL, 10000000000000ULL,
        100000000000000ULL, 1000000000000000ULL, 10000000000000000ULL, 100000000000000000ULL,
    };
    double magnitude = fabs(value);
    if (!(magnitude >= 1e-4 && magnitude < 4503599627370496.0))  /* also excludes NaN */
        return 0;
    uint64_t bits;
    memcpy(&bits, &magnitude, 8);
    int exponent_field = (int)(bits >> 52);  /* >= 1: no subnormals in this range */
    uint64_t m = (bits & ((1ULL << 52) - 1)) | (1ULL << 52);
    int e = exponent_field - 1075;
    int lower_is_closer = (bits & ((1ULL << 52) - 1)) == 0;  /* a power of two: half gap below */
    int ends_included = (m & 1) == 0;

    /* q with 10**16 <= x * 10**q < 10**17; x * 10**q = m * 5**q * 2**(e + q), kept as an
     * integer over 2**shift, with the interval ends, in units of a quarter of the gap. */
    int q = 16 - (int)floor(log10(magnitude));
    unsigned __int128 n4, low4, high4;
    int shift;
    for (int attempt = 0;; attempt++) {
        if (q < 0 || q > 27 || attempt > 2)
            return 0;
        unsigned __int128 five = 1;
        for (int i = 0; i < q; i++)
            five *= 5;
        shift = 2 - (e + q);
        if (shift < 2 || shift > 64)
            return 0;
        n4 = (unsigned __int128)(4 * m) * five;
        high4 = (unsigned __int128)(4 * m + 2) * five;
        low4 = (unsigned __int128)(4 * m - (lower_is_closer ? 1 : 2)) * five;
        uint64_t whole = (uint64_t)(n4 >> shift);
        if (whole < pow10[16])
            q++;
        else if (whole >= pow10[17])
            q--;
        else
            break;
    }
    unsigned __int128 mask = ((unsigned __int128)1 << shift) - 1;
    uint64_t n = (uint64_t)(n4 >> shift), low = (uint64_t)(low4 >> shift), high = (uint64_t)(high4 >> shift);
    /* The integers in the interval: [low, high] after rounding the ends inwards. */
    if (!ends_included || (low4 & mask))
        low++;
    if (!ends_included && !(high4 & mask))
        high--;

    /* The largest 10**j with a multiple in [low, high]. */
    int j = 17;
    while (j > 0 && (high / pow10[j]) * pow10[j] < low)
        j--;
    uint64_t unit = pow10[j], c = n / unit, rest = n % unit;
    /* Round x / 10**j to the nearest integer, ties to even; the fraction of x is n4 & mask. */
    unsigned __int128 fraction = n4 & mask, half = (unsigned __int128)1 << (shift - 1);
    int up;
    if (j == 0)
        up = fraction > half || (fraction == half && (c & 1));
    else if (rest != unit / 2)
        up = rest > unit / 2;
    else
        up = fraction != 0 || (c & 1);
    c += up;
    uint64_t c_low = (low + unit - 1) / unit, c_high = high / unit;
    if (c < c_low)
        c = c_low;
    if (c > c_high)
        c = c_high;

    char digits[24];
    int count = 0;
    for (uint64_t rest_digits = c; rest_digits; rest_digits /= 10)
        digits[sizeof digits - 1 - count++] = (char)('0' + rest_digits % 10);
    const char *first = digits + sizeof digits - count;
    while (count > 1 && first[count - 1] == '0')  /* c * 10**j may still end in zeros */
        count--, j++;
    int point = count + j - q;  /* digits before the decimal point (<= 0: leading zeros after it) */
    char *o = out;
    if (value < 0)
        *o++ = '-';
    if (point <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -point; i++)
            *o++ = '0';
        memcpy(o, first, (size_t)count);
        o += count;
    } else if (point >= count) {
        memcpy(o, first, (size_t)count);
        o += count;
        for (int i = 0; i < point - count; i++)
            *o++ = '0';
        *o++ = '.';
        *o++ = '0';
    } else {
        memcpy(o, first, (size_t)point);
        o += point;
        *o++ = '.';
        memcpy(o, first + point, (size_t)(count - point));
        o += count - point;
    }
    return (int)(o - out);
}
#endif

/* Python's repr of a float ("72.5", "1e-07", "nan"): the tag text; also valid JSON when finite. */
static int buf_put_double_repr(Buf *b, double value)
{
#ifdef __SIZEOF_INT128__
    char fast[32];
    int length = short_repr(value, fast);
    if (length)
        return buf_put(b, fast, length);
#endif
    char *text = PyOS_double_to_string(value, 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (!text)
        return -1;
    int rc = buf_puts(b, text);
    PyMem_Free(text);
    return rc;
}

static int buf_put_hex(Buf *b, const uint8_t *data, Py_ssize_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (buf_reserve(b, 2 * n) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        b->data[b->len++] = hex[data[i] >> 4];
        b->data[b->len++] = hex[data[i] & 15];
    }
    return 0;
}

/* The buffer's content as a str (UTF-8 validated when written, so ASCII needs no decoding). */
static PyObject *buf_str(const Buf *b)
{
    return text_str((const uint8_t *)b->data, b->len, b->ascii);
}

static PyObject *hex_str(const uint8_t *data, Py_ssize_t n)
{
    static const char hex[] = "0123456789abcdef";
    PyObject *str = PyUnicode_New(2 * n, 127);
    if (!str)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(str);
    for (Py_ssize_t i = 0; i < n; i++) {
        out[2 * i] = (Py_UCS1)hex[data[i] >> 4];
        out[2 * i + 1] = (Py_UCS1)hex[data[i] & 15];
    }
    return str;
}

/* A growing array of owned references: the tags of the span being decoded. */
typedef struct {
    PyObject **items;
    Py_ssize_t len, cap;
} Refs;

static int refs_push(Refs *r, PyObject *item) /* steals item */
{
    if (!item)
        return -1;
    if (r->len == r->cap) {
        Py_ssize_t cap = r->cap ? 2 * r->cap : 32;
        PyObject **items = PyMem_Realloc(r->items, (size_t)cap * sizeof *items);
        if (!items) {
            Py_DECREF(item);
            PyErr_NoMemory();
            return -1;
        }
        r->items = items;
        r->cap = cap;
    }
    r->items[r->len++] = item;
    return 0;
}

static void refs_clear(Refs *r)
{
    while (r->len)
        Py_DECREF(r->items[--r->len]);
}

/* The references (all str: tags) as a new tuple; the array is left empty. A tuple of str can never
 * be part of a cycle, so it is untracked right away, as the GC itself would on its first pass:
 * ingest keeps ~100k spans' tags alive at a time, and tracked they made every young collection
 * walk them (~5% of the collector's CPU). */
static PyObject *refs_take_tuple(Refs *r)
{
    PyObject *tuple = PyTuple_New(r->len);
    if (!tuple)
        return NULL;
    int all_str = 1;
    for (Py_ssize_t i = 0; i < r->len; i++) {
        all_str &= PyUnicode_CheckExact(r->items[i]);
        PyTuple_SET_ITEM(tuple, i, r->items[i]);
    }
    r->len = 0;
    if (all_str && PyObject_GC_IsTracked(tuple))
        PyObject_GC_UnTrack(tuple);
    return tuple;
}

/* ---- attribute values --------------------------------------------------------------------- */

/* spans.model functions, so rare values get exactly the model's text forms. */
static PyObject *model_value_text, *model_dumps, *model_bytes_value;

enum ValueKind { VALUE_NONE, VALUE_STRING, VALUE_BOOL, VALUE_INT, VALUE_DOUBLE, VALUE_BYTES, VALUE_ARRAY, VALUE_KVLIST };

/* An AnyValue as read so far; arrays and maps are built as Python objects (they are rare). */
typedef struct {
    enum ValueKind kind;
    Text text;         /* STRING, BYTES (raw bytes, ascii unused) */
    int64_t integer;   /* BOOL, INT */
    double number;     /* DOUBLE */
    PyObject *object;  /* ARRAY (list), KVLIST (dict); owned */
} Value;

static void value_clear(Value *v)
{
    Py_CLEAR(v->object);
    v->kind = VALUE_NONE;
}

static int value_feed(Value *v, const uint8_t *data, Py_ssize_t size, int depth);
static PyObject *value_object(Value *v);

/* One KeyValue's key and value (all its value occurrences merged). */
static int key_value_read(const uint8_t *data, Py_ssize_t size, Text *key, Value *value, int depth)
{
    Reader r = reader(data, size, 1, "KeyValue");
    Field f;
    int rc;
    key->data = (const uint8_t *)"";
    key->size = 0;
    key->ascii = 1;
    while ((rc = next_field(&r, &f)) > 0) {
        if (is_len(&f, 1)) {
            if (read_text(&r, &f, "key", key) < 0)
                return -1;
        } else if (is_len(&f, 2)) {
            if (value_feed(value, f.data, f.size, depth) < 0)
                return -1;
        }
    }
    return rc;
}

/* The elements of one ArrayValue / KeyValueList encoding, added to the list / dict being built. */
static int value_feed_elements(Value *v, const uint8_t *data, Py_ssize_t size, int depth)
{
    Reader r = reader(data, size, 1, v->kind == VALUE_ARRAY ? "ArrayValue" : "KeyValueList");
    Field f;
    int rc;
    while ((rc = next_field(&r, &f)) > 0) {
        if (!is_len(&f, 1))
            continue;
        Value element = {VALUE_NONE};
        Text key;
        PyObject *object = NULL;
        int ok;
        if (v->kind == VALUE_ARRAY) {
            ok = value_feed(&element, f.data, f.size, depth) == 0 && (object = value_object(&element)) != NULL
                 && PyList_Append(v->object, object) == 0;
        } else {
            PyObject *key_str = NULL;
            ok = key_value_read(f.data, f.size, &key, &element, depth) == 0
                 && (object = value_object(&element)) != NULL
                 && (key_str = text_str(key.data, key.size, key.ascii)) != NULL
                 && PyDict_SetItem(v->object, key_str, object) == 0;
            Py_XDECREF(key_str);
        }
        Py_XDECREF(object);
        value_clear(&element);
        if (!ok)
            return -1;
    }
    return rc;
}

/* Reads one AnyValue encoding into v: the last oneof member wins, repeated arrays/maps merge. */
static int value_feed(Value *v, const uint8_t *data, Py_ssize_t size, int depth)
{
    if (depth > MAX_VALUE_DEPTH)
        return fail(1, "values nested too deeply", "AnyValue");
    Reader r = reader(data, size, 1, "AnyValue");
    Field f;
    int rc;
    while ((rc = next_field(&r, &f)) > 0) {
        if (is_len(&f, 1)) {
            Text text;
            if (read_text(&r, &f, "string_value", &text) < 0)
                return -1;
            value_clear(v);
            v->kind = VALUE_STRING;
            v->text = text;
        } else if (is_varint(&f, 2) || is_varint(&f, 3) || is_varint(&f, 8)) {
            value_clear(v);
            v->kind = f.number == 2 ? VALUE_BOOL : VALUE_INT;
            /* bool: any nonzero varint; int_value: int64; string_value_strindex: int32 */
            v->integer = f.number == 2 ? f.scalar != 0 : f.number == 3 ? (int64_t)f.scalar : (int32_t)f.scalar;
        } else if (is_i64(&f, 4)) {
            value_clear(v);
            v->kind = VALUE_DOUBLE;
            memcpy(&v->number, &f.scalar, sizeof v->number);
        } else if (is_len(&f, 5) || is_len(&f, 6)) {
            enum ValueKind kind = f.number == 5 ? VALUE_ARRAY : VALUE_KVLIST;
            if (v->kind != kind) {
                value_clear(v);
                v->object = kind == VALUE_ARRAY ? PyList_New(0) : PyDict_New();
                if (!v->object)
                    return -1;
                v->kind = kind;
            }
            if (value_feed_elements(v, f.data, f.size, depth + 1) < 0)
                return -1;
        } else if (is_len(&f, 7)) {
            value_clear(v);
            v->kind = VALUE_BYTES;
            v->text.data = f.data;
            v->text.size = f.size;
        }
    }
    return rc;
}

/* The plain Python value stored in the JSON columns (as spans.model expects: bytes as base64 text). */
static PyObject *value_object(Value *v)
{
    switch (v->kind) {
    case VALUE_NONE: Py_RETURN_NONE;
    case VALUE_STRING: return text_str(v->text.data, v->text.size, v->text.ascii);
    case VALUE_BOOL: return PyBool_FromLong((long)v->integer);
    case VALUE_INT: return PyLong_FromLongLong(v->integer);
    case VALUE_DOUBLE: return PyFloat_FromDouble(v->number);
    case VALUE_BYTES: {
        PyObject *raw = PyBytes_FromStringAndSize((const char *)v->text.data, v->text.size);
        if (!raw)
            return NULL;
        PyObject *text = PyObject_CallOneArg(model_bytes_value, raw);
        Py_DECREF(raw);
        return text;
    }
    default:
        Py_INCREF(v->object);
        return v->object;
    }
}

/* Appends the UTF-8 of a str returned by a model function. */
static int buf_put_str(Buf *b, PyObject *str)
{
    Py_ssize_t size;
    const char *data = PyUnicode_AsUTF8AndSize(str, &size);
    if (!data)
        return -1;
    b->ascii &= PyUnicode_IS_ASCII(str);
    return buf_put(b, data, size);
}

typedef struct {
    Buf json;   /* the JSON object/list being written for the current span */
    Buf tag;    /* scratch for one "key=value" */
    Refs tags;  /* the current span's tags */
} Out;

/* One KeyValue as a `"key":value` JSON member appended to json, and its "key=value" tag. */
static int attribute_decode(Out *out, Buf *json, const uint8_t *data, Py_ssize_t size, PyObject **tag_str)
{
    Text key;
    Value value = {VALUE_NONE};
    Buf *tag = &out->tag;
    int rc = -1;
    if (key_value_read(data, size, &key, &value, 0) < 0)
        goto done;
    buf_clear(tag);
    if (buf_put_json_string(json, &key) < 0 || buf_putc(json, ':') < 0 || buf_put_text(tag, &key) < 0
        || buf_putc(tag, '=') < 0)
        goto done;
    switch (value.kind) {
    case VALUE_NONE:
        if (buf_puts(json, "null") < 0 || buf_puts(tag, "null") < 0)
            goto done;
        break;
    case VALUE_STRING:
        if (buf_put_json_string(json, &value.text) < 0 || buf_put_text(tag, &value.text) < 0)
            goto done;
        break;
    case VALUE_BOOL:
        if (buf_puts(json, value.integer ? "true" : "false") < 0 || buf_puts(tag, value.integer ? "true" : "false") < 0)
            goto done;
        break;
    case VALUE_INT: {
        Py_ssize_t start = tag->len;  /* the digits once, for the tag and the JSON */
        if (buf_put_i64(tag, value.integer) < 0 || buf_put(json, tag->data + start, tag->len - start) < 0)
            goto done;
        break;
    }
    case VALUE_DOUBLE: {
        Py_ssize_t start = tag->len;  /* repr once, for the tag and the JSON */
        if (buf_put_double_repr(tag, value.number) < 0)
            goto done;
        if (!isfinite(value.number) ? buf_puts(json, "null") < 0 : buf_put(json, tag->data + start, tag->len - start) < 0)
            goto done;  /* NaN and infinities are null in JSON, as orjson writes them */
        break;
    }
    default: {
        PyObject *object = value_object(&value), *text = NULL, *dumped = NULL;
        int ok = object && (text = PyObject_CallOneArg(model_value_text, object)) != NULL
                 && (dumped = PyObject_CallOneArg(model_dumps, object)) != NULL
                 && buf_put_str(tag, text) == 0 && buf_put_str(json, dumped) == 0;
        Py_XDECREF(object);
        Py_XDECREF(text);
        Py_XDECREF(dumped);
        if (!ok)
            goto done;
    }
    }
    *tag_str = buf_str(tag);
    rc = *tag_str ? 0 : -1;
done:
    value_clear(&value);
    return rc;
}

/* Real traffic repeats most attributes (http.method=GET, the same routes, peers and agents), so
 * the result for a KeyValue encoding is remembered and reused when the same bytes come again: a
 * direct-mapped table (a colliding encoding replaces the entry), bounded in size. Only the GIL
 * holder decodes, so the table needs no lock.
 * The table (~700 KB) is mostly out of cache, and so is the tag an entry replaces: a lookup first
 * reads a slot's hash from a small array, and an encoding is only stored on its second sighting
 * (`seen` remembers hashes met once), so values that never repeat (URLs, ports, ratios) cost no
 * trip to the table at all. */
enum { CACHE_SLOTS = 2048, CACHE_MAX_RAW = 96, CACHE_MAX_JSON = 192 };

typedef struct {
    PyObject *tag;  /* NULL: the slot is empty */
    Py_ssize_t raw_size, json_size;
    int json_ascii;
    uint8_t raw[CACHE_MAX_RAW];
    char json[CACHE_MAX_JSON];
} CachedAttribute;

static CachedAttribute attribute_cache[CACHE_SLOTS];
static uint64_t attribute_cache_hash[CACHE_SLOTS];  /* the hash of each slot's encoding */
static uint64_t attribute_seen[CACHE_SLOTS];  /* hashes of encodings met once, not yet stored */

static uint64_t raw_hash(const uint8_t *p, Py_ssize_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n, word;
    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&word, p, 8);
        h = (h ^ word) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    word = 0;
    memcpy(&word, p, (size_t)n);
    h = (h ^ word) * 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 29);
}

static int attribute_put(Out *out, Buf *json, const uint8_t *data, Py_ssize_t size)
{
    CachedAttribute *store = NULL;  /* the slot this encoding's result goes to, if any */
    if (size <= CACHE_MAX_RAW) {
        uint64_t hash = raw_hash(data, size);
        size_t slot = hash & (CACHE_SLOTS - 1);
        if (attribute_cache_hash[slot] == hash) {
            CachedAttribute *cached = &attribute_cache[slot];
            if (cached->tag && cached->raw_size == size && !memcmp(cached->raw, data, (size_t)size)) {
                json->ascii &= cached->json_ascii;
                Py_INCREF(cached->tag);
                return buf_put(json, cached->json, cached->json_size) < 0 ? -1 : refs_push(&out->tags, cached->tag);
            }
        }
        if (attribute_seen[slot] == hash) {
            store = &attribute_cache[slot];
            attribute_cache_hash[slot] = hash;
        } else {
            attribute_seen[slot] = hash;
        }
    }
    Py_ssize_t start = json->len;
    int ascii = json->ascii;
    PyObject *tag;
    json->ascii = 1;  /* to learn whether this member is ASCII */
    if (attribute_decode(out, json, data, size, &tag) < 0)
        return -1;
    if (store) {
        /* An entry too big to keep leaves the slot empty rather than stale under the new hash. */
        Py_CLEAR(store->tag);
        if (json->len - start <= CACHE_MAX_JSON) {
            Py_INCREF(tag);
            store->tag = tag;
            store->raw_size = size;
            memcpy(store->raw, data, (size_t)size);
            store->json_size = json->len - start;
            memcpy(store->json, json->data + start, (size_t)store->json_size);
            store->json_ascii = json->ascii;
        }
    }
    json->ascii &= ascii;
    return refs_push(&out->tags, tag);
}

/* The repeated KeyValue field `number` of a message as a JSON object appended to json (+ tags). */
static int attributes_put(Out *out, Buf *json, const uint8_t *data, Py_ssize_t size, uint32_t number,
                          const char *where)
{
    Reader r = reader(data, size, 0, where);
    Field f;
    int rc, first = 1;
    if (buf_putc(json, '{') < 0)
        return -1;
    while ((rc = next_field(&r, &f)) > 0) {
        if (!is_len(&f, number))
            continue;
        if ((!first && buf_putc(json, ',') < 0) || attribute_put(out, json, f.data, f.size) < 0)
            return -1;
        first = 0;
    }
    return rc < 0 ? -1 : buf_putc(json, '}');
}

/* The repeated KeyValue field `number` as a dict of plain values (resource and scope attributes),
 * with the same duplicate-key rule as a dict comprehension: first position, last value. */
static int attributes_dict_feed(PyObject *dict, const uint8_t *data, Py_ssize_t size, uint32_t number,
                                const char *where)
{
    Reader r = reader(data, size, 0, where);
    Field f;
    int rc;
    while ((rc = next_field(&r, &f)) > 0) {
        if (!is_len(&f, number))
            continue;
        Text key;
        Value value = {VALUE_NONE};
        PyObject *key_str = NULL, *object = NULL;
        int ok = key_value_read(f.data, f.size, &key, &value, 0) == 0
                 && (key_str = text_str(key.data, key.size, key.ascii)) != NULL
                 && (object = value_object(&value)) != NULL && PyDict_SetItem(dict, key_str, object) == 0;
        Py_XDECREF(key_str);
        Py_XDECREF(object);
        value_clear(&value);
        if (!ok)
            return -1;
    }
    return rc;
}

/* ---- spans -------------------------------------------------------------------------------- */

enum {
    COL_TRACE_ID, COL_SPAN_ID, COL_PARENT_SPAN_ID, COL_TRACE_STATE, COL_NAME, COL_KIND, COL_SERVICE,
    COL_START_NS, COL_DURATION_NS, COL_STATUS_CODE, COL_STATUS_MESSAGE, COL_ATTRIBUTES,
    COL_RESOURCE_ATTRIBUTES, COL_SCOPE_NAME, COL_SCOPE_VERSION, COL_SCOPE_ATTRIBUTES, COL_EVENTS,
    COL_LINKS, COL_TAGS, COLUMN_COUNT
};

static const char *const column_names[COLUMN_COUNT] = {
    "trace_id", "span_id", "parent_span_id", "trace_state", "name", "kind", "service", "start_ns",
    "duration_ns", "status_code", "status_message", "attributes", "resource_attributes", "scope_name",
    "scope_version", "scope_attributes", "events", "links", "tags",
};

/* The scalar fields of one span, read in one pass; the repeated ones are read in later passes. */
typedef struct {
    Text trace_id, span_id, parent_span_id, trace_state, name, status_message;
    int64_t kind, status_code;
    uint64_t start, end;
    Py_ssize_t bad_link;  /* index of the first link without proper ids, or -1 */
    /* Where the attributes (9), events (11) and links (13) lie: from the first occurrence's tag to
     * the end of the last one, so the later passes over them skip the rest of the span. */
    struct { const uint8_t *from, *to; } repeated[3];
} SpanFields;

static const uint8_t zeros[16];

static int status_feed(SpanFields *s, const uint8_t *data, Py_ssize_t size)
{
    Reader r = reader(data, size, 0, "Status");
    Field f;
    int rc;
    while ((rc = next_field(&r, &f)) > 0) {
        if (is_len(&f, 2)) {
            if (read_text(&r, &f, "message", &s->status_message) < 0)
                return -1;
        } else if (is_varint(&f, 3))
            s->status_code = (int32_t)f.scalar;
    }
    return rc;
}

/* A link's ids: 0 when they are a 16-byte trace id and an 8-byte span id, 1 when not, -1 on error. */
static int link_ids_bad(const uint8_t *data, Py_ssize_t size)
{
    Reader r = reader(data, size, 0, "Span.Link");
    Field f;
    int rc;
    Py_ssize_t trace_id = 0, span_id = 0;
    while ((rc = next_field(&r, &f)) > 0) {
        if (is_len(&f, 1))
            trace_id = f.size;
        else if (is_len(&f, 2))
            span_id = f.size;
    }
    return rc < 0 ? -1 : trace_id != 16 || span_id != 8;
}

static int span_fields_read(const uint8_t *data, Py_ssize_t size, SpanFields *s)
{
    static const Text empty = {(const uint8_t *)"", 0, 1};
    Reader r = reader(data, size, 0, "Span");
    Field f;
    int rc;
    Py_ssize_t link_index = 0;
    s->trace_id = s->span_id = s->parent_span_id = s->trace_state = s->name = s->status_message = empty;
    s->kind = s->status_code = 0;
    s->start = s->end = 0;
    s->bad_link = -1;
    memset(s->repeated, 0, sizeof s->repeated);
    const uint8_t *at = r.p;
    for (; (rc = next_field(&r, &f)) > 0; at = r.p) {
        if (f.wire == WIRE_LEN) {
            int k = f.number == 9 ? 0 : f.number == 11 ? 1 : f.number == 13 ? 2 : -1;
            if (k >= 0) {
                if (!s->repeated[k].from)
                    s->repeated[k].from = at;
                s->repeated[k].to = r.p;
            }
            switch (f.number) {
            case 1: s->trace_id.data = f.data; s->trace_id.size = f.size; break;
            case 2: s->span_id.data = f.data; s->span_id.size = f.size; break;
            case 3: if (read_text(&r, &f, "trace_state", &s->trace_state) < 0) return -1; break;
            case 4: s->parent_span_id.data = f.data; s->parent_span_id.size = f.size; break;
            case 5: if (read_text(&r, &f, "name", &s->name) < 0) return -1; break;
            case 13: {
                int bad = link_ids_bad(f.data, f.size);
                if (bad < 0)
                    return -1;
                if (bad && s->bad_link < 0)
                    s->bad_link = link_index;
                link_index++;
                break;
            }
            case 15: if (status_feed(s, f.data, f.size) < 0) return -1; break;
            }
        } else if (is_varint(&f, 6))
            s->kind = (int32_t)f.scalar;
        else if (is_i64(&f, 7))
            s->start = f.scalar;
        else if (is_i64(&f, 8))
            s->end = f.scalar;
    }
    return rc;
}

/* Why a span cannot be stored (the checks and texts of the OTLP contract), or 0 when it can. */
static int span_problem(const SpanFields *s, char *problem, size_t size)
{
    if (s->trace_id.size != 16)
        snprintf(problem, size, "trace_id must be 16 bytes, got %zd", s->trace_id.size);
    else if (!memcmp(s->trace_id.data, zeros, 16))
        snprintf(problem, size, "trace_id is missing (all zero)");
    else if (s->span_id.size != 8)
        snprintf(problem, size, "span_id must be 8 bytes, got %zd", s->span_id.size);
    else if (!memcmp(s->span_id.data, zeros, 8))
        snprintf(problem, size, "span_id is missing (all zero)");
    else if (s->parent_span_id.size != 0 && s->parent_span_id.size != 8)
        snprintf(problem, size, "parent_span_id must be empty or 8 bytes, got %zd", s->parent_span_id.size);
    else if (!s->start)
        snprintf(problem, size, "start_time_unix_nano is missing");
    else if (s->end < s->start)
        snprintf(problem, size, "end_time_unix_nano is before start_time_unix_nano");
    else if (s->kind < 0 || s->kind > 5)
        snprintf(problem, size, "kind %lld is not a SpanKind", (long long)s->kind);
    else if (s->status_code < 0 || s->status_code > 2)
        snprintf(problem, size, "status code %lld is not a StatusCode", (long long)s->status_code);
    else if (s->bad_link >= 0)
        snprintf(problem, size, "links[%zd] needs a 16-byte trace_id and an 8-byte span_id", s->bad_link);
    else
        return 0;
    return 1;
}

/* `[{"time_ns":..,"name":..,"attributes":{..}},..]` of a span's events (field 11). */
static int events_put(Out *out, const uint8_t *data, Py_ssize_t size)
{
    Reader r = reader(data, size, 0, "Span");
    Field f;
    int rc, first = 1;
    Buf *json = &out->json;
    buf_clear(json);
    if (buf_putc(json, '[') < 0)
        return -1;
    while ((rc = next_field(&r, &f)) > 0) {
        if (!is_len(&f, 11))
            continue;
        Reader event = reader(f.data, f.size, 0, "Span.Event");
        Field e;
        int erc;
        uint64_t time = 0;
        Text name = {(const uint8_t *)"", 0, 1};
        while ((erc = next_field(&event, &e)) > 0) {
            if (is_i64(&e, 1))
                time = e.scalar;
            else if (is_len(&e, 2) && read_text(&event, &e, "name", &name) < 0)
                return -1;
        }
        if (erc < 0 || (!first && buf_putc(json, ',') < 0) || buf_puts(json, "{\"time_ns\":") < 0
            || buf_put_u64(json, time) < 0 || buf_puts(json, ",\"name\":") < 0
            || buf_put_json_string(json, &name) < 0 || buf_puts(json, ",\"attributes\":") < 0
            || attributes_put(out, json, f.data, f.size, 3, "Span.Event") < 0 || buf_putc(json, '}') < 0)
            return -1;
        first = 0;
    }
    return rc < 0 ? -1 : buf_putc(json, ']');
}

/* `[{"trace_id":..,"span_id":..,"trace_state":..,"attributes":{..}},..]` of a span's links (field 13). */
static int links_put(Out *out, const uint8_t *data, Py_ssize_t size)
{
    Reader r = reader(data, size, 0, "Span");
    Field f;
    int rc, first = 1;
    Buf *json = &out->json;
    buf_clear(json);
    if (buf_putc(json, '[') < 0)
        return -1;
    while ((rc = next_field(&r, &f)) > 0) {
        if (!is_len(&f, 13))
            continue;
        Reader link = reader(f.data, f.size, 0, "Span.Link");
        Field l;
        int lrc;
        Text trace_id = {NULL, 0, 1}, span_id = {NULL, 0, 1}, trace_state = {(const uint8_t *)"", 0, 1};
        while ((lrc = next_field(&link, &l)) > 0) {
            if (is_len(&l, 1))
                trace_id.data = l.data, trace_id.size = l.size;
            else if (is_len(&l, 2))
                span_id.data = l.data, span_id.size = l.size;
            else if (is_len(&l, 3) && read_text(&link, &l, "trace_state", &trace_state) < 0)
                return -1;
        }
        if (lrc < 0 || (!first && buf_putc(json, ',') < 0) || buf_puts(json, "{\"trace_id\":\"") < 0
            || buf_put_hex(json, trace_id.data, trace_id.size) < 0 || buf_puts(json, "\",\"span_id\":\"") < 0
            || buf_put_hex(json, span_id.data, span_id.size) < 0 || buf_puts(json, "\",\"trace_state\":") < 0
            || buf_put_json_string(json, &trace_state) < 0 || buf_puts(json, ",\"attributes\":") < 0
            || attributes_put(out, json, f.data, f.size, 4, "Span.Link") < 0 || buf_putc(json, '}') < 0)
            return -1;
        first = 0;
    }
    return rc < 0 ? -1 : buf_putc(json, ']');
}

/* What every span of one ScopeSpans shares: (service, resource json, resource tags) and
 * (scope name, scope version, scope json, scope tags), as the Python policy computed them. */
typedef struct {
    PyObject *resource, *scope;  /* the tuples; owned */
} Shared;

/* The columns are lists made at their final size (the request's span count) and filled in place:
 * appending 19 values per span cost more than a tenth of the decoding. Rows of rejected spans
 * stay unused (NULL, which lists tolerate) and are cut off at the end. */
typedef struct {
    PyObject *columns[COLUMN_COUNT];
    Py_ssize_t rows, capacity;
    PyObject *rejected;
    PyObject *known_problems;  /* path -> message decided before (OTLP/JSON); may be empty */
    PyObject *empty_list_json; /* "[]" */
    PyObject *last_trace_id;   /* the previous span's trace id text, or NULL */
    uint8_t last_trace_id_raw[16];
    Out out;
} Decoder;

static int append(Decoder *d, int column, PyObject *value) /* steals value */
{
    if (!value)
        return -1;
    PyList_SET_ITEM(d->columns[column], d->rows, value);
    return 0;
}

static int append_shared(Decoder *d, int column, PyObject *value) /* borrows value */
{
    Py_INCREF(value);
    return append(d, column, value);
}

/* A trace id's hex text. An SDK exports a finished request's spans together, so a span often
 * has the trace id of the span before it: then both rows hold the same str. */
static PyObject *trace_id_str(Decoder *d, const uint8_t *raw)
{
    if (d->last_trace_id && !memcmp(d->last_trace_id_raw, raw, 16))
        return Py_NewRef(d->last_trace_id);
    PyObject *text = hex_str(raw, 16);
    if (text) {
        Py_XSETREF(d->last_trace_id, Py_NewRef(text));
        memcpy(d->last_trace_id_raw, raw, 16);
    }
    return text;
}

/* How many spans the request holds (its ExportTraceServiceRequest > ResourceSpans > ScopeSpans >
 * Span fields), or -1 with the structural error the decoding would meet. */
static Py_ssize_t span_count(const uint8_t *data, Py_ssize_t size)
{
    Reader request = reader(data, size, 0, "ExportTraceServiceRequest");
    Field f, g, h;
    int rc;
    Py_ssize_t count = 0;
    while ((rc = next_field(&request, &f)) > 0) {
        if (!is_len(&f, 1))
            continue;
        Reader resource_spans = reader(f.data, f.size, 0, "ResourceSpans");
        while ((rc = next_field(&resource_spans, &g)) > 0) {
            if (!is_len(&g, 2))
                continue;
            Reader scope_spans = reader(g.data, g.size, 0, "ScopeSpans");
            while ((rc = next_field(&scope_spans, &h)) > 0)
                count += is_len(&h, 2);
            if (rc < 0)
                return -1;
        }
        if (rc < 0)
            return -1;
    }
    return rc < 0 ? -1 : count;
}

/* The part of a span holding repeated field k of SpanFields.repeated (empty when it is absent). */
static Py_ssize_t repeated_part(const SpanFields *s, int k, const uint8_t *span, const uint8_t **from)
{
    if (!s->repeated[k].from) {
        *from = span;
        return 0;
    }
    *from = s->repeated[k].from;
    return s->repeated[k].to - s->repeated[k].from;
}

/* Span names repeat (one per route or method), so the str of an ASCII name is kept in a small
 * direct-mapped table and every span with that name shares it: no str to create for the row and to
 * free after the insert. A colliding name replaces the entry. Only the GIL holder decodes. */
enum { NAME_SLOTS = 256, NAME_MAX_CACHED = 128 };
static PyObject *name_cache[NAME_SLOTS];

static PyObject *name_str(const Text *name)
{
    if (!name->ascii || name->size > NAME_MAX_CACHED)
        return text_str(name->data, name->size, name->ascii);
    PyObject **slot = &name_cache[raw_hash(name->data, name->size) & (NAME_SLOTS - 1)];
    PyObject *cached = *slot;
    if (cached && PyUnicode_GET_LENGTH(cached) == name->size
        && !memcmp(PyUnicode_1BYTE_DATA(cached), name->data, (size_t)name->size))
        return Py_NewRef(cached);
    PyObject *str = text_str(name->data, name->size, 1);
    if (str)
        Py_XSETREF(*slot, Py_NewRef(str));
    return str;
}

static int span_decode(Decoder *d, const uint8_t *data, Py_ssize_t size, const Shared *shared,
                       Py_ssize_t r_index, Py_ssize_t s_index, Py_ssize_t index)
{
    SpanFields s;
    char problem[160];
    if (d->rows >= d->capacity)  /* cannot happen: span_count read the same fields */
        return fail(0, "more spans than counted", "ScopeSpans");
    if (span_fields_read(data, size, &s) < 0)
        return -1;
    int bad = span_problem(&s, problem, sizeof problem);
    if (PyDict_GET_SIZE(d->known_problems) || bad) {
        PyObject *where = PyUnicode_FromFormat("resource_spans[%zd].scope_spans[%zd].spans[%zd]", r_index,
                                               s_index, index);
        if (!where)
            return -1;
        PyObject *known = PyDict_GetItemWithError(d->known_problems, where);  /* borrowed */
        PyObject *message = NULL;
        if (known)
            message = PyUnicode_FromFormat("%U: %S", where, known);
        else if (!PyErr_Occurred() && bad)
            message = PyUnicode_FromFormat("%U: %s", where, problem);
        Py_DECREF(where);
        if (PyErr_Occurred()) {
            Py_XDECREF(message);
            return -1;
        }
        if (message) {
            int rc = PyList_Append(d->rejected, message);
            Py_DECREF(message);
            return rc;
        }
    }

    PyObject *resource = shared->resource, *scope = shared->scope;
    Out *out = &d->out;
    if (append(d, COL_TRACE_ID, trace_id_str(d, s.trace_id.data)) < 0
        || append(d, COL_SPAN_ID, hex_str(s.span_id.data, 8)) < 0
        || append(d, COL_PARENT_SPAN_ID, hex_str(s.parent_span_id.data, s.parent_span_id.size)) < 0
        || append(d, COL_TRACE_STATE, text_str(s.trace_state.data, s.trace_state.size, s.trace_state.ascii)) < 0
        || append(d, COL_NAME, name_str(&s.name)) < 0
        || append(d, COL_KIND, PyLong_FromLongLong(s.kind)) < 0
        || append_shared(d, COL_SERVICE, PyTuple_GET_ITEM(resource, 0)) < 0
        || append(d, COL_START_NS, PyLong_FromUnsignedLongLong(s.start)) < 0
        || append(d, COL_DURATION_NS, PyLong_FromUnsignedLongLong(s.end - s.start)) < 0
        || append(d, COL_STATUS_CODE, PyLong_FromLongLong(s.status_code)) < 0
        || append(d, COL_STATUS_MESSAGE,
                  text_str(s.status_message.data, s.status_message.size, s.status_message.ascii)) < 0
        || append_shared(d, COL_RESOURCE_ATTRIBUTES, PyTuple_GET_ITEM(resource, 1)) < 0
        || append_shared(d, COL_SCOPE_NAME, PyTuple_GET_ITEM(scope, 0)) < 0
        || append_shared(d, COL_SCOPE_VERSION, PyTuple_GET_ITEM(scope, 1)) < 0
        || append_shared(d, COL_SCOPE_ATTRIBUTES, PyTuple_GET_ITEM(scope, 2)) < 0)
        return -1;

    /* Tags in the order search has always seen them: the span's attributes, its resource's, its
     * scope's, then those of its events and of its links. */
    const uint8_t *from;
    Py_ssize_t part = repeated_part(&s, 0, data, &from);
    buf_clear(&out->json);
    if (attributes_put(out, &out->json, from, part, 9, "Span") < 0
        || append(d, COL_ATTRIBUTES, buf_str(&out->json)) < 0)
        return -1;
    PyObject *shared_tags[2] = {PyTuple_GET_ITEM(resource, 2), PyTuple_GET_ITEM(scope, 3)};
    for (int k = 0; k < 2; k++)
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(shared_tags[k]); i++) {
            PyObject *tag = PyList_GET_ITEM(shared_tags[k], i);
            Py_INCREF(tag);
            if (refs_push(&out->tags, tag) < 0)
                return -1;
        }
    if (!(part = repeated_part(&s, 1, data, &from))) {
        if (append_shared(d, COL_EVENTS, d->empty_list_json) < 0)
            return -1;
    } else if (events_put(out, from, part) < 0 || append(d, COL_EVENTS, buf_str(&out->json)) < 0)
        return -1;
    if (!(part = repeated_part(&s, 2, data, &from))) {
        if (append_shared(d, COL_LINKS, d->empty_list_json) < 0)
            return -1;
    } else if (links_put(out, from, part) < 0 || append(d, COL_LINKS, buf_str(&out->json)) < 0)
        return -1;
    if (append(d, COL_TAGS, refs_take_tuple(&out->tags)) < 0)
        return -1;
    d->rows++;
    return 0;
}

/* ---- the request -------------------------------------------------------------------------- */

/* The shared part of a tuple the Python policy returned, checked so the span loop can index it. */
static PyObject *checked_part(PyObject *part, Py_ssize_t size, Py_ssize_t tags_index)
{
    if (part && (!PyTuple_Check(part) || PyTuple_GET_SIZE(part) != size
                 || !PyList_Check(PyTuple_GET_ITEM(part, tags_index)))) {
        PyErr_SetString(PyExc_TypeError, "resource/scope part must be a tuple ending in a list of tags");
        Py_CLEAR(part);
    }
    return part;
}

static int scope_spans_decode(Decoder *d, const uint8_t *data, Py_ssize_t size, PyObject *resource,
                              PyObject *scope_part, Py_ssize_t r_index, Py_ssize_t s_index)
{
    Reader r = reader(data, size, 0, "ScopeSpans");
    Field f;
    int rc;
    Text name = {(const uint8_t *)"", 0, 1}, version = {(const uint8_t *)"", 0, 1};
    PyObject *attributes = PyDict_New();
    if (!attributes)
        return -1;
    /* The scope first, wherever it is on the wire (every occurrence merges into one). */
    while ((rc = next_field(&r, &f)) > 0) {
        if (is_len(&f, 1)) {
            Reader scope = reader(f.data, f.size, 0, "InstrumentationScope");
            Field g;
            int grc;
            while ((grc = next_field(&scope, &g)) > 0) {
                if ((is_len(&g, 1) && read_text(&scope, &g, "name", &name) < 0)
                    || (is_len(&g, 2) && read_text(&scope, &g, "version", &version) < 0))
                    grc = -1;
                if (grc < 0)
                    break;
            }
            if (grc < 0 || attributes_dict_feed(attributes, f.data, f.size, 3, "InstrumentationScope") < 0)
                rc = -1;
        } else if (is_len(&f, 3)) {
            Text schema_url;
            if (read_text(&r, &f, "schema_url", &schema_url) < 0)
                rc = -1;
        }
        if (rc < 0)
            break;
    }
    if (rc < 0) {
        Py_DECREF(attributes);
        return -1;
    }
    PyObject *name_str = text_str(name.data, name.size, name.ascii);
    PyObject *version_str = text_str(version.data, version.size, version.ascii);
    PyObject *part = NULL;
    if (name_str && version_str)
        part = checked_part(PyObject_CallFunctionObjArgs(scope_part, name_str, version_str, attributes, NULL), 4, 3);
    Py_XDECREF(name_str);
    Py_XDECREF(version_str);
    Py_DECREF(attributes);
    if (!part)
        return -1;

    Shared shared = {resource, part};
    Py_ssize_t index = 0;
    r = reader(data, size, 0, "ScopeSpans");
    while ((rc = next_field(&r, &f)) > 0)
        if (is_len(&f, 2) && span_decode(d, f.data, f.size, &shared, r_index, s_index, index++) < 0) {
            rc = -1;
            break;
        }
    refs_clear(&d->out.tags);
    Py_DECREF(part);
    return rc;
}

static int resource_spans_decode(Decoder *d, const uint8_t *data, Py_ssize_t size, PyObject *resource_part,
                                 PyObject *scope_part, Py_ssize_t r_index)
{
    Reader r = reader(data, size, 0, "ResourceSpans");
    Field f;
    int rc;
    PyObject *attributes = PyDict_New();
    if (!attributes)
        return -1;
    while ((rc = next_field(&r, &f)) > 0) {
        Text schema_url;
        if ((is_len(&f, 1) && attributes_dict_feed(attributes, f.data, f.size, 1, "Resource") < 0)
            || (is_len(&f, 3) && read_text(&r, &f, "schema_url", &schema_url) < 0)) {
            rc = -1;
            break;
        }
    }
    PyObject *resource = rc < 0 ? NULL : checked_part(PyObject_CallOneArg(resource_part, attributes), 3, 2);
    Py_DECREF(attributes);
    if (!resource)
        return -1;
    Py_ssize_t s_index = 0;
    r = reader(data, size, 0, "ResourceSpans");
    while ((rc = next_field(&r, &f)) > 0)
        if (is_len(&f, 2) && scope_spans_decode(d, f.data, f.size, resource, scope_part, r_index, s_index++) < 0) {
            rc = -1;
            break;
        }
    Py_DECREF(resource);
    return rc;
}

static void decoder_free(Decoder *d)
{
    for (int i = 0; i < COLUMN_COUNT; i++)
        Py_CLEAR(d->columns[i]);
    Py_CLEAR(d->rejected);
    Py_CLEAR(d->empty_list_json);
    Py_CLEAR(d->last_trace_id);
    refs_clear(&d->out.tags);
    PyMem_Free(d->out.tags.items);
    PyMem_Free(d->out.json.data);
    PyMem_Free(d->out.tag.data);
}

PyDoc_STRVAR(decode_doc,
"decode(body, known_problems, resource_part, scope_part) -> (columns, rejected)\n\n"
"Decode a serialized ExportTraceServiceRequest. ``columns`` is a tuple of lists in COLUMN_NAMES\n"
"order; ``rejected`` lists 'path: problem' for spans that were not stored. ``known_problems`` maps\n"
"span paths to problems found before (they override the checks here). ``resource_part(attributes)``\n"
"returns (service, attributes_json, tags); ``scope_part(name, version, attributes)`` returns\n"
"(name, version, attributes_json, tags). ValueError names what makes the payload unreadable.");

/* A column list holds only strs, ints and untracked tuples of str (the tags): it can never be part
 * of a cycle, so it is untracked, as the tags are. The spool keeps up to ~300k spans' columns alive
 * while the writer catches up, and tracked lists had every young and middle collection walk each of
 * their items. Checked item by item: any other object keeps the list tracked. */
static void untrack_if_atomic(PyObject *list)
{
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!(PyUnicode_CheckExact(item) || PyLong_CheckExact(item)
              || (PyTuple_CheckExact(item) && !PyObject_GC_IsTracked(item))))
            return;
    }
    if (PyObject_GC_IsTracked(list))
        PyObject_GC_UnTrack(list);
}

static PyObject *decode(PyObject *module, PyObject *args)
{
    Py_buffer body;
    PyObject *known_problems, *resource_part, *scope_part;
    if (!PyArg_ParseTuple(args, "y*O!OO:decode", &body, &PyDict_Type, &known_problems, &resource_part, &scope_part))
        return NULL;
    Decoder d;
    memset(&d, 0, sizeof d);
    d.known_problems = known_problems;
    d.out.json.ascii = d.out.tag.ascii = 1;
    PyObject *result = NULL;
    d.capacity = span_count(body.buf, body.len);
    int ok = d.capacity >= 0 && (d.rejected = PyList_New(0)) != NULL
             && (d.empty_list_json = PyUnicode_FromString("[]")) != NULL;
    for (int i = 0; ok && i < COLUMN_COUNT; i++)
        ok = (d.columns[i] = PyList_New(d.capacity)) != NULL;
    if (ok) {
        Reader r = reader(body.buf, body.len, 0, "ExportTraceServiceRequest");
        Field f;
        int rc;
        Py_ssize_t r_index = 0;
        while ((rc = next_field(&r, &f)) > 0)
            if (is_len(&f, 1) && resource_spans_decode(&d, f.data, f.size, resource_part, scope_part, r_index++) < 0) {
                rc = -1;
                break;
            }
        PyObject *columns = rc < 0 ? NULL : PyTuple_New(COLUMN_COUNT);
        if (columns) {
            for (int i = 0; i < COLUMN_COUNT; i++) {
                Py_SET_SIZE(d.columns[i], d.rows);  /* the unused rows are NULL */
                untrack_if_atomic(d.columns[i]);
                PyTuple_SET_ITEM(columns, i, d.columns[i]);
                d.columns[i] = NULL;
            }
            result = Py_BuildValue("(NO)", columns, d.rejected);
        }
    }
    decoder_free(&d);
    PyBuffer_Release(&body);
    return result;
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS, decode_doc},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module)
{
    PyObject *model = PyImport_ImportModule("spans.model");
    if (!model)
        return -1;
    model_value_text = PyObject_GetAttrString(model, "value_text");
    model_dumps = PyObject_GetAttrString(model, "dumps");
    model_bytes_value = PyObject_GetAttrString(model, "bytes_value");
    Py_DECREF(model);
    if (!model_value_text || !model_dumps || !model_bytes_value)
        return -1;
    PyObject *names = PyTuple_New(COLUMN_COUNT);
    if (!names)
        return -1;
    for (int i = 0; i < COLUMN_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(column_names[i]);
        if (!name) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, name);
    }
    if (PyModule_AddObject(module, "COLUMN_NAMES", names) < 0) {
        Py_DECREF(names);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, module_exec},
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "spans._otlp_columns",
    "OTLP ExportTraceServiceRequest protobuf -> span columns, read straight from the wire.",
    0, methods, slots, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__otlp_columns(void) { return PyModuleDef_Init(&module_def); }
