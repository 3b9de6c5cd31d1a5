/* shapes.c - shape inference: PyTorch's output-size formula run through the layer graph. */
#include "spec.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    SHAPE_TEXT_LEN = 112, /* "[N,C,H,W]" with four 20-digit numbers */
    OPERAND_TEXT_LEN = SHAPE_TEXT_LEN + SPEC_LABEL_LEN + 8, /* "[1,64,8,8] (layer 5 ...)" */
};

/* A sample's activation is capped at 2^31 elements so every size computed later fits comfortably
 * in int64 and in a float buffer the runner can allocate. */
#define MAX_SAMPLE_ELEMS (INT64_C(1) << 31)

#define TRY(call)                                                                                  \
    do {                                                                                           \
        engine_status try_status_ = (call);                                                        \
        if (try_status_ != ENGINE_OK)                                                              \
            return try_status_;                                                                    \
    } while (0)

char *spec_dims_format(const int64_t *d, int rank, char *buf, size_t len)
{
    if (!buf || len == 0)
        return buf;
    rank = rank < 0 ? 0 : rank > SPEC_MAX_RANK ? SPEC_MAX_RANK : rank;
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i <= rank && used < len; i++) {
        int n = i < rank ? snprintf(buf + used, len - used, "%s%" PRId64, i ? "," : "[", d[i])
                         : snprintf(buf + used, len - used, "%s]", rank ? "" : "[");
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return buf;
}

char *spec_shape_format(const spec_shape *s, char *buf, size_t len)
{
    return spec_dims_format(s->d, s->rank, buf, len);
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

/* What a layer sees while inference runs: the model, its label for messages, the request's input,
 * and the shapes of its inputs. */
typedef struct {
    const spec_model *m;
    const spec_layer *l;
    size_t index;
    char label[SPEC_LABEL_LEN]; /* "layer 7 Linear 'fc.0'" */
    const char *input;          /* "[1,3,30,30]" */
    const spec_shape *in;       /* the shapes of the layer's inputs, in order */
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
    /* PyTorch's adaptive windows (start = floor(i * H / o), end = ceil((i + 1) * H / o)) exist
     * for every output size, larger than the input included. */
    for (int j = 0; j < 2; j++) {
        if (c->l->output_size[j] != -1) /* null keeps the input's size */
            s->d[2 + j] = c->l->output_size[j];
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

/* Normalises a dim index against a rank, as PyTorch does; -1 when out of range. */
static int norm_dim(int dim, int rank)
{
    int d = dim < 0 ? dim + rank : dim;
    return d >= 0 && d < rank ? d : -1;
}

static engine_status infer_softmax(const ictx *c, const spec_shape *s)
{
    if (norm_dim(c->l->dim, s->rank) == 1)
        return ENGINE_OK;
    return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                       "%s supports only dim 1 (the channels or features) of a %d-D tensor, got "
                       "dim %d (input %s)",
                       c->label, s->rank, c->l->dim, c->input);
}

/* "[1,64,8,8] (layer 5 BatchNorm2d 'layer1.0.bn2')" or "[1,3,8,8] (the model input)". */
static const char *operand(const ictx *c, int k, char *buf, size_t len)
{
    char shape[SHAPE_TEXT_LEN], label[SPEC_LABEL_LEN];
    int src = c->l->inputs[k];
    snprintf(buf, len, "%s (%s)", spec_shape_format(&c->in[k], shape, sizeof shape),
             src == SPEC_INPUT ? "the model input"
                               : spec_layer_label(c->m, (size_t)src, label, sizeof label));
    return buf;
}

/* Two dims agree when equal or when either is not known yet (a free H or W at load time). */
static bool dim_agrees(int64_t a, int64_t b)
{
    return a == b || a < 0 || b < 0;
}

/* Whether o has s's shape, but for dim `skip` (-1: none); dims s does not know yet take o's. */
static bool merge_dims(spec_shape *s, const spec_shape *o, int skip)
{
    if (o->rank != s->rank)
        return false;
    for (int i = 0; i < s->rank; i++) {
        if (i == skip)
            continue;
        if (!dim_agrees(s->d[i], o->d[i]))
            return false;
        if (s->d[i] < 0)
            s->d[i] = o->d[i];
    }
    return true;
}

static engine_status infer_add(const ictx *c, spec_shape *s)
{
    for (int k = 1; k < c->l->n_inputs; k++) {
        const spec_shape *o = &c->in[k];
        if (!merge_dims(s, o, -1)) {
            char a[OPERAND_TEXT_LEN], b[OPERAND_TEXT_LEN];
            return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                               "%s expects inputs of one shape, input %s gives %s and %s", c->label,
                               c->input, operand(c, 0, a, sizeof a), operand(c, k, b, sizeof b));
        }
    }
    return ENGINE_OK;
}

/* [N,C,H,W] * [N,C,1,1] (squeeze-excitation's scale), either way round, or equal shapes. An
 * operand known to be 1x1 broadcasts, even against a free H and W. */
static engine_status infer_mul(const ictx *c, spec_shape *s)
{
    const spec_shape *a = &c->in[0], *b = &c->in[1];
    if (a->rank == 4 && b->rank == 4 && dim_agrees(a->d[0], b->d[0]) &&
        dim_agrees(a->d[1], b->d[1])) {
        const spec_shape *big = b->d[2] == 1 && b->d[3] == 1   ? a
                                : a->d[2] == 1 && a->d[3] == 1 ? b
                                                               : NULL;
        if (big) {
            const spec_shape *small = big == a ? b : a;
            *s = *big;
            for (int i = 0; i < 2; i++)
                if (s->d[i] < 0)
                    s->d[i] = small->d[i];
            return ENGINE_OK;
        }
    }
    bool same = a->rank == b->rank;
    for (int i = 0; same && i < a->rank; i++)
        same = dim_agrees(a->d[i], b->d[i]);
    if (same)
        return infer_add(c, s);
    char x[OPERAND_TEXT_LEN], y[OPERAND_TEXT_LEN];
    return engine_fail(
        c->err, c->errlen, ENGINE_E_INPUT,
        "%s expects [N,C,H,W] and [N,C,1,1] (or two equal shapes), input %s gives %s "
        "and %s",
        c->label, c->input, operand(c, 0, x, sizeof x), operand(c, 1, y, sizeof y));
}

static engine_status infer_cat(const ictx *c, spec_shape *s)
{
    if (norm_dim(c->l->dim, s->rank) != 1)
        return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                           "%s supports only dim 1 (the channels or features) of a %d-D tensor, "
                           "got dim %d (input %s)",
                           c->label, s->rank, c->l->dim, c->input);
    for (int k = 1; k < c->l->n_inputs; k++) {
        const spec_shape *o = &c->in[k];
        if (!merge_dims(s, o, 1)) {
            char a[OPERAND_TEXT_LEN], b[OPERAND_TEXT_LEN];
            return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                               "%s expects inputs that differ only in dim 1, input %s gives %s and "
                               "%s",
                               c->label, c->input, operand(c, 0, a, sizeof a),
                               operand(c, k, b, sizeof b));
        }
        /* Channels are capped far below overflow by the per-sample element cap. */
        s->d[1] = s->d[1] < 0 || o->d[1] < 0 ? -1 : s->d[1] + o->d[1];
    }
    return ENGINE_OK;
}

static engine_status infer_mean(const ictx *c, spec_shape *s)
{
    int a = s->rank == 4 ? norm_dim(c->l->mean_dims[0], 4) : -1;
    int b = s->rank == 4 ? norm_dim(c->l->mean_dims[1], 4) : -1;
    if (!((a == 2 && b == 3) || (a == 3 && b == 2))) {
        char got[SHAPE_TEXT_LEN];
        return engine_fail(c->err, c->errlen, ENGINE_E_INPUT,
                           "%s supports only the mean over height and width (dim [2, 3]) of a "
                           "[N, C, H, W] tensor, got dim [%d, %d] of %s (input %s)",
                           c->label, c->l->mean_dims[0], c->l->mean_dims[1],
                           spec_shape_format(s, got, sizeof got), c->input);
    }
    if (c->l->keepdim) {
        s->d[2] = s->d[3] = 1;
    } else {
        s->rank = 2;
        s->d[2] = s->d[3] = 0;
    }
    return ENGINE_OK;
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
    case SPEC_ADD:
        return infer_add(c, s);
    case SPEC_MUL:
        return infer_mul(c, s);
    case SPEC_CAT:
        return infer_cat(c, s);
    case SPEC_MEAN:
        return infer_mean(c, s);
    case SPEC_RELU:
    case SPEC_LEAKYRELU:
    case SPEC_SIGMOID:
    case SPEC_TANH:
    case SPEC_GELU:
    case SPEC_RELU6:
    case SPEC_HARDSWISH:
    case SPEC_HARDSIGMOID:
    case SPEC_SILU:
    case SPEC_DROPOUT:
    case SPEC_DROPOUT2D:
    case SPEC_IDENTITY:
    case SPEC_STOCHASTICDEPTH:
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
    if (!m || !in)
        return engine_fail(err, errlen, ENGINE_E_INPUT, "no model or no input shape");
    if (rank != 4 && rank != 2)
        return engine_fail(err, errlen, ENGINE_E_INPUT,
                           "input shape must have 4 dims [N, C, H, W] or 2 dims [N, F], got %d",
                           rank);

    spec_shape s = {.rank = rank};
    for (int i = 0; i < rank; i++)
        s.d[i] = in[i];
    char text[SHAPE_TEXT_LEN];
    spec_shape_format(&s, text, sizeof text);
    TRY(check_input(m, &s, text, false, err, errlen));
    const spec_shape input = s;

    /* Every layer's output is kept: a later layer may read any earlier one. */
    spec_shape *shapes = out ? out : calloc(m->n_layers, sizeof *shapes);
    spec_shape *operands = calloc(SPEC_MAX_INPUTS, sizeof *operands);
    engine_status st = ENGINE_OK;
    if (!shapes || !operands) {
        st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory for shape inference");
        goto done;
    }
    for (size_t i = 0; i < m->n_layers; i++) {
        const spec_layer *l = &m->layers[i];
        for (int k = 0; k < l->n_inputs; k++)
            operands[k] = l->inputs[k] == SPEC_INPUT ? input : shapes[l->inputs[k]];
        ictx c = {.m = m,
                  .l = l,
                  .index = i,
                  .input = text,
                  .in = operands,
                  .err = err,
                  .errlen = errlen};
        spec_layer_label(m, i, c.label, sizeof c.label);
        spec_padding pad = {{0, 0}, {0, 0}};
        s = operands[0];
        st = infer_layer(&c, &s, &pad);
        if (st == ENGINE_OK && sample_elems(&s) < 0) {
            char got[SHAPE_TEXT_LEN];
            st = engine_fail(
                err, errlen, ENGINE_E_INPUT,
                "%s output %s would have more than %" PRId64 " elements per sample (input %s)",
                c.label, spec_shape_format(&s, got, sizeof got), MAX_SAMPLE_ELEMS, text);
        }
        if (st != ENGINE_OK) {
            *bad_layer = (int)i;
            goto done;
        }
        shapes[i] = s;
        if (pads)
            pads[i] = pad;
    }
    st = check_input(m, &input, text, true, err, errlen);
done:
    if (shapes != out)
        free(shapes);
    free(operands);
    return st;
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
