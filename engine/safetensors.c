/* safetensors.c - a strict, bounds-checked reader and a small F32 writer for safetensors files. */
#include "safetensors.h"

#include "half.h"
#include "jsonkind.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

enum {
    ST_LEN_BYTES = 8,      /* the u64 little-endian header length that opens every file */
    ST_HEADER_ALIGN = 8,   /* writers pad the header with spaces to this multiple */
    ST_SHAPE_TEXT = 192,   /* room for "[d0,d1,...]" with ST_MAX_RANK 20-digit dimensions */
    ST_QUOTE_MAX = 40,     /* bytes of an untrusted string quoted back in an error message */
    ST_WRITE_CHUNK = 1024, /* floats converted to little-endian per fwrite */
};

#define ST_METADATA_KEY "__metadata__"

/* The comma-separated list of dtype names, for "expected one of ..." messages. The map macro leaves
 * a trailing ", " that the messages cut off with a precision. */
#define ST_DTYPE_LIST_ITEM(e, s, n) s ", "
static const char st_dtype_list[] = ST_DTYPE_MAP(ST_DTYPE_LIST_ITEM);
#undef ST_DTYPE_LIST_ITEM
#define ST_DTYPE_LIST_LEN ((int)sizeof st_dtype_list - 3)

static const struct {
    const char *name;
    size_t size;
} st_dtypes[] = {
#define ST_DTYPE_ROW(e, s, n) {s, n},
    ST_DTYPE_MAP(ST_DTYPE_ROW)
#undef ST_DTYPE_ROW
};

enum { ST_DTYPE_COUNT = sizeof st_dtypes / sizeof st_dtypes[0] };

/* A parsed tensor plus the offsets it was declared with, which the coverage check needs. */
typedef struct {
    st_tensor t;
    uint64_t begin;
    uint64_t end;
} st_entry;

struct st_file {
    size_t count;
    st_entry *entries; /* sorted by offset */
};

const char *st_dtype_name(st_dtype t)
{
    if ((unsigned)t >= ST_DTYPE_COUNT)
        return "?";
    return st_dtypes[t].name;
}

size_t st_dtype_size(st_dtype t)
{
    if ((unsigned)t >= ST_DTYPE_COUNT)
        return 0;
    return st_dtypes[t].size;
}

bool st_dtype_is_float(st_dtype t)
{
    return t == ST_F32 || t == ST_F16 || t == ST_BF16 || t == ST_F64;
}

/* Little-endian loads byte by byte, so they work at any alignment and on any host. */
static uint16_t st_load_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (unsigned)p[1] << 8);
}

static uint32_t st_load_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t st_load_u64(const uint8_t *p)
{
    return (uint64_t)st_load_u32(p) | (uint64_t)st_load_u32(p + 4) << 32;
}

static void st_store_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < ST_LEN_BYTES; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void st_format_shape(const int64_t *shape, int rank, char *buf, size_t n)
{
    size_t used = 0;
    int w = snprintf(buf, n, "[");
    for (int i = 0; i < rank && w >= 0 && (size_t)w < n - used; i++) {
        used += (size_t)w;
        w = snprintf(buf + used, n - used, i ? ",%" PRId64 : "%" PRId64, shape[i]);
    }
    if (w >= 0 && (size_t)w < n - used) {
        used += (size_t)w;
        snprintf(buf + used, n - used, "]");
    }
}

/* __metadata__ is a string-to-string map; the reference rejects any other value type. */
static engine_status st_check_metadata(const json_t *meta, char *err, size_t errlen)
{
    const char *key;
    const json_t *val;

    if (!json_is_object(meta))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: " ST_METADATA_KEY " is %s; expected an object of strings",
                           jsonkind_describe(meta));
    json_object_foreach((json_t *)meta, key, val)
    {
        if (!json_is_string(val))
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: " ST_METADATA_KEY " value '%.*s' is %s; expected a "
                               "string",
                               ST_QUOTE_MAX, key, jsonkind_describe(val));
    }
    return ENGINE_OK;
}

static engine_status st_read_dtype(const char *name, const json_t *v, st_dtype *out, char *err,
                                   size_t errlen)
{
    if (!json_is_string(v))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' dtype is %s; expected a string, one of %.*s",
                           name, jsonkind_describe(v), ST_DTYPE_LIST_LEN, st_dtype_list);
    const char *s = json_string_value(v);
    for (int i = 0; i < ST_DTYPE_COUNT; i++) {
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = (st_dtype)i;
            return ENGINE_OK;
        }
    }
    return engine_fail(err, errlen, ENGINE_E_MODEL,
                       "safetensors: tensor '%s' has dtype \"%.*s\"; expected one of %.*s", name,
                       ST_QUOTE_MAX, s, ST_DTYPE_LIST_LEN, st_dtype_list);
}

/* Fills rank, shape and nelem, refusing anything but non-negative integers and element counts that
 * would not fit in 64 bits. */
static engine_status st_read_shape(const char *name, const json_t *v, st_tensor *t, char *err,
                                   size_t errlen)
{
    if (!json_is_array(v))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' shape is %s; expected an array of integers",
                           name, jsonkind_describe(v));
    size_t rank = json_array_size(v);
    if (rank > ST_MAX_RANK)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' shape has %zu dimensions; at most %d are "
                           "supported",
                           name, rank, ST_MAX_RANK);
    uint64_t nelem = 1;
    for (size_t i = 0; i < rank; i++) {
        const json_t *d = json_array_get(v, i);
        if (!json_is_integer(d))
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' shape element %zu is %s; expected an "
                               "integer >= 0",
                               name, i, jsonkind_describe(d));
        json_int_t dim = json_integer_value(d);
        if (dim < 0)
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' shape element %zu is %" JSON_INTEGER_FORMAT
                               "; expected an integer >= 0",
                               name, i, dim);
        t->shape[i] = (int64_t)dim;
        if (__builtin_mul_overflow(nelem, (uint64_t)dim, &nelem)) {
            char text[ST_SHAPE_TEXT];
            st_format_shape(t->shape, (int)i + 1, text, sizeof text);
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' shape %s... has more elements than fit "
                               "in 64 bits",
                               name, text);
        }
    }
    t->rank = (int)rank;
    t->nelem = nelem;
    return ENGINE_OK;
}

static engine_status st_read_offsets(const char *name, const json_t *v, uint64_t *begin,
                                     uint64_t *end, char *err, size_t errlen)
{
    if (!json_is_array(v) || json_array_size(v) != 2)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' data_offsets is %s of %zu elements; expected "
                           "an array [begin, end]",
                           name, jsonkind_describe(v), json_is_array(v) ? json_array_size(v) : 0);
    uint64_t off[2];
    for (size_t i = 0; i < 2; i++) {
        const json_t *o = json_array_get(v, i);
        if (!json_is_integer(o))
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' data_offsets element %zu is %s; expected "
                               "an integer >= 0",
                               name, i, jsonkind_describe(o));
        if (json_integer_value(o) < 0)
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' data_offsets element %zu is "
                               "%" JSON_INTEGER_FORMAT "; expected an integer >= 0",
                               name, i, json_integer_value(o));
        off[i] = (uint64_t)json_integer_value(o);
    }
    if (off[0] > off[1])
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                           "] are reversed; expected begin <= end",
                           name, off[0], off[1]);
    *begin = off[0];
    *end = off[1];
    return ENGINE_OK;
}

/* Reads one tensor entry and checks it on its own: exactly the three keys, a known dtype, a shape
 * whose byte size matches its offsets, and offsets inside the data buffer. Whether the entries
 * tile the buffer is checked afterwards, once all are known. */
static engine_status st_read_entry(const char *name, const json_t *v, const uint8_t *data,
                                   uint64_t data_len, st_entry *e, char *err, size_t errlen)
{
    static const char *const keys[] = {"dtype", "shape", "data_offsets"};
    enum { KEY_COUNT = sizeof keys / sizeof keys[0] };
    const json_t *vals[KEY_COUNT];
    engine_status s;

    size_t name_len = strlen(name);
    if (name_len >= ST_MAX_NAME)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor name '%.*s...' has %zu bytes; at most %d are "
                           "supported",
                           ST_QUOTE_MAX, name, name_len, ST_MAX_NAME - 1);
    if (!json_is_object(v))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' is %s; expected an object with dtype, shape "
                           "and data_offsets",
                           name, jsonkind_describe(v));

    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        bool known = false;
        for (int k = 0; k < KEY_COUNT; k++)
            known = known || strcmp(key, keys[k]) == 0;
        if (!known)
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' has unknown key \"%.*s\"; expected only "
                               "dtype, shape and data_offsets",
                               name, ST_QUOTE_MAX, key);
    }
    for (int k = 0; k < KEY_COUNT; k++) {
        vals[k] = json_object_get(v, keys[k]);
        if (!vals[k])
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' has no \"%s\"; expected dtype, shape and "
                               "data_offsets",
                               name, keys[k]);
    }

    memcpy(e->t.name, name, name_len + 1);
    if ((s = st_read_dtype(name, vals[0], &e->t.dtype, err, errlen)) != ENGINE_OK)
        return s;
    if ((s = st_read_shape(name, vals[1], &e->t, err, errlen)) != ENGINE_OK)
        return s;
    if ((s = st_read_offsets(name, vals[2], &e->begin, &e->end, err, errlen)) != ENGINE_OK)
        return s;

    char text[ST_SHAPE_TEXT];
    st_format_shape(e->t.shape, e->t.rank, text, sizeof text);
    uint64_t nbytes;
    if (__builtin_mul_overflow(e->t.nelem, (uint64_t)st_dtype_size(e->t.dtype), &nbytes))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' shape %s %s needs more bytes than fit in 64 "
                           "bits",
                           name, text, st_dtype_name(e->t.dtype));
    if (e->end - e->begin != nbytes)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                           "] hold %" PRIu64 " bytes; shape %s %s needs %" PRIu64,
                           name, e->begin, e->end, e->end - e->begin, text,
                           st_dtype_name(e->t.dtype), nbytes);
    if (e->end > data_len)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' data_offsets [%" PRIu64 ", %" PRIu64
                           "] run past the end of the %" PRIu64 "-byte data buffer",
                           name, e->begin, e->end, data_len);
    /* Only now is begin known to lie inside the buffer, so the pointer arithmetic is defined. */
    e->t.data = data + e->begin;
    e->t.nbytes = (size_t)nbytes;
    return ENGINE_OK;
}

/* Orders by begin, then end, so zero-length tensors sit before a tensor starting at the same
 * offset; names break the remaining ties so the order never depends on qsort. */
static int st_entry_cmp(const void *a, const void *b)
{
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

/* The sorted entries must tile [0, data_len) exactly: each begins where the previous one ended.
 * Zero-length tensors at the boundary are neither a hole nor an overlap; one inside another
 * tensor's bytes is an overlap, as in the reference. */
static engine_status st_check_coverage(const st_entry *e, size_t count, uint64_t data_len,
                                       char *err, size_t errlen)
{
    uint64_t expected = 0;
    for (size_t i = 0; i < count; i++) {
        if (e[i].begin < expected)
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensors '%s' and '%s' overlap: [%" PRIu64 ", %" PRIu64
                               "] and [%" PRIu64 ", %" PRIu64 "]",
                               e[i - 1].t.name, e[i].t.name, e[i - 1].begin, e[i - 1].end,
                               e[i].begin, e[i].end);
        if (e[i].begin > expected)
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: hole of %" PRIu64 " bytes before tensor '%s' (it "
                               "begins at %" PRIu64 "; expected %" PRIu64 ")",
                               e[i].begin - expected, e[i].t.name, e[i].begin, expected);
        expected = e[i].end;
    }
    if (count == 0 && data_len > 0)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: the header lists no tensors but %" PRIu64
                           " data bytes follow it; expected none",
                           data_len);
    if (expected != data_len)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: %" PRIu64 " bytes after the last tensor are not covered "
                           "(tensors end at %" PRIu64 ", the data buffer holds %" PRIu64 ")",
                           data_len - expected, expected, data_len);
    return ENGINE_OK;
}

engine_status st_parse(const uint8_t *buf, size_t len, st_file **out, char *err, size_t errlen)
{
    engine_status s = ENGINE_OK;
    json_t *root = NULL;
    st_file *f = NULL;
    json_error_t jerr;

    *out = NULL;
    if (len < ST_LEN_BYTES)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: file has %zu bytes; expected at least %d for the header "
                           "length",
                           len, ST_LEN_BYTES);
    uint64_t n = st_load_u64(buf);
    /* Compared against what follows the length, never by adding to n, so nothing can overflow. */
    if (n > ST_MAX_HEADER)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: header length %" PRIu64 " exceeds the limit of %d bytes",
                           n, ST_MAX_HEADER);
    if (n > len - ST_LEN_BYTES)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: header length %" PRIu64 " exceeds the %zu bytes after it",
                           n, len - ST_LEN_BYTES);
    const uint8_t *hdr = buf + ST_LEN_BYTES;
    if (n == 0)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: header is empty; expected a JSON object starting with "
                           "'{'");
    if (hdr[0] != '{')
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: header starts with byte 0x%02x; expected '{'", hdr[0]);
    const uint8_t *data = hdr + n;
    uint64_t data_len = (uint64_t)(len - ST_LEN_BYTES - (size_t)n);

    root = json_loadb((const char *)hdr, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        s = engine_fail(err, errlen, ENGINE_E_MODEL,
                        "safetensors: header is not valid JSON: %s (at byte %d)", jerr.text,
                        jerr.position);
        goto fail;
    }
    if (!json_is_object(root)) {
        s = engine_fail(err, errlen, ENGINE_E_MODEL,
                        "safetensors: header is %s; expected a JSON object",
                        jsonkind_describe(root));
        goto fail;
    }

    f = calloc(1, sizeof *f);
    if (!f) {
        s = engine_fail(err, errlen, ENGINE_E_NOMEM, "safetensors: out of memory");
        goto fail;
    }
    size_t capacity = json_object_size(root);
    if (capacity > 0) {
        f->entries = calloc(capacity, sizeof *f->entries);
        if (!f->entries) {
            s = engine_fail(err, errlen, ENGINE_E_NOMEM,
                            "safetensors: out of memory for %zu tensors", capacity);
            goto fail;
        }
    }

    const char *key;
    const json_t *val;
    json_object_foreach(root, key, val)
    {
        if (strcmp(key, ST_METADATA_KEY) == 0)
            s = st_check_metadata(val, err, errlen);
        else
            s = st_read_entry(key, val, data, data_len, &f->entries[f->count++], err, errlen);
        if (s != ENGINE_OK)
            goto fail;
    }

    if (f->count > 1)
        qsort(f->entries, f->count, sizeof *f->entries, st_entry_cmp);
    s = st_check_coverage(f->entries, f->count, data_len, err, errlen);
    if (s != ENGINE_OK)
        goto fail;

    json_decref(root);
    *out = f;
    return ENGINE_OK;

fail:
    json_decref(root);
    st_destroy(f);
    return s;
}

void st_destroy(st_file *f)
{
    if (!f)
        return;
    free(f->entries);
    free(f);
}

size_t st_count(const st_file *f)
{
    return f ? f->count : 0;
}

const st_tensor *st_get(const st_file *f, size_t i)
{
    if (!f || i >= f->count)
        return NULL;
    return &f->entries[i].t;
}

/* A linear search: model files hold tens of tensors and are searched once each at load. */
const st_tensor *st_find(const st_file *f, const char *name)
{
    if (!f || !name)
        return NULL;
    for (size_t i = 0; i < f->count; i++) {
        if (strcmp(f->entries[i].t.name, name) == 0)
            return &f->entries[i].t;
    }
    return NULL;
}

bool st_to_f32(const st_tensor *t, float *out)
{
    const uint8_t *p = t->data;
    uint32_t bits;
    uint64_t wide;
    double d;

    switch (t->dtype) {
    case ST_F32:
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (t->nelem > 0)
            memcpy(out, p, t->nelem * sizeof *out);
#else
        for (uint64_t i = 0; i < t->nelem; i++) {
            bits = st_load_u32(p + 4 * i);
            memcpy(&out[i], &bits, sizeof bits);
        }
#endif
        return true;
    case ST_F16:
        for (uint64_t i = 0; i < t->nelem; i++)
            out[i] = half_to_float(st_load_u16(p + 2 * i));
        return true;
    case ST_BF16:
        /* bfloat16 is the upper half of a float32. */
        for (uint64_t i = 0; i < t->nelem; i++) {
            bits = (uint32_t)st_load_u16(p + 2 * i) << 16;
            memcpy(&out[i], &bits, sizeof bits);
        }
        return true;
    case ST_F64:
        /* Out-of-range doubles become +-inf, as IEEE 754 (C11 Annex F) defines for narrowing. */
        for (uint64_t i = 0; i < t->nelem; i++) {
            wide = st_load_u64(p + 8 * i);
            memcpy(&d, &wide, sizeof d);
            out[i] = (float)d;
        }
        return true;
    default:
        return false;
    }
}

/* Writes n floats in little-endian byte order, whatever the host's order. */
static bool st_write_floats(FILE *fp, const float *data, uint64_t n)
{
    uint8_t chunk[ST_WRITE_CHUNK * sizeof(float)];
    uint64_t done = 0;
    while (done < n) {
        size_t m = n - done < ST_WRITE_CHUNK ? (size_t)(n - done) : ST_WRITE_CHUNK;
        for (size_t i = 0; i < m; i++) {
            uint32_t bits;
            memcpy(&bits, &data[done + i], sizeof bits);
            for (int b = 0; b < 4; b++)
                chunk[4 * i + (size_t)b] = (uint8_t)(bits >> (8 * b));
        }
        if (fwrite(chunk, sizeof(float), m, fp) != m)
            return false;
        done += m;
    }
    return true;
}

/* Adds one header entry at *offset and returns its element count through nelem, refusing what
 * the reader would refuse. */
static engine_status st_header_entry(json_t *root, const char *name, int rank, const int64_t *shape,
                                     uint64_t *offset, uint64_t *nelem, char *err, size_t errlen)
{
    engine_status s = ENGINE_OK;
    json_t *dims = NULL, *entry = NULL;
    uint64_t count = 1, nbytes, end;

    if (!name || strlen(name) >= ST_MAX_NAME || strcmp(name, ST_METADATA_KEY) == 0)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: cannot write a tensor named '%.*s'; expected a name of "
                           "at most %d bytes other than " ST_METADATA_KEY,
                           ST_QUOTE_MAX, name ? name : "(null)", ST_MAX_NAME - 1);
    if (json_object_get(root, name))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: cannot write tensor '%s' twice", name);
    if (rank < 0 || rank > ST_MAX_RANK || (rank > 0 && !shape))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' has rank %d; expected 0 to %d with a shape",
                           name, rank, ST_MAX_RANK);
    for (int i = 0; i < rank; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(count, (uint64_t)shape[i], &count))
            return engine_fail(err, errlen, ENGINE_E_MODEL,
                               "safetensors: tensor '%s' dimension %d is %" PRId64
                               "; expected >= 0 with an element count that fits in 64 bits",
                               name, i, shape[i]);
    }
    /* Offsets are written as JSON integers (long long), so the running end must stay below its
     * maximum. */
    if (__builtin_mul_overflow(count, (uint64_t)sizeof(float), &nbytes) ||
        __builtin_add_overflow(*offset, nbytes, &end) || end > (uint64_t)INT64_MAX)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "safetensors: tensor '%s' ends past the largest offset a file can "
                           "hold",
                           name);

    dims = json_array();
    if (!dims)
        goto nomem;
    for (int i = 0; i < rank; i++) {
        if (json_array_append_new(dims, json_integer((json_int_t)shape[i])) != 0)
            goto nomem;
    }
    /* "O" adds a reference, so dims is released below on every path. */
    entry = json_pack("{s:s, s:O, s:[I, I]}", "dtype", "F32", "shape", dims, "data_offsets",
                      (json_int_t)*offset, (json_int_t)end);
    if (!entry)
        goto nomem;
    /* json_object_set_new takes the entry even when it fails (a key that is not UTF-8). */
    if (json_object_set_new(root, name, entry) != 0) {
        s = engine_fail(err, errlen, ENGINE_E_MODEL,
                        "safetensors: cannot write tensor name '%.*s'; expected UTF-8",
                        ST_QUOTE_MAX, name);
        goto fail;
    }
    json_decref(dims);
    *offset = end;
    *nelem = count;
    return ENGINE_OK;

nomem:
    s = engine_fail(err, errlen, ENGINE_E_NOMEM, "safetensors: out of memory writing the header");
fail:
    json_decref(dims);
    return s;
}

/* Writes the length, the header padded with spaces and the data; removes the file on failure so
 * that no half-written model is left behind. */
static engine_status st_write_file(const char *path, const char *header, size_t n,
                                   const float *const *data, const uint64_t *nelem, char *err,
                                   size_t errlen)
{
    static const char spaces[ST_HEADER_ALIGN] = "       ";
    size_t header_len = strlen(header);
    size_t pad = (ST_HEADER_ALIGN - header_len % ST_HEADER_ALIGN) % ST_HEADER_ALIGN;
    uint8_t len_bytes[ST_LEN_BYTES];
    st_store_u64(len_bytes, (uint64_t)(header_len + pad));

    FILE *fp = fopen(path, "wb");
    if (!fp)
        return engine_fail(err, errlen, ENGINE_E_IO, "safetensors: cannot create '%s': %s", path,
                           strerror(errno));
    bool ok = fwrite(len_bytes, 1, sizeof len_bytes, fp) == sizeof len_bytes &&
              fwrite(header, 1, header_len, fp) == header_len && fwrite(spaces, 1, pad, fp) == pad;
    for (size_t i = 0; ok && i < n; i++)
        ok = st_write_floats(fp, data[i], nelem[i]);
    /* fclose flushes, so a full disk may only show here. */
    int saved_errno = errno;
    if (fclose(fp) != 0 && ok) {
        ok = false;
        saved_errno = errno;
    }
    if (!ok) {
        remove(path);
        return engine_fail(err, errlen, ENGINE_E_IO, "safetensors: cannot write '%s': %s", path,
                           strerror(saved_errno));
    }
    return ENGINE_OK;
}

engine_status st_write_f32(const char *path, size_t n, const char *const *names, const int *ranks,
                           const int64_t *const *shapes, const float *const *data, char *err,
                           size_t errlen)
{
    engine_status s = ENGINE_OK;
    json_t *root = NULL;
    char *header = NULL;
    uint64_t *nelem = NULL;
    uint64_t offset = 0;

    root = json_pack("{s:{s:s}}", ST_METADATA_KEY, "format", "pt");
    nelem = calloc(n ? n : 1, sizeof *nelem);
    if (!root || !nelem) {
        s = engine_fail(err, errlen, ENGINE_E_NOMEM, "safetensors: out of memory writing '%s'",
                        path);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        s = st_header_entry(root, names[i], ranks[i], shapes[i], &offset, &nelem[i], err, errlen);
        if (s != ENGINE_OK)
            goto fail;
        if (nelem[i] > 0 && !data[i]) {
            s = engine_fail(err, errlen, ENGINE_E_MODEL,
                            "safetensors: tensor '%s' has %" PRIu64 " elements but no data",
                            names[i], nelem[i]);
            goto fail;
        }
    }
    /* jansson keeps insertion order, so the entries appear in the order given, and their offsets
     * were assigned in that order too. */
    header = json_dumps(root, JSON_COMPACT);
    if (!header) {
        s = engine_fail(err, errlen, ENGINE_E_NOMEM, "safetensors: out of memory writing '%s'",
                        path);
        goto fail;
    }
    s = st_write_file(path, header, n, data, nelem, err, errlen);

    /* The success path shares this cleanup. */
fail:
    free(header);
    free(nelem);
    json_decref(root);
    return s;
}
