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

/* The integer range of each integer datatype, for JSON values. */
static bool int_in_range(json_int_t v, tensor_dtype t)
{
    switch (t) {
    case TENSOR_UINT8:
        return v >= 0 && v <= UINT8_MAX;
    case TENSOR_UINT16:
        return v >= 0 && v <= UINT16_MAX;
    case TENSOR_UINT32:
        return v >= 0 && v <= (json_int_t)UINT32_MAX;
    case TENSOR_UINT64:
        return v >= 0;
    case TENSOR_INT8:
        return v >= INT8_MIN && v <= INT8_MAX;
    case TENSOR_INT16:
        return v >= INT16_MIN && v <= INT16_MAX;
    case TENSOR_INT32:
        return v >= INT32_MIN && v <= INT32_MAX;
    default:
        return true;
    }
}

/* Counts the leaves of nested `data`, checking that every level has shape[depth] entries. */
static srv_status count_nested(const json_t *a, int depth, const infer_request *q, size_t *leaves,
                               char *err, size_t errlen)
{
    if (depth == q->rank) {
        (*leaves)++;
        return SRV_OK;
    }
    if (!json_is_array(a))
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].data: nesting level %d is %s; shape has %d dimensions and "
                        "expects an array of %lld there",
                        depth, jsonkind_describe(a), q->rank, (long long)q->shape[depth]);
    if ((int64_t)json_array_size(a) != q->shape[depth])
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].data: nesting level %d has %zu entries; shape says %lld", depth,
                        json_array_size(a), (long long)q->shape[depth]);
    for (size_t i = 0; i < json_array_size(a); i++) {
        srv_status s = count_nested(json_array_get(a, i), depth + 1, q, leaves, err, errlen);
        if (s != SRV_OK)
            return s;
    }
    return SRV_OK;
}

typedef struct {
    infer_request *q;
    size_t pos;
    char *err;
    size_t errlen;
} filler;

static srv_status fill_value(filler *f, const json_t *v)
{
    infer_request *q = f->q;
    if (q->dtype == TENSOR_BYTES) {
        if (!json_is_string(v))
            return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data[%zu] is %s; a BYTES input holds base64 strings", f->pos,
                            jsonkind_describe(v));
        q->elems[f->pos].data = (const uint8_t *)json_string_value(v); /* decoded later */
        q->elems[f->pos].len = json_string_length(v);
        f->pos++;
        return SRV_OK;
    }
    if (q->dtype == TENSOR_BOOL) {
        if (!json_is_boolean(v))
            return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                            "inputs[0].data[%zu] is %s; expected true or false", f->pos,
                            jsonkind_describe(v));
        q->data[f->pos++] = json_is_true(v) ? 1.0f : 0.0f;
        return SRV_OK;
    }
    bool is_float_type =
        q->dtype == TENSOR_FP16 || q->dtype == TENSOR_FP32 || q->dtype == TENSOR_FP64;
    if (is_float_type ? !json_is_number(v) : !json_is_integer(v))
        return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                        "inputs[0].data[%zu] is %s; expected %s", f->pos, jsonkind_describe(v),
                        is_float_type ? "a number" : "an integer");
    if (!is_float_type && !int_in_range(json_integer_value(v), q->dtype))
        return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                        "inputs[0].data[%zu] = %lld is out of range for %s", f->pos,
                        (long long)json_integer_value(v), tensor_dtype_name(q->dtype));
    float x = (float)json_number_value(v);
    if (!isfinite(x))
        return srv_fail(f->err, f->errlen, SRV_BAD_REQUEST,
                        "inputs[0].data[%zu] = %g is out of range for FP32", f->pos,
                        json_number_value(v));
    q->data[f->pos++] = x;
    return SRV_OK;
}

static srv_status fill_nested(filler *f, const json_t *a, int depth)
{
    if (depth == f->q->rank)
        return fill_value(f, a);
    for (size_t i = 0; i < json_array_size(a); i++) {
        srv_status s = fill_nested(f, json_array_get(a, i), depth + 1);
        if (s != SRV_OK)
            return s;
    }
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

static srv_status decode_base64_elems(infer_request *q, char *err, size_t errlen)
{
    size_t total = 0;
    for (size_t i = 0; i < q->nelems; i++)
        total += q->elems[i].len / 4 * 3 + 3; /* bounded by the body length */
    q->owned = malloc(total ? total : 1);
    if (!q->owned)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    size_t off = 0;
    for (size_t i = 0; i < q->nelems; i++) {
        size_t n;
        if (!b64_decode((const char *)q->elems[i].data, q->elems[i].len, q->owned + off, &n))
            return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].data[%zu] is not valid base64",
                            i);
        q->elems[i].data = q->owned + off;
        q->elems[i].len = n;
        off += n;
    }
    return SRV_OK;
}

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

/* Numbers the scanner already parsed (see jscan.h), used when they fit the declared shape. */
typedef struct {
    float *values;
    jscan_data d;
    bool rejected; /* they did not fit: redo everything on the jansson path */
} fast_data;

static bool fast_fits(const fast_data *f, const infer_request *q)
{
    if (q->dtype != TENSOR_FP32 && q->dtype != TENSOR_FP64)
        return false; /* integer types need the range checks of the jansson path */
    if (f->d.count != q->count)
        return false;
    if (f->d.depth == 1)
        return true;
    if (f->d.depth != q->rank)
        return false;
    for (int i = 0; i < q->rank; i++)
        if (f->d.dims[i] != q->shape[i])
            return false;
    return true;
}

/* The input's data from a JSON "data" array (flat or nested row-major). */
static srv_status parse_json_data(const json_t *in, infer_request *q, fast_data *fast, char *err,
                                  size_t errlen)
{
    if (fast) {
        if (!fast_fits(fast, q)) {
            fast->rejected = true;
            return SRV_BAD_REQUEST;
        }
        q->data = fast->values;
        fast->values = NULL;
        return SRV_OK;
    }
    const json_t *data = json_object_get(in, "data");
    if (!data)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0] has neither \"data\" nor parameters.binary_data_size");
    if (!json_is_array(data))
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "inputs[0].data is %s; expected an array",
                        jsonkind_describe(data));
    bool nested = json_array_size(data) > 0 && json_is_array(json_array_get(data, 0));
    size_t leaves = 0;
    if (nested) {
        srv_status s = count_nested(data, 0, q, &leaves, err, errlen);
        if (s != SRV_OK)
            return s;
    } else {
        leaves = json_array_size(data);
    }
    if (leaves != q->count)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].data has %zu elements; shape needs %zu", leaves, q->count);
    /* Now the count is known to be backed by real data in the body: allocate. */
    if (q->dtype == TENSOR_BYTES) {
        q->nelems = q->count;
        q->elems = calloc(q->count, sizeof *q->elems);
        if (!q->elems)
            return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    } else {
        q->data = malloc(q->count * sizeof *q->data);
        if (!q->data)
            return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    }
    filler f = {q, 0, err, errlen};
    srv_status s = SRV_OK;
    if (nested) {
        s = fill_nested(&f, data, 0);
    } else {
        for (size_t i = 0; i < leaves && s == SRV_OK; i++)
            s = fill_value(&f, json_array_get(data, i));
    }
    if (s == SRV_OK && q->dtype == TENSOR_BYTES)
        s = decode_base64_elems(q, err, errlen);
    return s;
}

/* The input's data from the binary part of the body (Triton binary tensor extension). */
static srv_status parse_binary_data(const json_t *size_v, const uint8_t *bin, size_t binlen,
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
    if (q->dtype == TENSOR_BYTES) {
        /* Each element: a 4-byte little-endian length, then that many bytes. */
        size_t n = 0, off = 0;
        while (off < binlen) {
            if (binlen - off < 4)
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "inputs[0] binary BYTES element %zu has a truncated length", n);
            uint32_t l = (uint32_t)bin[off] | (uint32_t)bin[off + 1] << 8 |
                         (uint32_t)bin[off + 2] << 16 | (uint32_t)bin[off + 3] << 24;
            if (l > binlen - off - 4)
                return srv_fail(err, errlen, SRV_BAD_REQUEST,
                                "inputs[0] binary BYTES element %zu claims %u bytes; %zu remain", n,
                                l, binlen - off - 4);
            off += 4 + l;
            n++;
        }
        if (n != q->count)
            return srv_fail(err, errlen, SRV_BAD_REQUEST,
                            "inputs[0] binary data holds %zu BYTES elements; shape needs %zu", n,
                            q->count);
        q->elems = calloc(n ? n : 1, sizeof *q->elems);
        if (!q->elems)
            return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
        q->nelems = n;
        off = 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t l = (uint32_t)bin[off] | (uint32_t)bin[off + 1] << 8 |
                         (uint32_t)bin[off + 2] << 16 | (uint32_t)bin[off + 3] << 24;
            q->elems[i].data = bin + off + 4;
            q->elems[i].len = l;
            off += 4 + l;
        }
        return SRV_OK;
    }
    size_t es = dtypes[q->dtype].size, need;
    if (__builtin_mul_overflow(q->count, es, &need) || need != size)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "inputs[0].parameters.binary_data_size is %llu; shape needs %zu elements "
                        "of %s = %zu bytes",
                        (unsigned long long)size, q->count, tensor_dtype_name(q->dtype),
                        q->count * es);
    q->data = malloc(q->count * sizeof *q->data);
    if (!q->data)
        return srv_fail(err, errlen, SRV_UNAVAILABLE, "out of memory");
    if (q->dtype == TENSOR_FP32) {
        memcpy(q->data, bin, need); /* x86 and the wire are both little-endian */
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

/* One full parse. With `fast`, the body's data array has been blanked and its numbers are in
 * fast->values. */
static srv_status parse_request(const char *json, size_t jlen, const char *body, size_t len,
                                size_t header_len, infer_request *q, fast_data *fast, char *err,
                                size_t errlen)
{
    json_error_t je;
    json_t *root = json_loadb(json, jlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return srv_fail(err, errlen, SRV_BAD_REQUEST, "invalid JSON at line %d, column %d: %s",
                        je.line, je.column, je.text);
    srv_status s;
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
    if (bsize) {
        if (json_object_get(in, "data")) {
            s = srv_fail(err, errlen, SRV_BAD_REQUEST,
                         "inputs[0] has both \"data\" and parameters.binary_data_size");
            goto done;
        }
        s = parse_binary_data(bsize, header_len ? (const uint8_t *)body + header_len : NULL,
                              len - header_len, q, err, errlen);
    } else {
        if (header_len && len > header_len) {
            s = srv_fail(err, errlen, SRV_BAD_REQUEST,
                         "the body has %zu bytes after the JSON header but no input has "
                         "binary_data_size",
                         len - header_len);
            goto done;
        }
        s = parse_json_data(in, q, fast, err, errlen);
    }
done:
    json_decref(root);
    if (s != SRV_OK)
        infer_request_free(q);
    return s;
}

srv_status infer_request_parse(const char *body, size_t len, size_t header_len, infer_request *q,
                               char *err, size_t errlen)
{
    memset(q, 0, sizeof *q);
    if (header_len > len)
        return srv_fail(err, errlen, SRV_BAD_REQUEST,
                        "Inference-Header-Content-Length is %zu; the body has only %zu bytes",
                        header_len, len);
    size_t jlen = header_len ? header_len : len;

    /* Fast path: numbers parsed by the scanner, the envelope by jansson with the array cut out
     * ("...\"data\":[1,2,3]}" -> "...\"data\":[]}"). Any error, or anything unusual, goes to the
     * plain jansson path, which then gives the (same as ever) error. */
    fast_data fast = {0};
    if (jlen > 2 && jscan_find_data(body, jlen, &fast.d) &&
        jscan_parse_numbers(body, &fast.d, &fast.values)) {
        size_t tail = jlen - fast.d.end, clen = fast.d.begin + 2 + tail;
        char *copy = malloc(clen);
        if (copy) {
            memcpy(copy, body, fast.d.begin);
            memcpy(copy + fast.d.begin, "[]", 2);
            memcpy(copy + fast.d.begin + 2, body + fast.d.end, tail);
            srv_status s = parse_request(copy, clen, body, len, header_len, q, &fast, err, errlen);
            free(copy);
            free(fast.values);
            if (s == SRV_OK)
                return SRV_OK;
            memset(q, 0, sizeof *q);
        } else {
            free(fast.values);
        }
    }
    return parse_request(body, jlen, body, len, header_len, q, NULL, err, errlen);
}
