/* runner.c - turns a checked model into oneDNN primitives per input shape and runs batches on them.
 *
 * A plan is everything needed to run one exact input shape (N, H, W): primitives, activation
 * memories and argument lists, built once and cached. oneDNN 2.6 ties a primitive to exact dims, so
 * batches are split into power-of-two buckets (13 = 8 + 4 + 1) that run back to back on the user's
 * buffers without copies. Weights are reordered once per layout a primitive asks for and shared by
 * every plan. The Debian oneDNN build keeps scratchpads thread-local, so a runner (and every
 * primitive in it) belongs to the thread that created it.
 */
#include "internal.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    RUNNER_MAX_PLANS = 32, /* cached shapes; the least recently used plan goes first */
    RUNNER_MAX_ARGS = 8,   /* arguments of one primitive execution */
    RUNNER_KERNELS = 1024, /* bytes of the kernel list kept per plan */
    RUNNER_MAX_BUCKET = 1 << 12,
};

typedef struct {
    dnnl_primitive_t prim;
    int nargs;
    dnnl_exec_arg_t args[RUNNER_MAX_ARGS];
} plan_step;

typedef struct {
    int64_t n, h, w; /* the exact input shape; h = w = 0 for [N, F] inputs */
    uint64_t last_used;
    dnnl_memory_t in_user, out_user; /* plain f32 wrappers whose handles are set per run */
    plan_step *steps;
    size_t nsteps, capsteps;
    dnnl_memory_t *mems; /* every memory the plan owns, user wrappers included */
    size_t nmems, capmems;
    spec_shape out_shape;
    char kernels[RUNNER_KERNELS];
    bool reference; /* a primitive of this plan runs a "ref:" kernel */
} plan;

/* One reordered copy of a layer's weights in a layout some primitive asked for. */
typedef struct {
    dnnl_memory_desc_t md;
    dnnl_memory_t mem;
} weight_entry;

typedef struct {
    weight_entry *w;
    size_t nw;
    dnnl_memory_t bias, mean, var, scale, shift; /* f32 [C] views of the model's arrays */
} layer_cache;

struct engine_runner {
    const engine_model *m;
    pthread_t owner;
    dnnl_engine_t eng;
    dnnl_stream_t strm;
    spec_precision precision;
    plan *plans[RUNNER_MAX_PLANS];
    size_t nplans;
    uint64_t tick;
    layer_cache *lc;
    int64_t buckets[16];
    int nbuckets;
    float *out_buf;
    size_t out_cap;
    spec_shape *shapes; /* scratch for shape inference, one per layer */
    spec_padding *pads;
    const plan *last;
    bool reference; /* some primitive built so far is a "ref:" kernel */
};

/* Every oneDNN call is checked; a failure names the call and where it was made. Used inside
 * functions that have `err`, `errlen`, an `engine_status st` and a `fail:` label. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        dnnl_status_t ck_s_ = (call);                                                              \
        if (ck_s_ != dnnl_success) {                                                               \
            st = engine_fail(err, errlen, ENGINE_E_BACKEND, "%s:%d: %s failed: %s", __FILE__,      \
                             __LINE__, #call, dnnl_status2str(ck_s_));                             \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

static void owner_check(const engine_runner *r)
{
    /* A primitive run on another thread can crash in oneDNN's thread-local scratchpad; make that
     * bug loud at once instead of rare and random. */
    if (!pthread_equal(r->owner, pthread_self())) {
        fprintf(stderr, "convserve engine: runner used outside the thread that created it\n");
        abort();
    }
}

static dnnl_data_type_t dt_of(spec_precision p)
{
    return p == SPEC_BF16 ? dnnl_bf16 : dnnl_f32;
}

/* ---- plans ------------------------------------------------------------------------------- */

static void plan_destroy(plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nsteps; i++)
        dnnl_primitive_destroy(p->steps[i].prim);
    for (size_t i = 0; i < p->nmems; i++)
        dnnl_memory_destroy(p->mems[i]);
    free(p->steps);
    free(p->mems);
    free(p);
}

static bool plan_keep_mem(plan *p, dnnl_memory_t mem)
{
    if (p->nmems == p->capmems) {
        size_t cap = p->capmems ? 2 * p->capmems : 16;
        dnnl_memory_t *n = realloc(p->mems, cap * sizeof *n);
        if (!n)
            return false;
        p->mems = n;
        p->capmems = cap;
    }
    p->mems[p->nmems++] = mem;
    return true;
}

static plan_step *plan_add_step(plan *p)
{
    if (p->nsteps == p->capsteps) {
        size_t cap = p->capsteps ? 2 * p->capsteps : 16;
        plan_step *n = realloc(p->steps, cap * sizeof *n);
        if (!n)
            return NULL;
        p->steps = n;
        p->capsteps = cap;
    }
    plan_step *s = &p->steps[p->nsteps++];
    memset(s, 0, sizeof *s);
    return s;
}

static void plan_note_kernel(plan *p, const char *what, const_dnnl_primitive_desc_t pd)
{
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (!strncmp(impl, "ref:", 4))
        p->reference = true;
    size_t o = strlen(p->kernels);
    if (o + 1 < sizeof p->kernels)
        snprintf(p->kernels + o, sizeof p->kernels - o, "%s%s=%s", o ? "," : "", what, impl);
}

/* State while a plan is being built: the tensor flowing between layers. */
typedef struct {
    engine_runner *r;
    plan *p;
    dnnl_memory_t cur;
    dnnl_memory_desc_t cur_md;
    spec_shape cur_shape;
    char *err;
    size_t errlen;
} builder;

/* Creates a primitive from pd, adds it as a step with the given args and takes ownership. */
static engine_status add_primitive(builder *b, const char *what, dnnl_primitive_desc_t pd,
                                   int nargs, const dnnl_exec_arg_t *args)
{
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_primitive_t prim = NULL;
    CK(dnnl_primitive_create(&prim, pd));
    plan_step *s = plan_add_step(b->p);
    if (!s) {
        dnnl_primitive_destroy(prim);
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    }
    s->prim = prim;
    s->nargs = nargs;
    memcpy(s->args, args, (size_t)nargs * sizeof *args);
    plan_note_kernel(b->p, what, pd);
fail:
    return st;
}

/* A new activation memory owned by the plan. */
static engine_status new_mem(builder *b, const dnnl_memory_desc_t *md, void *handle,
                             dnnl_memory_t *out)
{
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    CK(dnnl_memory_create(out, md, b->r->eng, handle));
    if (!plan_keep_mem(b->p, *out)) {
        dnnl_memory_destroy(*out);
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    }
fail:
    return st;
}

/* Makes the current tensor have layout `want`, adding a reorder when it differs. This is where the
 * user's NCHW float input is converted (layout and, for bf16, data type) in one step. */
static engine_status connect(builder *b, const dnnl_memory_desc_t *want)
{
    if (dnnl_memory_desc_equal(&b->cur_md, want))
        return ENGINE_OK;
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_memory_t dst;
    if ((st = new_mem(b, want, DNNL_MEMORY_ALLOCATE, &dst)) != ENGINE_OK)
        return st;
    CK(dnnl_reorder_primitive_desc_create(&rpd, &b->cur_md, b->r->eng, want, b->r->eng, NULL));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, b->cur}, {DNNL_ARG_TO, dst}};
    if ((st = add_primitive(b, "reorder", rpd, 2, args)) != ENGINE_OK)
        goto fail;
    b->cur = dst;
    b->cur_md = *want;
fail:
    dnnl_primitive_desc_destroy(rpd);
    return st;
}

/* The layer's weights in layout `want`, reordered from PyTorch's layout (described by `user`) the
 * first time a primitive asks for that layout, and shared afterwards. */
static engine_status layer_weights(builder *b, size_t layer, const dnnl_memory_desc_t *user,
                                   const dnnl_memory_desc_t *want, dnnl_memory_t *out)
{
    engine_runner *r = b->r;
    layer_cache *lc = &r->lc[layer];
    for (size_t i = 0; i < lc->nw; i++) {
        if (dnnl_memory_desc_equal(&lc->w[i].md, want)) {
            *out = lc->w[i].mem;
            return ENGINE_OK;
        }
    }
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t rp = NULL;
    weight_entry *n = realloc(lc->w, (lc->nw + 1) * sizeof *n);
    if (!n)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    lc->w = n;
    CK(dnnl_memory_create(&src, user, r->eng, r->m->layers[layer].weight));
    CK(dnnl_memory_create(&dst, want, r->eng, DNNL_MEMORY_ALLOCATE));
    CK(dnnl_reorder_primitive_desc_create(&rpd, user, r->eng, want, r->eng, NULL));
    CK(dnnl_primitive_create(&rp, rpd));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
    CK(dnnl_primitive_execute(rp, r->strm, 2, args));
    CK(dnnl_stream_wait(r->strm));
    lc->w[lc->nw].md = *want;
    lc->w[lc->nw].mem = dst;
    lc->nw++;
    *out = dst;
    dst = NULL;
fail:
    dnnl_primitive_destroy(rp);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(src);
    dnnl_memory_destroy(dst);
    return st;
}

/* A float32 [C] memory over one of the model's arrays (bias, BatchNorm statistics). */
static engine_status vector_mem(builder *b, dnnl_memory_t *slot, const float *data, int64_t n)
{
    if (*slot)
        return ENGINE_OK;
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_memory_desc_t md;
    dnnl_dims_t d = {n};
    CK(dnnl_memory_desc_init_by_tag(&md, 1, d, dnnl_f32, dnnl_x));
    /* The primitives only read these arrays; oneDNN's API has no const handle. */
    CK(dnnl_memory_create(slot, &md, b->r->eng, (void *)data));
fail:
    return st;
}

static dnnl_alg_kind_t eltwise_alg(const spec_layer *l, float *alpha)
{
    *alpha = 0.0f;
    switch (l->op) {
    case SPEC_LEAKYRELU:
        *alpha = (float)l->negative_slope;
        return dnnl_eltwise_relu;
    case SPEC_SIGMOID:
        return dnnl_eltwise_logistic;
    case SPEC_TANH:
        return dnnl_eltwise_tanh;
    case SPEC_GELU:
        return l->gelu_tanh ? dnnl_eltwise_gelu_tanh : dnnl_eltwise_gelu_erf;
    default:
        return dnnl_eltwise_relu;
    }
}

/* An attribute with the activation at `act` (if any) as an eltwise post-op. */
static engine_status post_op_attr(builder *b, const spec_layer *act, dnnl_primitive_attr_t *attr)
{
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_post_ops_t po = NULL;
    *attr = NULL;
    if (!act)
        return ENGINE_OK;
    float alpha;
    dnnl_alg_kind_t alg = eltwise_alg(act, &alpha);
    CK(dnnl_post_ops_create(&po));
    CK(dnnl_post_ops_append_eltwise(po, 1.0f, alg, alpha, 0.0f));
    CK(dnnl_primitive_attr_create(attr));
    CK(dnnl_primitive_attr_set_post_ops(*attr, po));
fail:
    dnnl_post_ops_destroy(po);
    return st;
}

/* The common end of a convolution or inner product: bring the source into the layout the
 * primitive chose, fetch the weights in theirs (reordered once, from PyTorch's layout `user`), give
 * it a destination, its bias (`nout` values) if any, and add it to the plan. */
static engine_status add_weighted(builder *b, size_t i, const char *what,
                                  const_dnnl_primitive_desc_t pd, const dnnl_memory_desc_t *user,
                                  int64_t nout)
{
    const model_layer *ml = &b->r->m->layers[i];
    engine_status st;
    dnnl_memory_t wmem = NULL, dst = NULL;
    if ((st = connect(b, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0))) != ENGINE_OK)
        return st;
    st = layer_weights(b, i, user, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0),
                       &wmem);
    if (st != ENGINE_OK)
        return st;
    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    if ((st = new_mem(b, dmd, DNNL_MEMORY_ALLOCATE, &dst)) != ENGINE_OK)
        return st;
    dnnl_exec_arg_t args[4] = {
        {DNNL_ARG_SRC, b->cur}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dst}, {0, NULL}};
    int nargs = 3;
    if (ml->bias) {
        if ((st = vector_mem(b, &b->r->lc[i].bias, ml->bias, nout)) != ENGINE_OK)
            return st;
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, b->r->lc[i].bias};
    }
    if ((st = add_primitive(b, what, (dnnl_primitive_desc_t)pd, nargs, args)) != ENGINE_OK)
        return st;
    b->cur = dst;
    b->cur_md = *dmd;
    return ENGINE_OK;
}

static engine_status build_conv(builder *b, size_t i, const spec_layer *act, const spec_shape *out,
                                const spec_padding *pad, dnnl_data_type_t dt)
{
    const spec_layer *l = &b->r->m->spec->layers[i];
    const model_layer *ml = &b->r->m->layers[i];
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_memory_desc_t src_md, w_md, wu_md, b_md, dst_md;
    int64_t g = l->groups;
    dnnl_dims_t sd = {b->cur_shape.d[0], l->in_channels, b->cur_shape.d[2], b->cur_shape.d[3]};
    dnnl_dims_t dd = {out->d[0], out->d[1], out->d[2], out->d[3]};
    dnnl_dims_t wd = {l->out_channels, l->in_channels, l->kernel[0], l->kernel[1]};
    dnnl_dims_t gwd = {g, l->out_channels / g, l->in_channels / g, l->kernel[0], l->kernel[1]};
    dnnl_dims_t bd = {l->out_channels};
    dnnl_dims_t strides = {l->stride[0], l->stride[1]};
    dnnl_dims_t dil = {l->dilation[0] - 1, l->dilation[1] - 1};
    dnnl_dims_t pl = {pad->pad_l[0], pad->pad_l[1]}, pr = {pad->pad_r[0], pad->pad_r[1]};

    CK(dnnl_memory_desc_init_by_tag(&src_md, 4, sd, dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&dst_md, 4, dd, dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_x));
    if (g > 1) {
        CK(dnnl_memory_desc_init_by_tag(&w_md, 5, gwd, dt, dnnl_format_tag_any));
        CK(dnnl_memory_desc_init_by_tag(&wu_md, 5, gwd, dnnl_f32, dnnl_goihw));
    } else {
        CK(dnnl_memory_desc_init_by_tag(&w_md, 4, wd, dt, dnnl_format_tag_any));
        CK(dnnl_memory_desc_init_by_tag(&wu_md, 4, wd, dnnl_f32, dnnl_oihw));
    }
    dnnl_convolution_desc_t cd;
    CK(dnnl_dilated_convolution_forward_desc_init(
        &cd, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &w_md,
        ml->bias ? &b_md : NULL, &dst_md, strides, dil, pl, pr));
    if ((st = post_op_attr(b, act, &attr)) != ENGINE_OK)
        goto fail;
    CK(dnnl_primitive_desc_create(&pd, &cd, attr, b->r->eng, NULL));

    st = add_weighted(b, i, "conv", pd, &wu_md, l->out_channels);
fail:
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

static engine_status build_linear(builder *b, size_t i, const spec_layer *act, dnnl_data_type_t dt)
{
    const spec_layer *l = &b->r->m->spec->layers[i];
    const model_layer *ml = &b->r->m->layers[i];
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_memory_desc_t src_any, w_md, wu_md, b_md, dst_md;
    int nd = b->cur_md.ndims;
    int64_t n = b->cur_shape.d[0];
    dnnl_dims_t dd = {n, l->out_features};
    dnnl_dims_t bd = {l->out_features};
    dnnl_dims_t wd = {l->out_features, l->in_features, 0, 0};
    if (nd == 4) {
        /* Flatten + Linear as a 4-D inner product: PyTorch's [out, C*H*W] weight is, byte for
         * byte, an [out, C, H, W] oihw tensor, and oneDNN lays it out to follow the source. */
        wd[1] = b->cur_md.dims[1];
        wd[2] = b->cur_md.dims[2];
        wd[3] = b->cur_md.dims[3];
    }
    CK(dnnl_memory_desc_init_by_tag(&w_md, nd, wd, dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&wu_md, nd, wd, dnnl_f32, nd == 4 ? dnnl_oihw : dnnl_oi));
    CK(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_x));
    CK(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&src_any, nd, b->cur_md.dims, dt, dnnl_format_tag_any));
    if ((st = post_op_attr(b, act, &attr)) != ENGINE_OK)
        goto fail;

    /* Prefer the producer's layout as the source, so no reorder is needed; fall back to letting
     * oneDNN choose when it has no kernel for that layout (or the data type differs). */
    dnnl_inner_product_desc_t ipd;
    dnnl_status_t s = dnnl_success;
    if (b->cur_md.data_type == dt) {
        s = dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &b->cur_md, &w_md,
                                                 ml->bias ? &b_md : NULL, &dst_md);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &ipd, attr, b->r->eng, NULL);
    }
    if (b->cur_md.data_type != dt || s != dnnl_success) {
        pd = NULL;
        CK(dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &src_any, &w_md,
                                                ml->bias ? &b_md : NULL, &dst_md));
        CK(dnnl_primitive_desc_create(&pd, &ipd, attr, b->r->eng, NULL));
    }
    st = add_weighted(b, i, "linear", pd, &wu_md, l->out_features);
fail:
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* A Flatten that no Linear consumes directly: make the tensor plain row-major and view it as
 * [N, C*H*W], which is exactly PyTorch's flattening order. */
static engine_status build_flatten(builder *b)
{
    if (b->cur_md.ndims != 4)
        return ENGINE_OK;
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_memory_desc_t plain, flat;
    const int64_t *d = b->cur_md.dims;
    CK(dnnl_memory_desc_init_by_tag(&plain, 4, d, b->cur_md.data_type, dnnl_nchw));
    if ((st = connect(b, &plain)) != ENGINE_OK)
        return st;
    if (b->cur == b->p->in_user) {
        /* The input wrapper's handle changes per run, so a view of it would dangle: copy. */
        dnnl_memory_t copy;
        dnnl_primitive_desc_t rpd = NULL;
        if ((st = new_mem(b, &plain, DNNL_MEMORY_ALLOCATE, &copy)) != ENGINE_OK)
            return st;
        CK(dnnl_reorder_primitive_desc_create(&rpd, &plain, b->r->eng, &plain, b->r->eng, NULL));
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, b->cur}, {DNNL_ARG_TO, copy}};
        st = add_primitive(b, "reorder", rpd, 2, args);
        dnnl_primitive_desc_destroy(rpd);
        if (st != ENGINE_OK)
            return st;
        b->cur = copy;
    }
    dnnl_dims_t fd = {d[0], d[1] * d[2] * d[3]};
    CK(dnnl_memory_desc_init_by_tag(&flat, 2, fd, b->cur_md.data_type, dnnl_nc));
    void *handle = NULL;
    CK(dnnl_memory_get_data_handle(b->cur, &handle));
    dnnl_memory_t view;
    if ((st = new_mem(b, &flat, handle, &view)) != ENGINE_OK)
        return st;
    b->cur = view;
    b->cur_md = flat;
fail:
    return st;
}

/* Eltwise, softmax, batch norm and pooling: ops whose source layout is the producer's. */
static engine_status build_simple(builder *b, size_t i, const spec_shape *out,
                                  const spec_padding *pad)
{
    const spec_layer *l = &b->r->m->spec->layers[i];
    const model_layer *ml = &b->r->m->layers[i];
    engine_status st = ENGINE_OK;
    char *err = b->err;
    size_t errlen = b->errlen;
    dnnl_primitive_desc_t pd = NULL;
    const char *what = spec_op_name(l->op);
    layer_cache *lc = &b->r->lc[i];

    switch (l->op) {
    case SPEC_RELU:
    case SPEC_LEAKYRELU:
    case SPEC_SIGMOID:
    case SPEC_TANH:
    case SPEC_GELU: {
        float alpha;
        dnnl_alg_kind_t alg = eltwise_alg(l, &alpha);
        dnnl_eltwise_desc_t ed;
        CK(dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, alg, &b->cur_md, alpha,
                                          0.0f));
        CK(dnnl_primitive_desc_create(&pd, &ed, NULL, b->r->eng, NULL));
        break;
    }
    case SPEC_SOFTMAX:
    case SPEC_LOGSOFTMAX: {
        dnnl_softmax_v2_desc_t sd;
        dnnl_alg_kind_t alg = l->op == SPEC_SOFTMAX ? dnnl_softmax_accurate : dnnl_softmax_log;
        CK(dnnl_softmax_v2_forward_desc_init(&sd, dnnl_forward_inference, alg, &b->cur_md,
                                             &b->cur_md, 1));
        CK(dnnl_primitive_desc_create(&pd, &sd, NULL, b->r->eng, NULL));
        break;
    }
    case SPEC_BATCHNORM2D: {
        dnnl_batch_normalization_desc_t bd;
        unsigned flags = dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift;
        CK(dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_inference, &b->cur_md,
                                                      (float)l->eps, flags));
        CK(dnnl_primitive_desc_create(&pd, &bd, NULL, b->r->eng, NULL));
        int64_t c = l->num_features;
        if ((st = vector_mem(b, &lc->mean, ml->mean, c)) != ENGINE_OK ||
            (st = vector_mem(b, &lc->var, ml->var, c)) != ENGINE_OK ||
            (st = vector_mem(b, &lc->scale, ml->scale, c)) != ENGINE_OK ||
            (st = vector_mem(b, &lc->shift, ml->shift, c)) != ENGINE_OK)
            goto fail;
        break;
    }
    case SPEC_MAXPOOL2D:
    case SPEC_AVGPOOL2D:
    case SPEC_ADAPTIVEAVGPOOL2D: {
        dnnl_memory_desc_t dst_any;
        dnnl_dims_t dd = {out->d[0], out->d[1], out->d[2], out->d[3]};
        dnnl_dims_t kernel, strides, dil = {0, 0};
        dnnl_dims_t pl = {pad->pad_l[0], pad->pad_l[1]}, pr = {pad->pad_r[0], pad->pad_r[1]};
        dnnl_alg_kind_t alg;
        if (l->op == SPEC_ADAPTIVEAVGPOOL2D) {
            /* spec_infer admits only output sizes that divide the input: plain average pooling. */
            for (int k = 0; k < 2; k++) {
                kernel[k] = strides[k] = b->cur_shape.d[2 + k] / out->d[2 + k];
                pl[k] = pr[k] = 0;
            }
            alg = dnnl_pooling_avg_exclude_padding;
        } else {
            for (int k = 0; k < 2; k++) {
                kernel[k] = l->kernel[k];
                strides[k] = l->stride[k];
            }
            if (l->op == SPEC_MAXPOOL2D) {
                alg = dnnl_pooling_max;
                dil[0] = l->dilation[0] - 1;
                dil[1] = l->dilation[1] - 1;
            } else {
                /* Without padding both PyTorch divisors are the window's part inside the
                 * input (ceil_mode windows included), which is oneDNN's exclude-padding. */
                bool padded = l->padding[0] || l->padding[1];
                alg = l->count_include_pad && padded ? dnnl_pooling_avg_include_padding
                                                     : dnnl_pooling_avg_exclude_padding;
            }
        }
        CK(dnnl_memory_desc_init_by_tag(&dst_any, 4, dd, b->cur_md.data_type, dnnl_format_tag_any));
        dnnl_pooling_v2_desc_t pd2;
        CK(dnnl_pooling_v2_forward_desc_init(&pd2, dnnl_forward_inference, alg, &b->cur_md,
                                             &dst_any, strides, kernel, dil, pl, pr));
        CK(dnnl_primitive_desc_create(&pd, &pd2, NULL, b->r->eng, NULL));
        break;
    }
    default:
        return engine_fail(err, errlen, ENGINE_E_BACKEND, "layer %zu: op %s has no lowering", i,
                           what);
    }

    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    dnnl_memory_t dst;
    if ((st = new_mem(b, dmd, DNNL_MEMORY_ALLOCATE, &dst)) != ENGINE_OK)
        goto fail;
    dnnl_exec_arg_t args[RUNNER_MAX_ARGS] = {{DNNL_ARG_SRC, b->cur}, {DNNL_ARG_DST, dst}};
    int nargs = 2;
    if (l->op == SPEC_BATCHNORM2D) {
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, lc->mean};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, lc->var};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, lc->scale};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, lc->shift};
    }
    if ((st = add_primitive(b, what, pd, nargs, args)) != ENGINE_OK)
        goto fail;
    b->cur = dst;
    b->cur_md = *dmd;
fail:
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* Builds the plan for input [n, C, h, w] (or [n, F]) at the given precision. */
static engine_status plan_build(engine_runner *r, int64_t n, int64_t h, int64_t w,
                                spec_precision prec, plan **out, char *err, size_t errlen)
{
    const engine_model *m = r->m;
    const spec_model *s = m->spec;
    engine_status st = ENGINE_OK;
    dnnl_data_type_t dt = dt_of(prec);
    builder b = {.r = r, .err = err, .errlen = errlen};
    plan *p = calloc(1, sizeof *p);
    if (!p)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    b.p = p;
    p->n = n;
    p->h = h;
    p->w = w;

    dnnl_dims_t in = {n, s->input_dims[0], h, w};
    int rank = s->input_rank + 1;
    int bad;
    st = spec_infer(s, in, rank, r->shapes, r->pads, &bad, err, errlen);
    if (st != ENGINE_OK)
        goto fail;

    dnnl_memory_desc_t in_md;
    CK(dnnl_memory_desc_init_by_tag(&in_md, rank, in, dnnl_f32, rank == 4 ? dnnl_nchw : dnnl_nc));
    if ((st = new_mem(&b, &in_md, DNNL_MEMORY_NONE, &p->in_user)) != ENGINE_OK)
        goto fail;
    b.cur = p->in_user;
    b.cur_md = in_md;
    b.cur_shape.rank = rank;
    memcpy(b.cur_shape.d, in, sizeof b.cur_shape.d);

    for (size_t i = 0; i < s->n_layers;) {
        const spec_layer *l = &s->layers[i];
        if (model_layer_is_noop(l) || m->layers[i].folded) {
            i++;
            continue;
        }
        size_t next = model_next_layer(m, i);
        const spec_layer *act = NULL;
        size_t last = i; /* the layer whose output this step produces */
        if ((l->op == SPEC_CONV2D || l->op == SPEC_LINEAR) && next < s->n_layers &&
            model_layer_is_eltwise(&s->layers[next])) {
            act = &s->layers[next];
            last = next;
        }
        switch (l->op) {
        case SPEC_CONV2D:
            st = build_conv(&b, i, act, &r->shapes[i], &r->pads[i], dt);
            break;
        case SPEC_LINEAR:
            st = build_linear(&b, i, act, dt);
            break;
        case SPEC_FLATTEN:
            if (next < s->n_layers && s->layers[next].op == SPEC_LINEAR)
                st = ENGINE_OK; /* the inner product flattens by itself */
            else
                st = build_flatten(&b);
            break;
        default:
            st = build_simple(&b, i, &r->shapes[i], &r->pads[i]);
            break;
        }
        if (st != ENGINE_OK)
            goto fail;
        b.cur_shape = r->shapes[last];
        i = last + 1;
    }

    /* The answer goes out as plain row-major float32. */
    p->out_shape = s->n_layers ? r->shapes[s->n_layers - 1] : b.cur_shape;
    dnnl_memory_desc_t out_md;
    dnnl_dims_t od = {0};
    memcpy(od, p->out_shape.d, sizeof p->out_shape.d);
    CK(dnnl_memory_desc_init_by_tag(&out_md, p->out_shape.rank, od, dnnl_f32,
                                    p->out_shape.rank == 4 ? dnnl_nchw : dnnl_nc));
    if ((st = new_mem(&b, &out_md, DNNL_MEMORY_NONE, &p->out_user)) != ENGINE_OK)
        goto fail;
    if (b.cur_md.ndims != out_md.ndims) {
        /* A trailing Flatten that nothing consumed: view the last tensor flat first. */
        if ((st = build_flatten(&b)) != ENGINE_OK)
            goto fail;
    }
    {
        dnnl_primitive_desc_t rpd = NULL;
        CK(dnnl_reorder_primitive_desc_create(&rpd, &b.cur_md, r->eng, &out_md, r->eng, NULL));
        dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, b.cur}, {DNNL_ARG_TO, p->out_user}};
        st = add_primitive(&b, "reorder", rpd, 2, args);
        dnnl_primitive_desc_destroy(rpd);
        if (st != ENGINE_OK)
            goto fail;
    }
    *out = p;
    return ENGINE_OK;
fail:
    plan_destroy(p);
    return st;
}

/* ---- runner ------------------------------------------------------------------------------ */

engine_status engine_runner_create(const engine_model *m, int threads, engine_runner **out,
                                   char *err, size_t errlen)
{
    engine_status st = ENGINE_OK;
    const spec_model *s = m->spec;
    *out = NULL;
    engine_runner *r = calloc(1, sizeof *r);
    if (!r)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    r->m = m;
    r->owner = pthread_self();
    r->precision = s->precision;
    r->lc = calloc(s->n_layers, sizeof *r->lc);
    r->shapes = calloc(s->n_layers, sizeof *r->shapes);
    r->pads = calloc(s->n_layers, sizeof *r->pads);
    if (!r->lc || !r->shapes || !r->pads) {
        st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
        goto fail;
    }
    if (threads > 0)
        omp_set_num_threads(threads);
    CK(dnnl_engine_create(&r->eng, dnnl_cpu, 0));
    CK(dnnl_stream_create(&r->strm, r->eng, dnnl_stream_default_flags));

    /* Batch buckets: powers of two up to max_batch_size, and max_batch_size itself. */
    int64_t maxb = s->max_batch_size > 0 ? s->max_batch_size : 1;
    if (maxb > RUNNER_MAX_BUCKET)
        maxb = RUNNER_MAX_BUCKET;
    for (int64_t bk = 1; bk <= maxb; bk *= 2)
        r->buckets[r->nbuckets++] = bk;
    if (r->buckets[r->nbuckets - 1] != maxb)
        r->buckets[r->nbuckets++] = maxb;
    *out = r;
    return ENGINE_OK;
fail:
    engine_runner_destroy(r);
    return st;
}

void engine_runner_destroy(engine_runner *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->nplans; i++)
        plan_destroy(r->plans[i]);
    if (r->lc) {
        for (size_t i = 0; i < r->m->spec->n_layers; i++) {
            layer_cache *lc = &r->lc[i];
            for (size_t k = 0; k < lc->nw; k++)
                dnnl_memory_destroy(lc->w[k].mem);
            free(lc->w);
            dnnl_memory_destroy(lc->bias);
            dnnl_memory_destroy(lc->mean);
            dnnl_memory_destroy(lc->var);
            dnnl_memory_destroy(lc->scale);
            dnnl_memory_destroy(lc->shift);
        }
        free(r->lc);
    }
    if (r->strm)
        dnnl_stream_destroy(r->strm);
    if (r->eng)
        dnnl_engine_destroy(r->eng);
    free(r->shapes);
    free(r->pads);
    free(r->out_buf);
    free(r);
}

/* The cached plan for (n, h, w), built on first use. A bf16 model whose primitives the CPU cannot
 * run falls back to f32 for good. */
static engine_status get_plan(engine_runner *r, int64_t n, int64_t h, int64_t w, plan **out,
                              char *err, size_t errlen)
{
    for (size_t i = 0; i < r->nplans; i++) {
        plan *p = r->plans[i];
        if (p->n == n && p->h == h && p->w == w) {
            p->last_used = ++r->tick;
            *out = p;
            return ENGINE_OK;
        }
    }
    plan *p = NULL;
    engine_status st = plan_build(r, n, h, w, r->precision, &p, err, errlen);
    if (st == ENGINE_E_BACKEND && r->precision == SPEC_BF16) {
        r->precision = SPEC_F32;
        st = plan_build(r, n, h, w, r->precision, &p, err, errlen);
    }
    if (st != ENGINE_OK)
        return st;
    if (r->nplans == RUNNER_MAX_PLANS) {
        size_t lru = 0;
        for (size_t i = 1; i < r->nplans; i++)
            if (r->plans[i]->last_used < r->plans[lru]->last_used)
                lru = i;
        plan_destroy(r->plans[lru]);
        r->plans[lru] = r->plans[--r->nplans];
    }
    p->last_used = ++r->tick;
    r->reference |= p->reference;
    r->plans[r->nplans++] = p;
    *out = p;
    return ENGINE_OK;
}

static engine_status plan_exec(engine_runner *r, plan *p, const float *in, float *out, char *err,
                               size_t errlen)
{
    engine_status st = ENGINE_OK;
    CK(dnnl_memory_set_data_handle(p->in_user, (void *)in)); /* read-only: source of a reorder */
    CK(dnnl_memory_set_data_handle(p->out_user, out));
    for (size_t i = 0; i < p->nsteps; i++)
        CK(dnnl_primitive_execute(p->steps[i].prim, r->strm, p->steps[i].nargs, p->steps[i].args));
    CK(dnnl_stream_wait(r->strm));
    r->last = p;
fail:
    return st;
}

static size_t shape_count(const spec_shape *s, int from)
{
    size_t c = 1;
    for (int i = from; i < s->rank; i++)
        c *= (size_t)s->d[i];
    return c;
}

engine_status engine_runner_run(engine_runner *r, const float *in, const int64_t *dims, int rank,
                                engine_tensor *out, char *err, size_t errlen)
{
    owner_check(r);
    const spec_model *s = r->m->spec;
    engine_status st;
    int bad;
    if (rank < 1 || rank > SPEC_MAX_RANK)
        return engine_fail(err, errlen, ENGINE_E_INPUT, "input rank %d; expected %d", rank,
                           s->input_rank + 1);
    for (int i = 0; i < rank; i++)
        if (dims[i] < 1)
            return engine_fail(err, errlen, ENGINE_E_INPUT,
                               "input dimension %d is %lld; expected >= 1", i, (long long)dims[i]);
    /* Shape inference with the real N checks every dim and overflow before anything is built. */
    st = spec_infer(s, dims, rank, r->shapes, NULL, &bad, err, errlen);
    if (st != ENGINE_OK)
        return ENGINE_E_INPUT;
    const spec_shape *os = &r->shapes[s->n_layers - 1];
    size_t per_in = 1, per_out = shape_count(os, 1), n = (size_t)dims[0], total;
    for (int i = 1; i < rank; i++)
        per_in *= (size_t)dims[i];
    if (__builtin_mul_overflow(per_out, n, &total))
        return engine_fail(err, errlen, ENGINE_E_INPUT, "output too large");
    if (total > r->out_cap) {
        float *nb = realloc(r->out_buf, total * sizeof *nb);
        if (!nb)
            return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory for the output");
        r->out_buf = nb;
        r->out_cap = total;
    }
    out->rank = os->rank;
    memcpy(out->dims, os->d, sizeof out->dims);
    out->dims[0] = (int64_t)n;
    out->count = total;
    out->data = r->out_buf;

    int64_t h = rank == 4 ? dims[2] : 0, w = rank == 4 ? dims[3] : 0;
    size_t done = 0;
    while (done < n) {
        int64_t bk = 1;
        for (int i = 0; i < r->nbuckets; i++)
            if ((size_t)r->buckets[i] <= n - done)
                bk = r->buckets[i];
        plan *p;
        if ((st = get_plan(r, bk, h, w, &p, err, errlen)) != ENGINE_OK)
            return st;
        st = plan_exec(r, p, in + done * per_in, r->out_buf + done * per_out, err, errlen);
        if (st != ENGINE_OK)
            return st;
        done += (size_t)bk;
    }
    return ENGINE_OK;
}

engine_status engine_runner_warmup(engine_runner *r, char *err, size_t errlen)
{
    owner_check(r);
    const spec_model *s = r->m->spec;
    int rank = s->input_rank + 1;
    int64_t dims[SPEC_MAX_RANK] = {1, s->input_dims[0], 0, 0};
    if (rank == 4) {
        dims[2] = s->input_dims[1];
        dims[3] = s->input_dims[2];
        if (dims[2] < 0 || dims[3] < 0) {
            if (!s->preprocess.present || s->preprocess.resize[0] <= 0)
                return ENGINE_OK; /* nothing fixed to warm up */
            dims[2] = s->preprocess.resize[0];
            dims[3] = s->preprocess.resize[1];
        }
    }
    size_t per = 1;
    for (int i = 1; i < rank; i++)
        per *= (size_t)dims[i];
    int64_t maxb = r->buckets[r->nbuckets - 1];
    float *zeros = calloc(per * (size_t)maxb, sizeof *zeros);
    if (!zeros)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    engine_status st = ENGINE_OK;
    engine_tensor out;
    for (int i = 0; i < r->nbuckets && st == ENGINE_OK; i++) {
        dims[0] = r->buckets[i];
        st = engine_runner_run(r, zeros, dims, rank, &out, err, errlen);
    }
    free(zeros);
    return st;
}

spec_precision engine_runner_precision(const engine_runner *r)
{
    return r->precision;
}

bool engine_runner_uses_reference(const engine_runner *r)
{
    return r->reference;
}

const char *engine_runner_kernels(const engine_runner *r, char *buf, size_t len)
{
    snprintf(buf, len, "%s", r->last ? r->last->kernels : "");
    return buf;
}
