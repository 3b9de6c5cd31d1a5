/* tensor.c - KServe v2 request decoding: the JSON envelope, JSON or binary tensor data, base64. */
#include "tensor.h"
#include "half.h"
#include "jscan.h"
#include "jsonkind.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    size_t size;
} dtype_info;

static const dtype_info dtypes[] = {
#define TENSOR_DTYPE_INFO(e, s, n) {s, n},
    TENSOR_DTYPE_MAP(TENSOR_DTYPE_INFO)
#undef TENSOR_DTYPE_INFO
};
#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

const char *tensor_dtype_name(tensor_dtype t)
{
    return (size_t)t < NDTYPES ? dtypes[t].name : "?";
}

enum {
    TENSOR_BYTES_LEN_SIZE = 4, /* the little-endian length before each binary BYTES element */
    TENSOR_QUOTE_NUMBER = 32,  /* bytes of a number token a message quotes */
    TENSOR_NESTED_SLACK = 16,  /* values of a nested data array beyond its numbers: the arrays */
};

void infer_request_free(infer_request *q)
{
    free(q->data);
    free(q->elems);
    free(q->owned);
    q->data = NULL;
    q->elems = NULL;
    q->owned = NULL;
}

/* Little-endian element i of raw binary data as float. */
static float raw_to_float(const uint8_t *p, tensor_dtype t)
{
    uint64_t u = 0;
    size_t n = dtypes[t].size;
    for (size_t i = 0; i < n; i++)
        u |= (uint64_t)p[i] << (8 * i);
    switch (t) {
    case TENSOR_BOOL:
        return u ? 1.0f : 0.0f;
    case TENSOR_UINT8:
    case TENSOR_UINT16:
    case TENSOR_UINT32:
    case TENSOR_UINT64:
        return (float)u;
    case TENSOR_INT8:
        return (float)(int8_t)u;
    case TENSOR_INT16:
        return (float)(int16_t)u;
    case TENSOR_INT32:
        return (float)(int32_t)u;
    case TENSOR_INT64:
        return (float)(int64_t)u;
    case TENSOR_FP16:
        return half_to_float((uint16_t)u);
    case TENSOR_FP32: {
        uint32_t w = (uint32_t)u;
        float f;
        memcpy(&f, &w, sizeof f);
        return f;
    }
    case TENSOR_FP64: {
        double d;
        memcpy(&d, &u, sizeof d);
        return (float)d;
    }
    default:
        return 0.0f;
    }
}

/* Whether the integer (-1)^negative * magnitude fits an integer datatype. */
static bool int_in_range(bool negative, uint64_t magnitude, tensor_dtype t)
{
    uint64_t max_pos, max_neg; /* the largest magnitudes of either sign */
    switch (t) {
    case TENSOR_UINT8:
        max_pos = UINT8_MAX, max_neg = 0;
        break;
    case TENSOR_UINT16:
        max_pos = UINT16_MAX, max_neg = 0;
        break;
    case TENSOR_UINT32:
        max_pos = UINT32_MAX, max_neg = 0;
        break;
    case TENSOR_UINT64:
        max_pos = UINT64_MAX, max_neg = 0;
        break;
    case TENSOR_INT8:
        max_pos = INT8_MAX, max_neg = (uint64_t)INT8_MAX + 1;
        break;
    case TENSOR_INT16:
        max_pos = INT16_MAX, max_neg = (uint64_t)INT16_MAX + 1;
        break;
    case TENSOR_INT32:
        max_pos = INT32_MAX, max_neg = (uint64_t)INT32_MAX + 1;
        break;
    case TENSOR_INT64:
        max_pos = INT64_MAX, max_neg = (uint64_t)INT64_MAX + 1;
        break;
    default:
        return true;
    }
    return negative ? magnitude <= max_neg : magnitude <= max_pos;
}

/* ---- JSON data: structure (infer_request_parse) ------------------------------------------- */

/* Checks nested data level by level against the shape, counting the entries of a level before
 * looking inside it (so that the outermost mismatch is the one reported). */
static srv_status check_nested(const char *p, const char *end, int depth, const infer_request *q,
                               size_t *leaves, char *err, size_t errlen)
{
    if (depth == q->rank) {
        (*leaves)++;
        return SRV_OK;
    }
    jsonkind k = jscan_kind(p, end);
    if (k != JSONKIND_ARRAY)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].data: nesting level %d is %s; shape has %d dimensions and "
                        "expects an array of %lld there",
                        depth, jsonkind_name(k), q->rank, (long long)q->shape[depth]);
    size_t n = jscan_count(p, end);
    if ((int64_t)n != q->shape[depth])
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].data: nesting level %d has %zu entries; shape says %lld", depth,
                        n, (long long)q->shape[depth]);
    bool first = true;
    p = jscan_enter(p, end);
    while (jscan_next(&p, end, &first)) {
        srv_status s = check_nested(p, end, depth + 1, q, leaves, err, errlen);
        if (s != SRV_OK)
            return s;
        p = jscan_skip(p, end);
    }
    return SRV_OK;
}

/* The data array (flat, or nested row-major) holds exactly the shape's element count; elems is
 * the number of its own elements, as the scanner counted them. */
static srv_status check_json_data(infer_request *q, size_t elems, char *err, size_t errlen)
{
    const char *p = q->json_data, *end = q->json_data + q->json_data_len;
    const char *first = jscan_enter(p, end);
    q->nested = first < end && *first == '[';
    size_t leaves = 0;
    if (q->nested) {
        srv_status s = check_nested(p, end, 0, q, &leaves, err, errlen);
        if (s != SRV_OK)
            return s;
    } else {
        leaves = elems;
    }
    if (leaves != q->count)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].data has %zu elements; shape needs %zu", leaves, q->count);
    return SRV_OK;
}

/* ---- JSON data: values (infer_request_load) ----------------------------------------------- */

typedef struct {
    infer_request *q;
    size_t pos;
    char *err;
    size_t errlen;
} filler;

/* Converts the value at p into the next element; *next is past it. */
static srv_status fill_value(filler *f, const char *p, const char *end, const char **next)
{
    infer_request *q = f->q;
    bool is_float_type =
        q->dtype == TENSOR_FP16 || q->dtype == TENSOR_FP32 || q->dtype == TENSOR_FP64;
    if ((*p == '-' || (*p >= '0' && *p <= '9')) && q->dtype != TENSOR_BYTES &&
        q->dtype != TENSOR_BOOL) {
        /* The common case first: a number for a numeric input, read in one pass. */
        jscan_number n;
        *next = jscan_read_number(p, end, &n);
        if (!is_float_type && !n.integer)
            return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data[%zu] is %s; expected an integer", f->pos,
                            jsonkind_name(JSONKIND_REAL));
        if (!is_float_type && (!n.fits_u64 || !int_in_range(n.negative, n.magnitude, q->dtype)))
            return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data[%zu] = %.*s is out of range for %s", f->pos,
                            (int)(n.len < TENSOR_QUOTE_NUMBER ? n.len : TENSOR_QUOTE_NUMBER),
                            n.text, tensor_dtype_name(q->dtype));
        float x = (float)n.value;
        if (!isfinite(x))
            return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data[%zu] = %g is out of range for FP32", f->pos, n.value);
        q->data[f->pos++] = x;
        return SRV_OK;
    }
    jsonkind k = jscan_kind(p, end);
    *next = jscan_skip(p, end);
    if (q->dtype == TENSOR_BYTES) {
        if (k != JSONKIND_STRING)
            return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data[%zu] is %s; a BYTES input holds base64 strings", f->pos,
                            jsonkind_name(k));
        const char *s;
        size_t n;
        jscan_string_span(p, end, &s, &n);
        q->elems[f->pos].data = (const uint8_t *)s; /* escaped; decoded in decode_base64_elems */
        q->elems[f->pos].len = n;
        f->pos++;
        return SRV_OK;
    }
    if (q->dtype == TENSOR_BOOL) {
        if (k != JSONKIND_BOOLEAN)
            return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data[%zu] is %s; expected true or false", f->pos,
                            jsonkind_name(k));
        q->data[f->pos++] = *p == 't' ? 1.0f : 0.0f;
        return SRV_OK;
    }
    return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST, "inputs[0].data[%zu] is %s; expected %s",
                    f->pos, jsonkind_name(k), is_float_type ? "a number" : "an integer");
}

/* Fills the leaves of the nested value at p (depth levels down already); *next is past it. */
static srv_status fill_nested(filler *f, const char *p, const char *end, int depth,
                              const char **next)
{
    if (depth == f->q->rank)
        return fill_value(f, p, end, next);
    bool first = true;
    p = jscan_enter(p, end);
    while (jscan_next(&p, end, &first)) {
        srv_status s = fill_nested(f, p, end, depth + 1, &p);
        if (s != SRV_OK)
            return s;
    }
    *next = p;
    return SRV_OK;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Decodes standard base64 (padding optional) into out, which has room for len * 3 / 4 + 3. */
static bool b64_decode(const char *s, size_t len, uint8_t *out, size_t *outlen)
{
    while (len > 0 && s[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return false;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *outlen = o;
    return true;
}

/* Decodes the BYTES elements (JSON strings with their escapes, or raw binary elements) into
 * q->owned: escapes first, then base64 in place (decoding only ever shrinks). */
static srv_status decode_base64_elems(infer_request *q, char *err, size_t errlen)
{
    size_t total = 1;
    for (size_t i = 0; i < q->nelems; i++)
        total += q->elems[i].len; /* bounded by the body length */
    q->owned = malloc(total);
    if (!q->owned)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    size_t off = 0;
    for (size_t i = 0; i < q->nelems; i++) {
        char *text = (char *)q->owned + off;
        size_t tn = jscan_string_decode((const char *)q->elems[i].data, q->elems[i].len, text);
        size_t n;
        if (!b64_decode(text, tn, q->owned + off, &n))
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].data[%zu] is not valid base64",
                            i);
        q->elems[i].data = q->owned + off;
        q->elems[i].len = n;
        off += n;
    }
    return SRV_OK;
}

static srv_status load_json_data(infer_request *q, char *err, size_t errlen)
{
    if (q->dtype == TENSOR_BYTES) {
        q->nelems = q->count;
        q->elems = calloc(q->count ? q->count : 1, sizeof *q->elems);
        if (!q->elems)
            return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    } else {
        q->data = malloc((q->count ? q->count : 1) * sizeof *q->data);
        if (!q->data)
            return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    }
    filler f = {q, 0, err, errlen};
    const char *p = q->json_data, *end = q->json_data + q->json_data_len;
    srv_status s = SRV_OK;
    if (q->nested) {
        s = fill_nested(&f, p, end, 0, &p);
    } else {
        bool first = true;
        p = jscan_enter(p, end);
        while (s == SRV_OK && jscan_next(&p, end, &first))
            s = fill_value(&f, p, end, &p);
    }
    if (s == SRV_OK && q->dtype == TENSOR_BYTES)
        s = decode_base64_elems(q, err, errlen);
    return s;
}

/* ---- binary data ---------------------------------------------------------------------------- */

static uint32_t load_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The input's data from the binary part of the body (Triton binary tensor extension): its framing
 * checked against the shape; nothing is converted yet. */
static srv_status check_binary_data(const json_t *size_v, const uint8_t *bin, size_t binlen,
                                    infer_request *q, char *err, size_t errlen)
{
    if (!json_is_integer(size_v) || json_integer_value(size_v) < 0)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].parameters.binary_data_size must be a non-negative integer");
    uint64_t size = (uint64_t)json_integer_value(size_v);
    if (!bin)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0] has binary_data_size but the request has no "
                        "Inference-Header-Content-Length header");
    if (size != binlen)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].parameters.binary_data_size is %llu; the body has %zu bytes "
                        "after the JSON header",
                        (unsigned long long)size, binlen);
    q->bin = bin;
    q->binlen = binlen;
    if (q->dtype == TENSOR_BYTES) {
        /* Each element: a 4-byte little-endian length, then that many bytes. */
        size_t n = 0, off = 0;
        while (off < binlen) {
            if (binlen - off < TENSOR_BYTES_LEN_SIZE)
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "inputs[0] binary BYTES element %zu has a truncated length", n);
            uint32_t l = load_u32le(bin + off);
            if (l > binlen - off - TENSOR_BYTES_LEN_SIZE)
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "inputs[0] binary BYTES element %zu claims %u bytes; %zu remain", n,
                                l, binlen - off - TENSOR_BYTES_LEN_SIZE);
            off += TENSOR_BYTES_LEN_SIZE + l;
            n++;
        }
        if (n != q->count)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "inputs[0] binary data holds %zu BYTES elements; shape needs %zu", n,
                            q->count);
        return SRV_OK;
    }
    size_t es = dtypes[q->dtype].size, need;
    if (__builtin_mul_overflow(q->count, es, &need) || need != size)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].parameters.binary_data_size is %llu; shape needs %zu elements "
                        "of %s = %zu bytes",
                        (unsigned long long)size, q->count, tensor_dtype_name(q->dtype),
                        q->count * es);
    return SRV_OK;
}

static srv_status load_binary_data(infer_request *q, char *err, size_t errlen)
{
    const uint8_t *bin = q->bin;
    if (q->dtype == TENSOR_BYTES) {
        q->elems = calloc(q->count ? q->count : 1, sizeof *q->elems);
        if (!q->elems)
            return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
        q->nelems = q->count;
        size_t off = 0;
        for (size_t i = 0; i < q->count; i++) {
            uint32_t l = load_u32le(bin + off);
            q->elems[i].data = bin + off + TENSOR_BYTES_LEN_SIZE;
            q->elems[i].len = l;
            off += TENSOR_BYTES_LEN_SIZE + l;
        }
        return SRV_OK;
    }
    size_t es = dtypes[q->dtype].size;
    q->data = malloc((q->count ? q->count : 1) * sizeof *q->data);
    if (!q->data)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    if (q->dtype == TENSOR_FP32) {
        memcpy(q->data, bin, q->count * es); /* x86 and the wire are both little-endian */
    } else {
        for (size_t i = 0; i < q->count; i++)
            q->data[i] = raw_to_float(bin + i * es, q->dtype);
    }
    /* NaN and infinity have no meaning as pixel or feature values, and oneDNN's ReLU would
     * quietly turn NaN into 0: refuse them, as the JSON path does. */
    for (size_t i = 0; i < q->count; i++)
        if (!isfinite(q->data[i]))
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "inputs[0] binary element %zu is NaN or infinite", i);
    return SRV_OK;
}

/* ---- the envelope --------------------------------------------------------------------------- */

static srv_status parse_bool_param(const json_t *params, const char *key, bool *out,
                                   const char *where, char *err, size_t errlen)
{
    const json_t *v = params ? json_object_get(params, key) : NULL;
    if (!v)
        return SRV_OK;
    if (!json_is_boolean(v))
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "%s.%s is %s; expected true or false", where,
                        key, jsonkind_describe(v));
    *out = json_is_true(v);
    return SRV_OK;
}

static srv_status parse_envelope(const json_t *root, infer_request *q, char *err, size_t errlen)
{
    srv_status s;
    const json_t *id = json_object_get(root, "id");
    if (id) {
        if (!json_is_string(id))
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "id is %s; expected a string",
                            jsonkind_describe(id));
        if (json_string_length(id) >= sizeof q->id)
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "id is %zu bytes; the limit is %zu",
                            json_string_length(id), sizeof q->id - 1);
        memcpy(q->id, json_string_value(id), json_string_length(id) + 1);
        q->has_id = true;
    }
    const json_t *params = json_object_get(root, "parameters");
    if (params && !json_is_object(params))
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "parameters is %s; expected an object",
                        jsonkind_describe(params));
    if ((s = parse_bool_param(params, "layer_shapes", &q->layer_shapes, "parameters", err,
                              errlen)) != SRV_OK ||
        (s = parse_bool_param(params, "binary_data_output", &q->binary_output, "parameters", err,
                              errlen)) != SRV_OK)
        return s;

    const json_t *outputs = json_object_get(root, "outputs");
    if (outputs) {
        if (!json_is_array(outputs))
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "outputs is %s; expected an array",
                            jsonkind_describe(outputs));
        if (json_array_size(outputs) > TENSOR_MAX_OUTPUTS)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "outputs has %zu entries; the limit is %d", json_array_size(outputs),
                            TENSOR_MAX_OUTPUTS);
        for (size_t i = 0; i < json_array_size(outputs); i++) {
            const json_t *o = json_array_get(outputs, i);
            const json_t *name = json_is_object(o) ? json_object_get(o, "name") : NULL;
            if (!name || !json_is_string(name) || json_string_length(name) >= TENSOR_MAX_NAME ||
                json_string_length(name) == 0)
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "outputs[%zu] must be an object with a \"name\" string", i);
            memcpy(q->output_names[q->noutputs++], json_string_value(name),
                   json_string_length(name) + 1);
            char where[48];
            snprintf(where, sizeof where, "outputs[%zu].parameters", i);
            bool bin = false;
            const json_t *op = json_object_get(o, "parameters");
            if (op && !json_is_object(op))
                return srv_fail(err, errlen, SRV_BAD_REQUEST, "%s is %s; expected an object", where,
                                jsonkind_describe(op));
            if ((s = parse_bool_param(op, "binary_data", &bin, where, err, errlen)) != SRV_OK)
                return s;
            if (op && json_object_get(op, "binary_data"))
                q->binary_output = bin;
        }
    }
    return SRV_OK;
}

static srv_status parse_input_header(const json_t *in, infer_request *q, char *err, size_t errlen)
{
    if (!json_is_object(in))
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0] is %s; expected an object",
                        jsonkind_describe(in));
    const json_t *name = json_object_get(in, "name");
    if (!name || !json_is_string(name))
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].name is missing or not a string");
    if (json_string_length(name) >= TENSOR_MAX_NAME)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].name is too long");
    memcpy(q->input_name, json_string_value(name), json_string_length(name) + 1);

    const json_t *dt = json_object_get(in, "datatype");
    if (!dt || !json_is_string(dt))
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].datatype is missing or not a string");
    size_t t;
    for (t = 0; t < NDTYPES && strcmp(dtypes[t].name, json_string_value(dt)); t++)
        ;
    if (t == NDTYPES)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].datatype \"%.64s\" is not a KServe v2 datatype; send FP32",
                        json_string_value(dt));
    q->dtype = (tensor_dtype)t;

    const json_t *shape = json_object_get(in, "shape");
    if (!shape || !json_is_array(shape))
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].shape is missing or not an array");
    size_t rank = json_array_size(shape);
    if (rank < 1 || rank > TENSOR_MAX_RANK)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].shape has %zu dimensions; expected 1 to %d", rank,
                        TENSOR_MAX_RANK);
    q->rank = (int)rank;
    size_t count = 1;
    for (size_t i = 0; i < rank; i++) {
        const json_t *d = json_array_get(shape, i);
        if (!json_is_integer(d) || json_integer_value(d) < 1)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "inputs[0].shape[%zu] must be a positive integer", i);
        q->shape[i] = json_integer_value(d);
        if (__builtin_mul_overflow(count, (size_t)q->shape[i], &count) || count > (SIZE_MAX >> 4))
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].shape has too many elements");
    }
    q->count = count;
    return SRV_OK;
}

/* Feeds jansson the JSON part of the body with the data array cut down to "[]" and the span's
 * newlines (so that line numbers in its messages stay those of the body). */
typedef struct {
    const char *body;
    size_t len, pos, begin, end;
    size_t newlines; /* still to feed in place of the span */
} blanked;

static size_t blanked_read(void *buf, size_t buflen, void *data)
{
    blanked *b = data;
    char *out = buf;
    size_t o = 0;
    while (o < buflen && b->pos < b->len) {
        if (b->begin < b->end && b->pos == b->begin) {
            if (buflen - o < 2)
                break;
            out[o++] = '[';
            out[o++] = ']';
            for (const char *q = b->body + b->begin;
                 (q = memchr(q, '\n', (size_t)(b->body + b->end - q))) != NULL; q++)
                b->newlines++;
            b->pos = b->end;
            continue;
        }
        if (b->newlines) {
            out[o++] = '\n';
            b->newlines--;
            continue;
        }
        size_t stop = b->pos < b->begin ? b->begin : b->len;
        size_t n = stop - b->pos < buflen - o ? stop - b->pos : buflen - o;
        memcpy(out + o, b->body + b->pos, n);
        o += n;
        b->pos += n;
    }
    while (o < buflen && b->newlines) {
        out[o++] = '\n';
        b->newlines--;
    }
    return o;
}

srv_status infer_request_parse(const char *body, size_t len, size_t header_len, size_t max_elems,
                               infer_request *q, char *err, size_t errlen)
{
    memset(q, 0, sizeof *q);
    if (header_len > len)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "Inference-Header-Content-Length is %zu; the body has only %zu bytes",
                        header_len, len);
    size_t jlen = header_len ? header_len : len;
    /* The whole JSON part checked, and the data array found and bounded, before any tree. A
     * nested array of n numbers holds fewer than n more arrays; a count within the bound is then
     * checked against the shape here, and the shape against the model by the caller. */
    size_t max_values = SIZE_MAX;
    if (max_elems && max_elems < SIZE_MAX / 2 - TENSOR_NESTED_SLACK)
        max_values = 2 * max_elems + TENSOR_NESTED_SLACK;
    jscan_doc d;
    srv_status s = jscan_document(body, jlen, max_values, &d, err, errlen);
    if (s != SRV_OK)
        return s;
    blanked b = {body, jlen, 0, d.has_data ? d.begin : 0, d.has_data ? d.end : 0, 0};
    json_error_t je;
    json_t *root = json_load_callback(blanked_read, &b, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "invalid JSON at line %d, column %d: %s",
                        je.line, je.column, je.text);
    if (!json_is_object(root)) {
        s = srv_fail(err, errlen, SRV_BAD_REQUEST, "the request body must be a JSON object; got %s",
                     jsonkind_describe(root));
        goto done;
    }
    if ((s = parse_envelope(root, q, err, errlen)) != SRV_OK)
        goto done;
    const json_t *inputs = json_object_get(root, "inputs");
    if (!inputs || !json_is_array(inputs)) {
        s = srv_fail(err, errlen, SRV_BAD_REQUEST, "\"inputs\" is missing or not an array");
        goto done;
    }
    if (json_array_size(inputs) != 1) {
        s = srv_fail(err, errlen, SRV_BAD_REQUEST,
                     "\"inputs\" has %zu entries; models here take exactly one input",
                     json_array_size(inputs));
        goto done;
    }
    const json_t *in = json_array_get(inputs, 0);
    if ((s = parse_input_header(in, q, err, errlen)) != SRV_OK)
        goto done;
    const json_t *ip = json_object_get(in, "parameters");
    const json_t *bsize = json_is_object(ip) ? json_object_get(ip, "binary_data_size") : NULL;
    const json_t *data = json_object_get(in, "data");
    if (bsize) {
        if (data) {
            s = srv_fail(err, errlen, SRV_BAD_REQUEST,
                         "inputs[0] has both \"data\" and parameters.binary_data_size");
            goto done;
        }
        s = check_binary_data(bsize, header_len ? (const uint8_t *)body + header_len : NULL,
                              len - header_len, q, err, errlen);
    } else if (header_len && len > header_len) {
        s = srv_fail(err, errlen, SRV_BAD_REQUEST,
                     "the body has %zu bytes after the JSON header but no input has "
                     "binary_data_size",
                     len - header_len);
    } else if (!data) {
        s = srv_fail(err, errlen, SRV_BAD_REQUEST,
                     "inputs[0] has neither \"data\" nor parameters.binary_data_size");
    } else if (!json_is_array(data)) {
        s = srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].data is %s; expected an array",
                     jsonkind_describe(data));
    } else if (!d.has_data || json_array_size(data) != 0) {
        /* jansson and the scanner agree on which member is inputs[0].data (duplicates are
         * refused above): this would be a bug, and must not turn into a tree of the data. */
        s = srv_fail(err, errlen, SRV_INTERNAL, "inputs[0].data was not located by the scanner");
    } else {
        q->json_data = body + d.begin;
        q->json_data_len = d.end - d.begin;
        s = check_json_data(q, d.data_elems, err, errlen);
    }
done:
    json_decref(root);
    if (s != SRV_OK)
        infer_request_free(q);
    return s;
}

size_t infer_request_load_bytes(const infer_request *q)
{
    if (q->dtype != TENSOR_BYTES)
        return q->count * sizeof *q->data;
    /* the element table, and the decoded bytes (never more than their text) */
    return q->count * sizeof *q->elems + (q->bin ? 0 : q->json_data_len + 1);
}

srv_status infer_request_load(infer_request *q, char *err, size_t errlen)
{
    srv_status s = q->bin ? load_binary_data(q, err, errlen) : load_json_data(q, err, errlen);
    if (s != SRV_OK)
        infer_request_free(q);
    return s;
}
