/* plan.c - lowers a model's nodes into oneDNN primitives for one input shape, and plans their
 * buffers by lifetime.
 *
 * Each node asks oneDNN for the layouts it runs best with (format `any`), and the tensors it reads
 * are converted where the producer chose another (a reorder, made once per value and layout and
 * shared by every reader). Every tensor lives in a slot; when the plan is complete, slots are
 * packed into one arena by their lifetimes (first and last step that touches them), largest
 * first, so that a buffer whose value is dead is reused. Elementwise nodes write in place when
 * they are the last reader of their input, and a convolution with a fused residual Add writes
 * into the buffer of the tensor it adds (oneDNN's sum post-op accumulates into the destination).
 * Scratchpads are slots too, alive for their own step only.
 */
#include "plan.h"

#include <inttypes.h>
#include <math.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    ARENA_ALIGN = 64, /* bytes: a cache line, and AVX-512's vector size */
    MAX_POST_OPS = 2 * NODE_MAX_POST + 1,
};

/* A memory object of the plan being built: its descriptor and where its bytes live. */
typedef struct {
    dnnl_memory_desc_t md;
    dnnl_memory_t mem;
    int slot; /* arena slot, PLAN_SLOT_IN or PLAN_SLOT_OUT */
    size_t offset;
} tensor;

typedef struct {
    size_t size;
    int first, last; /* steps that write first and read last */
    int users;       /* tensors over this slot */
} slot_info;

/* A value (a node's output, or the model input) and the tensors holding it: the first in the
 * layout its producer chose, the others converted for readers that wanted another. */
typedef struct {
    int *tensors;
    int n, cap;
    int flat_of; /* a Flatten: the value it flattens (viewed lazily), or FLAT_NONE */
    spec_shape shape;
} value_info;

#define FLAT_NONE (-3)

typedef struct {
    engine_runner *r;
    plan *p;
    const engine_model *m;
    dnnl_data_type_t dt; /* of convolutions and inner products */
    spec_shape *shapes;  /* per layer */
    spec_padding *pads;
    tensor *t;
    int nt, capt;
    slot_info *slots;
    int ns, caps;
    value_info *vals; /* index v + 1: 0 is the model input */
    size_t capsteps, capbinds;
    char *err;
    size_t errlen;
} builder;

/* Every oneDNN call is checked; a failure names the call and where it was made. Used in functions
 * with a builder `b`, an `engine_status st` and a `fail:` label. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        dnnl_status_t ck_s_ = (call);                                                              \
        if (ck_s_ != dnnl_success) {                                                               \
            st = engine_fail(b->err, b->errlen, ENGINE_E_BACKEND, "%s:%d: %s failed: %s",          \
                             __FILE__, __LINE__, #call, dnnl_status2str(ck_s_));                   \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define TRY(call)                                                                                  \
    do {                                                                                           \
        st = (call);                                                                               \
        if (st != ENGINE_OK)                                                                       \
            goto fail;                                                                             \
    } while (0)

static engine_status no_memory(builder *b)
{
    return engine_fail(b->err, b->errlen, ENGINE_E_NOMEM, "out of memory building a plan");
}

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
#ifdef CONVSERVE_EXACT_GROWTH
    size_t c = need; /* sanitizer builds: every overrun past what was asked is caught */
#else
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
#endif
    void *n = realloc(*p, c * elem);
    if (!n)
        return false;
    *p = n;
    *cap = c;
    return true;
}

static value_info *val(builder *b, int v)
{
    return &b->vals[v + 1];
}

/* The step the next primitive will be. */
static int now(const builder *b)
{
    return (int)b->p->nsteps;
}

/* ---- tensors and slots ------------------------------------------------------------------- */

static int new_slot(builder *b, size_t size)
{
    size_t cap = (size_t)b->caps;
    if (!grow((void **)&b->slots, &cap, (size_t)b->ns + 1, sizeof *b->slots))
        return -1;
    b->caps = (int)cap;
    b->slots[b->ns] = (slot_info){.size = size, .first = now(b), .last = now(b)};
    return b->ns++;
}

/* A tensor over `slot` (or the caller's buffers), `offset` bytes in. `desc` may point into b->t,
 * which this call may move: it is copied first. */
static engine_status new_tensor(builder *b, const dnnl_memory_desc_t *desc, int slot, size_t offset,
                                int *out)
{
    engine_status st = ENGINE_OK;
    const dnnl_memory_desc_t copy = *desc, *md = &copy;
    size_t cap = (size_t)b->capt;
    if (!grow((void **)&b->t, &cap, (size_t)b->nt + 1, sizeof *b->t))
        return no_memory(b);
    b->capt = (int)cap;
    if (!grow((void **)&b->p->binds, &b->capbinds, b->p->nbinds + 1, sizeof *b->p->binds))
        return no_memory(b);
    tensor *t = &b->t[b->nt];
    t->md = *md;
    t->slot = slot;
    t->offset = offset;
    t->mem = NULL;
    CK(dnnl_memory_create(&t->mem, md, b->r->eng, DNNL_MEMORY_NONE));
    b->p->binds[b->p->nbinds++] = (plan_binding){t->mem, slot, offset};
    if (slot >= 0)
        b->slots[slot].users++;
    *out = b->nt++;
fail:
    return st;
}

/* A tensor with its own new slot, written by the next step. */
static engine_status fresh_tensor(builder *b, const dnnl_memory_desc_t *md, int *out)
{
    int slot = new_slot(b, dnnl_memory_desc_get_size(md));
    if (slot < 0)
        return no_memory(b);
    return new_tensor(b, md, slot, 0, out);
}

/* Records that the next step touches tensor t, which keeps its slot alive until then. */
static void touch(builder *b, int t)
{
    int slot = b->t[t].slot;
    if (slot >= 0 && b->slots[slot].last < now(b))
        b->slots[slot].last = now(b);
}

static engine_status add_value_tensor(builder *b, int v, int t)
{
    value_info *vi = val(b, v);
    size_t cap = (size_t)vi->cap;
    if (!grow((void **)&vi->tensors, &cap, (size_t)vi->n + 1, sizeof *vi->tensors))
        return no_memory(b);
    vi->cap = (int)cap;
    vi->tensors[vi->n++] = t;
    return ENGINE_OK;
}

/* ---- steps --------------------------------------------------------------------------------- */

static void note_kernel(builder *b, const char *what, const_dnnl_primitive_desc_t pd)
{
    const char *impl = "?";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    if (!strncmp(impl, "ref:", 4))
        b->p->reference = true;
    char *k = b->p->kernels;
    size_t o = strlen(k);
    if (o + 1 < PLAN_KERNELS)
        snprintf(k + o, PLAN_KERNELS - o, "%s%s=%s", o ? "," : "", what, impl);
}

/* Attributes every primitive gets: a user scratchpad (a slot of the arena) and the post-ops. */
static engine_status make_attr(builder *b, dnnl_post_ops_t po, dnnl_primitive_attr_t *attr)
{
    engine_status st = ENGINE_OK;
    CK(dnnl_primitive_attr_create(attr));
    CK(dnnl_primitive_attr_set_scratchpad_mode(*attr, dnnl_scratchpad_mode_user));
    if (po)
        CK(dnnl_primitive_attr_set_post_ops(*attr, po));
fail:
    return st;
}

/* Creates the primitive of pd, gives it a scratchpad slot if it needs one, and appends it with
 * the given arguments (the tensors' memories). Touches every tensor argument. */
static engine_status add_step(builder *b, const char *what, const_dnnl_primitive_desc_t pd,
                              int nargs, const int *arg_kinds, const int *arg_tensors)
{
    engine_status st = ENGINE_OK;
    dnnl_primitive_t prim = NULL;
    dnnl_exec_arg_t *args = NULL;
    plan *p = b->p;
    if (!grow((void **)&p->steps, &b->capsteps, p->nsteps + 1, sizeof *p->steps))
        return no_memory(b);
    args = calloc((size_t)nargs + 1, sizeof *args);
    if (!args)
        return no_memory(b);
    CK(dnnl_primitive_create(&prim, pd));
    for (int i = 0; i < nargs; i++) {
        touch(b, arg_tensors[i]);
        args[i] = (dnnl_exec_arg_t){arg_kinds[i], b->t[arg_tensors[i]].mem};
    }
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    if (smd && dnnl_memory_desc_get_size(smd) > 0) {
        int t;
        TRY(fresh_tensor(b, smd, &t));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, b->t[t].mem};
    }
    int64_t bytes = 0;
    if (dnnl_primitive_desc_query(pd, dnnl_query_memory_consumption_s64, 0, &bytes) ==
            dnnl_success &&
        bytes > 0)
        p->primitive_bytes += (size_t)bytes;
    note_kernel(b, what, pd);
    p->steps[p->nsteps++] = (plan_step){.prim = prim, .args = args, .nargs = nargs};
    return ENGINE_OK;
fail:
    if (prim)
        dnnl_primitive_destroy(prim);
    free(args);
    return st;
}

/* A reorder from tensor `from` into tensor `to`. */
static engine_status add_reorder(builder *b, int from, int to)
{
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    TRY(make_attr(b, NULL, &attr));
    CK(dnnl_reorder_primitive_desc_create(&pd, &b->t[from].md, b->r->eng, &b->t[to].md, b->r->eng,
                                          attr));
    int kinds[] = {DNNL_ARG_FROM, DNNL_ARG_TO}, ts[] = {from, to};
    st = add_step(b, "reorder", pd, 2, kinds, ts);
fail:
    dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* ---- values ------------------------------------------------------------------------------- */

static engine_status connect(builder *b, int v, const dnnl_memory_desc_t *want, int *out);

/* The tensor a value was produced in. A Flatten is viewed lazily: its input in plain row-major
 * order (PyTorch's flattening order) seen as [N, C*H*W], sharing the bytes. */
static engine_status primary(builder *b, int v, int *out)
{
    engine_status st = ENGINE_OK;
    value_info *vi = val(b, v);
    if (vi->n > 0) {
        *out = vi->tensors[0];
        return ENGINE_OK;
    }
    if (vi->flat_of == FLAT_NONE)
        return engine_fail(b->err, b->errlen, ENGINE_E_BACKEND, "value %d has no tensor", v);
    int src;
    TRY(primary(b, vi->flat_of, &src));
    const dnnl_memory_desc_t src_md = b->t[src].md, *smd = &src_md; /* b->t may move below */
    if (smd->ndims == 2) {
        TRY(add_value_tensor(b, v, src));
        *out = src;
        return ENGINE_OK;
    }
    dnnl_memory_desc_t plain, flat;
    CK(dnnl_memory_desc_init_by_tag(&plain, 4, smd->dims, smd->data_type, dnnl_abcd));
    int base;
    TRY(connect(b, vi->flat_of, &plain, &base));
    dnnl_dims_t fd = {smd->dims[0], smd->dims[1] * smd->dims[2] * smd->dims[3]};
    CK(dnnl_memory_desc_init_by_tag(&flat, 2, fd, smd->data_type, dnnl_ab));
    int view;
    TRY(new_tensor(b, &flat, b->t[base].slot, b->t[base].offset, &view));
    TRY(add_value_tensor(b, v, view));
    *out = view;
fail:
    return st;
}

/* Value v in layout `want`: the tensor that already has it, or a reorder into a new one. */
static engine_status connect(builder *b, int v, const dnnl_memory_desc_t *want, int *out)
{
    engine_status st = ENGINE_OK;
    int src;
    TRY(primary(b, v, &src));
    value_info *vi = val(b, v);
    for (int i = 0; i < vi->n; i++) {
        if (dnnl_memory_desc_equal(&b->t[vi->tensors[i]].md, want)) {
            *out = vi->tensors[i];
            return ENGINE_OK;
        }
    }
    int t;
    TRY(fresh_tensor(b, want, &t));
    TRY(add_reorder(b, src, t));
    TRY(add_value_tensor(b, v, t));
    *out = t;
fail:
    return st;
}

/* The output tensor of node v: written in place over `in` (a tensor of the input value `in_v`)
 * when node v is that value's last reader and the layouts agree, else a fresh one. */
static engine_status dst_tensor(builder *b, int v, int in_v, int in, const dnnl_memory_desc_t *md,
                                int *out)
{
    const tensor *t = &b->t[in];
    /* A Flatten's tensor is a view of the value it flattens: that one must be dead too. */
    bool dead = true;
    for (int x = in_v; dead && x != FLAT_NONE; x = val(b, x)->flat_of)
        dead = x >= 0 && b->m->nodes[x].last_use == v;
    if (dead && t->slot >= 0 && dnnl_memory_desc_equal(&t->md, md))
        return new_tensor(b, md, t->slot, t->offset, out);
    return fresh_tensor(b, md, out);
}

static engine_status set_output(builder *b, int v, int t)
{
    return add_value_tensor(b, v, t);
}

/* dnnl_memory_desc_init_by_tag for dims held in a shorter array. */
static dnnl_status_t md_init(dnnl_memory_desc_t *md, int rank, const int64_t *d,
                             dnnl_data_type_t dt, dnnl_format_tag_t tag)
{
    dnnl_dims_t dims = {0};
    memcpy(dims, d, (size_t)rank * sizeof *d);
    return dnnl_memory_desc_init_by_tag(md, rank, dims, dt, tag);
}

/* A layout like `proto`'s (same tag) for other dims: plain, channels-last or channel-blocked. */
static bool md_like(const dnnl_memory_desc_t *proto, const int64_t *dims, dnnl_data_type_t dt,
                    dnnl_memory_desc_t *out)
{
    static const dnnl_format_tag_t tags4[] = {dnnl_abcd, dnnl_acdb, dnnl_aBcd16b, dnnl_aBcd8b,
                                              dnnl_aBcd4b};
    if (proto->ndims == 2)
        return md_init(out, 2, dims, dt, dnnl_ab) == dnnl_success;
    for (size_t i = 0; i < sizeof tags4 / sizeof tags4[0]; i++) {
        dnnl_memory_desc_t probe;
        if (dnnl_memory_desc_init_by_tag(&probe, 4, proto->dims, proto->data_type, tags4[i]) !=
                dnnl_success ||
            !dnnl_memory_desc_equal(&probe, proto))
            continue;
        return md_init(out, 4, dims, dt, tags4[i]) == dnnl_success;
    }
    return false;
}

static bool is_reference(const_dnnl_primitive_desc_t pd)
{
    const char *impl = "";
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    return !strncmp(impl, "ref:", 4);
}

/* ---- activations ------------------------------------------------------------------------- */

typedef struct {
    dnnl_alg_kind_t alg;
    float alpha, beta;
} eltwise_op;

/* PyTorch's activation as oneDNN eltwise ops: one, or two for Hardsigmoid (x / 6 + 1/2 clipped to
 * [0, 1], which is PyTorch's relu6(x + 3) / 6). */
static int activation_ops(const spec_layer *l, eltwise_op ops[2])
{
    switch (l->op) {
    case SPEC_LEAKYRELU:
        ops[0] = (eltwise_op){dnnl_eltwise_relu, (float)l->negative_slope, 0};
        return 1;
    case SPEC_SIGMOID:
        ops[0] = (eltwise_op){dnnl_eltwise_logistic, 0, 0};
        return 1;
    case SPEC_TANH:
        ops[0] = (eltwise_op){dnnl_eltwise_tanh, 0, 0};
        return 1;
    case SPEC_GELU:
        ops[0] = (eltwise_op){l->gelu_tanh ? dnnl_eltwise_gelu_tanh : dnnl_eltwise_gelu_erf, 0, 0};
        return 1;
    case SPEC_RELU6:
        ops[0] = (eltwise_op){dnnl_eltwise_clip, 0, 6};
        return 1;
    case SPEC_HARDSWISH:
        ops[0] = (eltwise_op){dnnl_eltwise_hardswish, 0, 0};
        return 1;
    case SPEC_HARDSIGMOID:
        ops[0] = (eltwise_op){dnnl_eltwise_linear, 1.0f / 6.0f, 0.5f};
        ops[1] = (eltwise_op){dnnl_eltwise_clip, 0, 1};
        return 2;
    case SPEC_SILU:
        ops[0] = (eltwise_op){dnnl_eltwise_swish, 1, 0};
        return 1;
    default:
        ops[0] = (eltwise_op){dnnl_eltwise_relu, 0, 0};
        return 1;
    }
}

static engine_status eltwise_step(builder *b, const eltwise_op *op, int src, int dst);

/* How many of a node's activations go into its post-ops. oneDNN 2.6 mixes up two eltwise post-ops
 * of one algorithm with different parameters in some kernels (a 1x1 or summing convolution with
 * ReLU6 then Hardsigmoid clips both at 6: seen on AVX-512 and AVX2), so a chain stops before an
 * activation that would repeat an algorithm with other parameters; the rest run after it. */
static int fused_posts(builder *b, const node *nd)
{
    eltwise_op chain[MAX_POST_OPS];
    int n = 0;
    for (int i = 0; i < nd->n_post; i++) {
        eltwise_op ops[2];
        int k = activation_ops(&b->m->spec->layers[nd->post[i]], ops);
        for (int j = 0; j < k; j++)
            for (int c = 0; c < n; c++)
                if (chain[c].alg == ops[j].alg &&
                    (chain[c].alpha != ops[j].alpha || chain[c].beta != ops[j].beta))
                    return i;
        for (int j = 0; j < k; j++)
            chain[n++] = ops[j];
    }
    return nd->n_post;
}

/* The activations of node v from its `first`, in place over its output `dst`. */
static engine_status posts_from(builder *b, const node *nd, int first, int dst)
{
    engine_status st = ENGINE_OK;
    for (int i = first; i < nd->n_post; i++) {
        eltwise_op ops[2];
        int k = activation_ops(&b->m->spec->layers[nd->post[i]], ops);
        for (int j = 0; j < k; j++)
            TRY(eltwise_step(b, &ops[j], dst, dst));
    }
fail:
    return st;
}

/* The activations of node v that fused_posts left out, in place over its output `dst`. */
static engine_status unfused_posts(builder *b, const node *nd, int dst)
{
    return posts_from(b, nd, fused_posts(b, nd), dst);
}

/* Whether layout md has inner blocks (aBcd8b, aBcd16b, ...), not plain or channels-last. */
static bool channel_blocked(const dnnl_memory_desc_t *md)
{
    return md->format_kind == dnnl_blocked && md->format_desc.blocking.inner_nblks > 0;
}

/* Whether a binary op over tensors of layout md may carry eltwise post-ops. oneDNN 2.6's binary
 * kernel gives wrong results with them on AVX2 when the channels are blocked and do not fill the
 * last block (aBcd8b with C = 6, found by live_check), so such a layout runs them after it. */
static bool binary_takes_posts(const dnnl_memory_desc_t *md)
{
    return !channel_blocked(md) || md->ndims < 2 || md->padded_dims[1] == md->dims[1];
}

/* The post-ops of node v: its fused residual sum, then its activations. NULL when it has none. */
static engine_status node_post_ops(builder *b, const node *nd, dnnl_post_ops_t *out)
{
    engine_status st = ENGINE_OK;
    int n_post = fused_posts(b, nd);
    *out = NULL;
    if (nd->sum_input == NODE_NO_SUM && n_post == 0)
        return ENGINE_OK;
    CK(dnnl_post_ops_create(out));
    if (nd->sum_input != NODE_NO_SUM)
        CK(dnnl_post_ops_append_sum(*out, 1.0f));
    for (int i = 0; i < n_post; i++) {
        eltwise_op ops[2];
        int n = activation_ops(&b->m->spec->layers[nd->post[i]], ops);
        for (int k = 0; k < n; k++)
            CK(dnnl_post_ops_append_eltwise(*out, 1.0f, ops[k].alg, ops[k].alpha, ops[k].beta));
    }
    return ENGINE_OK;
fail:
    dnnl_post_ops_destroy(*out);
    *out = NULL;
    return st;
}

/* ---- weights ------------------------------------------------------------------------------ */

weight_store *weight_store_create(size_t n_layers)
{
    weight_store *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->lc = calloc(n_layers ? n_layers : 1, sizeof *w->lc);
    if (!w->lc) {
        free(w);
        return NULL;
    }
    w->n_layers = n_layers;
    pthread_mutex_init(&w->mu, NULL);
    return w;
}

void weight_store_destroy(weight_store *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_layers; i++) {
        layer_cache *lc = &w->lc[i];
        for (size_t k = 0; k < lc->nw; k++)
            dnnl_memory_destroy(lc->w[k].mem);
        free(lc->w);
        dnnl_memory_destroy(lc->bias);
        dnnl_memory_destroy(lc->mean);
        dnnl_memory_destroy(lc->var);
        dnnl_memory_destroy(lc->scale);
        dnnl_memory_destroy(lc->shift);
    }
    free(w->lc);
    if (w->eng)
        dnnl_engine_destroy(w->eng);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

dnnl_status_t weight_store_engine(weight_store *w, dnnl_engine_t *out)
{
    dnnl_status_t s = dnnl_success;
    pthread_mutex_lock(&w->mu);
    if (!w->eng)
        s = dnnl_engine_create(&w->eng, dnnl_cpu, 0);
    *out = w->eng;
    pthread_mutex_unlock(&w->mu);
    return s;
}

/* The layer's weights in layout `want`, reordered from PyTorch's layout (`user`) the first time a
 * primitive of any runner asks for that layout, and shared afterwards. */
static engine_status layer_weights(builder *b, int layer, const dnnl_memory_desc_t *user,
                                   const dnnl_memory_desc_t *want, dnnl_memory_t *out)
{
    engine_runner *r = b->r;
    weight_store *ws = r->store;
    engine_status st = ENGINE_OK;
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t rp = NULL;
    pthread_mutex_lock(&ws->mu);
    layer_cache *lc = &ws->lc[layer];
    for (size_t i = 0; i < lc->nw; i++) {
        if (dnnl_memory_desc_equal(&lc->w[i].md, want)) {
            *out = lc->w[i].mem;
            goto done;
        }
    }
    weight_entry *n = realloc(lc->w, (lc->nw + 1) * sizeof *n);
    if (!n) {
        st = no_memory(b);
        goto done;
    }
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
    ws->bytes += dnnl_memory_desc_get_size(want);
    *out = dst;
    dst = NULL;
fail:
done:
    pthread_mutex_unlock(&ws->mu);
    dnnl_primitive_destroy(rp);
    dnnl_primitive_desc_destroy(rpd);
    dnnl_memory_destroy(src);
    dnnl_memory_destroy(dst);
    return st;
}

/* A float32 [C] memory over one of the model's arrays (bias, BatchNorm statistics), made once. */
static engine_status vector_mem(builder *b, dnnl_memory_t *slot, const float *data, int64_t n)
{
    weight_store *ws = b->r->store;
    engine_status st = ENGINE_OK;
    pthread_mutex_lock(&ws->mu);
    if (!*slot) {
        dnnl_memory_desc_t md;
        dnnl_dims_t d = {n};
        CK(dnnl_memory_desc_init_by_tag(&md, 1, d, dnnl_f32, dnnl_x));
        /* The primitives only read these arrays; oneDNN's API has no const handle. */
        CK(dnnl_memory_create(slot, &md, b->r->eng, (void *)data));
    }
fail:
    pthread_mutex_unlock(&ws->mu);
    return st;
}

/* Weights memories are the runner's, not tensors of the plan: wrap them as arguments directly. */
static engine_status add_weighted_step(builder *b, const char *what, const_dnnl_primitive_desc_t pd,
                                       int src, dnnl_memory_t weights, dnnl_memory_t bias, int dst)
{
    engine_status st = ENGINE_OK;
    int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST}, ts[] = {src, dst};
    TRY(add_step(b, what, pd, 2, kinds, ts));
    plan_step *s = &b->p->steps[b->p->nsteps - 1];
    dnnl_exec_arg_t *args = realloc(s->args, ((size_t)s->nargs + 2) * sizeof *args);
    if (!args)
        return no_memory(b);
    s->args = args;
    args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, weights};
    if (bias)
        args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, bias};
fail:
    return st;
}

/* ---- nodes -------------------------------------------------------------------------------- */

static const spec_shape *value_shape(builder *b, int v)
{
    return &val(b, v)->shape;
}

/* Where a node writes: a fresh tensor, or, for a fused residual sum, the buffer holding the other
 * operand (converted to the destination layout), since the sum post-op accumulates into it. */
static engine_status sum_dst(builder *b, int v, int src, const dnnl_memory_desc_t *dmd, int *out)
{
    engine_status st = ENGINE_OK;
    const node *nd = &b->m->nodes[v];
    int w = nd->sum_input, wt;
    TRY(connect(b, w, dmd, &wt));
    bool last = w >= 0 && b->m->nodes[w].last_use == v;
    if (last && b->t[wt].slot >= 0 && b->t[wt].slot != b->t[src].slot)
        return new_tensor(b, dmd, b->t[wt].slot, b->t[wt].offset, out);
    TRY(fresh_tensor(b, dmd, out));
    TRY(add_reorder(b, wt, *out));
fail:
    return st;
}

static engine_status build_conv(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_layer *l = &b->m->spec->layers[nd->layer];
    const model_layer *ml = &b->m->layers[nd->layer];
    const spec_shape *in = value_shape(b, nd->inputs[0]), *out = &b->shapes[nd->layer];
    const spec_padding *pad = &b->pads[nd->layer];
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_memory_desc_t src_md, w_md, wu_md, b_md, dst_md;
    int64_t g = l->groups;
    dnnl_dims_t sd = {in->d[0], l->in_channels, in->d[2], in->d[3]};
    dnnl_dims_t dd = {out->d[0], out->d[1], out->d[2], out->d[3]};
    dnnl_dims_t wd = {l->out_channels, l->in_channels, l->kernel[0], l->kernel[1]};
    dnnl_dims_t gwd = {g, l->out_channels / g, l->in_channels / g, l->kernel[0], l->kernel[1]};
    dnnl_dims_t bd = {l->out_channels};
    dnnl_dims_t strides = {l->stride[0], l->stride[1]};
    dnnl_dims_t dil = {l->dilation[0] - 1, l->dilation[1] - 1};
    dnnl_dims_t pl = {pad->pad_l[0], pad->pad_l[1]}, pr = {pad->pad_r[0], pad->pad_r[1]};

    CK(dnnl_memory_desc_init_by_tag(&src_md, 4, sd, b->dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&dst_md, 4, dd, b->dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_x));
    if (g > 1) {
        CK(dnnl_memory_desc_init_by_tag(&w_md, 5, gwd, b->dt, dnnl_format_tag_any));
        CK(dnnl_memory_desc_init_by_tag(&wu_md, 5, gwd, dnnl_f32, dnnl_goihw));
    } else {
        CK(dnnl_memory_desc_init_by_tag(&w_md, 4, wd, b->dt, dnnl_format_tag_any));
        CK(dnnl_memory_desc_init_by_tag(&wu_md, 4, wd, dnnl_f32, dnnl_oihw));
    }
    dnnl_convolution_desc_t cd;
    CK(dnnl_dilated_convolution_forward_desc_init(
        &cd, dnnl_forward_inference, dnnl_convolution_direct, &src_md, &w_md,
        ml->bias ? &b_md : NULL, &dst_md, strides, dil, pl, pr));
    TRY(node_post_ops(b, nd, &po));
    TRY(make_attr(b, po, &attr));
    CK(dnnl_primitive_desc_create(&pd, &cd, attr, b->r->eng, NULL));

    int src, dst;
    dnnl_memory_t wmem, bmem = NULL;
    TRY(connect(b, nd->inputs[0], dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &src));
    TRY(layer_weights(b, nd->layer, &wu_md,
                      dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), &wmem));
    if (ml->bias) {
        TRY(vector_mem(b, &b->r->store->lc[nd->layer].bias, ml->bias, l->out_channels));
        bmem = b->r->store->lc[nd->layer].bias;
    }
    const dnnl_memory_desc_t *dmd = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    if (nd->sum_input != NODE_NO_SUM)
        TRY(sum_dst(b, v, src, dmd, &dst));
    else
        TRY(fresh_tensor(b, dmd, &dst));
    TRY(add_weighted_step(b, "conv", pd, src, wmem, bmem, dst));
    TRY(unfused_posts(b, nd, dst));
    TRY(set_output(b, v, dst));
fail:
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

static engine_status build_linear(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_layer *l = &b->m->spec->layers[nd->layer];
    const model_layer *ml = &b->m->layers[nd->layer];
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_memory_desc_t src_any, w_md, wu_md, b_md, dst_md;

    /* Flatten + Linear is a 4-D inner product: PyTorch's [out, C*H*W] weight is, byte for byte,
     * an [out, C, H, W] oihw tensor, and oneDNN lays it out to follow the source. */
    int in_v = nd->inputs[0];
    value_info *vi = val(b, in_v);
    if (vi->flat_of != FLAT_NONE && vi->n == 0 && value_shape(b, vi->flat_of)->rank == 4)
        in_v = vi->flat_of;
    int src0;
    TRY(primary(b, in_v, &src0));
    const dnnl_memory_desc_t *cur = &b->t[src0].md;
    int nd_ = cur->ndims;
    int64_t n = cur->dims[0];
    dnnl_dims_t dd = {n, l->out_features};
    dnnl_dims_t bd = {l->out_features};
    dnnl_dims_t wd = {l->out_features, l->in_features, 0, 0};
    if (nd_ == 4) {
        wd[1] = cur->dims[1];
        wd[2] = cur->dims[2];
        wd[3] = cur->dims[3];
    }
    CK(dnnl_memory_desc_init_by_tag(&w_md, nd_, wd, b->dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&wu_md, nd_, wd, dnnl_f32, nd_ == 4 ? dnnl_oihw : dnnl_oi));
    CK(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_x));
    CK(dnnl_memory_desc_init_by_tag(&dst_md, 2, dd, b->dt, dnnl_format_tag_any));
    CK(dnnl_memory_desc_init_by_tag(&src_any, nd_, cur->dims, b->dt, dnnl_format_tag_any));
    TRY(node_post_ops(b, nd, &po));
    TRY(make_attr(b, po, &attr));

    /* Prefer the producer's layout as the source, so no reorder is needed; let oneDNN choose when
     * it has no fast kernel for that layout (or the data type differs). */
    dnnl_inner_product_desc_t ipd;
    bool ok = false;
    if (cur->data_type == b->dt &&
        dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, cur, &w_md,
                                             ml->bias ? &b_md : NULL, &dst_md) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &ipd, attr, b->r->eng, NULL) == dnnl_success) {
        ok = !is_reference(pd);
        if (!ok) {
            dnnl_primitive_desc_destroy(pd);
            pd = NULL;
        }
    }
    if (!ok) {
        CK(dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &src_any, &w_md,
                                                ml->bias ? &b_md : NULL, &dst_md));
        CK(dnnl_primitive_desc_create(&pd, &ipd, attr, b->r->eng, NULL));
    }
    int src, dst;
    dnnl_memory_t wmem, bmem = NULL;
    TRY(connect(b, in_v, dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0), &src));
    TRY(layer_weights(b, nd->layer, &wu_md,
                      dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0), &wmem));
    if (ml->bias) {
        TRY(vector_mem(b, &b->r->store->lc[nd->layer].bias, ml->bias, l->out_features));
        bmem = b->r->store->lc[nd->layer].bias;
    }
    TRY(fresh_tensor(b, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &dst));
    TRY(add_weighted_step(b, "linear", pd, src, wmem, bmem, dst));
    TRY(unfused_posts(b, nd, dst));
    TRY(set_output(b, v, dst));
fail:
    dnnl_post_ops_destroy(po);
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* One eltwise primitive over tensor `src` into `dst` (which may be the same buffer). */
static engine_status eltwise_step(builder *b, const eltwise_op *op, int src, int dst)
{
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_eltwise_desc_t ed;
    TRY(make_attr(b, NULL, &attr));
    CK(dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, op->alg, &b->t[src].md,
                                      op->alpha, op->beta));
    CK(dnnl_primitive_desc_create(&pd, &ed, attr, b->r->eng, NULL));
    int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST}, ts[] = {src, dst};
    st = add_step(b, "eltwise", pd, 2, kinds, ts);
fail:
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

static engine_status build_eltwise(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    engine_status st = ENGINE_OK;
    eltwise_op ops[2];
    int n = activation_ops(&b->m->spec->layers[nd->layer], ops);
    int src, dst;
    TRY(primary(b, nd->inputs[0], &src));
    TRY(dst_tensor(b, v, nd->inputs[0], src, &b->t[src].md, &dst));
    for (int k = 0; k < n; k++)
        TRY(eltwise_step(b, &ops[k], k == 0 ? src : dst, dst));
    TRY(set_output(b, v, dst));
fail:
    return st;
}

static engine_status build_bnorm(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_layer *l = &b->m->spec->layers[nd->layer];
    const model_layer *ml = &b->m->layers[nd->layer];
    layer_cache *lc = &b->r->store->lc[nd->layer];
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    int src, dst;
    TRY(primary(b, nd->inputs[0], &src));
    dnnl_batch_normalization_desc_t bd;
    unsigned flags = dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift;
    if (nd->n_post == 1) /* a ReLU fused at lowering: oneDNN applies it in the same pass */
        flags |= dnnl_fuse_norm_relu;
    TRY(make_attr(b, NULL, &attr));
    CK(dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_inference, &b->t[src].md,
                                                  (float)l->eps, flags));
    CK(dnnl_primitive_desc_create(&pd, &bd, attr, b->r->eng, NULL));
    int64_t c = l->num_features;
    TRY(vector_mem(b, &lc->mean, ml->mean, c));
    TRY(vector_mem(b, &lc->var, ml->var, c));
    TRY(vector_mem(b, &lc->scale, ml->scale, c));
    TRY(vector_mem(b, &lc->shift, ml->shift, c));
    TRY(dst_tensor(b, v, nd->inputs[0], src, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0),
                   &dst));
    int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST}, ts[] = {src, dst};
    TRY(add_step(b, "batchnorm", pd, 2, kinds, ts));
    plan_step *s = &b->p->steps[b->p->nsteps - 1];
    dnnl_exec_arg_t *args = realloc(s->args, ((size_t)s->nargs + 4) * sizeof *args);
    if (!args) {
        st = no_memory(b);
        goto fail;
    }
    s->args = args;
    args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, lc->mean};
    args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, lc->var};
    args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE, lc->scale};
    args[s->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SHIFT, lc->shift};
    TRY(set_output(b, v, dst));
fail:
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* Average or max pooling of tensor `src` into a fresh tensor (destination layout `any`). */
static engine_status pool_step(builder *b, int src, const spec_shape *out, dnnl_alg_kind_t alg,
                               const int64_t kernel[2], const int64_t stride[2],
                               const int64_t dil[2], const int64_t pl[2], const int64_t pr[2],
                               int *dst)
{
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_memory_desc_t dst_any;
    dnnl_dims_t dd = {out->d[0], out->d[1], out->d[2], out->d[3]};
    dnnl_dims_t k = {kernel[0], kernel[1]}, s = {stride[0], stride[1]}, d = {dil[0], dil[1]};
    dnnl_dims_t l = {pl[0], pl[1]}, r = {pr[0], pr[1]};
    CK(dnnl_memory_desc_init_by_tag(&dst_any, 4, dd, b->t[src].md.data_type, dnnl_format_tag_any));
    dnnl_pooling_v2_desc_t pd2;
    CK(dnnl_pooling_v2_forward_desc_init(&pd2, dnnl_forward_inference, alg, &b->t[src].md, &dst_any,
                                         s, k, d, l, r));
    TRY(make_attr(b, NULL, &attr));
    CK(dnnl_primitive_desc_create(&pd, &pd2, attr, b->r->eng, NULL));
    TRY(fresh_tensor(b, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), dst));
    int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST}, ts[] = {src, *dst};
    st = add_step(b, "pooling", pd, 2, kinds, ts);
fail:
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* The plain C kernels work on one [H, W] plane of float32 NCHW at a time, and s->dims begins
 * with N*C, H, W, OH, OW; the planes run on the OpenMP team. */
typedef void plane_fn(const float *x, float *y, const int64_t *d);

static void run_planes(const plan_step *s, plane_fn *fn)
{
    void *in_h = NULL, *out_h = NULL;
    dnnl_memory_get_data_handle(s->args[0].memory, &in_h);
    dnnl_memory_get_data_handle(s->args[1].memory, &out_h);
    const float *in = in_h;
    float *out = out_h;
    const int64_t *d = s->dims;
#pragma omp parallel for schedule(static)
    for (int64_t p = 0; p < d[0]; p++)
        fn(in + p * d[1] * d[2], out + p * d[3] * d[4], d);
}

/* AvgPool2d exactly as PyTorch's CPU kernel (dims: N*C, H, W, OH, OW, kh, kw, sh, sw, ph, pw):
 * the window clipped to the padded input gives the divisor (count_include_pad), then clipped to
 * the input gives the cells summed. Used where oneDNN divides differently: ceil_mode windows that
 * overhang the padded input. */
static void avg_pool_plane(const float *x, float *y, const int64_t *d)
{
    const int64_t h = d[1], w = d[2], oh = d[3], ow = d[4];
    for (int64_t i = 0; i < oh; i++) {
        for (int64_t j = 0; j < ow; j++) {
            int64_t h0 = i * d[7] - d[9], w0 = j * d[8] - d[10];
            int64_t h1 = h0 + d[5], w1 = w0 + d[6];
            h1 = h1 < h + d[9] ? h1 : h + d[9];
            w1 = w1 < w + d[10] ? w1 : w + d[10];
            int64_t area = (h1 - h0) * (w1 - w0);
            h0 = h0 > 0 ? h0 : 0;
            w0 = w0 > 0 ? w0 : 0;
            h1 = h1 < h ? h1 : h;
            w1 = w1 < w ? w1 : w;
            float sum = 0;
            for (int64_t r = h0; r < h1; r++)
                for (int64_t c = w0; c < w1; c++)
                    sum += x[r * w + c];
            y[i * ow + j] = h0 < h1 && w0 < w1 ? sum / (float)area : 0.0f;
        }
    }
}

static void avg_pool_kernel(const plan_step *s)
{
    run_planes(s, avg_pool_plane);
}

/* A plain C kernel step from value v (as float32 NCHW) into a fresh float32 NCHW tensor. */
static engine_status kernel_step(builder *b, int v, const spec_shape *out, const char *what,
                                 void (*kernel)(const plan_step *), const int64_t *dims, int ndims)
{
    engine_status st = ENGINE_OK;
    const spec_shape *in = value_shape(b, b->m->nodes[v].inputs[0]);
    dnnl_memory_desc_t in_md, out_md;
    int src, dst;
    CK(md_init(&in_md, 4, in->d, dnnl_f32, dnnl_abcd));
    CK(md_init(&out_md, 4, out->d, dnnl_f32, dnnl_abcd));
    TRY(connect(b, b->m->nodes[v].inputs[0], &in_md, &src));
    TRY(fresh_tensor(b, &out_md, &dst));
    touch(b, src);
    touch(b, dst);
    /* After connect(), which may append a reorder step of its own. */
    if (!grow((void **)&b->p->steps, &b->capsteps, b->p->nsteps + 1, sizeof *b->p->steps))
        return no_memory(b);
    dnnl_exec_arg_t *args = calloc(2, sizeof *args);
    if (!args)
        return no_memory(b);
    args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, b->t[src].mem};
    args[1] = (dnnl_exec_arg_t){DNNL_ARG_DST, b->t[dst].mem};
    plan_step *s = &b->p->steps[b->p->nsteps++];
    *s = (plan_step){.kernel = kernel, .args = args, .nargs = 2};
    memcpy(s->dims, dims, (size_t)ndims * sizeof *dims);
    char *k = b->p->kernels;
    size_t o = strlen(k);
    if (o + 1 < PLAN_KERNELS)
        snprintf(k + o, PLAN_KERNELS - o, "%s%s=convserve:c", o ? "," : "", what);
    TRY(set_output(b, v, dst));
fail:
    return st;
}

/* MaxPool2d with dilation exactly as PyTorch's CPU kernel (dims: N*C, H, W, OH, OW, kh, kw, sh,
 * sw, ph, pw, dh, dw): the window's cells are d apart, cells outside the input are skipped, and a
 * NaN wins. oneDNN 2.6 has no JIT kernel for dilated pooling (only its reference code). */
static void max_pool_dilated_plane(const float *x, float *y, const int64_t *d)
{
    const int64_t h = d[1], w = d[2], oh = d[3], ow = d[4];
    for (int64_t i = 0; i < oh; i++) {
        for (int64_t j = 0; j < ow; j++) {
            float m = -INFINITY;
            for (int64_t a = 0; a < d[5]; a++) {
                int64_t r = i * d[7] - d[9] + a * d[11];
                if (r < 0 || r >= h)
                    continue;
                for (int64_t c = 0; c < d[6]; c++) {
                    int64_t q = j * d[8] - d[10] + c * d[12];
                    if (q < 0 || q >= w)
                        continue;
                    float e = x[r * w + q];
                    if (e > m || isnan(e))
                        m = e;
                }
            }
            y[i * ow + j] = m;
        }
    }
}

static void max_pool_dilated_kernel(const plan_step *s)
{
    run_planes(s, max_pool_dilated_plane);
}

static engine_status build_pool(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_layer *l = &b->m->spec->layers[nd->layer];
    const spec_padding *pad = &b->pads[nd->layer];
    engine_status st = ENGINE_OK;
    int64_t dil[2] = {0, 0};
    dnnl_alg_kind_t alg;
    if (l->op == SPEC_MAXPOOL2D) {
        alg = dnnl_pooling_max;
        dil[0] = l->dilation[0] - 1;
        dil[1] = l->dilation[1] - 1;
        if (dil[0] || dil[1]) {
            const spec_shape *in = value_shape(b, nd->inputs[0]), *o = &b->shapes[nd->layer];
            int64_t dims[] = {
                in->d[0] * in->d[1], in->d[2],       in->d[3],      o->d[2],      o->d[3],
                l->kernel[0],        l->kernel[1],   l->stride[0],  l->stride[1], l->padding[0],
                l->padding[1],       l->dilation[0], l->dilation[1]};
            return kernel_step(b, v, o, "max_pooling", max_pool_dilated_kernel, dims,
                               (int)(sizeof dims / sizeof dims[0]));
        }
    } else {
        /* Without padding both PyTorch divisors are the window's part inside the input (ceil_mode
         * windows included), which is oneDNN's exclude-padding. With padding and ceil_mode, a
         * window overhanging the padded input is divided by its part inside the padded input,
         * which oneDNN does not do: a plain kernel runs those. */
        bool padded = l->padding[0] || l->padding[1];
        if (padded && l->ceil_mode && l->count_include_pad) {
            const spec_shape *in = value_shape(b, nd->inputs[0]), *o = &b->shapes[nd->layer];
            int64_t dims[] = {
                in->d[0] * in->d[1], in->d[2],     in->d[3],     o->d[2],      o->d[3],
                l->kernel[0],        l->kernel[1], l->stride[0], l->stride[1], l->padding[0],
                l->padding[1]};
            return kernel_step(b, v, o, "avg_pooling", avg_pool_kernel, dims,
                               (int)(sizeof dims / sizeof dims[0]));
        }
        alg = l->count_include_pad && padded ? dnnl_pooling_avg_include_padding
                                             : dnnl_pooling_avg_exclude_padding;
    }
    int src, dst;
    TRY(primary(b, nd->inputs[0], &src));
    TRY(pool_step(b, src, &b->shapes[nd->layer], alg, l->kernel, l->stride, dil, pad->pad_l,
                  pad->pad_r, &dst));
    TRY(set_output(b, v, dst));
fail:
    return st;
}

/* PyTorch's adaptive average pooling (dims: N*C, H, W, OH, OW): output cell i averages input
 * rows floor(i * H / OH) to ceil((i + 1) * H / OH) - 1, and the same for columns. */
static void adaptive_avg_plane(const float *x, float *y, const int64_t *d)
{
    const int64_t h = d[1], w = d[2], oh = d[3], ow = d[4];
    for (int64_t i = 0; i < oh; i++) {
        int64_t h0 = i * h / oh, h1 = ((i + 1) * h + oh - 1) / oh;
        for (int64_t j = 0; j < ow; j++) {
            int64_t w0 = j * w / ow, w1 = ((j + 1) * w + ow - 1) / ow;
            float sum = 0;
            for (int64_t r = h0; r < h1; r++)
                for (int64_t c = w0; c < w1; c++)
                    sum += x[r * w + c];
            y[i * ow + j] = sum / (float)((h1 - h0) * (w1 - w0));
        }
    }
}

static void adaptive_avg_kernel(const plan_step *s)
{
    run_planes(s, adaptive_avg_plane);
}

static engine_status build_adaptive(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_shape *in = value_shape(b, nd->inputs[0]), *out = &b->shapes[nd->layer];
    engine_status st = ENGINE_OK;
    int src, dst;
    bool even = in->d[2] % out->d[2] == 0 && in->d[3] % out->d[3] == 0;
    if (even) {
        /* Output sizes that divide the input are plain average pooling. */
        int64_t k[2] = {in->d[2] / out->d[2], in->d[3] / out->d[3]}, zero[2] = {0, 0};
        TRY(primary(b, nd->inputs[0], &src));
        TRY(pool_step(b, src, out, dnnl_pooling_avg_exclude_padding, k, k, zero, zero, zero, &dst));
        return set_output(b, v, dst);
    }
    (void)st;
    int64_t dims[] = {in->d[0] * in->d[1], in->d[2], in->d[3], out->d[2], out->d[3]};
    return kernel_step(b, v, out, "adaptive_pooling", adaptive_avg_kernel, dims,
                       (int)(sizeof dims / sizeof dims[0]));
fail:
    return st;
}

static engine_status build_mean(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_layer *l = &b->m->spec->layers[nd->layer];
    const spec_shape *in = value_shape(b, nd->inputs[0]);
    engine_status st = ENGINE_OK;
    int src, pooled;
    int64_t k[2] = {in->d[2], in->d[3]}, zero[2] = {0, 0};
    spec_shape kept = {4, {in->d[0], in->d[1], 1, 1}};
    TRY(primary(b, nd->inputs[0], &src));
    TRY(pool_step(b, src, &kept, dnnl_pooling_avg_exclude_padding, k, k, zero, zero, zero,
                  &pooled));
    if (l->keepdim)
        return set_output(b, v, pooled);
    /* [N, C, 1, 1] in plain layout is [N, C] byte for byte: view it. */
    TRY(set_output(b, v, pooled));
    dnnl_memory_desc_t plain, flat;
    dnnl_dims_t fd = {in->d[0], in->d[1]};
    CK(md_init(&plain, 4, kept.d, b->t[pooled].md.data_type, dnnl_abcd));
    CK(dnnl_memory_desc_init_by_tag(&flat, 2, fd, b->t[pooled].md.data_type, dnnl_ab));
    int base, view;
    TRY(connect(b, v, &plain, &base));
    TRY(new_tensor(b, &flat, b->t[base].slot, b->t[base].offset, &view));
    /* The view is what readers see: put it first. */
    value_info *vi = val(b, v);
    vi->n = 0;
    TRY(add_value_tensor(b, v, view));
fail:
    return st;
}

static engine_status build_softmax(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_layer *l = &b->m->spec->layers[nd->layer];
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    int src, dst;
    TRY(primary(b, nd->inputs[0], &src));
    dnnl_softmax_v2_desc_t sd;
    dnnl_alg_kind_t alg = l->op == SPEC_SOFTMAX ? dnnl_softmax_accurate : dnnl_softmax_log;
    CK(dnnl_softmax_v2_forward_desc_init(&sd, dnnl_forward_inference, alg, &b->t[src].md,
                                         &b->t[src].md, 1));
    TRY(make_attr(b, NULL, &attr));
    CK(dnnl_primitive_desc_create(&pd, &sd, attr, b->r->eng, NULL));
    if (is_reference(pd) && b->t[src].md.ndims == 4) {
        /* oneDNN 2.6's JIT softmax wants the axis innermost: over the channels of [N,C,H,W]
         * that is channels-last. */
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        dnnl_memory_desc_t nhwc;
        CK(dnnl_memory_desc_init_by_tag(&nhwc, 4, b->t[src].md.dims, b->t[src].md.data_type,
                                        dnnl_acdb));
        TRY(connect(b, nd->inputs[0], &nhwc, &src));
        CK(dnnl_softmax_v2_forward_desc_init(&sd, dnnl_forward_inference, alg, &b->t[src].md,
                                             &b->t[src].md, 1));
        CK(dnnl_primitive_desc_create(&pd, &sd, attr, b->r->eng, NULL));
    }
    TRY(dst_tensor(b, v, nd->inputs[0], src, &b->t[src].md, &dst));
    int kinds[] = {DNNL_ARG_SRC, DNNL_ARG_DST}, ts[] = {src, dst};
    TRY(add_step(b, "softmax", pd, 2, kinds, ts));
    TRY(set_output(b, v, dst));
fail:
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* A binary op of tensors a and b0 into dst, with post-ops (NULL for none). */
static engine_status binary_pd(builder *b, dnnl_alg_kind_t alg, const dnnl_memory_desc_t *a,
                               const dnnl_memory_desc_t *c, dnnl_post_ops_t po,
                               dnnl_primitive_desc_t *pd)
{
    engine_status st = ENGINE_OK;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_binary_desc_t bd;
    TRY(make_attr(b, po, &attr));
    CK(dnnl_binary_desc_init(&bd, alg, a, c, a));
    CK(dnnl_primitive_desc_create(pd, &bd, attr, b->r->eng, NULL));
fail:
    dnnl_primitive_attr_destroy(attr);
    return st;
}

/* Add of two or more inputs (a chain of binary adds, accumulating in place), and Mul of two of the
 * same shape; the node's activations go on the last step. The first operand's buffer is reused
 * when this node is its last reader. */
static engine_status build_elementwise(builder *b, int v, dnnl_alg_kind_t alg)
{
    const node *nd = &b->m->nodes[v];
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_post_ops_t po = NULL;
    int first = 0;
    /* Accumulate over whichever operand dies here, so its buffer is reused; but not over one
     * that a later step of the chain reads again (x + y + x), which the first step overwrites. */
    bool in_place = false;
    for (int k = 0; k < nd->n_inputs && !in_place; k++) {
        int x = nd->inputs[k], uses = 0;
        for (int i = 0; i < nd->n_inputs; i++)
            uses += nd->inputs[i] == x;
        if (x >= 0 && b->m->nodes[x].last_use == v && (uses == 1 || nd->n_inputs == 2)) {
            first = k;
            in_place = true;
        }
    }
    int acc;
    TRY(primary(b, nd->inputs[first], &acc));
    const dnnl_memory_desc_t md = b->t[acc].md;
    int dst;
    if (in_place)
        TRY(dst_tensor(b, v, nd->inputs[first], acc, &md, &dst));
    else
        TRY(fresh_tensor(b, &md, &dst));
    int steps = 0;
    bool fuse = binary_takes_posts(&md);
    for (int k = 0; k < nd->n_inputs; k++) {
        if (k == first)
            continue;
        bool last = ++steps == nd->n_inputs - 1;
        int other;
        TRY(connect(b, nd->inputs[k], &md, &other));
        if (last && fuse)
            TRY(node_post_ops(b, nd, &po));
        TRY(binary_pd(b, alg, &md, &md, last ? po : NULL, &pd));
        int kinds[] = {DNNL_ARG_SRC_0, DNNL_ARG_SRC_1, DNNL_ARG_DST};
        int ts[] = {steps == 1 ? acc : dst, other, dst};
        TRY(add_step(b, alg == dnnl_binary_add ? "add" : "mul", pd, 3, kinds, ts));
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    TRY(fuse ? unfused_posts(b, nd, dst) : posts_from(b, nd, 0, dst));
    TRY(set_output(b, v, dst));
fail:
    dnnl_post_ops_destroy(po);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* [N,C,H,W] * [N,C,1,1]: a broadcasting binary mul. oneDNN 2.6 has a JIT kernel for it when the
 * small operand has the big one's layout and that layout is plain, channels-last or blocked by the
 * ISA's vector width; otherwise the big operand goes to channels-last first. So does a single
 * channel in a blocked layout: oneDNN 2.6's AVX2 kernel multiplies [N,1,H,W] in aBcd8b by
 * [N,1,1,1] wrongly (errors near 1.5, found by live_check), and channels-last of one channel is
 * plain memory. */
static engine_status build_mul(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    const spec_shape *s0 = value_shape(b, nd->inputs[0]), *s1 = value_shape(b, nd->inputs[1]);
    bool same = s0->rank == s1->rank && !memcmp(s0->d, s1->d, sizeof s0->d);
    if (same)
        return build_elementwise(b, v, dnnl_binary_mul);
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_post_ops_t po = NULL;
    bool big0 = s1->d[2] == 1 && s1->d[3] == 1 && (s0->d[2] != 1 || s0->d[3] != 1);
    int bv = nd->inputs[big0 ? 0 : 1], sv = nd->inputs[big0 ? 1 : 0];
    const spec_shape *small = value_shape(b, sv);
    int big, sm, dst;
    TRY(primary(b, bv, &big));
    bool fuse = binary_takes_posts(&b->t[big].md);
    if (fuse)
        TRY(node_post_ops(b, nd, &po));
    dnnl_memory_desc_t smd;
    int64_t sd[4] = {small->d[0], small->d[1], 1, 1};
    if (!md_like(&b->t[big].md, sd, b->t[big].md.data_type, &smd))
        CK(md_init(&smd, 4, sd, b->t[big].md.data_type, dnnl_abcd));
    if (!(small->d[1] == 1 && channel_blocked(&b->t[big].md)))
        TRY(binary_pd(b, dnnl_binary_mul, &b->t[big].md, &smd, po, &pd));
    if (!pd || is_reference(pd)) {
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        dnnl_memory_desc_t nhwc;
        CK(dnnl_memory_desc_init_by_tag(&nhwc, 4, b->t[big].md.dims, b->t[big].md.data_type,
                                        dnnl_acdb));
        CK(md_init(&smd, 4, sd, b->t[big].md.data_type, dnnl_abcd));
        TRY(connect(b, bv, &nhwc, &big));
        TRY(binary_pd(b, dnnl_binary_mul, &b->t[big].md, &smd, po, &pd));
    }
    TRY(connect(b, sv, &smd, &sm));
    TRY(dst_tensor(b, v, bv, big, &b->t[big].md, &dst));
    int kinds[] = {DNNL_ARG_SRC_0, DNNL_ARG_SRC_1, DNNL_ARG_DST}, ts[] = {big, sm, dst};
    TRY(add_step(b, "mul", pd, 3, kinds, ts));
    TRY(fuse ? unfused_posts(b, nd, dst) : posts_from(b, nd, 0, dst));
    TRY(set_output(b, v, dst));
fail:
    dnnl_post_ops_destroy(po);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* Cat along the channels: oneDNN's concat, with every input in the first one's layout. (oneDNN
 * 2.6's JIT convolutions and pooling fall back to reference code when asked to write a channel
 * slice of a larger tensor, so producers cannot write into the destination directly.) */
static engine_status build_cat(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    engine_status st = ENGINE_OK;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_attr_t attr = NULL;
    int n = nd->n_inputs;
    dnnl_memory_desc_t *mds = calloc((size_t)n, sizeof *mds);
    int *ts = calloc((size_t)n + 1, sizeof *ts), *kinds = calloc((size_t)n + 1, sizeof *kinds);
    if (!mds || !ts || !kinds) {
        st = no_memory(b);
        goto fail;
    }
    int first;
    TRY(primary(b, nd->inputs[0], &first));
    const dnnl_memory_desc_t proto = b->t[first].md;
    for (int attempt = 0; attempt < 2; attempt++) {
        for (int k = 0; k < n; k++) {
            const spec_shape *s = value_shape(b, nd->inputs[k]);
            if (attempt == 1 || !md_like(&proto, s->d, proto.data_type, &mds[k]))
                CK(md_init(&mds[k], s->rank, s->d, proto.data_type,
                           s->rank == 4 ? dnnl_acdb : dnnl_ab));
        }
        const spec_shape *o = &b->shapes[nd->layer];
        dnnl_memory_desc_t dst_any;
        CK(md_init(&dst_any, o->rank, o->d, proto.data_type, dnnl_format_tag_any));
        TRY(make_attr(b, NULL, &attr));
        CK(dnnl_concat_primitive_desc_create(&pd, &dst_any, n, 1, mds, attr, b->r->eng));
        dnnl_primitive_attr_destroy(attr);
        attr = NULL;
        if (!is_reference(pd) || attempt == 1)
            break;
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    for (int k = 0; k < n; k++) {
        TRY(connect(b, nd->inputs[k], &mds[k], &ts[k]));
        kinds[k] = DNNL_ARG_MULTIPLE_SRC + k;
    }
    TRY(fresh_tensor(b, dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0), &ts[n]));
    kinds[n] = DNNL_ARG_DST;
    TRY(add_step(b, "concat", pd, n + 1, kinds, ts));
    TRY(set_output(b, v, ts[n]));
fail:
    dnnl_primitive_attr_destroy(attr);
    dnnl_primitive_desc_destroy(pd);
    free(mds);
    free(ts);
    free(kinds);
    return st;
}

static engine_status build_node(builder *b, int v)
{
    const node *nd = &b->m->nodes[v];
    val(b, v)->shape = b->shapes[nd->out_layer];
    switch (nd->kind) {
    case NODE_CONV:
        return build_conv(b, v);
    case NODE_LINEAR:
        return build_linear(b, v);
    case NODE_BNORM:
        return build_bnorm(b, v);
    case NODE_ELTWISE:
        return build_eltwise(b, v);
    case NODE_POOL:
        return build_pool(b, v);
    case NODE_ADAPTIVE:
        return build_adaptive(b, v);
    case NODE_MEAN:
        return build_mean(b, v);
    case NODE_SOFTMAX:
        return build_softmax(b, v);
    case NODE_FLATTEN:
        val(b, v)->flat_of = nd->inputs[0];
        return ENGINE_OK;
    case NODE_ADD:
        return build_elementwise(b, v, dnnl_binary_add);
    case NODE_MUL:
        return build_mul(b, v);
    case NODE_CAT:
        return build_cat(b, v);
    }
    return engine_fail(b->err, b->errlen, ENGINE_E_BACKEND, "node %d has no lowering", v);
}

/* ---- buffer planning ----------------------------------------------------------------------- */

typedef struct {
    size_t begin, end;
} span;

typedef struct {
    size_t size;
    int slot;
} sized;

static int by_size_desc(const void *a, const void *c)
{
    const sized *x = a, *y = c;
    return x->size < y->size ? 1 : x->size > y->size ? -1 : x->slot - y->slot;
}

static int by_begin(const void *a, const void *c)
{
    const span *x = a, *y = c;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Places every slot at the lowest offset where it overlaps no slot alive at the same time,
 * largest slots first (the greedy-by-size strategy of TFLite's arena planner). */
static engine_status plan_arena(builder *b)
{
    plan *p = b->p;
    int n = b->ns;
    engine_status st = ENGINE_OK;
    sized *order = malloc(((size_t)n + 1) * sizeof *order);
    int *placed = malloc(((size_t)n + 1) * sizeof *placed);
    span *busy = malloc(((size_t)n + 1) * sizeof *busy);
    p->slot_offset = calloc((size_t)n + 1, sizeof *p->slot_offset);
    if (!order || !placed || !busy || !p->slot_offset) {
        st = no_memory(b);
        goto done;
    }
    p->nslots = (size_t)n;
    for (int i = 0; i < n; i++)
        order[i] = (sized){b->slots[i].size, i};
    qsort(order, (size_t)n, sizeof *order, by_size_desc);
    int nplaced = 0;
    size_t top = 0;
    for (int i = 0; i < n; i++) {
        const slot_info *s = &b->slots[order[i].slot];
        size_t size = (s->size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
        p->unplanned_bytes += size;
        int nb = 0;
        for (int k = 0; k < nplaced; k++) {
            const slot_info *o = &b->slots[placed[k]];
            if (o->first <= s->last && s->first <= o->last) {
                size_t off = p->slot_offset[placed[k]];
                busy[nb++] =
                    (span){off, off + (o->size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN};
            }
        }
        qsort(busy, (size_t)nb, sizeof *busy, by_begin);
        size_t at = 0;
        for (int k = 0; k < nb; k++) {
            if (busy[k].begin >= at + size)
                break;
            if (busy[k].end > at)
                at = busy[k].end;
        }
        p->slot_offset[order[i].slot] = at;
        placed[nplaced++] = order[i].slot;
        if (at + size > top)
            top = at + size;
    }
    p->arena_bytes = top;
done:
    free(order);
    free(placed);
    free(busy);
    return st;
}

/* ---- the plan ------------------------------------------------------------------------------ */

void plan_destroy(plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nsteps; i++) {
        if (p->steps[i].prim)
            dnnl_primitive_destroy(p->steps[i].prim);
        free(p->steps[i].args);
    }
    for (size_t i = 0; i < p->nbinds; i++)
        dnnl_memory_destroy(p->binds[i].mem);
    free(p->steps);
    free(p->binds);
    free(p->slot_offset);
    free(p);
}

/* The answer goes out as plain row-major float32 in the caller's buffer: the last tensor is
 * written there directly when it already has that layout and owns its slot, else reordered. */
static engine_status bind_output(builder *b, int last_v)
{
    engine_status st = ENGINE_OK;
    const spec_shape *os = &b->p->out_shape;
    dnnl_memory_desc_t out_md;
    CK(md_init(&out_md, os->rank, os->d, dnnl_f32, os->rank == 4 ? dnnl_abcd : dnnl_ab));
    int src;
    TRY(primary(b, last_v, &src));
    tensor *t = &b->t[src];
    if (t->slot >= 0 && b->slots[t->slot].users == 1 && t->offset == 0 &&
        dnnl_memory_desc_equal(&t->md, &out_md)) {
        int old = t->slot;
        b->slots[old].size = 0;
        b->slots[old].users = 0;
        t->slot = PLAN_SLOT_OUT;
        for (size_t i = 0; i < b->p->nbinds; i++)
            if (b->p->binds[i].mem == t->mem)
                b->p->binds[i].slot = PLAN_SLOT_OUT;
        return ENGINE_OK;
    }
    int out;
    TRY(new_tensor(b, &out_md, PLAN_SLOT_OUT, 0, &out));
    TRY(add_reorder(b, src, out));
fail:
    return st;
}

engine_status plan_build(engine_runner *r, int64_t n, int64_t h, int64_t w, spec_precision prec,
                         plan **out, char *err, size_t errlen)
{
    const engine_model *m = r->m;
    const spec_model *s = m->spec;
    engine_status st = ENGINE_OK;
    builder bb = {.r = r, .m = m, .err = err, .errlen = errlen};
    builder *b = &bb;
    b->dt = prec == SPEC_BF16 ? dnnl_bf16 : dnnl_f32;
    plan *p = calloc(1, sizeof *p);
    b->shapes = calloc(s->n_layers, sizeof *b->shapes);
    b->pads = calloc(s->n_layers, sizeof *b->pads);
    b->vals = calloc((size_t)m->n_nodes + 1, sizeof *b->vals);
    if (!p || !b->shapes || !b->pads || !b->vals) {
        st = no_memory(b);
        goto fail;
    }
    b->p = p;
    p->n = n;
    p->h = h;
    p->w = w;
    p->precision = prec;
    for (int v = 0; v <= m->n_nodes; v++)
        b->vals[v].flat_of = FLAT_NONE;

    int rank = s->input_rank + 1;
    dnnl_dims_t in = {n, s->input_dims[0], h, w};
    int bad;
    TRY(spec_infer(s, in, rank, b->shapes, b->pads, &bad, err, errlen));

    /* The caller's input: plain row-major float32, bound per run. */
    dnnl_memory_desc_t in_md;
    CK(dnnl_memory_desc_init_by_tag(&in_md, rank, in, dnnl_f32, rank == 4 ? dnnl_abcd : dnnl_ab));
    int in_t;
    TRY(new_tensor(b, &in_md, PLAN_SLOT_IN, 0, &in_t));
    TRY(add_value_tensor(b, SPEC_INPUT, in_t));
    val(b, SPEC_INPUT)->shape = (spec_shape){.rank = rank, .d = {in[0], in[1], in[2], in[3]}};

    for (int v = 0; v < m->n_nodes; v++)
        TRY(build_node(b, v));

    p->out_shape = b->shapes[s->n_layers - 1];
    int last_v = m->layer_value[s->n_layers - 1];
    TRY(bind_output(b, last_v));
    TRY(plan_arena(b));
    *out = p;
    p = NULL;
fail:
    for (int v = 0; b->vals && v <= m->n_nodes; v++)
        free(b->vals[v].tensors);
    free(b->vals);
    free(b->t);
    free(b->slots);
    free(b->shapes);
    free(b->pads);
    plan_destroy(p);
    return st;
}
