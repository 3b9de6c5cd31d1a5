/* runner.c - runs batches on plans: the plan cache (bounded by bytes), the activation arena,
 * and the choice of batch sizes that covers a request at the least measured cost.
 *
 * oneDNN 2.6 ties a primitive to exact dims, so plans exist for a few batch sizes ("buckets":
 * 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, ... up to max_batch_size). A batch of N runs as the
 * cheapest cover of N by buckets, padding the last one or splitting, chosen by dynamic
 * programming over the run times measured at warm-up; so no N costs more than a larger one. The
 * plans share one arena for their activations and scratchpads (one plan runs at a time) and the
 * reordered weights. The Debian oneDNN build keeps per-thread state, so a runner (and every
 * primitive in it) belongs to the thread that created it.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS */
#include "plan.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

enum {
    RUNNER_MAX_PLANS = 64,   /* cached plans, whatever their size */
    RUNNER_MAX_BATCH = 4096, /* the largest bucket */
    WARMUP_MIN_RUNS = 3,     /* timed runs per bucket after the first, at least */
    WARMUP_MAX_RUNS = 12,    /* and at most */
};

/* A warm-up run longer than this is run once only: big models at big batches take seconds. */
#define WARMUP_SLOW_NS 50e6
/* Timed warm-up runs of a bucket go on (up to WARMUP_MAX_RUNS) until they took this long in all:
 * its cost is the fastest of them, and one run that another program preempted would otherwise
 * make a bucket look dear for good (a bucket that covers are not made of is not run again). */
#define WARMUP_TIMED_NS 20e6
/* After a run, an arena larger than what the warm-up shapes need and than this is given back to
 * the system, so a burst of large inputs does not pin memory. */
#define ARENA_KEEP_MIN ((size_t)64 << 20)
#define NS_PER_S       1e9

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * NS_PER_S + (double)ts.tv_nsec;
}

static void owner_check(const engine_runner *r)
{
    /* A primitive run on another thread can crash in oneDNN's thread-local state; make that bug
     * loud at once instead of rare and random. */
    if (!pthread_equal(r->owner, pthread_self())) {
        fprintf(stderr, "convserve engine: runner used outside the thread that created it\n");
        abort();
    }
}

#define CK(call)                                                                                   \
    do {                                                                                           \
        dnnl_status_t ck_s_ = (call);                                                              \
        if (ck_s_ != dnnl_success) {                                                               \
            st = engine_fail(err, errlen, ENGINE_E_BACKEND, "%s:%d: %s failed: %s", __FILE__,      \
                             __LINE__, #call, dnnl_status2str(ck_s_));                             \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* ---- the arena ---------------------------------------------------------------------------- */

static void arena_release(engine_runner *r)
{
    if (r->arena)
        munmap(r->arena, r->arena_size);
    r->arena = NULL;
    r->arena_size = 0;
    r->arena_gen++;
}

/* Makes the arena at least `bytes` (page-aligned memory straight from the kernel, so that giving
 * it back really returns it). */
static engine_status arena_reserve(engine_runner *r, size_t bytes, char *err, size_t errlen)
{
    if (bytes <= r->arena_size)
        return ENGINE_OK;
    arena_release(r);
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory for %zu MB of activations",
                           bytes >> 20);
    r->arena = p;
    r->arena_size = bytes;
    return ENGINE_OK;
}

/* ---- plans -------------------------------------------------------------------------------- */

static size_t cache_bytes_used(const engine_runner *r, const plan *extra)
{
    size_t prims = 0, arena = extra ? extra->arena_bytes : 0;
    for (size_t i = 0; i < r->nplans; i++) {
        prims += r->plans[i]->primitive_bytes;
        if (r->plans[i]->arena_bytes > arena)
            arena = r->plans[i]->arena_bytes;
    }
    return prims + arena + (extra ? extra->primitive_bytes : 0);
}

static void evict(engine_runner *r, size_t i)
{
    plan_destroy(r->plans[i]);
    r->plans[i] = r->plans[--r->nplans];
}

static plan *find_plan(engine_runner *r, int64_t n, int64_t h, int64_t w)
{
    for (size_t i = 0; i < r->nplans; i++) {
        plan *p = r->plans[i];
        if (p->n == n && p->h == h && p->w == w)
            return p;
    }
    return NULL;
}

/* The cached plan for (n, h, w), built on first use; older plans are evicted while the cache is
 * over its budget. A bf16 model whose primitives the CPU cannot run falls back to f32 for good. */
static engine_status get_plan(engine_runner *r, int64_t n, int64_t h, int64_t w, plan **out,
                              char *err, size_t errlen)
{
    plan *p = find_plan(r, n, h, w);
    if (p) {
        p->last_used = ++r->tick;
        *out = p;
        return ENGINE_OK;
    }
    engine_status st = plan_build(r, n, h, w, r->precision, &p, err, errlen);
    if (st == ENGINE_E_BACKEND && r->precision == SPEC_BF16) {
        r->precision = SPEC_F32;
        for (size_t i = r->nplans; i-- > 0;)
            evict(r, i); /* plans of one runner share one precision */
        st = plan_build(r, n, h, w, r->precision, &p, err, errlen);
    }
    if (st != ENGINE_OK)
        return st;
    if (p->arena_bytes + p->primitive_bytes > r->cache_bytes) {
        char shape[64];
        int64_t d[4] = {n, r->m->spec->input_dims[0], h, w};
        spec_dims_format(d, r->m->spec->input_rank + 1, shape, sizeof shape);
        st = engine_fail(err, errlen, ENGINE_E_LIMIT,
                         "input %s needs %zu MB of activations and scratch space; the limit "
                         "is %zu MB",
                         shape, (p->arena_bytes + p->primitive_bytes + (1 << 20) - 1) >> 20,
                         r->cache_bytes >> 20);
        plan_destroy(p);
        return st;
    }
    while (r->nplans > 0 &&
           (r->nplans >= RUNNER_MAX_PLANS || cache_bytes_used(r, p) > r->cache_bytes)) {
        size_t lru = 0;
        for (size_t i = 1; i < r->nplans; i++)
            if (r->plans[i]->last_used < r->plans[lru]->last_used)
                lru = i;
        evict(r, lru);
    }
    if (r->nplans == r->capplans) {
        size_t cap = r->capplans ? 2 * r->capplans : 16;
        plan **np = realloc(r->plans, cap * sizeof *np);
        if (!np) {
            plan_destroy(p);
            return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
        }
        r->plans = np;
        r->capplans = cap;
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
    if ((st = arena_reserve(r, p->arena_bytes, err, errlen)) != ENGINE_OK)
        return st;
    bool rebind = p->arena_gen != r->arena_gen;
    for (size_t i = 0; i < p->nbinds; i++) {
        const plan_binding *bd = &p->binds[i];
        void *h;
        if (bd->slot == PLAN_SLOT_IN)
            h = (unsigned char *)(uintptr_t)in + bd->offset; /* read-only: sources only */
        else if (bd->slot == PLAN_SLOT_OUT)
            h = (unsigned char *)out + bd->offset;
        else if (rebind)
            h = r->arena + p->slot_offset[bd->slot] + bd->offset;
        else
            continue;
        CK(dnnl_memory_set_data_handle(bd->mem, h));
    }
    p->arena_gen = r->arena_gen;
    double t0 = now_ns();
    for (size_t i = 0; i < p->nsteps; i++) {
        const plan_step *s = &p->steps[i];
        if (s->prim) {
            CK(dnnl_primitive_execute(s->prim, r->strm, s->nargs, s->args));
        } else {
            CK(dnnl_stream_wait(r->strm));
            s->kernel(s);
        }
    }
    CK(dnnl_stream_wait(r->strm));
    double t = now_ns() - t0;
    if (p->cost_ns == 0 || t < p->cost_ns)
        p->cost_ns = t; /* the fastest run seen: noise only ever adds time */
    r->last = p;
fail:
    return st;
}

/* ---- batch sizes -------------------------------------------------------------------------- */

/* The time a bucket is expected to take at (h, w): measured if its plan ran, else scaled from the
 * nearest measured bucket of that shape, else one unit per sample plus one for the fixed cost. */
static double bucket_cost(engine_runner *r, int64_t b, int64_t h, int64_t w)
{
    const plan *p = find_plan(r, b, h, w);
    if (p && p->cost_ns > 0)
        return p->cost_ns;
    const plan *near = NULL;
    for (size_t i = 0; i < r->nplans; i++) {
        const plan *q = r->plans[i];
        if (q->h == h && q->w == w && q->cost_ns > 0 &&
            (!near || llabs(q->n - b) < llabs(near->n - b)))
            near = q;
    }
    if (near)
        return near->cost_ns * (double)b / (double)near->n;
    return (double)b + 1.0;
}

/* Fills chunks[] with the buckets whose sum covers n at the least expected cost (the last may be
 * padded); returns how many. cost[k] is the cheapest cover of k samples: each bucket either fits
 * inside k or covers the rest with padding, so cost[] never decreases with k. */
static int plan_chunks(engine_runner *r, int64_t n, int64_t h, int64_t w, int64_t *chunks)
{
    double bc[RUNNER_MAX_BUCKETS];
    for (int i = 0; i < r->nbuckets; i++)
        bc[i] = bucket_cost(r, r->buckets[i], h, w);
    double *cost = malloc(((size_t)n + 1) * sizeof *cost);
    int *pick = malloc(((size_t)n + 1) * sizeof *pick);
    int count = 0;
    if (!cost || !pick) {
        /* Without scratch memory, fall back to the largest buckets that fit, then ones. */
        while (n > 0) {
            int64_t b = 1;
            for (int i = 0; i < r->nbuckets; i++)
                if (r->buckets[i] <= n)
                    b = r->buckets[i];
            chunks[count++] = b;
            n -= b;
        }
        free(cost);
        free(pick);
        return count;
    }
    cost[0] = 0;
    for (int64_t k = 1; k <= n; k++) {
        cost[k] = -1;
        for (int i = 0; i < r->nbuckets; i++) {
            int64_t rest = k > r->buckets[i] ? k - r->buckets[i] : 0;
            double c = bc[i] + cost[rest];
            if (cost[k] < 0 || c < cost[k]) {
                cost[k] = c;
                pick[k] = i;
            }
        }
    }
    while (n > 0) {
        int64_t b = r->buckets[pick[n]];
        chunks[count++] = b;
        n = n > b ? n - b : 0;
    }
    free(cost);
    free(pick);
    return count;
}

/* ---- runner ------------------------------------------------------------------------------- */

engine_status engine_runner_create(const engine_model *m, const engine_runner_options *o,
                                   engine_runner **out, char *err, size_t errlen)
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
    r->threads = o ? o->threads : 0;
    r->cache_bytes = o && o->cache_bytes ? o->cache_bytes : ENGINE_DEFAULT_CACHE_BYTES;
    r->store = m->store;
    if (r->threads > 0)
        omp_set_num_threads(r->threads);
    CK(weight_store_engine(r->store, &r->eng));
    CK(dnnl_stream_create(&r->strm, r->eng, dnnl_stream_default_flags));

    /* Buckets: 1, 2, 3, 4, 6, 8, 12, 16, ... (powers of two and halfway between) up to
     * max_batch_size, and max_batch_size itself. */
    int64_t maxb = o && o->max_batch > 0 ? o->max_batch : s->max_batch_size;
    if (maxb < 1)
        maxb = 1;
    if (maxb > RUNNER_MAX_BATCH)
        maxb = RUNNER_MAX_BATCH;
    for (int64_t p2 = 1; p2 <= maxb && r->nbuckets < RUNNER_MAX_BUCKETS - 2; p2 *= 2) {
        r->buckets[r->nbuckets++] = p2;
        if (p2 >= 2 && p2 + p2 / 2 <= maxb)
            r->buckets[r->nbuckets++] = p2 + p2 / 2;
    }
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
    free(r->plans);
    if (r->strm)
        dnnl_stream_destroy(r->strm);
    arena_release(r);
    free(r->pad_in);
    free(r->pad_out);
    free(r->out_buf);
    free(r);
}

static size_t shape_count(const spec_shape *s, int from)
{
    size_t c = 1;
    for (int i = from; i < s->rank; i++)
        c *= (size_t)s->d[i];
    return c;
}

static bool ensure(float **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    float *n = realloc(*buf, need * sizeof *n);
    if (!n)
        return false;
    *buf = n;
    *cap = need;
    return true;
}

engine_status engine_runner_run(engine_runner *r, const float *in, const int64_t *dims, int rank,
                                engine_tensor *out, char *err, size_t errlen)
{
    return engine_runner_run_into(r, in, dims, rank, NULL, 0, out, err, errlen);
}

engine_status engine_runner_run_into(engine_runner *r, const float *in, const int64_t *dims,
                                     int rank, float *dst, size_t capacity, engine_tensor *out,
                                     char *err, size_t errlen)
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
    spec_shape os;
    {
        spec_shape *shapes = calloc(s->n_layers, sizeof *shapes);
        if (!shapes)
            return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
        st = spec_infer(s, dims, rank, shapes, NULL, &bad, err, errlen);
        os = shapes[s->n_layers - 1];
        free(shapes);
        if (st != ENGINE_OK)
            return st;
    }
    size_t per_in = 1, per_out = shape_count(&os, 1), n = (size_t)dims[0], total;
    for (int i = 1; i < rank; i++)
        per_in *= (size_t)dims[i];
    if (__builtin_mul_overflow(per_out, n, &total))
        return engine_fail(err, errlen, ENGINE_E_INPUT, "output too large");
    if (dst && capacity < total)
        return engine_fail(err, errlen, ENGINE_E_INPUT,
                           "the output has %zu values; the buffer given holds %zu", total,
                           capacity);
    if (!dst) {
        /* The previous answer may have been far larger (a free-size model): do not keep it. */
        if (r->out_cap > total && r->out_cap * sizeof(float) > ARENA_KEEP_MIN) {
            free(r->out_buf);
            r->out_buf = NULL;
            r->out_cap = 0;
        }
        if (!ensure(&r->out_buf, &r->out_cap, total))
            return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory for the output");
        dst = r->out_buf;
    }
    out->rank = os.rank;
    memcpy(out->dims, os.d, sizeof out->dims);
    out->dims[0] = (int64_t)n;
    out->count = total;
    out->data = dst;

    int64_t h = rank == 4 ? dims[2] : 0, w = rank == 4 ? dims[3] : 0;
    int64_t *chunks = malloc(n * sizeof *chunks);
    if (!chunks)
        return engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
    int nchunks = plan_chunks(r, (int64_t)n, h, w, chunks);
    size_t done = 0;
    st = ENGINE_OK;
    for (int c = 0; c < nchunks && st == ENGINE_OK; c++) {
        int64_t bk = chunks[c];
        size_t take = n - done < (size_t)bk ? n - done : (size_t)bk;
        plan *p;
        if ((st = get_plan(r, bk, h, w, &p, err, errlen)) != ENGINE_OK)
            break;
        if (take == (size_t)bk) {
            st = plan_exec(r, p, in + done * per_in, dst + done * per_out, err, errlen);
        } else {
            /* The last chunk is padded with zeros up to its bucket. */
            size_t pin = (size_t)bk * per_in, pout = (size_t)bk * per_out;
            if (!ensure(&r->pad_in, &r->pad_in_cap, pin) ||
                !ensure(&r->pad_out, &r->pad_out_cap, pout)) {
                st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory for a batch");
                break;
            }
            memcpy(r->pad_in, in + done * per_in, take * per_in * sizeof *in);
            memset(r->pad_in + take * per_in, 0, (pin - take * per_in) * sizeof *in);
            st = plan_exec(r, p, r->pad_in, r->pad_out, err, errlen);
            if (st == ENGINE_OK)
                memcpy(dst + done * per_out, r->pad_out, take * per_out * sizeof *in);
        }
        done += take;
    }
    free(chunks);
    /* Give back what a large input needed beyond what the warm shapes use. */
    if (r->arena_size > ARENA_KEEP_MIN && r->arena_size > r->arena_keep)
        arena_release(r);
    if ((r->pad_in_cap + r->pad_out_cap) * sizeof(float) > ARENA_KEEP_MIN) {
        free(r->pad_in);
        free(r->pad_out);
        r->pad_in = r->pad_out = NULL;
        r->pad_in_cap = r->pad_out_cap = 0;
    }
    return st;
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
    int64_t h = rank == 4 ? dims[2] : 0, w = rank == 4 ? dims[3] : 0;
    for (int i = 0; i < r->nbuckets && st == ENGINE_OK; i++) {
        plan *p = NULL;
        st = get_plan(r, r->buckets[i], h, w, &p, err, errlen);
        if (st != ENGINE_OK)
            break;
        size_t outn = shape_count(&p->out_shape, 0);
        if (!ensure(&r->pad_out, &r->pad_out_cap, outn)) {
            st = engine_fail(err, errlen, ENGINE_E_NOMEM, "out of memory");
            break;
        }
        /* The first run faults the arena in, so later runs are timed; but a slow first run (a
         * large network at a large batch) is timed as it is: the warm-up of every batch size
         * would otherwise take minutes, and the page faults are a small part of it. */
        double spent = 0;
        for (int k = 0; st == ENGINE_OK && k <= WARMUP_MAX_RUNS; k++) {
            double t0 = now_ns();
            st = plan_exec(r, p, zeros, r->pad_out, err, errlen);
            if (k == 0 && p->cost_ns > WARMUP_SLOW_NS)
                break;
            if (k == 0) {
                p->cost_ns = 0;
                continue;
            }
            spent += now_ns() - t0;
            if (k >= WARMUP_MIN_RUNS && spent >= WARMUP_TIMED_NS)
                break;
        }
        if (p->arena_bytes > r->arena_keep)
            r->arena_keep = p->arena_bytes;
    }
    free(zeros);
    return st;
}

double engine_runner_batch_ns(engine_runner *r, int64_t n, int64_t h, int64_t w)
{
    if (n < 1)
        return 0;
    int64_t *chunks = malloc((size_t)n * sizeof *chunks);
    if (!chunks)
        return 0;
    int k = plan_chunks(r, n, h, w, chunks);
    double t = 0;
    for (int i = 0; i < k; i++)
        t += bucket_cost(r, chunks[i], h, w);
    free(chunks);
    return t;
}

void engine_runner_usage(const engine_runner *r, engine_runner_usage_info *u)
{
    memset(u, 0, sizeof *u);
    u->weight_bytes = r->store->bytes; /* shared by the model's runners */
    u->arena_bytes = r->arena_size;
    u->plans = r->nplans;
    for (size_t i = 0; i < r->nplans; i++) {
        u->primitive_bytes += r->plans[i]->primitive_bytes;
        if (r->plans[i] == r->last) {
            u->last_arena_bytes = r->last->arena_bytes;
            u->last_unplanned_bytes = r->last->unplanned_bytes;
        }
    }
}

bool engine_bf16_supported(void)
{
    /* The ISA values are bit sets that only partly order (avx2_vnni is numerically larger than
     * avx512_core), so test the bits. */
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & (unsigned)dnnl_cpu_isa_avx512_core) == (unsigned)dnnl_cpu_isa_avx512_core;
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
