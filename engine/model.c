/* model.c - loads a model folder: parses model.json, reads and checks the weights, and lowers the
 * layer graph into nodes (BatchNorm folded into convolutions, activations and residual adds fused).
 */
#include "internal.h"
#include "safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Weights files above this size are refused before anything is read. Small CNNs are megabytes; the
 * cap keeps a mistaken path (a dataset, a disk image) from being slurped into memory. */
#define MODEL_MAX_WEIGHTS_BYTES ((size_t)2 << 30)
#define MODEL_PATH_MAX          4096
#define MODEL_ERR_MAX           512

const char *model_node_kind_name(node_kind k)
{
    static const char *const names[] = {
#define NODE_KIND_NAME(kind) #kind,
        NODE_KIND_MAP(NODE_KIND_NAME)
#undef NODE_KIND_NAME
    };
    return (size_t)k < sizeof names / sizeof names[0] ? names[k] + 5 : "?"; /* drop "NODE_" */
}

/* Reads a whole file of at most `max` bytes. */
static engine_status read_file(const char *path, size_t max, uint8_t **out, size_t *len, char *err,
                               size_t errlen)
{
    engine_status st = ENGINE_E_IO;
    uint8_t *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return engine_fail(err, errlen, ENGINE_E_IO, "cannot open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = engine_fail(err, errlen, ENGINE_E_IO, "%s is not a regular file", path);
        goto fail;
    }
    if ((uint64_t)sb.st_size > max) {
        st = engine_fail(err, errlen, ENGINE_E_IO, "%s is %lld bytes; the limit is %zu", path,
                         (long long)sb.st_size, max);
        goto fail;
    }
    size_t n = (size_t)sb.st_size;
    buf = malloc(n ? n : 1);
    if (!buf) {
        st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory reading %s", path);
        goto fail;
    }
    if (fread(buf, 1, n, f) != n) {
        st = engine_fail(err, errlen, ENGINE_E_IO, "cannot read %s", path);
        goto fail;
    }
    fclose(f);
    *out = buf;
    *len = n;
    return ENGINE_OK;
fail:
    free(buf);
    fclose(f);
    return st;
}

/* A deterministic generator for PyTorch-style initialisation (splitmix64). The same seed gives the
 * same weights on every machine, so a model without weights still answers reproducibly. */
static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_uniform(uint64_t *state, float *x, size_t n, double bound)
{
    for (size_t i = 0; i < n; i++) {
        double u = (double)(rng_next(state) >> 11) * (1.0 / 9007199254740992.0); /* [0, 1) */
        x[i] = (float)((2.0 * u - 1.0) * bound);
    }
}

typedef struct {
    const spec_model *spec;
    const st_file *st; /* NULL for random initialisation */
    bool *used;        /* per tensor of st */
    uint64_t rng;
    char *err;
    size_t errlen;
} loader;

/* Returns a newly allocated float copy of tensor `<prefix>.<suffix>`, checking it has exactly the
 * shape PyTorch gives it; with no weights file, fills it uniformly in [-bound, bound] (or with
 * `fill` when bound is 0). */
static engine_status load_tensor(loader *ld, size_t layer, const char *suffix, int rank,
                                 const int64_t *shape, double bound, float fill, float **out)
{
    const spec_layer *l = &ld->spec->layers[layer];
    char label[SPEC_LABEL_LEN], name[ST_MAX_NAME], want[128], got[128];
    size_t n = 1;
    for (int i = 0; i < rank; i++)
        n *= (size_t)shape[i]; /* bounded: spec limits every dim and spec_infer the products */
    float *x = malloc((n ? n : 1) * sizeof *x);
    if (!x)
        return engine_fail(ld->err, ld->errlen, ENGINE_E_NOMEM, "out of memory for weights");

    if (!ld->st) {
        if (bound > 0)
            rng_uniform(&ld->rng, x, n, bound);
        else
            for (size_t i = 0; i < n; i++)
                x[i] = fill;
        *out = x;
        return ENGINE_OK;
    }

    spec_layer_label(ld->spec, layer, label, sizeof label);
    if ((size_t)snprintf(name, sizeof name, "%s.%s", l->name, suffix) >= sizeof name) {
        free(x);
        return engine_fail(ld->err, ld->errlen, ENGINE_E_MODEL, "%s: tensor name too long", label);
    }
    spec_dims_format(shape, rank, want, sizeof want);
    const st_tensor *t = NULL;
    size_t index = 0;
    for (; index < st_count(ld->st) && !t; index++)
        if (!strcmp(st_get(ld->st, index)->name, name))
            t = st_get(ld->st, index);
    if (!t) {
        free(x);
        return engine_fail(ld->err, ld->errlen, ENGINE_E_MODEL,
                           "%s: tensor '%s' %s is missing from the weights file", label, name,
                           want);
    }
    spec_dims_format(t->shape, t->rank, got, sizeof got);
    bool same = t->rank == rank;
    for (int i = 0; same && i < rank; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        free(x);
        return engine_fail(ld->err, ld->errlen, ENGINE_E_MODEL,
                           "%s: tensor '%s' has shape %s; expected %s", label, name, got, want);
    }
    if (!st_dtype_is_float(t->dtype)) {
        free(x);
        return engine_fail(ld->err, ld->errlen, ENGINE_E_MODEL,
                           "%s: tensor '%s' has dtype %s; expected F32 (or F16, BF16, F64)", label,
                           name, st_dtype_name(t->dtype));
    }
    st_to_f32(t, x);
    ld->used[index - 1] = true;
    *out = x;
    return ENGINE_OK;
}

static engine_status load_layer(loader *ld, size_t i, model_layer *ml)
{
    const spec_layer *l = &ld->spec->layers[i];
    engine_status st = ENGINE_OK;
    switch (l->op) {
    case SPEC_CONV2D: {
        int64_t icg = l->in_channels / l->groups;
        int64_t shape[4] = {l->out_channels, icg, l->kernel[0], l->kernel[1]};
        double bound = 1.0 / sqrt((double)(icg * l->kernel[0] * l->kernel[1]));
        st = load_tensor(ld, i, "weight", 4, shape, bound, 0, &ml->weight);
        if (st == ENGINE_OK && l->bias)
            st = load_tensor(ld, i, "bias", 1, shape, bound, 0, &ml->bias);
        break;
    }
    case SPEC_LINEAR: {
        int64_t shape[2] = {l->out_features, l->in_features};
        double bound = 1.0 / sqrt((double)l->in_features);
        st = load_tensor(ld, i, "weight", 2, shape, bound, 0, &ml->weight);
        if (st == ENGINE_OK && l->bias)
            st = load_tensor(ld, i, "bias", 1, shape, bound, 0, &ml->bias);
        break;
    }
    case SPEC_BATCHNORM2D: {
        int64_t shape[1] = {l->num_features};
        if (l->affine) {
            st = load_tensor(ld, i, "weight", 1, shape, 0, 1.0f, &ml->scale);
            if (st == ENGINE_OK)
                st = load_tensor(ld, i, "bias", 1, shape, 0, 0.0f, &ml->shift);
        }
        if (st == ENGINE_OK)
            st = load_tensor(ld, i, "running_mean", 1, shape, 0, 0.0f, &ml->mean);
        if (st == ENGINE_OK)
            st = load_tensor(ld, i, "running_var", 1, shape, 0, 1.0f, &ml->var);
        if (st == ENGINE_OK && !l->affine) {
            /* affine=False is gamma 1, beta 0: materialise them so both paths look alike. */
            ml->scale = malloc((size_t)l->num_features * sizeof(float));
            ml->shift = calloc((size_t)l->num_features, sizeof(float));
            if (!ml->scale || !ml->shift)
                return engine_fail(ld->err, ld->errlen, ENGINE_E_NOMEM, "out of memory");
            for (int64_t c = 0; c < l->num_features; c++)
                ml->scale[c] = 1.0f;
        }
        if (st == ENGINE_OK) {
            for (int64_t c = 0; c < l->num_features; c++) {
                if (!(ml->var[c] + l->eps > 0)) {
                    char label[SPEC_LABEL_LEN];
                    return engine_fail(ld->err, ld->errlen, ENGINE_E_MODEL,
                                       "%s: running_var[%lld] + eps is %g; expected > 0",
                                       spec_layer_label(ld->spec, i, label, sizeof label),
                                       (long long)c, ml->var[c] + l->eps);
                }
            }
        }
        break;
    }
    default:
        break;
    }
    return st;
}

/* Folds an eval-mode BatchNorm2d into the convolution before it, per output channel, in double:
 * W' = W * s, b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps). */
static engine_status fold_batchnorm(const spec_layer *conv, model_layer *c, const spec_layer *bnl,
                                    const model_layer *bn, char *err, size_t errlen)
{
    int64_t oc = conv->out_channels;
    size_t per = (size_t)(conv->in_channels / conv->groups * conv->kernel[0] * conv->kernel[1]);
    if (!c->bias) {
        c->bias = calloc((size_t)oc, sizeof(float));
        if (!c->bias)
            return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    }
    for (int64_t o = 0; o < oc; o++) {
        double s = (double)bn->scale[o] / sqrt((double)bn->var[o] + bnl->eps);
        for (size_t k = 0; k < per; k++)
            c->weight[(size_t)o * per + k] = (float)((double)c->weight[(size_t)o * per + k] * s);
        c->bias[o] = (float)(((double)c->bias[o] - bn->mean[o]) * s + bn->shift[o]);
    }
    return ENGINE_OK;
}

/* ---- lowering ------------------------------------------------------------------------------ */

/* Adds a node computing `layer` from the values `inputs` (copied). */
static engine_status add_node(engine_model *m, node_kind kind, int layer, const int *inputs,
                              int n_inputs, char *err, size_t errlen)
{
    node *nd = &m->nodes[m->n_nodes];
    nd->inputs = malloc((size_t)n_inputs * sizeof *nd->inputs);
    if (!nd->inputs)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    memcpy(nd->inputs, inputs, (size_t)n_inputs * sizeof *inputs);
    nd->n_inputs = n_inputs;
    nd->kind = kind;
    nd->layer = nd->out_layer = layer;
    nd->sum_input = NODE_NO_SUM;
    m->layer_value[layer] = m->n_nodes++;
    return ENGINE_OK;
}

static node_kind kind_of(spec_op op)
{
    switch (op) {
    case SPEC_CONV2D:
        return NODE_CONV;
    case SPEC_LINEAR:
        return NODE_LINEAR;
    case SPEC_BATCHNORM2D:
        return NODE_BNORM;
    case SPEC_MAXPOOL2D:
    case SPEC_AVGPOOL2D:
        return NODE_POOL;
    case SPEC_ADAPTIVEAVGPOOL2D:
        return NODE_ADAPTIVE;
    case SPEC_MEAN:
        return NODE_MEAN;
    case SPEC_SOFTMAX:
    case SPEC_LOGSOFTMAX:
        return NODE_SOFTMAX;
    case SPEC_FLATTEN:
        return NODE_FLATTEN;
    case SPEC_ADD:
        return NODE_ADD;
    case SPEC_MUL:
        return NODE_MUL;
    case SPEC_CAT:
        return NODE_CAT;
    default:
        return NODE_ELTWISE;
    }
}

/* The node producing value v, when nothing else reads its output yet and it takes post-ops: only
 * then can a following layer be folded or fused into it without changing what others see. */
static node *fusable(engine_model *m, const int *readers, int v)
{
    if (v < 0)
        return NULL;
    node *nd = &m->nodes[v];
    return readers[nd->out_layer] == 1 ? nd : NULL;
}

/* Lowers the layer graph into nodes: no-ops vanish, a BatchNorm2d right after a convolution is
 * folded into its weights, activations become post-ops of the convolution, linear or binary op
 * before them, and a two-input Add becomes a sum post-op of the convolution producing one operand
 * (the later one, so that the other exists when it runs). */
static engine_status lower(engine_model *m, char *err, size_t errlen)
{
    const spec_model *s = m->spec;
    size_t n = s->n_layers;
    engine_status st = ENGINE_OK;
    /* How many computing layers read each layer's output, looking through no-ops. Readers always
     * come later, so one backward pass settles every count. */
    int *readers = calloc(n, sizeof *readers);
    int *srcs = malloc(SPEC_MAX_INPUTS * sizeof *srcs);
    m->nodes = calloc(n, sizeof *m->nodes);
    m->layer_value = malloc(n * sizeof *m->layer_value);
    if (!readers || !srcs || !m->nodes || !m->layer_value) {
        st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
        goto done;
    }
    readers[n - 1] = 1; /* the model's output */
    for (size_t j = n; j-- > 0;) {
        const spec_layer *l = &s->layers[j];
        for (int k = 0; k < l->n_inputs; k++)
            if (l->inputs[k] != SPEC_INPUT)
                readers[l->inputs[k]] += spec_op_is_noop(l->op) ? readers[j] : 1;
    }

    for (size_t i = 0; i < n; i++) {
        const spec_layer *l = &s->layers[i];
        for (int k = 0; k < l->n_inputs; k++)
            srcs[k] = l->inputs[k] == SPEC_INPUT ? SPEC_INPUT : m->layer_value[l->inputs[k]];
        if (spec_op_is_noop(l->op) || (l->op == SPEC_CAT && l->n_inputs == 1)) {
            m->layer_value[i] = srcs[0];
            continue;
        }
        node *p = fusable(m, readers, srcs[0]);
        if (l->op == SPEC_BATCHNORM2D && p && p->kind == NODE_CONV && p->n_post == 0 &&
            p->sum_input == NODE_NO_SUM) {
            st = fold_batchnorm(&s->layers[p->layer], &m->layers[p->layer], l, &m->layers[i], err,
                                errlen);
            if (st != ENGINE_OK)
                goto done;
            p->out_layer = (int)i;
            m->layer_value[i] = srcs[0];
            continue;
        }
        /* Convolutions, inner products and binary ops take any chain of activations; a
         * standalone BatchNorm takes one plain ReLU (oneDNN's fuse_norm_relu flag). */
        bool takes_post = p &&
                          (p->kind == NODE_CONV || p->kind == NODE_LINEAR || p->kind == NODE_ADD ||
                           p->kind == NODE_MUL) &&
                          p->n_post < NODE_MAX_POST;
        takes_post |= p && p->kind == NODE_BNORM && p->n_post == 0 && l->op == SPEC_RELU;
        if (spec_op_is_activation(l->op) && takes_post) {
            p->post[p->n_post++] = (int)i;
            p->out_layer = (int)i;
            m->layer_value[i] = srcs[0];
            continue;
        }
        if (l->op == SPEC_ADD && l->n_inputs == 2) {
            node *best = NULL;
            int other = 0;
            for (int k = 0; k < 2; k++) {
                node *c = fusable(m, readers, srcs[k]);
                int w = srcs[1 - k];
                if (c && c->kind == NODE_CONV && c->n_post == 0 && c->sum_input == NODE_NO_SUM &&
                    w != srcs[k] && w < srcs[k] && (!best || c > best)) {
                    best = c;
                    other = w;
                }
            }
            if (best) {
                best->sum_input = other;
                best->out_layer = (int)i;
                m->layer_value[i] = (int)(best - m->nodes);
                continue;
            }
        }
        st = add_node(m, kind_of(l->op), (int)i, srcs, l->n_inputs, err, errlen);
        if (st != ENGINE_OK)
            goto done;
    }

    for (int v = 0; v < m->n_nodes; v++)
        m->nodes[v].last_use = v;
    for (int v = 0; v < m->n_nodes; v++) {
        node *nd = &m->nodes[v];
        for (int k = 0; k < nd->n_inputs; k++)
            if (nd->inputs[k] >= 0)
                m->nodes[nd->inputs[k]].last_use = v;
        if (nd->sum_input >= 0)
            m->nodes[nd->sum_input].last_use = v;
    }
    /* A model whose output is its input (only no-ops) has no node; the runner copies. */
    if (m->layer_value[n - 1] >= 0)
        m->nodes[m->layer_value[n - 1]].last_use = m->n_nodes;
    /* A Flatten is a view of its input's buffer, which must live as long as the view's readers. */
    for (int v = m->n_nodes; v-- > 0;) {
        const node *nd = &m->nodes[v];
        if (nd->kind == NODE_FLATTEN && nd->inputs[0] >= 0 &&
            m->nodes[nd->inputs[0]].last_use < nd->last_use)
            m->nodes[nd->inputs[0]].last_use = nd->last_use;
    }
done:
    free(readers);
    free(srcs);
    return st;
}

static void free_layers(model_layer *layers, size_t n)
{
    if (!layers)
        return;
    for (size_t i = 0; i < n; i++) {
        free(layers[i].weight);
        free(layers[i].bias);
        free(layers[i].mean);
        free(layers[i].var);
        free(layers[i].scale);
        free(layers[i].shift);
    }
    free(layers);
}

void engine_model_destroy(engine_model *m)
{
    if (!m)
        return;
    for (int i = 0; m->nodes && i < m->n_nodes; i++)
        free(m->nodes[i].inputs);
    free(m->nodes);
    free(m->layer_value);
    weight_store_destroy(m->store);
    if (m->spec)
        free_layers(m->layers, m->spec->n_layers);
    spec_destroy(m->spec);
    free(m);
}

/* Checks the configured input through every layer, with free H or W left unknown. */
static engine_status check_graph(const engine_model *m, char *err, size_t errlen)
{
    const spec_model *s = m->spec;
    int64_t in[SPEC_MAX_RANK] = {1};
    int rank = s->input_rank + 1;
    for (int i = 0; i < s->input_rank; i++)
        in[i + 1] = s->input_dims[i];
    spec_shape *shapes = calloc(s->n_layers, sizeof *shapes);
    if (!shapes)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    int bad = -1;
    engine_status st = spec_infer(s, in, rank, shapes, NULL, &bad, err, errlen);
    if (st == ENGINE_OK && s->labels) {
        const spec_shape *o = &shapes[s->n_layers - 1];
        if (o->rank != 2 || o->d[1] != (int64_t)s->n_labels)
            st = engine_fail(err, errlen, ENGINE_E_MODEL,
                             "output.labels has %zu entries; the output has %lld classes",
                             s->n_labels, o->rank == 2 ? (long long)o->d[1] : -1LL);
    }
    free(shapes);
    return st == ENGINE_OK ? ENGINE_OK : ENGINE_E_MODEL;
}

engine_status engine_model_load_mem(const char *json, size_t json_len, const uint8_t *weights,
                                    size_t weights_len, const engine_load_options *opts,
                                    engine_model **out, char *err, size_t errlen)
{
    engine_status st;
    st_file *stf = NULL;
    loader ld = {0};
    char msg[MODEL_ERR_MAX];
    *out = NULL;

    engine_model *m = calloc(1, sizeof *m);
    if (!m)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    st = spec_parse(json, json_len, &m->spec, msg, sizeof msg);
    if (st != ENGINE_OK) {
        engine_fail(err, errlen, st, "model.json: %s", msg);
        goto fail;
    }
    const spec_model *s = m->spec;
    if (s->weights && !weights) {
        st = engine_fail(err, errlen, ENGINE_E_MODEL,
                         "model '%s': model.json names weights \"%s\" but none were given", s->name,
                         s->weights);
        goto fail;
    }
    if (s->weights) {
        st = st_parse(weights, weights_len, &stf, msg, sizeof msg);
        if (st != ENGINE_OK) {
            engine_fail(err, errlen, st, "model '%s': %s: %s", s->name, s->weights, msg);
            goto fail;
        }
        ld.used = calloc(st_count(stf) + 1, sizeof *ld.used);
        if (!ld.used) {
            st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    m->random_weights = !s->weights;

    /* Check the layer graph first: it bounds every dimension the weights use. */
    st = check_graph(m, msg, sizeof msg);
    if (st != ENGINE_OK) {
        engine_fail(err, errlen, st, "model '%s': %s", s->name, msg);
        goto fail;
    }

    m->layers = calloc(s->n_layers, sizeof *m->layers);
    if (!m->layers) {
        st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
        goto fail;
    }
    ld.spec = s;
    ld.st = stf;
    ld.rng = s->seed;
    ld.err = msg;
    ld.errlen = sizeof msg;
    for (size_t i = 0; i < s->n_layers; i++) {
        st = load_layer(&ld, i, &m->layers[i]);
        if (st != ENGINE_OK) {
            engine_fail(err, errlen, st, "model '%s': %s", s->name, msg);
            goto fail;
        }
        m->params += spec_layer_params(&s->layers[i]);
    }

    st = lower(m, msg, sizeof msg);
    if (st != ENGINE_OK) {
        engine_fail(err, errlen, st, "model '%s': %s", s->name, msg);
        goto fail;
    }
    m->store = weight_store_create(s->n_layers);
    if (!m->store) {
        st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
        goto fail;
    }

    if (stf && opts && opts->warn) {
        for (size_t i = 0; i < st_count(stf); i++) {
            const st_tensor *t = st_get(stf, i);
            size_t nl = strlen(t->name), sfx = strlen(".num_batches_tracked");
            if (ld.used[i] || (nl >= sfx && !strcmp(t->name + nl - sfx, ".num_batches_tracked")))
                continue;
            snprintf(msg, sizeof msg, "model '%s': tensor '%s' in %s is not used by any layer",
                     s->name, t->name, s->weights);
            opts->warn(opts->warn_ctx, msg);
        }
    }
    free(ld.used);
    st_destroy(stf);
    *out = m;
    return ENGINE_OK;
fail:
    free(ld.used);
    st_destroy(stf);
    engine_model_destroy(m);
    return st;
}

engine_status engine_model_load(const char *dir, const engine_load_options *opts,
                                engine_model **out, char *err, size_t errlen)
{
    char path[MODEL_PATH_MAX], msg[MODEL_ERR_MAX];
    uint8_t *json = NULL, *weights = NULL;
    size_t json_len = 0, weights_len = 0;
    spec_model *peek = NULL;
    engine_status st;
    *out = NULL;

    if ((size_t)snprintf(path, sizeof path, "%s/model.json", dir) >= sizeof path)
        return engine_fail(err, errlen, ENGINE_E_IO, "model folder path too long");
    st = read_file(path, SPEC_MAX_JSON, &json, &json_len, msg, sizeof msg);
    if (st != ENGINE_OK)
        return engine_fail(err, errlen, st, "model folder %s: %s", dir, msg);

    /* The weights file name is in model.json: parse once to find it. */
    st = spec_parse((const char *)json, json_len, &peek, msg, sizeof msg);
    if (st != ENGINE_OK) {
        engine_fail(err, errlen, st, "model folder %s: model.json: %s", dir, msg);
        goto done;
    }
    if (peek->weights) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, peek->weights) >= sizeof path) {
            st = engine_fail(err, errlen, ENGINE_E_IO, "model folder path too long");
            goto done;
        }
        st = read_file(path, MODEL_MAX_WEIGHTS_BYTES, &weights, &weights_len, msg, sizeof msg);
        if (st != ENGINE_OK) {
            engine_fail(err, errlen, st, "model '%s': %s", peek->name, msg);
            goto done;
        }
    }
    st = engine_model_load_mem((const char *)json, json_len, weights, weights_len, opts, out, err,
                               errlen);
done:
    spec_destroy(peek);
    free(json);
    free(weights);
    return st;
}

const spec_model *engine_model_spec(const engine_model *m)
{
    return m->spec;
}

bool engine_model_random_weights(const engine_model *m)
{
    return m->random_weights;
}

int64_t engine_model_params(const engine_model *m)
{
    return m->params;
}

engine_status engine_model_shapes(const engine_model *m, const int64_t *in, int rank,
                                  spec_shape *per_layer, int *bad_layer, char *err, size_t errlen)
{
    return spec_infer(m->spec, in, rank, per_layer, NULL, bad_layer, err, errlen);
}
