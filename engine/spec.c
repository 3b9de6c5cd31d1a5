/* spec.c - reads model.json into a spec_model and runs PyTorch's output-size formula through it. */
#include "spec.h"

#include <assert.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Text buffer sizes. A layer prefix holds "layer 255 (AdaptiveAvgPool2d '<127-byte name>'): ". */
enum {
    PREFIX_LEN = 192,
    VALUE_TEXT_LEN = 64,   /* a JSON value quoted in a message, truncated with "..." */
    SMALL_ARRAY = 4,       /* arrays up to this size are quoted in messages, longer ones counted */
    KEY_LIST_LEN = 320,    /* "(Conv2d takes: name, in_channels, ...)" */
    SHAPE_TEXT_LEN = 112,  /* "[N,C,H,W]" with four 20-digit numbers */
    FIELD_LEN = 64,        /* "shape[1]", "labels[99999]" */
    WEIGHTS_NAME_MAX = 256 /* bytes of the weights file name, NUL included (NAME_MAX + 1) */
};

/* "dynamic_batching.max_queue_delay_us" is capped at ten seconds: a longer wait is a typo. */
#define MAX_QUEUE_DELAY_US INT64_C(10000000)
/* A layer's weight tensor and a sample's activation are capped at 2^31 elements so every size
 * computed later fits comfortably in int64 and in a float buffer the runner can allocate. */
#define MAX_LAYER_PARAMS (INT64_C(1) << 31)
#define MAX_SAMPLE_ELEMS (INT64_C(1) << 31)

/* PyTorch's defaults, named where they are used. */
#define DEFAULT_MAX_BATCH   32
#define DEFAULT_BN_EPS      1e-5
#define DEFAULT_LEAKY_SLOPE 0.01
#define DEFAULT_PIXEL_SCALE (1.0 / 255.0)
#define GRAY_CHANNELS       1
#define RGB_CHANNELS        3

/* Flatten and Softmax dims are given for a tensor of rank 4 at most: -4..3. */
#define MIN_DIM_INDEX (-SPEC_MAX_RANK)
#define MAX_DIM_INDEX (SPEC_MAX_RANK - 1)

#define POSITIVE      "a positive integer"
#define POSITIVE_PAIR "a positive integer or a pair"
#define NONNEG_PAIR   "a non-negative integer or a pair"

/* Stops a parse helper at the first error; only for helpers that own nothing. */
#define TRY(call)                                                                                  \
    do {                                                                                           \
        engine_status try_status_ = (call);                                                        \
        if (try_status_ != ENGINE_OK)                                                              \
            return try_status_;                                                                    \
    } while (0)

/* Where a value being parsed sits, for messages. Model-level fields are named by path ("input." +
 * "shape[1]"); layer fields after a prefix ("layer 3 (Conv2d 'conv.3'): " + "kernel_size"). */
typedef struct {
    char *err;
    size_t errlen;
    const char *prefix;
    bool layer;
} pctx;

static const char *const op_names[SPEC_OP_COUNT] = {
#define SPEC_OP_STRING(e, s) [e] = s,
    SPEC_OP_MAP(SPEC_OP_STRING)
#undef SPEC_OP_STRING
};

/* The keys each object accepts: the constructor's keyword arguments, plus "op" and "name". */
static const char *const top_keys[] = {
    "name",           "description",      "weights",    "seed",      "input",  "output",
    "max_batch_size", "dynamic_batching", "preprocess", "precision", "layers", NULL};
static const char *const input_keys[] = {"name", "shape", NULL};
static const char *const output_keys[] = {"name", "labels", NULL};
static const char *const batching_keys[] = {"max_queue_delay_us", NULL};
static const char *const preprocess_keys[] = {"color", "resize", "scale", "mean",
                                              "std",   "invert", NULL};

static const char *const conv_keys[] = {"op",          "name",   "in_channels",  "out_channels",
                                        "kernel_size", "stride", "padding",      "dilation",
                                        "groups",      "bias",   "padding_mode", NULL};
static const char *const bn_keys[] = {"op",       "name",   "num_features",        "eps",
                                      "momentum", "affine", "track_running_stats", NULL};
static const char *const linear_keys[] = {"op",           "name", "in_features",
                                          "out_features", "bias", NULL};
static const char *const flatten_keys[] = {"op", "name", "start_dim", "end_dim", NULL};
static const char *const inplace_keys[] = {"op", "name", "inplace", NULL};
static const char *const leaky_keys[] = {"op", "name", "negative_slope", "inplace", NULL};
static const char *const bare_keys[] = {"op", "name", NULL};
static const char *const gelu_keys[] = {"op", "name", "approximate", NULL};
static const char *const softmax_keys[] = {"op", "name", "dim", NULL};
static const char *const maxpool_keys[] = {"op",        "name",           "kernel_size",
                                           "stride",    "padding",        "dilation",
                                           "ceil_mode", "return_indices", NULL};
static const char *const avgpool_keys[] = {
    "op",      "name",      "kernel_size",       "stride",
    "padding", "ceil_mode", "count_include_pad", "divisor_override",
    NULL};
static const char *const adaptive_keys[] = {"op", "name", "output_size", NULL};
static const char *const dropout_keys[] = {"op", "name", "p", "inplace", NULL};

static const char *const *const op_keys[SPEC_OP_COUNT] = {
    [SPEC_CONV2D] = conv_keys,        [SPEC_BATCHNORM2D] = bn_keys,
    [SPEC_LINEAR] = linear_keys,      [SPEC_FLATTEN] = flatten_keys,
    [SPEC_RELU] = inplace_keys,       [SPEC_LEAKYRELU] = leaky_keys,
    [SPEC_SIGMOID] = bare_keys,       [SPEC_TANH] = bare_keys,
    [SPEC_GELU] = gelu_keys,          [SPEC_SOFTMAX] = softmax_keys,
    [SPEC_LOGSOFTMAX] = softmax_keys, [SPEC_MAXPOOL2D] = maxpool_keys,
    [SPEC_AVGPOOL2D] = avgpool_keys,  [SPEC_ADAPTIVEAVGPOOL2D] = adaptive_keys,
    [SPEC_DROPOUT] = dropout_keys,    [SPEC_DROPOUT2D] = dropout_keys,
    [SPEC_IDENTITY] = bare_keys,
};

const char *spec_op_name(spec_op op)
{
    if ((int)op < 0 || op >= SPEC_OP_COUNT)
        return "?";
    return op_names[op];
}

/* ------------------------------------------------------------------------------------------ */
/* Typed field readers. Each names the field and quotes the offending value on error.          */

/* Quotes a JSON value for a message: scalars and short arrays as JSON, the rest by kind. */
static const char *describe(const json_t *v, char *buf, size_t len)
{
    if (!v) {
        snprintf(buf, len, "nothing");
        return buf;
    }
    if (json_is_object(v)) {
        snprintf(buf, len, "an object");
        return buf;
    }
    if (json_is_array(v)) {
        bool scalars = json_array_size(v) <= SMALL_ARRAY;
        for (size_t i = 0; scalars && i < json_array_size(v); i++) {
            const json_t *e = json_array_get(v, i);
            scalars = !json_is_array(e) && !json_is_object(e);
        }
        if (!scalars) {
            snprintf(buf, len, "an array of %zu entries", json_array_size(v));
            return buf;
        }
    }
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
    if (!text) {
        snprintf(buf, len, "an unprintable value");
        return buf;
    }
    size_t n = strlen(text);
    if (n < len) {
        memcpy(buf, text, n + 1);
    } else {
        /* Long strings are cut; the ellipsis says so. */
        snprintf(buf, len, "%.*s...", (int)(len - 4), text);
    }
    free(text);
    return buf;
}

static engine_status bad_value(const pctx *c, const char *field, const char *expect,
                               const json_t *v)
{
    char got[VALUE_TEXT_LEN];
    return engine_fail(c->err, c->errlen, ENGINE_E_MODEL, "%s%s must be %s, got %s", c->prefix,
                       field, expect, describe(v, got, sizeof got));
}

static engine_status too_big(const pctx *c, const char *field, int64_t hi, int64_t x)
{
    return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                       "%s%s must be at most %" PRId64 ", got %" PRId64, c->prefix, field, hi, x);
}

static engine_status missing(const pctx *c, const char *field)
{
    return engine_fail(c->err, c->errlen, ENGINE_E_MODEL, "%s%s is required", c->prefix, field);
}

/* Copies a key for a message, cut to the buffer and with control bytes shown as '?', since keys
 * come from the file and end up in log lines. */
static const char *printable_key(const char *key, char *buf, size_t len)
{
    size_t i = 0;
    for (; key[i] && i + 1 < len; i++)
        buf[i] = (unsigned char)key[i] < ' ' || key[i] == 0x7f ? '?' : key[i];
    buf[i] = '\0';
    return buf;
}

/* Rejects keys the object does not take, listing the ones it does, so that typos are caught. */
static engine_status check_keys(const pctx *c, json_t *obj, const char *const *keys,
                                const char *owner)
{
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        bool known = false;
        for (size_t i = 0; keys[i] && !known; i++)
            known = strcmp(key, keys[i]) == 0;
        if (known)
            continue;
        char list[KEY_LIST_LEN] = "";
        size_t used = 0;
        for (size_t i = 0; keys[i]; i++) {
            if (strcmp(keys[i], "op") == 0)
                continue;
            int n = snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "", keys[i]);
            if (n < 0 || (size_t)n >= sizeof list - used)
                break;
            used += (size_t)n;
        }
        char shown[VALUE_TEXT_LEN];
        printable_key(key, shown, sizeof shown);
        if (c->layer)
            return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                               "%sunknown key '%s' (%s takes: %s)", c->prefix, shown, owner, list);
        return engine_fail(c->err, c->errlen, ENGINE_E_MODEL, "unknown key '%s%s' (%s takes: %s)",
                           c->prefix, shown, owner, list);
    }
    return ENGINE_OK;
}

/* Checks one integer value against [lo, hi]. */
static engine_status int_value(const pctx *c, const char *field, const json_t *v, int64_t lo,
                               int64_t hi, const char *expect, int64_t *out)
{
    if (!json_is_integer(v))
        return bad_value(c, field, expect, v);
    int64_t x = json_integer_value(v);
    if (x < lo)
        return bad_value(c, field, expect, v);
    if (x > hi)
        return too_big(c, field, hi, x);
    *out = x;
    return ENGINE_OK;
}

static engine_status get_int(const pctx *c, json_t *obj, const char *key, bool required,
                             int64_t def, int64_t lo, int64_t hi, const char *expect, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return missing(c, key);
        *out = def;
        return ENGINE_OK;
    }
    return int_value(c, key, v, lo, hi, expect, out);
}

/* PyTorch's _pair(): an integer for both dims or a list of exactly two. With allow_null, a null
 * element is stored as -1 (AdaptiveAvgPool2d's "same as the input"). */
static engine_status pair_value(const pctx *c, const char *key, const json_t *v, int64_t lo,
                                int64_t hi, bool allow_null, const char *expect, int64_t out[2])
{
    if (json_is_integer(v)) {
        TRY(int_value(c, key, v, lo, hi, expect, &out[0]));
        out[1] = out[0];
        return ENGINE_OK;
    }
    if (!json_is_array(v) || json_array_size(v) != 2)
        return bad_value(c, key, expect, v);
    for (size_t i = 0; i < 2; i++) {
        const json_t *e = json_array_get(v, i);
        if (allow_null && json_is_null(e)) {
            out[i] = -1;
            continue;
        }
        if (!json_is_integer(e) || json_integer_value(e) < lo)
            return bad_value(c, key, expect, v);
        if (json_integer_value(e) > hi)
            return too_big(c, key, hi, json_integer_value(e));
        out[i] = json_integer_value(e);
    }
    return ENGINE_OK;
}

static engine_status get_pair(const pctx *c, json_t *obj, const char *key, bool required,
                              int64_t def, int64_t lo, int64_t hi, const char *expect,
                              int64_t out[2])
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (required)
            return missing(c, key);
        out[0] = out[1] = def;
        return ENGINE_OK;
    }
    return pair_value(c, key, v, lo, hi, false, expect, out);
}

static engine_status get_bool(const pctx *c, json_t *obj, const char *key, bool def, bool *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return ENGINE_OK;
    }
    if (!json_is_boolean(v))
        return bad_value(c, key, "true or false", v);
    *out = json_is_true(v);
    return ENGINE_OK;
}

/* Reads a number (integer or real; jansson never yields NaN or infinity) within [lo, hi], or
 * within (lo, hi] when lo_open. */
static engine_status get_number(const pctx *c, json_t *obj, const char *key, double def, double lo,
                                bool lo_open, double hi, const char *expect, double *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return ENGINE_OK;
    }
    if (!json_is_number(v))
        return bad_value(c, key, expect, v);
    double x = json_number_value(v);
    if (x < lo || (lo_open && x == lo) || x > hi)
        return bad_value(c, key, expect, v);
    *out = x;
    return ENGINE_OK;
}

/* Reads one of a fixed set of strings; *out is its index, or def when the key is absent. */
static engine_status get_choice(const pctx *c, json_t *obj, const char *key,
                                const char *const *choices, int def, const char *expect, int *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        *out = def;
        return ENGINE_OK;
    }
    if (json_is_string(v)) {
        for (int i = 0; choices[i]; i++) {
            if (strcmp(json_string_value(v), choices[i]) == 0) {
                *out = i;
                return ENGINE_OK;
            }
        }
    }
    return bad_value(c, key, expect, v);
}

/* Names are state_dict prefixes, model and tensor names: they end up in URLs, file paths and
 * messages, so they keep to a conservative alphabet. */
static bool valid_name(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
        if (!ok)
            return false;
    }
    return true;
}

#define NAME_EXPECT "a non-empty string of [A-Za-z0-9_.-] shorter than 128 bytes"

/* Copies an optional name field into dst (SPEC_MAX_NAME bytes), or def when absent. */
static engine_status get_name(const pctx *c, json_t *obj, const char *key, const char *def,
                              char *dst)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        snprintf(dst, SPEC_MAX_NAME, "%s", def);
        return ENGINE_OK;
    }
    if (!json_is_string(v) || !valid_name(json_string_value(v), SPEC_MAX_NAME))
        return bad_value(c, key, NAME_EXPECT, v);
    snprintf(dst, SPEC_MAX_NAME, "%s", json_string_value(v));
    return ENGINE_OK;
}

/* An optional object member: NULL when absent, an error when present but not an object. */
static engine_status get_object(const pctx *c, json_t *obj, const char *key, json_t **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v)
        return ENGINE_OK;
    if (!json_is_object(v))
        return bad_value(c, key, "an object", v);
    *out = v;
    return ENGINE_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Layers                                                                                      */

/* Caps the element count of a weight tensor given as a product of dims. */
static engine_status check_params(const pctx *c, const int64_t *dims, int n)
{
    int64_t total = 1;
    for (int i = 0; i < n; i++) {
        if (__builtin_mul_overflow(total, dims[i], &total) || total > MAX_LAYER_PARAMS)
            return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                               "%sthe weight tensor would have more than %" PRId64 " elements",
                               c->prefix, MAX_LAYER_PARAMS);
    }
    return ENGINE_OK;
}

static engine_status parse_conv(const pctx *c, json_t *o, spec_layer *l)
{
    TRY(get_int(c, o, "in_channels", true, 0, 1, SPEC_MAX_DIM, POSITIVE, &l->in_channels));
    TRY(get_int(c, o, "out_channels", true, 0, 1, SPEC_MAX_DIM, POSITIVE, &l->out_channels));
    TRY(get_pair(c, o, "kernel_size", true, 0, 1, SPEC_MAX_DIM, POSITIVE_PAIR, l->kernel));
    TRY(get_pair(c, o, "stride", false, 1, 1, SPEC_MAX_DIM, POSITIVE_PAIR, l->stride));
    TRY(get_pair(c, o, "dilation", false, 1, 1, SPEC_MAX_DIM, POSITIVE_PAIR, l->dilation));
    TRY(get_int(c, o, "groups", false, 1, 1, SPEC_MAX_DIM, POSITIVE, &l->groups));
    TRY(get_bool(c, o, "bias", true, &l->bias));

    static const char *const pad_expect = "a non-negative integer, a pair, \"same\" or \"valid\"";
    const json_t *pad = json_object_get(o, "padding");
    l->pad_mode = SPEC_PAD_NUMBERS;
    if (json_is_string(pad)) {
        if (strcmp(json_string_value(pad), "same") == 0)
            l->pad_mode = SPEC_PAD_SAME;
        else if (strcmp(json_string_value(pad), "valid") == 0)
            l->pad_mode = SPEC_PAD_VALID;
        else
            return bad_value(c, "padding", pad_expect, pad);
    } else {
        TRY(get_pair(c, o, "padding", false, 0, 0, SPEC_MAX_DIM, pad_expect, l->padding));
    }
    /* PyTorch refuses 'same' with a stride, since the output size would then depend on where the
     * extra padding goes. */
    if (l->pad_mode == SPEC_PAD_SAME && (l->stride[0] != 1 || l->stride[1] != 1))
        return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                           "%spadding=\"same\" is not supported for strided convolutions "
                           "(stride [%" PRId64 ", %" PRId64 "]), as in PyTorch",
                           c->prefix, l->stride[0], l->stride[1]);

    const json_t *mode = json_object_get(o, "padding_mode");
    if (mode && !json_is_string(mode))
        return bad_value(c, "padding_mode", "a string", mode);
    if (mode && strcmp(json_string_value(mode), "zeros") != 0) {
        char got[VALUE_TEXT_LEN];
        return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                           "%spadding_mode %s is not supported: only \"zeros\" is", c->prefix,
                           describe(mode, got, sizeof got));
    }

    if (l->in_channels % l->groups != 0 || l->out_channels % l->groups != 0)
        return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                           "%sin_channels %" PRId64 " and out_channels %" PRId64
                           " must both be divisible by groups %" PRId64,
                           c->prefix, l->in_channels, l->out_channels, l->groups);
    int64_t wdims[4] = {l->out_channels, l->in_channels / l->groups, l->kernel[0], l->kernel[1]};
    return check_params(c, wdims, 4);
}

static engine_status parse_batchnorm(const pctx *c, json_t *o, spec_layer *l)
{
    TRY(get_int(c, o, "num_features", true, 0, 1, SPEC_MAX_DIM, POSITIVE, &l->num_features));
    TRY(get_number(c, o, "eps", DEFAULT_BN_EPS, 0, true, 1e300, "a positive number", &l->eps));
    const json_t *momentum = json_object_get(o, "momentum");
    if (momentum && !json_is_number(momentum) && !json_is_null(momentum))
        return bad_value(c, "momentum", "a number or null", momentum);
    TRY(get_bool(c, o, "affine", true, &l->affine));
    bool track = true;
    TRY(get_bool(c, o, "track_running_stats", true, &track));
    if (!track)
        return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                           "%strack_running_stats=false is not supported: in eval mode PyTorch "
                           "would normalise with the statistics of each batch",
                           c->prefix);
    return ENGINE_OK;
}

static engine_status parse_linear(const pctx *c, json_t *o, spec_layer *l)
{
    TRY(get_int(c, o, "in_features", true, 0, 1, SPEC_MAX_DIM, POSITIVE, &l->in_features));
    TRY(get_int(c, o, "out_features", true, 0, 1, SPEC_MAX_DIM, POSITIVE, &l->out_features));
    TRY(get_bool(c, o, "bias", true, &l->bias));
    int64_t wdims[2] = {l->out_features, l->in_features};
    return check_params(c, wdims, 2);
}

/* MaxPool2d and AvgPool2d: stride defaults to (and null means) the kernel size. */
static engine_status parse_pool(const pctx *c, json_t *o, spec_layer *l)
{
    TRY(get_pair(c, o, "kernel_size", true, 0, 1, SPEC_MAX_DIM, POSITIVE_PAIR, l->kernel));
    const json_t *stride = json_object_get(o, "stride");
    if (!stride || json_is_null(stride)) {
        l->stride[0] = l->kernel[0];
        l->stride[1] = l->kernel[1];
    } else {
        TRY(pair_value(c, "stride", stride, 1, SPEC_MAX_DIM, false, POSITIVE_PAIR " or null",
                       l->stride));
    }
    TRY(get_pair(c, o, "padding", false, 0, 0, SPEC_MAX_DIM, NONNEG_PAIR, l->padding));
    l->pad_mode = SPEC_PAD_NUMBERS;
    if (l->op == SPEC_MAXPOOL2D)
        TRY(get_pair(c, o, "dilation", false, 1, 1, SPEC_MAX_DIM, POSITIVE_PAIR, l->dilation));
    else
        l->dilation[0] = l->dilation[1] = 1;
    for (int j = 0; j < 2; j++) {
        if (l->padding[j] > l->kernel[j] / 2)
            return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                               "%spadding must be at most half the kernel size, as in PyTorch: "
                               "got padding %" PRId64 " with kernel %" PRId64,
                               c->prefix, l->padding[j], l->kernel[j]);
    }
    TRY(get_bool(c, o, "ceil_mode", false, &l->ceil_mode));

    if (l->op == SPEC_MAXPOOL2D) {
        bool indices = false;
        TRY(get_bool(c, o, "return_indices", false, &indices));
        if (indices)
            return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                               "%sreturn_indices=true is not supported: inference returns only "
                               "the pooled values",
                               c->prefix);
        return ENGINE_OK;
    }
    TRY(get_bool(c, o, "count_include_pad", true, &l->count_include_pad));
    const json_t *divisor = json_object_get(o, "divisor_override");
    if (divisor && !json_is_null(divisor)) {
        char got[VALUE_TEXT_LEN];
        return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                           "%sdivisor_override is not supported (only null), got %s", c->prefix,
                           describe(divisor, got, sizeof got));
    }
    /* With ceil_mode the last window may hang over the padded input. PyTorch then divides by the
     * part of the window inside the padded input, oneDNN by the whole kernel area. Without padding
     * that part is exactly the part inside the input, which oneDNN's exclude-padding average
     * computes (the runner uses it), so only padded ones are refused. */
    if (l->ceil_mode && l->count_include_pad && (l->padding[0] || l->padding[1]))
        return engine_fail(c->err, c->errlen, ENGINE_E_MODEL,
                           "%sceil_mode=true with count_include_pad=true and padding is not "
                           "supported: oneDNN divides the overhanging edge windows differently "
                           "from PyTorch (set count_include_pad to false, or padding to 0)",
                           c->prefix);
    return ENGINE_OK;
}

static engine_status parse_layer_fields(const pctx *c, json_t *o, spec_layer *l)
{
    bool ignored;
    switch (l->op) {
    case SPEC_CONV2D:
        return parse_conv(c, o, l);
    case SPEC_BATCHNORM2D:
        return parse_batchnorm(c, o, l);
    case SPEC_LINEAR:
        return parse_linear(c, o, l);
    case SPEC_FLATTEN: {
        int64_t start, end;
        static const char *const expect = "an integer from -4 to 3";
        TRY(get_int(c, o, "start_dim", false, 1, MIN_DIM_INDEX, MAX_DIM_INDEX, expect, &start));
        TRY(get_int(c, o, "end_dim", false, -1, MIN_DIM_INDEX, MAX_DIM_INDEX, expect, &end));
        /* The rank is only known during inference, which checks these. */
        l->start_dim = (int)start;
        l->end_dim = (int)end;
        return ENGINE_OK;
    }
    case SPEC_RELU:
    case SPEC_DROPOUT:
    case SPEC_DROPOUT2D:
        /* In eval mode dropout is the identity; p is still checked as PyTorch checks it. */
        if (l->op != SPEC_RELU) {
            double p;
            TRY(get_number(c, o, "p", 0.5, 0, false, 1, "a number from 0 to 1", &p));
        }
        return get_bool(c, o, "inplace", false, &ignored);
    case SPEC_LEAKYRELU:
        TRY(get_number(c, o, "negative_slope", DEFAULT_LEAKY_SLOPE, -1e300, false, 1e300,
                       "a number", &l->negative_slope));
        return get_bool(c, o, "inplace", false, &ignored);
    case SPEC_GELU: {
        static const char *const approx[] = {"none", "tanh", NULL};
        int which;
        TRY(get_choice(c, o, "approximate", approx, 0, "\"none\" or \"tanh\"", &which));
        l->gelu_tanh = which == 1;
        return ENGINE_OK;
    }
    case SPEC_SOFTMAX:
    case SPEC_LOGSOFTMAX: {
        int64_t dim;
        TRY(get_int(c, o, "dim", true, 0, MIN_DIM_INDEX, MAX_DIM_INDEX, "an integer from -4 to 3",
                    &dim));
        l->dim = (int)dim;
        return ENGINE_OK;
    }
    case SPEC_MAXPOOL2D:
    case SPEC_AVGPOOL2D:
        return parse_pool(c, o, l);
    case SPEC_ADAPTIVEAVGPOOL2D: {
        const json_t *v = json_object_get(o, "output_size");
        if (!v)
            return missing(c, "output_size");
        return pair_value(c, "output_size", v, 1, SPEC_MAX_DIM, true,
                          POSITIVE_PAIR " (null for the input size)", l->output_size);
    }
    case SPEC_SIGMOID:
    case SPEC_TANH:
    case SPEC_IDENTITY:
    case SPEC_OP_COUNT:
        break;
    }
    return ENGINE_OK;
}

static bool op_has_weights(spec_op op)
{
    return op == SPEC_CONV2D || op == SPEC_BATCHNORM2D || op == SPEC_LINEAR;
}

static engine_status parse_layer(json_t *o, int index, spec_layer *l, char *err, size_t errlen)
{
    char prefix[PREFIX_LEN];
    snprintf(prefix, sizeof prefix, "layer %d: ", index);
    pctx c = {err, errlen, prefix, true};
    char field[FIELD_LEN];
    snprintf(field, sizeof field, "layer %d", index);
    pctx bare = {err, errlen, "", false};

    if (!json_is_object(o))
        return bad_value(&bare, field, "an object", o);
    const json_t *op = json_object_get(o, "op");
    if (!op)
        return missing(&c, "op");
    if (!json_is_string(op))
        return bad_value(&c, "op", "a string naming a PyTorch module", op);
    l->op = SPEC_OP_COUNT;
    for (int i = 0; i < SPEC_OP_COUNT; i++) {
        if (strcmp(json_string_value(op), op_names[i]) == 0)
            l->op = (spec_op)i;
    }
    if (l->op == SPEC_OP_COUNT) {
        char list[KEY_LIST_LEN] = "";
        size_t used = 0;
        for (int i = 0; i < SPEC_OP_COUNT; i++) {
            int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", op_names[i]);
            if (n < 0 || (size_t)n >= sizeof list - used)
                break;
            used += (size_t)n;
        }
        char got[VALUE_TEXT_LEN];
        return engine_fail(err, errlen, ENGINE_E_MODEL, "layer %d: unknown op %s (known: %s)",
                           index, describe(op, got, sizeof got), list);
    }

    snprintf(prefix, sizeof prefix, "layer %d (%s): ", index, op_names[l->op]);
    TRY(get_name(&c, o, "name", "", l->name));
    if (l->name[0] == '\0' && op_has_weights(l->op))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "%sname is required: it is the state_dict prefix of the layer's "
                           "tensors (\"conv.0\" for conv.0.weight)",
                           prefix);
    if (l->name[0] != '\0')
        snprintf(prefix, sizeof prefix, "layer %d (%s '%s'): ", index, op_names[l->op], l->name);

    TRY(check_keys(&c, o, op_keys[l->op], op_names[l->op]));
    return parse_layer_fields(&c, o, l);
}

/* ------------------------------------------------------------------------------------------ */
/* Model-level sections                                                                         */

static engine_status parse_input(const pctx *top, json_t *root, spec_model *m)
{
    json_t *in;
    TRY(get_object(top, root, "input", &in));
    if (!in)
        return missing(top, "input");
    pctx c = {top->err, top->errlen, "input.", false};
    TRY(check_keys(&c, in, input_keys, "input"));
    TRY(get_name(&c, in, "name", "input", m->input_name));

    const json_t *shape = json_object_get(in, "shape");
    if (!shape)
        return missing(&c, "shape");
    size_t n = json_is_array(shape) ? json_array_size(shape) : 0;
    if (n != 3 && n != 1)
        return bad_value(&c, "shape", "[C, H, W] or [F]", shape);
    m->input_rank = (int)n;
    for (size_t i = 0; i < n; i++) {
        char field[FIELD_LEN];
        snprintf(field, sizeof field, "shape[%zu]", i);
        const json_t *e = json_array_get(shape, i);
        /* H and W may be free; channels and features fix the first layer's weights. */
        if (i == 0) {
            TRY(int_value(&c, field, e, 1, SPEC_MAX_DIM, POSITIVE, &m->input_dims[i]));
        } else if (json_is_null(e)) {
            m->input_dims[i] = -1;
        } else {
            TRY(int_value(&c, field, e, -1, SPEC_MAX_DIM, POSITIVE " or -1", &m->input_dims[i]));
            if (m->input_dims[i] == 0)
                return bad_value(&c, field, POSITIVE " or -1", e);
        }
    }
    return ENGINE_OK;
}

static engine_status parse_output(const pctx *top, json_t *root, spec_model *m)
{
    json_t *out;
    TRY(get_object(top, root, "output", &out));
    pctx c = {top->err, top->errlen, "output.", false};
    if (!out) {
        snprintf(m->output_name, sizeof m->output_name, "logits");
        return ENGINE_OK;
    }
    TRY(check_keys(&c, out, output_keys, "output"));
    TRY(get_name(&c, out, "name", "logits", m->output_name));

    const json_t *labels = json_object_get(out, "labels");
    if (!labels || json_is_null(labels))
        return ENGINE_OK;
    if (!json_is_array(labels))
        return bad_value(&c, "labels", "an array of strings", labels);
    size_t n = json_array_size(labels);
    if (n > SPEC_MAX_LABELS)
        return engine_fail(c.err, c.errlen, ENGINE_E_MODEL,
                           "output.labels has %zu entries, more than the limit of %d", n,
                           SPEC_MAX_LABELS);
    if (n == 0)
        return ENGINE_OK;
    m->labels = calloc(n, sizeof *m->labels);
    if (!m->labels)
        return engine_fail(c.err, c.errlen, ENGINE_E_NOMEM, "out of memory for %zu labels", n);
    /* Counted before filling, so that spec_destroy frees whatever was copied on an error. */
    m->n_labels = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(labels, i);
        char field[FIELD_LEN];
        snprintf(field, sizeof field, "labels[%zu]", i);
        if (!json_is_string(e) || json_string_length(e) >= SPEC_MAX_LABEL_LEN)
            return bad_value(&c, field, "a string shorter than 256 bytes", e);
        m->labels[i] = strdup(json_string_value(e));
        if (!m->labels[i])
            return engine_fail(c.err, c.errlen, ENGINE_E_NOMEM, "out of memory for labels");
    }
    return ENGINE_OK;
}

/* Reads "mean" or "std": one number for every channel or an array of C numbers. */
static engine_status per_channel(const pctx *c, json_t *pre, const char *key, int channels,
                                 double def, bool positive, double out[3])
{
    const char *expect = positive ? "a positive number or an array of one per channel"
                                  : "a number or an array of "
                                    "one per channel";
    for (int i = 0; i < RGB_CHANNELS; i++)
        out[i] = def;
    const json_t *v = json_object_get(pre, key);
    if (!v)
        return ENGINE_OK;
    if (json_is_number(v)) {
        double x = json_number_value(v);
        if (positive && !(x > 0))
            return bad_value(c, key, expect, v);
        for (int i = 0; i < RGB_CHANNELS; i++)
            out[i] = x;
        return ENGINE_OK;
    }
    if (!json_is_array(v) || json_array_size(v) != (size_t)channels)
        return bad_value(c, key, expect, v);
    for (int i = 0; i < channels; i++) {
        const json_t *e = json_array_get(v, (size_t)i);
        if (!json_is_number(e) || (positive && !(json_number_value(e) > 0)))
            return bad_value(c, key, expect, v);
        out[i] = json_number_value(e);
    }
    return ENGINE_OK;
}

static engine_status parse_preprocess(const pctx *top, json_t *root, spec_model *m)
{
    spec_preprocess *p = &m->preprocess;
    json_t *pre;
    TRY(get_object(top, root, "preprocess", &pre));
    pctx c = {top->err, top->errlen, "preprocess.", false};

    /* The defaults are filled even without the section, for a server that decodes images anyway. */
    int64_t channels = m->input_rank == 3 ? m->input_dims[0] : 0;
    spec_color def = channels == GRAY_CHANNELS  ? SPEC_COLOR_GRAY
                     : channels == RGB_CHANNELS ? SPEC_COLOR_RGB
                                                : SPEC_COLOR_NONE;
    p->color = def;
    p->scale = DEFAULT_PIXEL_SCALE;
    for (int i = 0; i < RGB_CHANNELS; i++) {
        p->mean[i] = 0;
        p->std[i] = 1;
    }
    if (!pre)
        return ENGINE_OK;
    p->present = true;
    TRY(check_keys(&c, pre, preprocess_keys, "preprocess"));
    if (def == SPEC_COLOR_NONE)
        return engine_fail(c.err, c.errlen, ENGINE_E_MODEL,
                           "preprocess needs an image input: input.shape must be [1, H, W] (gray) "
                           "or [3, H, W] (rgb)");

    static const char *const colors[] = {"gray", "rgb", NULL};
    int color = 0;
    TRY(get_choice(&c, pre, "color", colors, def == SPEC_COLOR_GRAY ? 0 : 1, "\"gray\" or \"rgb\"",
                   &color));
    p->color = color == 0 ? SPEC_COLOR_GRAY : SPEC_COLOR_RGB;
    /* An image converted to one colour model gives that model's channel count, so the two must
     * agree or every image request would fail at the first layer. */
    if (p->color != def)
        return engine_fail(c.err, c.errlen, ENGINE_E_MODEL,
                           "preprocess.color \"%s\" gives %d channel(s), but input.shape[0] is "
                           "%" PRId64,
                           colors[color], color == 0 ? GRAY_CHANNELS : RGB_CHANNELS, channels);

    static const char *const resize_expect = "a pair [H, W] of positive integers";
    const json_t *resize = json_object_get(pre, "resize");
    p->resize[0] = p->resize[1] = 0;
    if (resize && !json_is_array(resize))
        return bad_value(&c, "resize", resize_expect, resize);
    if (resize)
        TRY(pair_value(&c, "resize", resize, 1, SPEC_MAX_DIM, false, resize_expect, p->resize));
    for (int j = 0; j < 2; j++) {
        int64_t fixed = m->input_dims[1 + j];
        if (p->resize[j] != 0 && fixed != -1 && p->resize[j] != fixed)
            return engine_fail(
                c.err, c.errlen, ENGINE_E_MODEL,
                "preprocess.resize [%" PRId64 ", %" PRId64 "] does not match input.shape [%" PRId64
                ", %" PRId64 ", %" PRId64 "]",
                p->resize[0], p->resize[1], m->input_dims[0], m->input_dims[1], m->input_dims[2]);
    }
    TRY(get_number(&c, pre, "scale", DEFAULT_PIXEL_SCALE, 0, true, 1e300, "a positive number",
                   &p->scale));
    TRY(per_channel(&c, pre, "mean", (int)channels, 0, false, p->mean));
    TRY(per_channel(&c, pre, "std", (int)channels, 1, true, p->std));
    return get_bool(&c, pre, "invert", false, &p->invert);
}

static engine_status parse_layers(const pctx *top, json_t *root, spec_model *m)
{
    json_t *layers = json_object_get(root, "layers");
    if (!layers)
        return missing(top, "layers");
    if (!json_is_array(layers) || json_array_size(layers) == 0)
        return bad_value(top, "layers", "a non-empty array", layers);
    size_t n = json_array_size(layers);
    if (n > SPEC_MAX_LAYERS)
        return engine_fail(top->err, top->errlen, ENGINE_E_MODEL,
                           "layers has %zu entries, more than the limit of %d", n, SPEC_MAX_LAYERS);
    m->layers = calloc(n, sizeof *m->layers);
    if (!m->layers)
        return engine_fail(top->err, top->errlen, ENGINE_E_NOMEM, "out of memory for %zu layers",
                           n);
    m->n_layers = n;
    for (size_t i = 0; i < n; i++)
        TRY(parse_layer(json_array_get(layers, i), (int)i, &m->layers[i], top->err, top->errlen));
    return ENGINE_OK;
}

static engine_status parse_weights(const pctx *c, json_t *root, spec_model *m)
{
    const json_t *w = json_object_get(root, "weights");
    if (!w || json_is_null(w))
        return ENGINE_OK;
    static const char *const expect =
        "a file name in the model folder (no '/', not \".\" or \"..\") or null";
    if (!json_is_string(w))
        return bad_value(c, "weights", expect, w);
    const char *s = json_string_value(w);
    size_t n = strlen(s);
    if (n == 0 || n >= WEIGHTS_NAME_MAX || strchr(s, '/') || strcmp(s, ".") == 0 ||
        strcmp(s, "..") == 0)
        return bad_value(c, "weights", expect, w);
    m->weights = strdup(s);
    if (!m->weights)
        return engine_fail(c->err, c->errlen, ENGINE_E_NOMEM, "out of memory");
    return ENGINE_OK;
}

static engine_status parse_model(const pctx *c, json_t *root, spec_model *m)
{
    TRY(check_keys(c, root, top_keys, "model.json"));

    const json_t *name = json_object_get(root, "name");
    if (!name)
        return missing(c, "name");
    if (!json_is_string(name) || !valid_name(json_string_value(name), SPEC_MAX_NAME) ||
        strcmp(json_string_value(name), ".") == 0 || strcmp(json_string_value(name), "..") == 0)
        return bad_value(c, "name", NAME_EXPECT, name);
    snprintf(m->name, sizeof m->name, "%s", json_string_value(name));

    const json_t *description = json_object_get(root, "description");
    if (description && !json_is_string(description))
        return bad_value(c, "description", "a string", description);

    TRY(parse_weights(c, root, m));
    int64_t seed;
    TRY(get_int(c, root, "seed", false, 0, 0, INT64_MAX, "a non-negative integer", &seed));
    m->seed = (uint64_t)seed;

    TRY(parse_input(c, root, m));
    TRY(parse_output(c, root, m));

    int64_t batch;
    TRY(get_int(c, root, "max_batch_size", false, DEFAULT_MAX_BATCH, 1, SPEC_MAX_BATCH, POSITIVE,
                &batch));
    m->max_batch_size = (int)batch;
    json_t *batching;
    TRY(get_object(c, root, "dynamic_batching", &batching));
    m->max_queue_delay_us = 0;
    if (batching) {
        pctx bc = {c->err, c->errlen, "dynamic_batching.", false};
        TRY(check_keys(&bc, batching, batching_keys, "dynamic_batching"));
        TRY(get_int(&bc, batching, "max_queue_delay_us", false, 0, 0, MAX_QUEUE_DELAY_US,
                    "a non-negative integer", &m->max_queue_delay_us));
    }

    TRY(parse_preprocess(c, root, m));
    static const char *const precisions[] = {"f32", "bf16", NULL};
    int precision;
    TRY(get_choice(c, root, "precision", precisions, 0, "\"f32\" or \"bf16\"", &precision));
    m->precision = precision == 0 ? SPEC_F32 : SPEC_BF16;

    return parse_layers(c, root, m);
}

engine_status spec_parse(const char *json, size_t len, spec_model **out, char *err, size_t errlen)
{
    json_t *root = NULL;
    spec_model *m = NULL;
    engine_status st;
    pctx top = {err, errlen, "", false};

    assert(out);
    assert(json || len == 0);
    *out = NULL;
    if (len > SPEC_MAX_JSON)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "model.json is %zu bytes, more than the limit of %d", len,
                           SPEC_MAX_JSON);
    json_error_t jerr;
    root = json_loadb(json ? json : "", len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "model.json is not valid JSON: line %d column %d: %s", jerr.line,
                           jerr.column, jerr.text);
    if (!json_is_object(root)) {
        st = bad_value(&top, "model.json", "a JSON object", root);
        goto fail;
    }
    m = calloc(1, sizeof *m);
    if (!m) {
        st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
        goto fail;
    }
    st = parse_model(&top, root, m);
    if (st != ENGINE_OK)
        goto fail;
    json_decref(root);
    *out = m;
    return ENGINE_OK;

fail:
    json_decref(root);
    spec_destroy(m);
    return st;
}

void spec_destroy(spec_model *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_labels; i++)
        free(m->labels[i]);
    free(m->labels);
    free(m->weights);
    free(m->layers);
    free(m);
}

/* ------------------------------------------------------------------------------------------ */
/* Shape inference                                                                             */

char *spec_shape_format(const spec_shape *s, char *buf, size_t len)
{
    if (!buf || len == 0)
        return buf;
    int rank = s->rank < 0 ? 0 : s->rank > SPEC_MAX_RANK ? SPEC_MAX_RANK : s->rank;
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i <= rank && used < len; i++) {
        int n = i < rank ? snprintf(buf + used, len - used, "%s%" PRId64, i ? "," : "[", s->d[i])
                         : snprintf(buf + used, len - used, "%s]", rank ? "" : "[");
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}

/* Elements per sample (dims 1..rank-1), skipping unknown dims; -1 when beyond the cap. */
static int64_t sample_elems(const spec_shape *s)
{
    int64_t total = 1;
    for (int i = 1; i < s->rank; i++) {
        if (s->d[i] < 0)
            continue;
        if (__builtin_mul_overflow(total, s->d[i], &total) || total > MAX_SAMPLE_ELEMS)
            return -1;
    }
    return total;
}

/* What a layer sees while inference runs: its label for messages and the request's input. */
typedef struct {
    const spec_layer *l;
    char label[PREFIX_LEN]; /* "layer 7 Linear 'fc.0'" */
    const char *input;      /* "[1,3,30,30]" */
    char *err;
    size_t errlen;
} ictx;

static int64_t floor_div(int64_t a, int64_t b)
{
    return a >= 0 ? a / b : -((-a + b - 1) / b);
}

/* One spatial dim of a convolution or pooling window, by PyTorch's formula. *pad_r comes in as the
 * symmetric padding and leaves as the right padding that makes oneDNN's formula give the same size:
 * with ceil_mode the last window may overhang, and a window that would start in the right padding
 * is dropped, as in PyTorch's pooling_output_shape. */
static int64_t window_out(int64_t h, int64_t k, int64_t s, int64_t d, int64_t pad_l, int64_t *pad_r,
                          bool ceil_mode)
{
    int64_t span = d * (k - 1) + 1;
    int64_t room = h + pad_l + *pad_r - span;
    if (!ceil_mode)
        return floor_div(room, s) + 1;
    int64_t o = floor_div(room + s - 1, s) + 1;
    if (o >= 1 && (o - 1) * s >= h + pad_l)
        o--;
    int64_t right = (o - 1) * s + span - h - pad_l;
    if (o >= 1 && right > *pad_r)
        *pad_r = right;
    return o;
}

static engine_status need_rank4(const ictx *c, const spec_shape *s)
{
    if (s->rank == 4)
        return ENGINE_OK;
    char got[SHAPE_TEXT_LEN];
    return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                       "%s expects a [N, C, H, W] input, input %s gives %s", c->label, c->input,
                       spec_shape_format(s, got, sizeof got));
}

/* Height and width through a convolution or pooling window; fills the pads actually applied. */
static engine_status infer_window(const ictx *c, spec_shape *s, spec_padding *pad)
{
    static const char *const dim_names[2] = {"height", "width"};
    const spec_layer *l = c->l;
    bool ceil_mode = (l->op == SPEC_MAXPOOL2D || l->op == SPEC_AVGPOOL2D) && l->ceil_mode;
    for (int j = 0; j < 2; j++) {
        int64_t pl = l->padding[j], pr = l->padding[j];
        if (l->pad_mode == SPEC_PAD_VALID) {
            pl = pr = 0;
        } else if (l->pad_mode == SPEC_PAD_SAME) {
            /* PyTorch puts the odd pixel of an even kernel on the right (bottom). */
            int64_t total = l->dilation[j] * (l->kernel[j] - 1);
            pl = total / 2;
            pr = total - pl;
        }
        int64_t h = s->d[2 + j];
        int64_t o = -1;
        if (h >= 0) {
            o = window_out(h, l->kernel[j], l->stride[j], l->dilation[j], pl, &pr, ceil_mode);
            if (o < 1) {
                int64_t span = l->dilation[j] * (l->kernel[j] - 1) + 1;
                int64_t need = span - l->padding[j] * 2 - (ceil_mode ? l->stride[j] - 1 : 0);
                if (l->pad_mode == SPEC_PAD_VALID)
                    need = span;
                return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                                   "%s expects a %s of at least %" PRId64 " (kernel %" PRId64
                                   " dilation %" PRId64 " stride %" PRId64 " padding %" PRId64
                                   "+%" PRId64 "), input %s gives %" PRId64
                                   ": the output %s would be %" PRId64,
                                   c->label, dim_names[j], need, l->kernel[j], l->dilation[j],
                                   l->stride[j], pl, pr, c->input, h, dim_names[j], o);
            }
        }
        s->d[2 + j] = o;
        pad->pad_l[j] = pl;
        pad->pad_r[j] = pr;
    }
    return ENGINE_OK;
}

static engine_status infer_adaptive(const ictx *c, spec_shape *s)
{
    static const char *const dim_names[2] = {"height", "width"};
    for (int j = 0; j < 2; j++) {
        int64_t h = s->d[2 + j], o = c->l->output_size[j];
        if (o == -1) {
            continue; /* null: this dim keeps the input's size */
        }
        /* oneDNN has no adaptive pooling; it is plain average pooling with kernel = stride =
         * H / o, which is exactly PyTorch's result only when o divides H. */
        if (h >= 0 && h % o != 0)
            return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                               "%s supports only output sizes that divide the input (or 1): it "
                               "expects a %s divisible by %" PRId64 ", input %s gives %" PRId64,
                               c->label, dim_names[j], o, c->input, h);
        s->d[2 + j] = o;
    }
    return ENGINE_OK;
}

static engine_status infer_flatten(const ictx *c, spec_shape *s)
{
    int start = c->l->start_dim < 0 ? c->l->start_dim + s->rank : c->l->start_dim;
    int end = c->l->end_dim < 0 ? c->l->end_dim + s->rank : c->l->end_dim;
    if (start != 1 || end != s->rank - 1)
        return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                           "%s supports only start_dim 1 through the last dim, got start_dim %d "
                           "end_dim %d on a %d-D tensor (input %s)",
                           c->label, c->l->start_dim, c->l->end_dim, s->rank, c->input);
    int64_t f = 1;
    for (int i = 1; i < s->rank; i++) {
        /* The cap on elements per sample keeps this product from overflowing. */
        f = (f < 0 || s->d[i] < 0) ? -1 : f * s->d[i];
    }
    s->rank = 2;
    s->d[1] = f;
    s->d[2] = s->d[3] = 0;
    return ENGINE_OK;
}

static engine_status infer_softmax(const ictx *c, const spec_shape *s)
{
    int dim = c->l->dim < 0 ? c->l->dim + s->rank : c->l->dim;
    if (dim == 1)
        return ENGINE_OK;
    return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                       "%s supports only dim 1 (the channels or features) of a %d-D tensor, got "
                       "dim %d (input %s)",
                       c->label, s->rank, c->l->dim, c->input);
}

static engine_status infer_layer(const ictx *c, spec_shape *s, spec_padding *pad)
{
    const spec_layer *l = c->l;
    switch (l->op) {
    case SPEC_CONV2D:
        TRY(need_rank4(c, s));
        if (s->d[1] >= 0 && s->d[1] != l->in_channels)
            return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                               "%s expects %" PRId64 " input channels, input %s gives %" PRId64,
                               c->label, l->in_channels, c->input, s->d[1]);
        TRY(infer_window(c, s, pad));
        s->d[1] = l->out_channels;
        return ENGINE_OK;
    case SPEC_BATCHNORM2D:
        TRY(need_rank4(c, s));
        if (s->d[1] >= 0 && s->d[1] != l->num_features)
            return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                               "%s expects %" PRId64 " channels, input %s gives %" PRId64, c->label,
                               l->num_features, c->input, s->d[1]);
        return ENGINE_OK;
    case SPEC_LINEAR:
        if (s->rank != 2) {
            char got[SHAPE_TEXT_LEN];
            return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                               "%s expects a flattened [N, F] input; add Flatten before it "
                               "(input %s gives %s)",
                               c->label, c->input, spec_shape_format(s, got, sizeof got));
        }
        if (s->d[1] >= 0 && s->d[1] != l->in_features)
            return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                               "%s expects %" PRId64 " features, input %s gives %" PRId64, c->label,
                               l->in_features, c->input, s->d[1]);
        s->d[1] = l->out_features;
        return ENGINE_OK;
    case SPEC_FLATTEN:
        return infer_flatten(c, s);
    case SPEC_SOFTMAX:
    case SPEC_LOGSOFTMAX:
        return infer_softmax(c, s);
    case SPEC_MAXPOOL2D:
    case SPEC_AVGPOOL2D:
        TRY(need_rank4(c, s));
        return infer_window(c, s, pad);
    case SPEC_ADAPTIVEAVGPOOL2D:
        TRY(need_rank4(c, s));
        return infer_adaptive(c, s);
    case SPEC_RELU:
    case SPEC_LEAKYRELU:
    case SPEC_SIGMOID:
    case SPEC_TANH:
    case SPEC_GELU:
    case SPEC_DROPOUT:
    case SPEC_DROPOUT2D:
    case SPEC_IDENTITY:
    case SPEC_OP_COUNT:
        break;
    }
    return ENGINE_OK;
}

/* Checks the request's shape against the model's input: rank, channels or features, and (with
 * check_hw) a fixed H and W. The H and W check runs after the layers, so that an input the layers
 * cannot take gets the precise layer message ("layer 7 Linear 'fc.0' expects 36864 features ...")
 * rather than a bare mismatch. */
static engine_status check_input(const spec_model *m, const spec_shape *s, const char *text,
                                 bool check_hw, char *err, size_t errlen)
{
    for (int i = 0; i < s->rank; i++) {
        if (s->d[i] == 0 || s->d[i] < -1)
            return engine_fail(err, errlen, ENGINE_E_INPUT,
                               "input shape %s has dimension %d of %" PRId64
                               ": dimensions must be positive",
                               text, i, s->d[i]);
    }
    bool match = s->rank == m->input_rank + 1;
    for (int i = 0; match && i < m->input_rank; i++) {
        int64_t want = m->input_dims[i], got = s->d[1 + i];
        match = want == -1 || got == -1 || want == got || (i > 0 && !check_hw);
    }
    if (!match) {
        char want[SHAPE_TEXT_LEN];
        size_t used = (size_t)snprintf(want, sizeof want, "[N");
        for (int i = 0; i < m->input_rank && used < sizeof want; i++)
            used +=
                (size_t)snprintf(want + used, sizeof want - used, ",%" PRId64, m->input_dims[i]);
        if (used < sizeof want)
            snprintf(want + used, sizeof want - used, "]");
        return engine_fail(err, errlen, ENGINE_E_INPUT,
                           "input shape %s does not match the model input %s", text, want);
    }
    int64_t per_sample = sample_elems(s), total;
    if (per_sample < 0 || (s->d[0] > 0 && __builtin_mul_overflow(per_sample, s->d[0], &total)))
        return engine_fail(err, errlen, ENGINE_E_INPUT,
                           "input shape %s has more than %" PRId64 " elements per sample", text,
                           MAX_SAMPLE_ELEMS);
    return ENGINE_OK;
}

engine_status spec_infer(const spec_model *m, const int64_t *in, int rank, spec_shape *out,
                         spec_padding *pads, int *bad_layer, char *err, size_t errlen)
{
    int ignored;
    if (!bad_layer)
        bad_layer = &ignored;
    *bad_layer = -1;
    assert(m);
    if (rank != 4 && rank != 2)
        return engine_fail(err, errlen, ENGINE_E_INPUT,
                           "input shape must have 4 dims [N, C, H, W] or 2 dims [N, F], got %d",
                           rank);
    assert(in);

    spec_shape s = {.rank = rank};
    for (int i = 0; i < rank; i++)
        s.d[i] = in[i];
    char text[SHAPE_TEXT_LEN];
    spec_shape_format(&s, text, sizeof text);
    TRY(check_input(m, &s, text, false, err, errlen));

    for (size_t i = 0; i < m->n_layers; i++) {
        ictx c = {.l = &m->layers[i], .input = text, .err = err, .errlen = errlen};
        if (c.l->name[0])
            snprintf(c.label, sizeof c.label, "layer %zu %s '%s'", i, spec_op_name(c.l->op),
                     c.l->name);
        else
            snprintf(c.label, sizeof c.label, "layer %zu %s", i, spec_op_name(c.l->op));
        spec_padding pad = {{0, 0}, {0, 0}};
        engine_status st = infer_layer(&c, &s, &pad);
        if (st == ENGINE_OK && sample_elems(&s) < 0) {
            char got[SHAPE_TEXT_LEN];
            st = engine_fail(
                err, errlen, ENGINE_E_INPUT,
                "%s output %s would have more than %" PRId64 " elements per sample (input %s)",
                c.label, spec_shape_format(&s, got, sizeof got), MAX_SAMPLE_ELEMS, text);
        }
        if (st != ENGINE_OK) {
            *bad_layer = (int)i;
            return st;
        }
        if (out)
            out[i] = s;
        if (pads)
            pads[i] = pad;
    }
    spec_shape in_shape = {.rank = rank};
    for (int i = 0; i < rank; i++)
        in_shape.d[i] = in[i];
    return check_input(m, &in_shape, text, true, err, errlen);
}

int64_t spec_layer_params(const spec_layer *l)
{
    /* Parsing capped each weight tensor at 2^31 elements, so these products cannot overflow. */
    switch (l->op) {
    case SPEC_CONV2D:
        return l->out_channels * (l->in_channels / l->groups) * l->kernel[0] * l->kernel[1] +
               (l->bias ? l->out_channels : 0);
    case SPEC_LINEAR:
        return l->in_features * l->out_features + (l->bias ? l->out_features : 0);
    case SPEC_BATCHNORM2D:
        return l->affine ? 2 * l->num_features : 0;
    default:
        return 0;
    }
}
