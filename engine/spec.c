/* spec.c - reads model.json into a spec_model: fields with PyTorch's defaults, and the layer graph.
 */
#include "spec.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Text buffer sizes. A layer prefix is a layer label and ": ". */
enum {
    PREFIX_LEN = SPEC_LABEL_LEN + 4,
    VALUE_TEXT_LEN = 64,   /* a JSON value quoted in a message, truncated with "..." */
    SMALL_ARRAY = 4,       /* arrays up to this size are quoted in messages, longer ones counted */
    KEY_LIST_LEN = 320,    /* "(Conv2d takes: name, in_channels, ...)" */
    SHAPE_TEXT_LEN = 112,  /* "[N,C,H,W]" with four 20-digit numbers */
    FIELD_LEN = 64,        /* "shape[1]", "labels[99999]" */
    ERR_TEXT_LEN = 512,    /* a message before its layer label is put in front */
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
    "name",      "description",    "weights",          "seed",       "input",
    "output",    "max_batch_size", "dynamic_batching", "preprocess", "precision",
    "instances", "threads",        "layers",           NULL};
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
static const char *const depth_keys[] = {"op", "name", "p", "mode", NULL};
static const char *const cat_keys[] = {"op", "name", "dim", NULL};
static const char *const mean_keys[] = {"op", "name", "dim", "keepdim", NULL};
/* Every layer may also say who it is and what it reads. */
static const char *const graph_keys[] = {"id", "inputs", NULL};

static const char *const *const op_keys[SPEC_OP_COUNT] = {
    [SPEC_CONV2D] = conv_keys,
    [SPEC_BATCHNORM2D] = bn_keys,
    [SPEC_LINEAR] = linear_keys,
    [SPEC_FLATTEN] = flatten_keys,
    [SPEC_RELU] = inplace_keys,
    [SPEC_LEAKYRELU] = leaky_keys,
    [SPEC_SIGMOID] = bare_keys,
    [SPEC_TANH] = bare_keys,
    [SPEC_GELU] = gelu_keys,
    [SPEC_SOFTMAX] = softmax_keys,
    [SPEC_LOGSOFTMAX] = softmax_keys,
    [SPEC_MAXPOOL2D] = maxpool_keys,
    [SPEC_AVGPOOL2D] = avgpool_keys,
    [SPEC_ADAPTIVEAVGPOOL2D] = adaptive_keys,
    [SPEC_DROPOUT] = dropout_keys,
    [SPEC_DROPOUT2D] = dropout_keys,
    [SPEC_IDENTITY] = bare_keys,
    [SPEC_RELU6] = inplace_keys,
    [SPEC_HARDSWISH] = inplace_keys,
    [SPEC_HARDSIGMOID] = inplace_keys,
    [SPEC_SILU] = inplace_keys,
    [SPEC_STOCHASTICDEPTH] = depth_keys,
    [SPEC_ADD] = bare_keys,
    [SPEC_MUL] = bare_keys,
    [SPEC_CAT] = cat_keys,
    [SPEC_MEAN] = mean_keys,
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
        for (size_t i = 0; c->layer && graph_keys[i] && !known; i++)
            known = strcmp(key, graph_keys[i]) == 0;
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
        for (size_t i = 0; c->layer && graph_keys[i]; i++) {
            int n = snprintf(list + used, sizeof list - used, ", %s", graph_keys[i]);
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
/* What "inputs" calls the model input. */
#define INPUT_REF "input"

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
    return ENGINE_OK;
}

/* Mean: x.mean(dim, keepdim) over the two spatial dims, given as a list ([2, 3], [-1, -2]...). */
static engine_status parse_mean(const pctx *c, json_t *o, spec_layer *l)
{
    static const char *const expect = "a list of the two spatial dims, e.g. [2, 3]";
    const json_t *v = json_object_get(o, "dim");
    if (!v)
        return missing(c, "dim");
    if (!json_is_array(v) || json_array_size(v) != 2)
        return bad_value(c, "dim", expect, v);
    for (size_t i = 0; i < 2; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_integer(e) || json_integer_value(e) < MIN_DIM_INDEX ||
            json_integer_value(e) > MAX_DIM_INDEX)
            return bad_value(c, "dim", expect, v);
        l->mean_dims[i] = (int)json_integer_value(e);
    }
    return get_bool(c, o, "keepdim", false, &l->keepdim);
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
    case SPEC_RELU6:
    case SPEC_HARDSWISH:
    case SPEC_HARDSIGMOID:
    case SPEC_SILU:
    case SPEC_DROPOUT:
    case SPEC_DROPOUT2D:
        /* In eval mode dropout is the identity; p is still checked as PyTorch checks it. */
        if (l->op == SPEC_DROPOUT || l->op == SPEC_DROPOUT2D) {
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
    case SPEC_STOCHASTICDEPTH: {
        /* torchvision's StochasticDepth(p, mode): the identity in eval, both arguments required. */
        double p;
        static const char *const modes[] = {"row", "batch", NULL};
        int mode;
        if (!json_object_get(o, "p"))
            return missing(c, "p");
        TRY(get_number(c, o, "p", 0, 0, false, 1, "a number from 0 to 1", &p));
        if (!json_object_get(o, "mode"))
            return missing(c, "mode");
        return get_choice(c, o, "mode", modes, 0, "\"row\" or \"batch\"", &mode);
    }
    case SPEC_CAT: {
        /* torch.cat's default dim is 0; shape inference accepts only the channel dim. */
        int64_t dim;
        TRY(get_int(c, o, "dim", false, 0, MIN_DIM_INDEX, MAX_DIM_INDEX, "an integer from -4 to 3",
                    &dim));
        l->dim = (int)dim;
        return ENGINE_OK;
    }
    case SPEC_MEAN:
        return parse_mean(c, o, l);
    case SPEC_SIGMOID:
    case SPEC_TANH:
    case SPEC_IDENTITY:
    case SPEC_ADD:
    case SPEC_MUL:
    case SPEC_OP_COUNT:
        break;
    }
    return ENGINE_OK;
}

bool spec_op_has_weights(spec_op op)
{
    return op == SPEC_CONV2D || op == SPEC_BATCHNORM2D || op == SPEC_LINEAR;
}

bool spec_op_is_noop(spec_op op)
{
    return op == SPEC_DROPOUT || op == SPEC_DROPOUT2D || op == SPEC_IDENTITY ||
           op == SPEC_STOCHASTICDEPTH;
}

bool spec_op_is_activation(spec_op op)
{
    switch (op) {
    case SPEC_RELU:
    case SPEC_LEAKYRELU:
    case SPEC_SIGMOID:
    case SPEC_TANH:
    case SPEC_GELU:
    case SPEC_RELU6:
    case SPEC_HARDSWISH:
    case SPEC_HARDSIGMOID:
    case SPEC_SILU:
        return true;
    default:
        return false;
    }
}

int spec_op_min_inputs(spec_op op)
{
    return op == SPEC_ADD || op == SPEC_MUL ? 2 : 1;
}

int spec_op_max_inputs(spec_op op)
{
    return op == SPEC_ADD || op == SPEC_CAT ? SPEC_MAX_INPUTS : op == SPEC_MUL ? 2 : 1;
}

char *spec_layer_label(const spec_model *m, size_t i, char *buf, size_t len)
{
    const spec_layer *l = &m->layers[i];
    const char *who = l->name[0] ? l->name : l->id;
    if (who[0])
        snprintf(buf, len, "layer %zu %s '%s'", i, spec_op_name(l->op), who);
    else
        snprintf(buf, len, "layer %zu %s", i, spec_op_name(l->op));
    return buf;
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

    snprintf(prefix, sizeof prefix, "layer %d %s: ", index, op_names[l->op]);
    TRY(get_name(&c, o, "name", "", l->name));
    if (l->name[0] == '\0' && spec_op_has_weights(l->op))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "%sname is required: it is the state_dict prefix of the layer's "
                           "tensors (\"conv.0\" for conv.0.weight)",
                           prefix);
    TRY(get_name(&c, o, "id", "", l->id));
    if (!strcmp(l->id, INPUT_REF))
        return engine_fail(err, errlen, ENGINE_E_MODEL,
                           "%sid \"%s\" is reserved for the model input", prefix, INPUT_REF);
    const char *who = l->name[0] ? l->name : l->id;
    if (who[0])
        snprintf(prefix, sizeof prefix, "layer %d %s '%s': ", index, op_names[l->op], who);

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

/* ------------------------------------------------------------------------------------------ */
/* The graph: keys, references, consumers                                                       */

/* Layers are found by key (id, else name) through a small open-addressing table, so that a model
 * with thousands of layers and references resolves in linear time. */
typedef struct {
    const char *key;
    int first; /* the first layer with this key */
    int count; /* how many layers have it */
} key_slot;

typedef struct {
    key_slot *slots;
    size_t mask;
} key_table;

static const char *layer_key(const spec_layer *l)
{
    return l->id[0] ? l->id : l->name;
}

static key_slot *key_find(const key_table *t, const char *key)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    for (size_t i = (size_t)h & t->mask;; i = (i + 1) & t->mask) {
        key_slot *slot = &t->slots[i];
        if (!slot->key || !strcmp(slot->key, key))
            return slot;
    }
}

static engine_status fail_at(const pctx *top, const spec_model *m, size_t i, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* "layer 9 Add 'add': " followed by the message. */
static engine_status fail_at(const pctx *top, const spec_model *m, size_t i, const char *fmt, ...)
{
    char label[SPEC_LABEL_LEN], msg[ERR_TEXT_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return engine_fail(top->err, top->errlen, ENGINE_E_MODEL, "%s: %s",
                       spec_layer_label(m, i, label, sizeof label), msg);
}

/* Resolves one reference of layer i into *out (SPEC_INPUT or an earlier layer's index). */
static engine_status resolve_ref(const pctx *top, const spec_model *m, const key_table *keys,
                                 size_t i, const json_t *ref, int *out)
{
    char got[VALUE_TEXT_LEN], other[SPEC_LABEL_LEN];
    if (!json_is_string(ref))
        return fail_at(top, m, i,
                       "inputs must hold strings (\"input\" or an earlier layer's id or "
                       "name), got %s",
                       describe(ref, got, sizeof got));
    const char *name = json_string_value(ref);
    if (!strcmp(name, INPUT_REF)) {
        *out = SPEC_INPUT;
        return ENGINE_OK;
    }
    const key_slot *slot = name[0] ? key_find(keys, name) : NULL;
    if (!slot || !slot->key)
        return fail_at(top, m, i,
                       "input %s names no layer (a reference is \"input\" or the id, "
                       "else the name, of an earlier layer)",
                       describe(ref, got, sizeof got));
    if (slot->count > 1) {
        size_t second = (size_t)slot->first + 1;
        while (strcmp(layer_key(&m->layers[second]), name))
            second++;
        return fail_at(top, m, i,
                       "input '%s' is ambiguous: layers %d and %zu (and %d in all) are "
                       "called that; give them distinct ids",
                       name, slot->first, second, slot->count);
    }
    if ((size_t)slot->first == i)
        return fail_at(top, m, i, "input '%s' names the layer itself", name);
    if ((size_t)slot->first > i)
        return fail_at(top, m, i,
                       "input '%s' names %s, which comes later: layers are listed in "
                       "execution order",
                       name, spec_layer_label(m, (size_t)slot->first, other, sizeof other));
    *out = slot->first;
    return ENGINE_OK;
}

/* Reads every layer's "inputs" (or takes the previous layer), checks ids, arity and that every
 * output is used, and counts each layer's consumers. */
static engine_status parse_graph(const pctx *top, json_t *layers, spec_model *m)
{
    engine_status st = ENGINE_OK;
    size_t n = m->n_layers, cap = 16, refs = 0;
    while (cap < 2 * n)
        cap *= 2;
    key_table keys = {calloc(cap, sizeof *keys.slots), cap - 1};
    m->consumers = calloc(n, sizeof *m->consumers);
    if (!keys.slots || !m->consumers) {
        st = engine_fail(top->err, top->errlen, ENGINE_E_NOMEM, "out of memory for %zu layers", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const char *key = layer_key(&m->layers[i]);
        if (!key[0])
            continue;
        key_slot *slot = key_find(&keys, key);
        if (!slot->key) {
            slot->key = key;
            slot->first = (int)i;
        }
        slot->count++;
        /* An explicit id names one layer only: no other id or name may equal it. */
        if (slot->count > 1 && (m->layers[i].id[0] || m->layers[slot->first].id[0])) {
            char other[SPEC_LABEL_LEN];
            st = fail_at(top, m, i, "id '%s' is already the key of %s; ids must be unique", key,
                         spec_layer_label(m, (size_t)slot->first, other, sizeof other));
            goto done;
        }
    }

    bool input_used = false;
    for (size_t i = 0; i < n; i++) {
        spec_layer *l = &m->layers[i];
        const json_t *given = json_object_get(json_array_get(layers, i), "inputs");
        int lo = spec_op_min_inputs(l->op), hi = spec_op_max_inputs(l->op);
        size_t count = 1;
        if (given) {
            char got[VALUE_TEXT_LEN];
            if (!json_is_array(given) || json_array_size(given) == 0) {
                st = fail_at(top, m, i, "inputs must be a non-empty array of references, got %s",
                             describe(given, got, sizeof got));
                goto done;
            }
            count = json_array_size(given);
        }
        if (count < (size_t)lo || count > (size_t)hi) {
            if (!given)
                st = fail_at(top, m, i, "needs \"inputs\": %s takes %d or more tensors",
                             spec_op_name(l->op), lo);
            else if (lo == hi)
                st = fail_at(top, m, i, "%s takes %d input%s, got %zu", spec_op_name(l->op), lo,
                             lo == 1 ? "" : "s", count);
            else
                st = fail_at(top, m, i, "%s takes %d to %d inputs, got %zu", spec_op_name(l->op),
                             lo, hi, count);
            goto done;
        }
        refs += count;
        if (refs > SPEC_MAX_REFS) {
            st =
                fail_at(top, m, i, "the layers make more than %d references in all", SPEC_MAX_REFS);
            goto done;
        }
        l->inputs = malloc(count * sizeof *l->inputs);
        if (!l->inputs) {
            st = engine_fail(top->err, top->errlen, ENGINE_E_NOMEM, "out of memory");
            goto done;
        }
        l->n_inputs = (int)count;
        l->inputs_given = given != NULL;
        for (size_t k = 0; k < count; k++) {
            if (given) {
                st = resolve_ref(top, m, &keys, i, json_array_get(given, k), &l->inputs[k]);
                if (st != ENGINE_OK)
                    goto done;
            } else {
                l->inputs[k] = i == 0 ? SPEC_INPUT : (int)i - 1;
            }
            if (l->inputs[k] == SPEC_INPUT)
                input_used = true;
            else
                m->consumers[l->inputs[k]]++;
        }
    }
    m->consumers[n - 1]++; /* the model's output */
    for (size_t i = 0; i + 1 < n; i++) {
        if (m->consumers[i] == 0) {
            st = fail_at(top, m, i,
                         "its output is not used by any later layer (an unused branch); "
                         "the model's output is the last layer");
            goto done;
        }
    }
    if (!input_used)
        st = engine_fail(top->err, top->errlen, ENGINE_E_MODEL,
                         "no layer reads the model input (\"input\")");
done:
    free(keys.slots);
    return st;
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
    return parse_graph(top, layers, m);
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

    /* Serving: inference workers and OpenMP threads each; 0 leaves them to the server. */
    int64_t instances, threads;
    TRY(get_int(c, root, "instances", false, 0, 1, SPEC_MAX_INSTANCES, POSITIVE, &instances));
    TRY(get_int(c, root, "threads", false, 0, 1, SPEC_MAX_THREADS, POSITIVE, &threads));
    m->instances = (int)instances;
    m->threads = (int)threads;

    return parse_layers(c, root, m);
}

engine_status spec_parse(const char *json, size_t len, spec_model **out, char *err, size_t errlen)
{
    json_t *root = NULL;
    spec_model *m = NULL;
    engine_status st;
    pctx top = {err, errlen, "", false};

    if (!out || (!json && len > 0))
        return engine_fail(err, errlen, ENGINE_E_MODEL, "no model.json bytes to parse");
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
    for (size_t i = 0; m->layers && i < m->n_layers; i++)
        free(m->layers[i].inputs);
    free(m->layers);
    free(m->consumers);
    free(m);
}
